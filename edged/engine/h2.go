package engine

import (
	"net"
	"net/http"
	"sync"
	"unsafe"
)

// serveH2 hands the connection to edged/h2 with the same handler. The
// connection counts as busy for Shutdown until the HTTP/2 server returns;
// Shutdown's GOAWAY makes it finish its streams and close.
func (c *conn) serveH2(nc net.Conn) {
	c.deactivate() // edged/h2 keeps its own state
	c.setState(http.StateActive)
	c.s.h2.ServeConn(nc, c.tlsState)
}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// unsafeBytes views s as bytes that nobody writes to.
func unsafeBytes(s string) []byte {
	return unsafe.Slice(unsafe.StringData(s), len(s))
}
