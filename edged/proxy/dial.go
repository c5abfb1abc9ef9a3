package proxy

import (
	"context"
	"errors"
	"net"
	"net/http/httptrace"
	"sync/atomic"
)

// DialError is a failure to connect to an upstream server, made where the
// connection is dialled (as Caddy's transport does): nothing of the request
// can have reached the server, so the request may go to another one. Retry
// decisions test for this type, never for an error's text.
type DialError struct {
	Addr string // the server, as configured
	Err  error
}

// Error is the dialler's own message, which names the network and address
// ("dial tcp 10.0.0.5:8000: connect: connection refused").
func (e *DialError) Error() string { return e.Err.Error() }
func (e *DialError) Unwrap() error { return e.Err }

// Timeout reports whether connecting timed out (connect_timeout).
func (e *DialError) Timeout() bool {
	var ne net.Error
	return errors.As(e.Err, &ne) && ne.Timeout()
}

// dialer returns a dial function for one server whose errors are
// *DialError.
func dialer(d *net.Dialer, addr, network, address string) func(context.Context) (net.Conn, error) {
	return func(ctx context.Context) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, address)
		if err != nil {
			return nil, &DialError{Addr: addr, Err: err}
		}
		return c, nil
	}
}

// countedConn is a pooled upstream connection that counts the bytes written
// to it, so that after a failed exchange the handler can tell whether any
// of the request left (see sentNothing).
type countedConn struct {
	net.Conn
	written atomic.Int64
}

func (c *countedConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.written.Add(int64(n))
	return n, err
}

// attemptTrace watches one attempt's connection. net/http's Transport
// resends a request by itself when a kept-alive connection turns out closed
// before anything was written, but only if it can replay the body; for a
// streamed body it returns the error, and the handler may still send the
// request elsewhere if no byte of it left.
type attemptTrace struct {
	conn   *countedConn
	reused bool
	before int64
}

func (a *attemptTrace) clientTrace() *httptrace.ClientTrace {
	return &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
		if c, ok := info.Conn.(*countedConn); ok {
			a.conn, a.reused, a.before = c, info.Reused, c.written.Load()
		}
	}}
}

// sentNothing reports whether the attempt failed on a kept-alive connection
// before any of its bytes were written.
func (a *attemptTrace) sentNothing() bool {
	return a.conn != nil && a.reused && a.conn.written.Load() == a.before
}
