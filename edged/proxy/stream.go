package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
)

// Pools also serve TCP streams (edged/stream): one client connection is
// joined to one server connection for its whole life. The server is picked
// by the pool's policy (a hash policy hashes the client address), counted
// in its in-flight connections (least_conn, max_conns) until the stream
// ends, and a failure to connect counts towards passive health and moves
// on to another server, up to Retries times.

// ErrNoServer: every server of the pool is down, at max_conns, or was
// tried.
var ErrNoServer = errors.New("no upstream server available")

// StreamConn is a connection to one server of a pool, held by a stream.
// Close ends it and uncounts it.
type StreamConn struct {
	net.Conn
	Addr string // the server, as configured
	p    *Pool
	s    *server
	once sync.Once
}

// Close closes the connection and releases the server.
func (c *StreamConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.s.release()
		c.p.done()
	})
	return err
}

// Fail records a failure of the server after connecting (it closed or
// reset the stream before sending anything), for passive health.
func (c *StreamConn) Fail(err error) { c.p.recordFailure(c.s, causeBroken, err) }

// DialStream connects to a server of p for a stream from client (an
// "ip:port" or "ip"). Connect failures are *DialError values wrapped with
// the upstream's name; every server tried is named in the log.
func (p *Pool) DialStream(ctx context.Context, client string) (*StreamConn, error) {
	p.inflight.Add(1)
	sel := selection{now: nanotime(), key: hashKey{kind: hashClientIP}, client: hostOf(client)}
	sel.keyHash = sel.hashKey()
	var lastErr error
	for attempt := 0; attempt <= p.cfg.Retries; attempt++ {
		s := p.pickAcquire(&sel)
		if s == nil {
			break
		}
		s.st.total.Add(1)
		nc, err := s.cp.rawDial(ctx) // a stream has its own upstream_tls
		if err == nil {
			p.recordSuccess(s)
			return &StreamConn{Conn: nc, Addr: s.cfg.Addr, p: p, s: s}, nil
		}
		s.release()
		p.recordFailure(s, classify(err), err)
		lastErr = err
		if ctx.Err() != nil {
			break
		}
		sel.now = nanotime()
	}
	p.done()
	if lastErr == nil {
		p.m.unavailable.WithLabelValues(p.name).Inc()
		return nil, fmt.Errorf("upstream %q: %w", p.name, ErrNoServer)
	}
	return nil, fmt.Errorf("upstream %q: %w", p.name, lastErr)
}

// probeConnect is the active check of a stream upstream: connecting.
func probeConnect(ctx context.Context, s *server) string {
	nc, err := s.cp.dial(ctx)
	if err != nil {
		return err.Error()
	}
	nc.Close()
	return ""
}

func hostOf(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}
