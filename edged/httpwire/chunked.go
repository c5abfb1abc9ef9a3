package httpwire

import (
	"bufio"
	"io"
)

// Limits of the chunked decoder: a chunk-size line (size and extensions)
// and the trailer section. net/http allows 4 KiB per chunk line too.
const (
	MaxChunkLine    = 4096
	MaxTrailerBytes = 16 << 10
)

// Decoder states: the chunk-size line is parsed byte by byte (as nginx
// does), so it may arrive split anywhere; extensions are checked against
// RFC 9112 §7.1.1's grammar rather than skipped.
const (
	stSizeStart = iota
	stSize
	stSizeBWS      // whitespace after the size: ";" or CRLF next
	stExtName      // after ";": whitespace, then a token
	stExtNameRest  // inside the name
	stExtNameBWS   // whitespace after the name: "=", ";" or CRLF
	stExtValue     // after "=": whitespace, then a token or a quoted string
	stExtToken     // inside a token value
	stExtQuoted    // inside a quoted-string value
	stExtQuotedEsc // after a backslash in a quoted string
	stSizeLF       // after the CR that ends the size line
	stData
	stDataCR
	stDataLF
	stTrailerStart // at the start of a trailer line (or the final CRLF)
	stTrailerEndLF // the final CRLF's LF
	stTrailer      // inside the trailer section: collecting it
	stDone
)

// ChunkedDecoder decodes the chunked transfer coding (RFC 9112 §7.1) as a
// pure function of the bytes given to it: no I/O, and no allocation unless
// a trailer section is present. The zero value is ready to decode.
type ChunkedDecoder struct {
	state    uint8
	size     uint64 // the current chunk's size while parsing it; then the data left
	lineLen  int    // bytes of the current chunk-size line
	trailer  []byte // the raw trailer section, when there is one
	trailers []Field
}

// Reset prepares d for a new body, keeping its trailer storage.
func (d *ChunkedDecoder) Reset() {
	*d = ChunkedDecoder{trailer: d.trailer[:0], trailers: d.trailers[:0]}
}

// Done reports whether the last chunk and the trailer section were read.
func (d *ChunkedDecoder) Done() bool { return d.state == stDone }

// Trailers returns the trailer fields once Done; they stay valid until
// Reset.
func (d *ChunkedDecoder) Trailers() []Field { return d.trailers }

// DataLeft returns how many data bytes of the current chunk are still to
// come; 0 unless the decoder is inside a chunk's data.
func (d *ChunkedDecoder) DataLeft() uint64 {
	if d.state != stData {
		return 0
	}
	return d.size
}

// ConsumeData records n data bytes that the caller read itself, straight
// from the connection (n ≤ DataLeft()).
func (d *ChunkedDecoder) ConsumeData(n int) {
	d.size -= uint64(n)
	if d.size == 0 {
		d.state = stDataCR
	}
}

// Decode consumes chunked framing from src up to the next chunk data and
// returns the number of bytes of src consumed and, as the tail of those,
// up to max bytes of body data (a subslice of src). It returns io.EOF once
// the body is complete (n then excludes whatever follows the body), and an
// *Error for invalid framing. When src ends inside framing, all of it is
// consumed and data is empty: call again with more bytes.
func (d *ChunkedDecoder) Decode(src []byte, max int) (n int, data []byte, err error) {
	i := 0
	for i < len(src) {
		if d.state == stData {
			k := min(uint64(len(src)-i), uint64(max), d.size)
			data = src[i : i+int(k)]
			d.ConsumeData(int(k))
			return i + int(k), data, nil
		}
		c := src[i]
		i++
		if d.state < stSizeLF {
			d.lineLen++
			if d.lineLen > MaxChunkLine {
				return i, nil, ErrChunkLine
			}
		}
		switch d.state {
		case stSizeStart, stSize:
			if v := unhex(c); v >= 0 {
				if d.size > (1<<63-1)>>4 {
					return i, nil, ErrChunkOverflow
				}
				d.size = d.size<<4 | uint64(v)
				d.state = stSize
				continue
			}
			if d.state == stSizeStart {
				if c == 0 {
					return i, nil, ErrNUL
				}
				return i, nil, ErrChunkSize
			}
			err = d.afterSize(c, stSizeBWS)
		case stSizeBWS, stExtNameBWS:
			err = d.afterSize(c, d.state)
		case stExtName:
			switch {
			case c == ' ' || c == '\t':
			case class[c]&cToken != 0:
				d.state = stExtNameRest
			default:
				err = extByte(c)
			}
		case stExtNameRest:
			switch {
			case class[c]&cToken != 0:
			case c == '=':
				d.state = stExtValue
			default:
				err = d.afterSize(c, stExtNameBWS)
			}
		case stExtValue:
			switch {
			case c == ' ' || c == '\t':
			case c == '"':
				d.state = stExtQuoted
			case class[c]&cToken != 0:
				d.state = stExtToken
			default:
				err = extByte(c)
			}
		case stExtToken:
			if class[c]&cToken == 0 {
				err = d.afterSize(c, stSizeBWS)
			}
		case stExtQuoted:
			switch {
			case c == '"':
				d.state = stSizeBWS
			case c == '\\':
				d.state = stExtQuotedEsc
			case class[c]&cValue == 0:
				err = extByte(c)
			}
		case stExtQuotedEsc:
			if class[c]&cValue == 0 {
				err = extByte(c)
			}
			d.state = stExtQuoted
		case stSizeLF:
			if c != '\n' {
				return i, nil, ErrBareCR
			}
			d.lineLen = 0
			if d.size == 0 {
				d.state = stTrailerStart
			} else {
				d.state = stData
			}
		case stDataCR:
			if c != '\r' {
				return i, nil, ErrChunkData
			}
			d.state = stDataLF
		case stDataLF:
			if c != '\n' {
				return i, nil, ErrChunkData
			}
			d.state, d.size = stSizeStart, 0
		case stTrailerStart:
			if c == '\r' {
				d.state = stTrailerEndLF
				continue
			}
			d.state = stTrailer
			err = d.trailerByte(c)
		case stTrailerEndLF:
			if c != '\n' {
				return i, nil, ErrBareCR
			}
			d.state = stDone
			return i, nil, io.EOF
		case stTrailer:
			err = d.trailerByte(c)
		case stDone:
			return i - 1, nil, io.EOF
		}
		if err != nil {
			return i, nil, err
		}
		if d.state == stDone {
			return i, nil, io.EOF
		}
	}
	if d.state == stDone {
		return i, nil, io.EOF
	}
	return i, nil, nil
}

// afterSize handles a byte after the size, an extension name or value:
// whitespace (moving to ws), ";" (an extension follows) or the CR that
// ends the line.
func (d *ChunkedDecoder) afterSize(c byte, ws uint8) error {
	switch c {
	case ' ', '\t':
		d.state = ws
	case ';':
		d.state = stExtName
	case '\r':
		d.state = stSizeLF
	case '=':
		if ws == stExtNameBWS {
			d.state = stExtValue
			return nil
		}
		return ErrChunkExtension
	default:
		if d.state == stSize {
			return badByte(c, ErrChunkSize)
		}
		return extByte(c)
	}
	return nil
}

func extByte(c byte) error {
	if c == 0 {
		return ErrNUL
	}
	return ErrChunkExtension
}

// trailerByte collects the trailer section; at its final empty line it
// parses the fields with the header rules, refusing framing fields.
func (d *ChunkedDecoder) trailerByte(c byte) error {
	if len(d.trailer) >= MaxTrailerBytes {
		return ErrTrailerTooLarge
	}
	d.trailer = append(d.trailer, c)
	t := d.trailer
	if c == '\n' && (len(t) < 2 || t[len(t)-2] != '\r') {
		return ErrTrailer // bare LF: chunked framing is CRLF only
	}
	if c != '\n' || len(t) < 3 || t[len(t)-2] != '\r' || t[len(t)-3] != '\n' {
		return nil
	}
	// The trailer section ended with an empty line ("...\n\r\n").
	var fr framing
	fr.reset()
	fields, _, err := parseFields(t, 0, d.trailers[:0], &fr, false)
	if err != nil {
		if err == ErrIncomplete {
			return ErrTrailer
		}
		return err
	}
	if fr.te || fr.contentLength >= 0 {
		return ErrTrailer
	}
	d.trailers = fields
	d.state = stDone
	return nil
}

func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c-'a') + 10
	case 'A' <= c && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// ChunkedReader reads a chunked body from a buffered connection: chunk
// data is copied straight into the caller's slice when the buffer is
// empty, so a large body is not copied twice. It returns io.EOF at the
// end of the body, leaving whatever follows (a pipelined message) in r,
// and io.ErrUnexpectedEOF if the connection ends first.
type ChunkedReader struct {
	R *bufio.Reader
	D ChunkedDecoder
}

// NewChunkedReader returns a reader of the chunked body that starts at r's
// next byte.
func NewChunkedReader(r *bufio.Reader) *ChunkedReader { return &ChunkedReader{R: r} }

// Reset starts a new body on r.
func (c *ChunkedReader) Reset(r *bufio.Reader) {
	c.R = r
	c.D.Reset()
}

func (c *ChunkedReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		if c.D.Done() {
			return 0, io.EOF
		}
		if left := c.D.DataLeft(); left > 0 && c.R.Buffered() == 0 && uint64(len(p)) >= min(left, 4096) {
			n, err := c.R.Read(p[:min(uint64(len(p)), left)])
			c.D.ConsumeData(n)
			if n > 0 {
				return n, nil
			}
			return 0, eofIsUnexpected(err)
		}
		if c.R.Buffered() == 0 {
			if _, err := c.R.Peek(1); err != nil {
				return 0, eofIsUnexpected(err)
			}
		}
		buf, _ := c.R.Peek(c.R.Buffered())
		n, data, derr := c.D.Decode(buf, len(p))
		copy(p, data)
		c.R.Discard(n)
		if derr != nil {
			if derr == io.EOF && len(data) > 0 {
				return len(data), nil
			}
			return len(data), derr
		}
		if len(data) > 0 {
			return len(data), nil
		}
	}
}

func eofIsUnexpected(err error) error {
	if err == io.EOF || err == nil {
		return io.ErrUnexpectedEOF
	}
	return err
}

// AppendChunkHeader appends the chunk-size line for a chunk of n > 0 bytes.
func AppendChunkHeader(dst []byte, n int) []byte {
	const digits = "0123456789abcdef"
	var b [16]byte
	i := len(b)
	for u := uint64(n); ; {
		i--
		b[i] = digits[u&15]
		u >>= 4
		if u == 0 {
			break
		}
	}
	dst = append(dst, b[i:]...)
	return append(dst, '\r', '\n')
}

// AppendLastChunk appends the last chunk and the trailer section: fields
// are written with AppendField's sanitising.
func AppendLastChunk(dst []byte, trailers []Field) []byte {
	dst = append(dst, "0\r\n"...)
	for _, f := range trailers {
		dst = AppendField(dst, f.Name, f.Value)
	}
	return append(dst, '\r', '\n')
}

// ChunkedWriter writes a body in the chunked coding to W, one chunk per
// non-empty Write. Close writes the last chunk and trailers; it does not
// close W.
type ChunkedWriter struct {
	W       io.Writer
	scratch [24]byte
}

func (c *ChunkedWriter) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if _, err := c.W.Write(AppendChunkHeader(c.scratch[:0], len(p))); err != nil {
		return 0, err
	}
	n, err := c.W.Write(p)
	if err != nil {
		return n, err
	}
	if _, err := c.W.Write(crlf); err != nil {
		return n, err
	}
	return n, nil
}

var crlf = []byte("\r\n")

// Close ends the body with the last chunk and trailers.
func (c *ChunkedWriter) Close(trailers []Field) error {
	_, err := c.W.Write(AppendLastChunk(c.scratch[:0], trailers))
	return err
}
