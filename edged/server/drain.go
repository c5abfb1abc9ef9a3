package server

import (
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// conns tracks client connections so a stop can drain them without losing
// a request. http.Server.Shutdown alone closes idle kept-alive connections
// at once (a request already on its way is lost) and drops a request it
// reads after shutdown began; clients such as wrk or a proxy in front do not
// retry either. The registry changes only when a connection opens or
// closes; per-request state changes are one atomic store.
type conns struct {
	mu  sync.Mutex
	set map[*trackedConn]struct{}
}

// trackedConn is a client connection with its latest http.ConnState.
type trackedConn struct {
	net.Conn
	state atomic.Int32 // http.ConnState
	since atomic.Int64 // unix nanoseconds of the last change
}

// ReadFrom keeps sendfile(2) for static files on plain TCP.
func (c *trackedConn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{c.Conn}, r)
}

// CloseWrite lets net/http half-close after a response it cannot finish.
func (c *trackedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

type trackingListener struct {
	net.Listener
}

func (l trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &trackedConn{Conn: c}, nil
}

func unwrapTracked(c net.Conn) *trackedConn {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	t, _ := c.(*trackedConn)
	return t
}

// connState is the http.Server.ConnState hook.
func (cs *conns) connState(c net.Conn, st http.ConnState) {
	t := unwrapTracked(c)
	if t == nil {
		return
	}
	t.state.Store(int32(st))
	t.since.Store(time.Now().UnixNano())
	switch st {
	case http.StateNew:
		cs.mu.Lock()
		if cs.set == nil {
			cs.set = map[*trackedConn]struct{}{}
		}
		cs.set[t] = struct{}{}
		cs.mu.Unlock()
	case http.StateClosed, http.StateHijacked:
		cs.mu.Lock()
		delete(cs.set, t)
		cs.mu.Unlock()
	}
}

// drain waits, until deadline, for connections to settle once the
// listeners are closed and every response says "Connection: close": it
// waits while a connection is active, new, or idle for less than quiet
// (a request may be on its way), and closes connections silent longer.
// It returns how many are still busy.
func (cs *conns) drain(deadline time.Time, quiet time.Duration) int {
	for {
		busy := 0
		now := time.Now().UnixNano()
		cs.mu.Lock()
		for t := range cs.set {
			st := http.ConnState(t.state.Load())
			switch {
			case st == http.StateActive:
				busy++
			case now-t.since.Load() < int64(quiet):
				busy++
			default:
				t.Conn.Close()
				delete(cs.set, t)
			}
		}
		cs.mu.Unlock()
		if busy == 0 || time.Now().After(deadline) {
			return busy
		}
		time.Sleep(10 * time.Millisecond)
	}
}
