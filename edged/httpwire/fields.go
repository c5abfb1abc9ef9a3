package httpwire

import "bytes"

// Field is one header (or trailer) field line: name and value as slices of
// the parsed buffer, the value without its surrounding whitespace. Names
// keep the case they were sent in; repeated names stay separate fields in
// their order, as HAProxy keeps them, so nothing is merged or lost.
type Field struct {
	Name, Value []byte
}

// Get returns the value of the first field named name (ASCII lower case),
// and whether there was one.
func Get(fields []Field, name string) ([]byte, bool) {
	for i := range fields {
		if equalFold(fields[i].Name, name) {
			return fields[i].Value, true
		}
	}
	return nil, false
}

// framing is what the field lines say about the body and the connection;
// the request and response parsers turn it into their decisions.
type framing struct {
	contentLength int64 // -1 when absent
	te            bool  // a Transfer-Encoding field was present
	teChunked     bool  // chunked is the final coding
	teOther       bool  // a coding other than chunked was present
	close         bool  // Connection: close
	keepAlive     bool  // Connection: keep-alive
	connUpgrade   bool  // Connection: upgrade
	upgrade       bool  // an Upgrade field was present
	host          []byte
	hostSeen      bool
	expect100     bool
	expectOther   bool
}

func (f *framing) reset() {
	*f = framing{contentLength: -1}
}

// lineEnd finds the end of the line starting at pos: the index of its LF,
// and the end of its content (before a CR that precedes the LF).
func lineEnd(buf []byte, pos int) (content, lf int, ok bool) {
	i := bytes.IndexByte(buf[pos:], '\n')
	if i < 0 {
		return 0, 0, false
	}
	lf = pos + i
	content = lf
	if content > pos && buf[content-1] == '\r' {
		content--
	}
	return content, lf, true
}

// badByte names what is wrong with byte c where it is not allowed.
func badByte(c byte, otherwise *Error) *Error {
	switch c {
	case '\r':
		return ErrBareCR
	case 0:
		return ErrNUL
	}
	return otherwise
}

// parseFields parses field lines from buf[pos:] up to and including the
// empty line that ends the section, appending to fields and recording what
// framing needs (request selects the request's rules for Host and Expect).
// It returns the offset just past the section.
func parseFields(buf []byte, pos int, fields []Field, fr *framing, request bool) ([]Field, int, error) {
	for {
		end, lf, ok := lineEnd(buf, pos)
		if !ok {
			return fields, 0, ErrIncomplete
		}
		if end == pos {
			return fields, lf + 1, nil
		}
		line := buf[pos:end]
		pos = lf + 1
		if line[0] == ' ' || line[0] == '\t' {
			return fields, 0, ErrObsFold
		}
		colon := -1
		for i, c := range line {
			if class[c]&cToken != 0 {
				continue
			}
			switch c {
			case ':':
				colon = i
			case ' ', '\t':
				return fields, 0, ErrSpaceBeforeColon
			default:
				return fields, 0, badByte(c, ErrFieldName)
			}
			break
		}
		if colon < 0 {
			return fields, 0, ErrMissingColon
		}
		if colon == 0 {
			return fields, 0, ErrFieldName
		}
		name, value := line[:colon], line[colon+1:]
		for _, c := range value {
			if class[c]&cValue == 0 {
				return fields, 0, badByte(c, ErrFieldValue)
			}
		}
		value = trimOWS(value)
		// A folded continuation is refused as such before the field's
		// meaning is looked at.
		if pos >= len(buf) {
			return fields, 0, ErrIncomplete
		}
		if buf[pos] == ' ' || buf[pos] == '\t' {
			return fields, 0, ErrObsFold
		}
		if err := fr.field(name, value, request); err != nil {
			return fields, 0, err
		}
		fields = append(fields, Field{Name: name, Value: value})
	}
}

// field records one field that framing cares about. Every ambiguity in the
// message's framing is decided here and in finish.
func (fr *framing) field(name, value []byte, request bool) error {
	switch len(name) {
	case 4:
		if request && equalFold(name, "host") {
			if fr.hostSeen {
				return ErrDuplicateHost
			}
			for _, c := range value {
				if class[c]&cHost == 0 {
					return ErrHost
				}
			}
			fr.hostSeen, fr.host = true, value
		}
	case 6:
		if request && equalFold(name, "expect") {
			if equalFold(value, "100-continue") {
				fr.expect100 = true
			} else {
				fr.expectOther = true
			}
		}
	case 7:
		if equalFold(name, "upgrade") {
			fr.upgrade = true
		}
	case 10:
		if equalFold(name, "connection") {
			for rest, more := value, true; more; {
				var tok []byte
				tok, rest, more = nextListElement(rest)
				switch {
				case equalFold(tok, "close"):
					fr.close = true
				case equalFold(tok, "keep-alive"):
					fr.keepAlive = true
				case equalFold(tok, "upgrade"):
					fr.connUpgrade = true
				}
			}
		}
	case 14:
		if equalFold(name, "content-length") {
			if fr.contentLength >= 0 {
				return ErrDuplicateLength
			}
			n, ok := parseLength(value)
			if !ok {
				return ErrContentLength
			}
			fr.contentLength = n
		}
	case 17:
		if equalFold(name, "transfer-encoding") {
			return fr.transferEncoding(value)
		}
	}
	return nil
}

// parseLength parses a Content-Length value: one or more digits, nothing
// else (no sign, no list, no inner space), below 2^63.
func parseLength(v []byte) (int64, bool) {
	if len(v) == 0 {
		return 0, false
	}
	var n uint64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		if n > (1<<63-1-9)/10 {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
	}
	return int64(n), true
}

// transferEncoding folds one Transfer-Encoding field line into what came
// before (RFC 9112 §6.1: field lines combine as one list).
func (fr *framing) transferEncoding(value []byte) error {
	fr.te = true
	for rest, more := value, true; more; {
		var coding []byte
		coding, rest, more = nextListElement(rest)
		if len(coding) == 0 {
			return ErrTransferEncoding
		}
		if equalFold(coding, "chunked") {
			if fr.teChunked {
				return ErrChunkedTwice
			}
			fr.teChunked = true
			continue
		}
		// A coding after chunked: chunked is no longer the final one.
		if fr.teChunked {
			return ErrChunkedNotLast
		}
		name := coding
		if i := bytes.IndexByte(coding, ';'); i >= 0 {
			name = trimOWS(coding[:i]) // parameters are opaque to us
		}
		if !isToken(name) {
			return ErrTransferEncoding
		}
		fr.teOther = true
	}
	return nil
}
