package proxy

import (
	"context"
	"errors"
	"net"
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
