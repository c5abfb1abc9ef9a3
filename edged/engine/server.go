package engine

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgeapp/edgeapp/edged/h2"
)

// Options configure a Server. Zero durations mean no timeout.
type Options struct {
	Handler http.Handler
	// ReadHeaderTimeout bounds reading a request head, from its first byte
	// (and a TLS handshake); IdleTimeout the wait for the next request on
	// a kept-alive connection (and a new connection's first request).
	ReadHeaderTimeout time.Duration
	IdleTimeout       time.Duration
	// ClientBodyTimeout and SendTimeout bound the time between two
	// successful reads of a request body and between two successful
	// writes of a response, as nginx's client_body_timeout and
	// send_timeout do; a slow but steady client is never cut off.
	ClientBodyTimeout time.Duration
	SendTimeout       time.Duration
	// ReadTimeout bounds a whole request (head and body) and WriteTimeout
	// a whole exchange, as net/http's fields of the same names.
	ReadTimeout  time.Duration
	WriteTimeout time.Duration
	// MaxHeaderBytes bounds a request head (request line and fields);
	// larger heads are answered 431. Default 64 KiB.
	MaxHeaderBytes int
	// H2C serves HTTP/2 with prior knowledge on plain connections.
	H2C bool
	// ConnState is called as connections change state, with the values
	// and the meaning net/http gives them.
	ConnState func(net.Conn, http.ConnState)
	// Log receives one line per refused request and handler panic (debug
	// and error levels).
	Log *slog.Logger
	// DrainQuiet is how long Shutdown lets an idle connection stay open
	// in case a request is already on its way. Default 500ms.
	DrainQuiet time.Duration

	parkAfter time.Duration // tests; default parkAfter
}

// Server serves HTTP/1.1 (and HTTP/2 through ALPN or prior knowledge) on
// the listeners given to Serve, with one goroutine per connection.
type Server struct {
	o        Options
	h2       *h2.Server
	bufs     *bufPools
	mu       sync.Mutex
	lns      map[net.Listener]struct{}
	conns    map[*conn]struct{}
	closing  atomic.Bool // Shutdown or Close began: no new connections, close after each response
	wg       sync.WaitGroup
	date     dateCache
	baseCtx  context.Context
	cancelFn context.CancelFunc
	park     atomic.Pointer[parker] // park.go; nil until a connection is first parked
	parkOnce sync.Once
}

// ErrServerClosed is what Serve returns after Shutdown or Close.
var ErrServerClosed = http.ErrServerClosed

const defaultMaxHeaderBytes = 64 << 10

// New returns a Server; it serves nothing until Serve.
func New(o Options) *Server {
	if o.MaxHeaderBytes <= 0 {
		o.MaxHeaderBytes = defaultMaxHeaderBytes
	}
	if o.DrainQuiet <= 0 {
		o.DrainQuiet = 500 * time.Millisecond
	}
	if o.parkAfter <= 0 {
		o.parkAfter = parkAfter
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	s := &Server{o: o, lns: map[net.Listener]struct{}{}, conns: map[*conn]struct{}{}}
	s.bufs = newBufPools(o.MaxHeaderBytes)
	s.baseCtx, s.cancelFn = context.WithCancel(context.Background())
	s.h2 = h2.New(h2.Options{
		Handler:           o.Handler,
		BaseContext:       s.baseCtx,
		PrefaceTimeout:    cmp.Or(o.ReadHeaderTimeout, o.IdleTimeout),
		IdleTimeout:       o.IdleTimeout,
		ClientBodyTimeout: o.ClientBodyTimeout,
		SendTimeout:       o.SendTimeout,
		ReadTimeout:       o.ReadTimeout,
		WriteTimeout:      o.WriteTimeout,
		MaxHeaderBytes:    o.MaxHeaderBytes,
		Log:               o.Log,
	})
	return s
}

// Serve accepts connections on ln until Shutdown or Close. Connections
// that are *tls.Conn (tls.NewListener) are handshaken in their own
// goroutine and served HTTP/2 when ALPN chose "h2".
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.lns[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.lns, ln)
		s.mu.Unlock()
	}()
	var backoff time.Duration
	for {
		rwc, err := ln.Accept()
		if err != nil {
			if s.closing.Load() {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				// EMFILE and the like: wait, as net/http does.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.o.Log.Warn("accepting a connection failed; retrying", "addr", ln.Addr().String(), "err", err, "retry_in", backoff)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		c := s.newConn(rwc)
		if c == nil {
			continue
		}
		go c.serve()
	}
}

func isTemporary(err error) bool {
	t, ok := err.(interface{ Temporary() bool })
	return ok && t.Temporary()
}

func (s *Server) newConn(rwc net.Conn) *conn {
	c := newConn(s, rwc)
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		rwc.Close()
		return nil
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	c.setState(http.StateNew)
	return c
}

func (s *Server) forget(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.wg.Done()
}

func (s *Server) closeListeners() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closing.Store(true)
	for ln := range s.lns {
		ln.Close()
	}
}

// Shutdown stops accepting and drains: every response from now on closes
// its connection; a connection that is idle and has been quiet for
// DrainQuiet is closed, one with a request in progress (or just opened) is
// left to finish, so a request already on its way is not lost. HTTP/2
// connections get a GOAWAY. When ctx ends first, the remaining
// connections are closed and ctx's error returned.
func (s *Server) Shutdown(ctx context.Context) error {
	s.closeListeners()
	s.h2.Shutdown() // GOAWAY on HTTP/2 connections
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		if s.closeQuiet() == 0 {
			s.cancelFn()
			return nil
		}
		select {
		case <-ctx.Done():
			s.Close()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// closeQuiet closes idle connections quiet for DrainQuiet and returns how
// many connections remain.
func (s *Server) closeQuiet() int {
	now := time.Now().UnixNano()
	s.mu.Lock()
	defer s.mu.Unlock()
	var parked []*conn
	for c := range s.conns {
		if http.ConnState(c.state.Load()) == http.StateIdle && now-c.since.Load() >= int64(s.o.DrainQuiet) {
			if s.park.Load().take(c) {
				parked = append(parked, c)
			} else {
				c.rwc.Close()
			}
		}
	}
	n := len(s.conns)
	s.mu.Unlock()
	for _, c := range parked {
		if c.requestWaiting() {
			// Readable before the parker got to it: a request already on
			// its way is served (its response closes the connection).
			c.since.Store(time.Now().UnixNano())
			go c.loop()
			continue
		}
		c.closeParked() // forgets c: takes mu
		n--
	}
	s.mu.Lock()
	return n
}

// Close closes the listeners and every connection at once.
func (s *Server) Close() error {
	s.closeListeners()
	s.mu.Lock()
	var parked []*conn
	for c := range s.conns {
		if s.park.Load().take(c) {
			parked = append(parked, c)
			continue
		}
		c.rwc.Close()
		if x := c.rctx.Load(); x != nil {
			x.cancel(context.Canceled)
		}
	}
	s.mu.Unlock()
	for _, c := range parked {
		c.closeParked()
	}
	s.park.Load().stop()
	s.cancelFn()
	return nil
}

// dateCache holds the Date field line, formatted once a second.
type dateCache struct {
	line atomic.Pointer[dateLine]
}

type dateLine struct {
	sec int64
	b   []byte
}

func (d *dateCache) get(now time.Time) []byte {
	sec := now.Unix()
	if l := d.line.Load(); l != nil && l.sec == sec {
		return l.b
	}
	b := append([]byte("Date: "), now.UTC().AppendFormat(nil, http.TimeFormat)...)
	b = append(b, '\r', '\n')
	d.line.Store(&dateLine{sec: sec, b: b})
	return b
}

// tlsState returns the connection state of a TLS connection once.
func tlsState(c *tls.Conn) *tls.ConnectionState {
	st := c.ConnectionState()
	return &st
}

// The values of [server] engine.
const (
	// Edged is this package's engine.
	Edged = "edged"
	// NetHTTP is Go's net/http server, kept selectable as a fallback.
	NetHTTP = "net/http"
	// Default is the engine edged uses unless configured otherwise.
	Default = Edged
)

// CheckName validates a [server] engine value.
func CheckName(name string) error {
	if name != Edged && name != NetHTTP {
		return fmt.Errorf("%q: want %q or %q", name, Edged, NetHTTP)
	}
	return nil
}
