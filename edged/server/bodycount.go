package server

import (
	"io"
	"sync/atomic"
)

// countingBody counts the request body bytes read, for the access log's
// bytes_in, whoever reads them (proxy, buffering, an auth check). The
// count is atomic and the body its own allocation because an upstream
// transport may still read it after the handler returned.
type countingBody struct {
	io.ReadCloser
	n atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}
