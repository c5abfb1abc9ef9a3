package server

import (
	"io"
	"sync/atomic"
	"time"
)

// countingBody counts the request body bytes read, for the access log's
// bytes_in, whoever reads them (proxy, buffering, an auth check). The
// count is atomic and the body its own allocation because an upstream
// transport may still read it after the handler returned.
type countingBody struct {
	io.ReadCloser
	n atomic.Int64

	// client_body_timeout (see deadlines.go); dl nil: none. Only the
	// reading goroutine touches these.
	dl      deadliner
	timeout time.Duration
	armed   time.Time
	done    atomic.Bool // read to the end; the transport may read after the handler returned
}

func (b *countingBody) Read(p []byte) (int, error) {
	if b.dl != nil {
		b.armRead()
	}
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	if err != nil && b.dl != nil {
		b.bodyDone(err)
	}
	return n, err
}
