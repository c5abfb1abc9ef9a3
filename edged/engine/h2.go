package engine

import (
	"net"
	"net/http"
	"sync"
	"unsafe"

	"golang.org/x/net/http2"
)

// serveH2 hands the connection to x/net/http2 with the same handler. The
// connection counts as busy for Shutdown until the HTTP/2 server returns;
// Shutdown's GOAWAY makes it finish its streams and close.
func (c *conn) serveH2(nc net.Conn) {
	c.releaseBuffers()
	c.setState(http.StateActive)
	c.s.h2.ServeConn(nc, &http2.ServeConnOpts{
		Context:    c.s.baseCtx,
		BaseConfig: c.s.h2base,
		Handler:    c.s.o.Handler,
	})
}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// unsafeBytes views s as bytes that nobody writes to.
func unsafeBytes(s string) []byte {
	return unsafe.Slice(unsafe.StringData(s), len(s))
}
