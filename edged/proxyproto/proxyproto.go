// Package proxyproto accepts the PROXY protocol (HAProxy's, versions 1 and
// 2) on edged's listeners and sends it to upstream servers.
//
// Accepting is a listener wrapper: a connection from a trusted sender must
// open with a PROXY header, which is read and checked before the
// connection is handed on, so every engine above it (edged's HTTP/1.1
// engine, net/http, HTTP/2, the stream proxy) sees the client's address in
// RemoteAddr and never a half-read connection. A connection from anyone
// else is closed at once: a listener that takes PROXY headers is meant for
// the load balancer in front, and a direct client could otherwise claim any
// address. Headers are read on a goroutine of their own, so a slow sender
// never holds up Accept for the others.
//
// A v2 LOCAL header (the balancer's own health checks) and an UNSPEC
// address family keep the sender's own address, as the specification says.
// The local address stays the socket's own.
//
// The header parser is github.com/pires/go-proxyproto's.
package proxyproto

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	pp "github.com/pires/go-proxyproto"
)

// DefaultTimeout bounds how long a trusted sender may take to send the
// header after connecting.
const DefaultTimeout = 5 * time.Second

// Reasons a connection is refused (labels of the refusal counter).
const (
	ReasonUntrusted = "untrusted"  // the peer is not a trusted sender
	ReasonNoHeader  = "no_header"  // a trusted peer sent no PROXY header in time
	ReasonBadHeader = "bad_header" // the header did not parse
)

// Options configure a Listener.
type Options struct {
	// Trusted lists the senders that may (and must) send a header; an
	// empty list refuses every connection.
	Trusted []netip.Prefix
	// Timeout for the header; default DefaultTimeout.
	Timeout time.Duration
	// Refused, if set, is called once per refused connection.
	Refused func(reason string)
	Log     *slog.Logger
	Name    string // listener name for log lines ("https", a stream's name)
}

// Listener hands out connections whose PROXY header has been read.
type Listener struct {
	inner   net.Listener
	trusted atomic.Pointer[[]netip.Prefix]
	timeout time.Duration
	refused func(string)
	log     *slog.Logger
	name    string

	ready    chan net.Conn
	errc     chan error // the inner listener's permanent error
	done     chan struct{}
	closeErr error
	once     sync.Once

	mu      sync.Mutex
	pending map[net.Conn]struct{} // connections whose header is being read
}

// NewListener wraps ln and starts accepting on it.
func NewListener(ln net.Listener, o Options) *Listener {
	l := &Listener{
		inner: ln, timeout: o.Timeout, refused: o.Refused, log: o.Log, name: o.Name,
		ready: make(chan net.Conn), errc: make(chan error, 1), done: make(chan struct{}),
		pending: map[net.Conn]struct{}{},
	}
	if l.timeout <= 0 {
		l.timeout = DefaultTimeout
	}
	if l.log == nil {
		l.log = slog.New(slog.DiscardHandler)
	}
	l.SetTrusted(o.Trusted)
	go l.acceptLoop()
	return l
}

// SetTrusted replaces the trusted senders for connections accepted from
// now on (a reload).
func (l *Listener) SetTrusted(p []netip.Prefix) {
	cp := append([]netip.Prefix(nil), p...)
	l.trusted.Store(&cp)
}

// Accept returns the next connection whose header has been read.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ready:
		return c, nil
	case err := <-l.errc:
		l.errc <- err // every later Accept fails the same way
		return nil, err
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close stops accepting and closes the connections whose header has not
// arrived yet.
func (l *Listener) Close() error {
	l.once.Do(func() {
		close(l.done)
		l.closeErr = l.inner.Close()
		l.mu.Lock()
		for c := range l.pending {
			c.Close()
		}
		l.mu.Unlock()
	})
	return l.closeErr
}

// Addr is the inner listener's address.
func (l *Listener) Addr() net.Addr { return l.inner.Addr() }

func (l *Listener) acceptLoop() {
	var delay time.Duration
	for {
		c, err := l.inner.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				// Out of descriptors and the like: back off as net/http does.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				l.log.Warn("accepting a connection failed; retrying", "listener", l.name, "err", err, "retry_in", delay)
				select {
				case <-time.After(delay):
					continue
				case <-l.done:
					return
				}
			}
			l.errc <- err
			return
		}
		delay = 0
		if !l.isTrusted(c.RemoteAddr()) {
			l.refuse(c, ReasonUntrusted, nil)
			continue
		}
		l.mu.Lock()
		select {
		case <-l.done:
			l.mu.Unlock()
			c.Close()
			return
		default:
		}
		l.pending[c] = struct{}{}
		l.mu.Unlock()
		go l.handshake(c)
	}
}

func isTemporary(err error) bool {
	t, ok := err.(interface{ Temporary() bool })
	return ok && t.Temporary()
}

func (l *Listener) isTrusted(a net.Addr) bool {
	ip := addrOf(a)
	if !ip.IsValid() {
		return false
	}
	for _, p := range *l.trusted.Load() {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

func addrOf(a net.Addr) netip.Addr {
	switch t := a.(type) {
	case *net.TCPAddr:
		ip, _ := netip.AddrFromSlice(t.IP)
		return ip.Unmap()
	case *net.UDPAddr:
		ip, _ := netip.AddrFromSlice(t.IP)
		return ip.Unmap()
	}
	if ap, err := netip.ParseAddrPort(a.String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

// handshake reads c's header and hands c on, or refuses it.
func (l *Listener) handshake(c net.Conn) {
	conn, reason, err := readHeader(c, l.timeout)
	l.mu.Lock()
	delete(l.pending, c)
	l.mu.Unlock()
	if err != nil {
		l.refuse(c, reason, err)
		return
	}
	select {
	case l.ready <- conn:
	case <-l.done:
		c.Close()
	}
}

func (l *Listener) refuse(c net.Conn, reason string, err error) {
	if reason == ReasonUntrusted {
		l.log.Debug("PROXY protocol listener: connection from an untrusted address refused", "listener", l.name, "peer", c.RemoteAddr().String())
	} else {
		l.log.Info("PROXY protocol listener: connection refused", "listener", l.name, "peer", c.RemoteAddr().String(), "reason", reason, "err", err)
	}
	// Counted before the close, so that whoever sees the close sees it
	// counted (the integration test reads the metric right after).
	if l.refused != nil {
		l.refused(reason)
	}
	c.Close()
}

// headerBuf holds a whole v1 line (107 bytes) and a v2 header with its
// usual TLVs without refilling.
const headerBuf = 512

// readHeader reads the PROXY header at the start of c within timeout.
func readHeader(c net.Conn, timeout time.Duration) (*Conn, string, error) {
	c.SetReadDeadline(time.Now().Add(timeout))
	br := bufio.NewReaderSize(c, headerBuf)
	h, err := pp.Read(br)
	if err != nil {
		var ne net.Error
		if errors.Is(err, pp.ErrNoProxyProtocol) || errors.As(err, &ne) && ne.Timeout() || errors.Is(err, io.EOF) {
			return nil, ReasonNoHeader, fmt.Errorf("no PROXY protocol header: %w", err)
		}
		return nil, ReasonBadHeader, err
	}
	if err := c.SetReadDeadline(time.Time{}); err != nil {
		return nil, ReasonNoHeader, err
	}
	conn := &Conn{Conn: c, remote: c.RemoteAddr(), header: h}
	if n := br.Buffered(); n > 0 {
		b, _ := br.Peek(n)
		conn.rest = append([]byte(nil), b...)
	}
	if h.Command.IsProxy() && h.SourceAddr != nil {
		switch h.SourceAddr.(type) {
		case *net.TCPAddr, *net.UDPAddr:
			conn.remote, conn.proxied = h.SourceAddr, true
		}
	}
	return conn, "", nil
}

// Conn is a connection whose PROXY header has been read: RemoteAddr is
// the client the header named.
type Conn struct {
	net.Conn
	remote  net.Addr
	header  *pp.Header
	proxied bool
	rest    []byte // read past the header with it
}

// RemoteAddr is the client's address from the header (the sender's own
// for LOCAL and UNSPEC headers).
func (c *Conn) RemoteAddr() net.Addr { return c.remote }

// Proxied reports whether the header named a client (not LOCAL or UNSPEC).
func (c *Conn) Proxied() bool { return c.proxied }

// Header is the PROXY header as received (for its TLVs).
func (c *Conn) Header() *pp.Header { return c.header }

// NetConn is the connection below, as tls.Conn's NetConn (sendfile, TCP
// options). Read past the header goes through c, never through it.
func (c *Conn) NetConn() net.Conn { return c.Conn }

func (c *Conn) Read(p []byte) (int, error) {
	if len(c.rest) > 0 {
		n := copy(p, c.rest)
		c.rest = c.rest[n:]
		if len(c.rest) == 0 {
			c.rest = nil
		}
		return n, nil
	}
	return c.Conn.Read(p)
}

// ReadFrom keeps sendfile and splice to the client.
func (c *Conn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{c.Conn}, r)
}

// WriteTo keeps splice from the client once the bytes read with the header
// are out.
func (c *Conn) WriteTo(w io.Writer) (int64, error) {
	var n int64
	if len(c.rest) > 0 {
		m, err := w.Write(c.rest)
		n += int64(m)
		c.rest = c.rest[m:]
		if err != nil {
			return n, err
		}
		c.rest = nil
	}
	if wt, ok := c.Conn.(io.WriterTo); ok {
		m, err := wt.WriteTo(w)
		return n + m, err
	}
	m, err := io.Copy(w, struct{ io.Reader }{c.Conn})
	return n + m, err
}
