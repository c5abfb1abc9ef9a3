package httpwire

// Response is a parsed response head. Its slices point into the buffer
// given to ParseResponse and are valid as long as that buffer is.
type Response struct {
	// Minor is the HTTP/1 minor version: 0 or 1.
	Minor  int
	Status int
	Reason []byte
	Fields []Field

	// ContentLength is the Content-Length field's value, -1 if absent.
	ContentLength int64
	// Chunked: Transfer-Encoding is chunked (the only coding accepted).
	Chunked bool
	// Close: the server closes the connection after this response
	// (Connection: close, or HTTP/1.0 without keep-alive).
	Close bool
	// Upgrade: "upgrade" in Connection and an Upgrade field (101).
	Upgrade bool
}

// ParseResponse parses the response head at the start of buf into resp,
// reusing resp.Fields' storage, and returns the length of the head. It
// returns ErrIncomplete when buf holds only part of a head, and an *Error
// for anything RFC 9112 calls invalid or ambiguous: both Content-Length
// and Transfer-Encoding (nginx refuses such an upstream response too), a
// transfer coding other than chunked (it could not be forwarded), an
// invalid or repeated Content-Length, obs-fold, bare CR, NUL, invalid
// field names and values. A 1xx response is parsed like any other; the
// caller reads the next head after it.
func ParseResponse(buf []byte, resp *Response) (int, error) {
	fields := resp.Fields[:0]
	*resp = Response{Fields: fields, ContentLength: -1}
	end, lf, ok := lineEnd(buf, 0)
	if !ok {
		if len(buf) >= 5 && string(buf[:5]) != "HTTP/" {
			return 0, ErrStatusLine
		}
		return 0, ErrIncomplete
	}
	if err := resp.parseLine(buf[:end]); err != nil {
		return 0, err
	}
	var fr framing
	fr.reset()
	fields, n, err := parseFields(buf, lf+1, fields, &fr, false)
	resp.Fields = fields
	if err != nil {
		return 0, err
	}
	if fr.te {
		if resp.Minor == 0 {
			return 0, ErrEncodingHTTP10
		}
		if fr.contentLength >= 0 {
			return 0, ErrLengthAndEncoding
		}
		// A coding other than chunked could be neither removed nor
		// forwarded without its framing: refuse it, as net/http does.
		if fr.teOther || !fr.teChunked {
			return 0, ErrUnknownEncoding
		}
	}
	resp.ContentLength = fr.contentLength
	resp.Chunked = fr.teChunked
	if resp.Minor == 0 {
		resp.Close = !fr.keepAlive || fr.close
	} else {
		resp.Close = fr.close
	}
	resp.Upgrade = fr.upgrade && fr.connUpgrade
	return n, nil
}

// parseLine parses "HTTP/1.x SP 3DIGIT [SP reason]": the reason may be
// empty and its space missing, as many servers send it.
func (resp *Response) parseLine(line []byte) error {
	if len(line) < 12 || line[8] != ' ' {
		if len(line) > 0 && line[len(line)-1] == '\r' {
			return ErrBareCR
		}
		return ErrStatusLine
	}
	minor, err := parseVersion(line[:8])
	if err != nil {
		return err
	}
	code := line[9:12]
	if !isDigit(code[0]) || !isDigit(code[1]) || !isDigit(code[2]) || code[0] == '0' {
		return ErrStatusLine
	}
	reason := line[12:]
	if len(reason) > 0 {
		if reason[0] != ' ' {
			return ErrStatusLine
		}
		reason = reason[1:]
	}
	for _, c := range reason {
		if class[c]&cValue == 0 {
			return badByte(c, ErrStatusLine)
		}
	}
	resp.Minor = minor
	resp.Status = int(code[0]-'0')*100 + int(code[1]-'0')*10 + int(code[2]-'0')
	resp.Reason = reason
	return nil
}

// BodyFor says how the body of this response to a request with method is
// delimited (RFC 9112 §6.3), and its length for BodyLength. A 2xx answer
// to CONNECT and a 101 have no body: the connection becomes a tunnel.
func (resp *Response) BodyFor(method string) (Body, int64) {
	switch {
	case method == "HEAD", resp.Status < 200, resp.Status == 204, resp.Status == 304:
		return BodyNone, 0
	case method == "CONNECT" && resp.Status < 300:
		return BodyNone, 0
	case resp.Chunked:
		return BodyChunked, -1
	case resp.ContentLength >= 0:
		if resp.ContentLength == 0 {
			return BodyNone, 0
		}
		return BodyLength, resp.ContentLength
	}
	return BodyUntilClose, -1
}
