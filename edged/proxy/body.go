package proxy

import (
	"io"
	"net/http"

	"github.com/edgeapp/edgeapp/edged/httpwire"
)

// directRead is the smallest read that bypasses the connection's buffer
// and lands straight in the caller's slice.
const directRead = 4 << 10

// bodyReader reads a response body from an upstream connection, framed as
// its head said. At the end of the body the connection goes back to its
// server's idle list at once (or is closed if it cannot be reused), so it
// is free before the response has reached the client.
type bodyReader struct {
	c       *upConn
	kind    httpwire.Body
	left    int64 // BodyLength: bytes still to come
	dec     httpwire.ChunkedDecoder
	keep    bool // the connection may serve another request afterwards
	done    bool
	err     error // sticky failure
	wt      waiter
	trailer http.Header // the chunked body's trailer fields, once done
	// hold keeps the connection at the end of the body until releaseHeld
	// (a reader goroutine must first tell the writer it is done).
	hold bool
}

// reset prepares b for a body on c.
func (b *bodyReader) reset(c *upConn, kind httpwire.Body, length int64, keep bool, wt waiter) {
	b.c, b.kind, b.left, b.keep, b.done, b.err, b.wt, b.trailer, b.hold = c, kind, length, keep, false, nil, wt, nil, false
	b.dec.Reset()
	if kind == httpwire.BodyNone {
		b.finish()
	}
}

// finish ends the body: the connection is released.
func (b *bodyReader) finish() {
	b.done = true
	if b.c != nil && !b.hold {
		b.c.release(b.keep)
		b.c = nil
	}
}

// fail records err and closes the connection.
func (b *bodyReader) fail(err error) error {
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	b.err = err
	if b.c != nil {
		b.c.close()
		b.c = nil
	}
	return err
}

// releaseHeld releases the connection of a finished body read with hold.
func (b *bodyReader) releaseHeld() {
	if b.c != nil {
		b.c.release(b.keep)
		b.c = nil
	}
}

// Close abandons the rest of the body: the connection is closed, which also
// stops the server's work on it.
func (b *bodyReader) Close() error {
	if b.c != nil {
		b.c.close()
		b.c = nil
	}
	if !b.done && b.err == nil {
		b.err = errBodyClosed
	}
	return nil
}

var errBodyClosed = io.ErrClosedPipe

func (b *bodyReader) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	if b.err != nil {
		return 0, b.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	switch b.kind {
	case httpwire.BodyLength:
		return b.readLength(p)
	case httpwire.BodyChunked:
		return b.readChunked(p)
	default:
		return b.readUntilClose(p)
	}
}

func (b *bodyReader) readLength(p []byte) (int, error) {
	c := b.c
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	var n int
	if buf := c.buffered(); len(buf) > 0 {
		n = copy(p, buf)
		c.consume(n)
	} else {
		if len(p) < directRead {
			if err := c.fill(&b.wt); err != nil {
				return 0, b.fail(err)
			}
			n = copy(p, c.buffered())
			c.consume(n)
		} else {
			var err error
			if n, err = c.read(p, &b.wt); err != nil {
				return 0, b.fail(err)
			}
		}
	}
	b.left -= int64(n)
	if b.left == 0 {
		b.finish()
	}
	return n, nil
}

func (b *bodyReader) readChunked(p []byte) (int, error) {
	c := b.c
	for {
		if left := b.dec.DataLeft(); left > 0 && len(c.buffered()) == 0 && len(p) >= directRead {
			n, err := c.read(p[:min(uint64(len(p)), left)], &b.wt)
			if err != nil {
				return 0, b.fail(err)
			}
			b.dec.ConsumeData(n)
			return n, nil
		}
		if len(c.buffered()) == 0 {
			if err := c.fill(&b.wt); err != nil {
				return 0, b.fail(err)
			}
		}
		n, data, err := b.dec.Decode(c.buffered(), len(p))
		copy(p, data)
		c.consume(n)
		if err == io.EOF {
			b.takeTrailers()
			b.finish()
			if len(data) > 0 {
				return len(data), nil
			}
			return 0, io.EOF
		}
		if err != nil {
			return 0, b.fail(err)
		}
		if len(data) > 0 {
			return len(data), nil
		}
	}
}

func (b *bodyReader) readUntilClose(p []byte) (int, error) {
	c := b.c
	if buf := c.buffered(); len(buf) > 0 {
		n := copy(p, buf)
		c.consume(n)
		return n, nil
	}
	n, err := c.read(p, &b.wt)
	if n > 0 {
		return n, nil
	}
	if err == io.EOF {
		b.keep = false
		b.finish()
		return 0, io.EOF
	}
	return 0, b.fail(err)
}

// takeTrailers copies the trailer fields out of the decoder before the
// connection (and the decoder's storage) is reused.
func (b *bodyReader) takeTrailers() {
	tr := b.dec.Trailers()
	if len(tr) == 0 {
		return
	}
	b.trailer = make(http.Header, len(tr))
	for _, f := range tr {
		k := http.CanonicalHeaderKey(string(f.Name))
		b.trailer[k] = append(b.trailer[k], string(f.Value))
	}
}
