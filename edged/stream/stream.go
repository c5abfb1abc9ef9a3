// Package stream proxies TCP connections ([[stream]] in edged.toml): each
// client connection is joined to a connection to one server of an upstream
// pool (edged/proxy's balancing, passive and active health), optionally
// with TLS terminated by edged with its managed certificates, TLS to the
// server, a PROXY protocol header to the server, and, for mail, the
// STARTTLS dialogue spoken by edged (edged/mail).
//
// A Server owns its listeners for the life of the process. Its Settings
// (pool, certificates, timeouts) are swapped on reload and apply to new
// connections; connections already joined keep going. Stop closes the
// listeners and waits for the connections until a deadline, then closes
// them.
package stream

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgeapp/edgeapp/edged/mail"
	"github.com/edgeapp/edgeapp/edged/proxy"
	"github.com/edgeapp/edgeapp/edged/proxyproto"
)

// Defaults.
const (
	DefaultIdleTimeout      = 10 * time.Minute // nginx proxy_timeout
	DefaultHandshakeTimeout = 10 * time.Second // TLS handshake and each pre-STARTTLS command
)

// Settings are what a reload may change: they apply to connections
// accepted from then on.
type Settings struct {
	Pool *proxy.Pool
	// TLS terminates TLS from the client (nil: bytes pass through).
	TLS *tls.Config
	// StartTLS: the mail protocol (mail.IMAP, POP3, SMTP) whose STARTTLS
	// edged speaks before the handshake; "" for implicit TLS or none.
	StartTLS string
	Hostname string // in mail greetings
	// UpstreamTLS, if set, encrypts the connection to the server.
	UpstreamTLS *tls.Config
	// SendProxy: 1 or 2 sends a PROXY header of that version first.
	SendProxy        int
	IdleTimeout      time.Duration
	HandshakeTimeout time.Duration
}

// Metrics are counted per stream.
type Metrics struct {
	Active   func(delta int)     // connections open
	Finished func(result string) // ok, tls_failed, refused, upstream_failed, client_quit
	Bytes    func(in, out int64) // from and to the client
	Log      *slog.Logger
}

// Server is one [[stream]].
type Server struct {
	name string
	lns  []net.Listener
	cur  atomic.Pointer[Settings]
	m    Metrics
	log  *slog.Logger

	wg      sync.WaitGroup
	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	closing bool
}

// New makes a stream over lns with the first settings.
func New(name string, lns []net.Listener, st *Settings, m Metrics) *Server {
	s := &Server{name: name, lns: lns, m: m, log: m.Log, conns: map[net.Conn]struct{}{}}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.log = s.log.With("stream", name)
	s.Update(st)
	return s
}

// Update swaps the settings for new connections.
func (s *Server) Update(st *Settings) {
	c := *st
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = DefaultHandshakeTimeout
	}
	s.cur.Store(&c)
}

// Listeners are the stream's listeners.
func (s *Server) Listeners() []net.Listener { return s.lns }

// Serve accepts on every listener until Stop; errors other than closing
// are sent to errc.
func (s *Server) Serve(errc chan<- error) {
	for _, ln := range s.lns {
		go func() {
			var delay time.Duration
			for {
				c, err := ln.Accept()
				if err != nil {
					if s.isClosing() {
						return
					}
					var ne net.Error
					if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
						delay = min(max(2*delay, 5*time.Millisecond), time.Second)
						s.log.Warn("accepting a connection failed; retrying", "err", err, "retry_in", delay)
						time.Sleep(delay)
						continue
					}
					errc <- fmt.Errorf("stream %s: accepting on %s: %w", s.name, ln.Addr(), err)
					return
				}
				delay = 0
				if !s.track(c) {
					c.Close()
					return
				}
				go s.handle(c)
			}
		}()
	}
}

func isTemporary(err error) bool {
	t, ok := err.(interface{ Temporary() bool })
	return ok && t.Temporary()
}

func (s *Server) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

func (s *Server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1) // under the lock: Stop's Wait starts only after closing is set
	return true
}

func (s *Server) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// Stop closes the listeners, waits for open connections until ctx is done,
// then closes the rest. It returns how many it had to close.
func (s *Server) Stop(ctx context.Context) int {
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
	for _, ln := range s.lns {
		ln.Close()
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return 0
	case <-ctx.Done():
	}
	s.mu.Lock()
	n := len(s.conns)
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	<-done
	return n
}

// handle serves one client connection to its end.
func (s *Server) handle(raw net.Conn) {
	defer s.wg.Done()
	defer s.untrack(raw)
	defer raw.Close()
	st := s.cur.Load()
	s.m.Active(1)
	defer s.m.Active(-1)
	start := time.Now()
	client := raw.RemoteAddr()
	c := raw
	if st.StartTLS != "" {
		if err := mail.Front(raw, st.StartTLS, st.Hostname, st.HandshakeTimeout); err != nil {
			if errors.Is(err, mail.ErrQuit) {
				s.m.Finished("client_quit")
			} else {
				s.log.Debug("stream: client left before STARTTLS", "client", client.String(), "err", err)
				s.m.Finished("refused")
			}
			return
		}
	}
	if st.TLS != nil {
		tc := tls.Server(raw, st.TLS)
		ctx, cancel := context.WithTimeout(context.Background(), st.HandshakeTimeout)
		err := tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			s.log.Debug("stream: TLS handshake failed", "client", client.String(), "err", err)
			s.m.Finished("tls_failed")
			return
		}
		c = tc
	}
	up, err := s.dial(st, raw)
	if err != nil {
		s.log.Warn("stream: no upstream server took the connection; closing it", "client", client.String(), "err", err)
		if st.StartTLS != "" {
			c.SetWriteDeadline(time.Now().Add(st.HandshakeTimeout))
			io.WriteString(c, mail.Unavailable(st.StartTLS, st.Hostname))
		}
		s.m.Finished("upstream_failed")
		return
	}
	defer up.Close()
	if st.StartTLS != "" {
		if err := mail.Back(up, st.StartTLS, st.HandshakeTimeout); err != nil {
			s.log.Warn("stream: the mail server did not greet; closing the connection", "client", client.String(), "server", up.Addr, "err", err)
			c.SetWriteDeadline(time.Now().Add(st.HandshakeTimeout))
			io.WriteString(c, mail.Unavailable(st.StartTLS, st.Hostname))
			s.m.Finished("upstream_failed")
			return
		}
	}
	in, out := join(c, up, st.IdleTimeout)
	s.m.Bytes(in, out)
	s.m.Finished("ok")
	if in == 0 && out == 0 {
		// The server closed before a byte either way: count it for
		// passive health, as a refused connection would be.
		up.Fail(errors.New("closed the connection before sending anything"))
	}
	s.log.Debug("stream closed", "client", client.String(), "server", up.Addr, "bytes_in", in, "bytes_out", out, "duration", time.Since(start))
}

// dial connects to a server, sends the PROXY header and starts TLS to it
// as configured.
func (s *Server) dial(st *Settings, client net.Conn) (*proxy.StreamConn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), st.HandshakeTimeout+30*time.Second)
	defer cancel()
	up, err := st.Pool.DialStream(ctx, client.RemoteAddr().String())
	if err != nil {
		return nil, err
	}
	if st.SendProxy != 0 {
		up.SetWriteDeadline(time.Now().Add(st.HandshakeTimeout))
		if err := proxyproto.WriteHeader(up, st.SendProxy, client.RemoteAddr(), client.LocalAddr()); err != nil {
			up.Close()
			return nil, err
		}
		up.SetWriteDeadline(time.Time{})
	}
	if st.UpstreamTLS != nil {
		tc := tls.Client(up.Conn, st.UpstreamTLS)
		hctx, hcancel := context.WithTimeout(ctx, st.HandshakeTimeout)
		err := tc.HandshakeContext(hctx)
		hcancel()
		if err != nil {
			up.Fail(err)
			up.Close()
			return nil, fmt.Errorf("TLS to %s: %w", up.Addr, err)
		}
		up.Conn = tc
	}
	return up, nil
}

var bufs = sync.Pool{New: func() any { b := make([]byte, 16<<10); return &b }}

// join copies both ways until both sides are done, or one fails, or
// neither sends anything for idle. It returns the bytes from the client
// (in) and to it (out).
func join(client net.Conn, up *proxy.StreamConn, idle time.Duration) (in, out int64) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		out = pipe(client, up.Conn, idle, client)
	}()
	in = pipe(up.Conn, client, idle, up.Conn)
	wg.Wait()
	return in, out
}

// pipe copies src to dst with an idle deadline per read. At src's end it
// half-closes dst so the other direction can finish; on an error it closes
// both, which ends the other direction too.
func pipe(dst io.Writer, src net.Conn, idle time.Duration, dstConn net.Conn) int64 {
	bp := bufs.Get().(*[]byte)
	defer bufs.Put(bp)
	buf := *bp
	var n int64
	for {
		src.SetReadDeadline(time.Now().Add(idle))
		r, err := src.Read(buf)
		if r > 0 {
			dstConn.SetWriteDeadline(time.Now().Add(idle))
			w, werr := dst.Write(buf[:r])
			n += int64(w)
			if werr != nil {
				src.Close()
				dstConn.Close()
				return n
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				if cw, ok := dstConn.(interface{ CloseWrite() error }); ok {
					cw.CloseWrite()
					return n
				}
			}
			src.Close()
			dstConn.Close()
			return n
		}
	}
}
