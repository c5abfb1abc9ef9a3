package proxy

import (
	"context"
	"errors"
	"net"
	"time"
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
// *DialError. connect_timeout (timeout) bounds the dial and nothing else
// does: see dialContext.
func dialer(d *net.Dialer, timeout time.Duration, addr, network, address string) func(context.Context) (net.Conn, error) {
	return func(ctx context.Context) (net.Conn, error) {
		dc := &dialContext{Context: ctx}
		if timeout > 0 {
			dc.deadline = time.Now().Add(timeout)
		}
		c, err := d.DialContext(dc, network, address)
		if err != nil {
			return nil, &DialError{Addr: addr, Err: err}
		}
		return c, nil
	}
}

// dialContext is what a dial runs under: the request's values and
// connect_timeout's deadline, but not the request's cancellation. A dial
// under the request's own context made net's connect register a callback
// for its cancellation, and that asked edged's engine to watch the client
// connection for a departure (a goroutine, a peek and a poller
// registration per request), which with a server that closes after every
// response (gunicorn's sync workers) was paid on every request, for a
// wait connect_timeout bounds anyway. Its Done channel is never closed
// and AfterFunc registers nothing, so net's connect sets its deadline
// from Deadline and starts no goroutine.
type dialContext struct {
	context.Context
	deadline time.Time
}

func (c *dialContext) Deadline() (time.Time, bool)  { return c.deadline, !c.deadline.IsZero() }
func (c *dialContext) Done() <-chan struct{}        { return neverDone }
func (c *dialContext) Err() error                   { return nil }
func (c *dialContext) AfterFunc(func()) func() bool { return stopNothing }

var (
	neverDone   = make(chan struct{})
	stopNothing = func() bool { return true }
)
