// Package connlimit caps client connections: how many edged holds at once
// (max_connections) and how many one client address may hold
// (max_connections_per_ip), so that one client, or a flood, cannot take
// every file descriptor. It is a listener wrapper, so every engine (edged's
// own HTTP/1.1 engine, net/http, HTTP/2 over TLS) is held to the same caps.
//
// A connection over a cap is answered with a short 503 on a plain HTTP
// listener (a TLS listener cannot say anything before the handshake, so
// its connections are closed) and counted. Peers in trusted_proxies are
// exempt from the per-address cap: a load balancer in front carries many
// clients on its own address. The global cap applies to everyone.
//
// The per-address cap needs the real client address in RemoteAddr: a PROXY
// protocol listener goes below this one.
package connlimit

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of [server] max_connections and max_connections_per_ip.
const (
	DefaultMax   = 16384
	DefaultPerIP = 256
)

// Limits are the caps in force; 0 means no cap.
type Limits struct {
	Max    int
	PerIP  int
	Exempt []netip.Prefix // peers without a per-address cap
}

// Reasons a connection is refused, the label of the refusal counter.
const (
	ReasonMax   = "max_connections"
	ReasonPerIP = "max_connections_per_ip"
)

// politeMax bounds the refusals answered with a 503 at the same time; past
// it (a flood) connections are closed at once, so refusing costs nothing
// that grows with the attack.
const politeMax = 64

// Limiter counts the connections of every listener it wraps against one
// set of Limits. Limits may change while it runs (a reload): connections
// already open stay, new ones are held to the new caps.
type Limiter struct {
	limits atomic.Pointer[Limits]
	total  atomic.Int64

	mu    sync.Mutex
	perIP map[netip.Addr]int32

	polite       atomic.Int32
	refusedMax   atomic.Uint64
	refusedPerIP atomic.Uint64
}

// New returns a Limiter enforcing l.
func New(l Limits) *Limiter {
	lim := &Limiter{perIP: map[netip.Addr]int32{}}
	lim.SetLimits(l)
	return lim
}

// SetLimits replaces the caps for connections accepted from now on.
func (l *Limiter) SetLimits(lim Limits) { l.limits.Store(&lim) }

// Open is the number of connections held now.
func (l *Limiter) Open() int64 { return l.total.Load() }

// Refused counts the connections refused for reason since start.
func (l *Limiter) Refused(reason string) uint64 {
	if reason == ReasonPerIP {
		return l.refusedPerIP.Load()
	}
	return l.refusedMax.Load()
}

// Listener wraps ln. answer503 says the listener speaks plain HTTP, so a
// refused connection can be told why.
func (l *Limiter) Listener(ln net.Listener, answer503 bool) net.Listener {
	return &listener{Listener: ln, lim: l, answer: answer503}
}

type listener struct {
	net.Listener
	lim    *Limiter
	answer bool
}

func (ln *listener) Accept() (net.Conn, error) {
	for {
		c, err := ln.Listener.Accept()
		if err != nil {
			return nil, err
		}
		addr, reason := ln.lim.admit(c.RemoteAddr())
		if reason == "" {
			return &conn{Conn: c, lim: ln.lim, addr: addr}, nil
		}
		ln.lim.refuse(c, reason, ln.answer)
	}
}

// admit counts a new connection, or returns why it may not be held.
func (l *Limiter) admit(ra net.Addr) (netip.Addr, string) {
	lim := l.limits.Load()
	if n := l.total.Add(1); lim.Max > 0 && n > int64(lim.Max) {
		l.total.Add(-1)
		return netip.Addr{}, ReasonMax
	}
	a := peerAddr(ra)
	if !a.IsValid() || lim.PerIP <= 0 || exempt(lim.Exempt, a) {
		return netip.Addr{}, ""
	}
	l.mu.Lock()
	n := l.perIP[a]
	if int(n) >= lim.PerIP {
		l.mu.Unlock()
		l.total.Add(-1)
		return netip.Addr{}, ReasonPerIP
	}
	l.perIP[a] = n + 1
	l.mu.Unlock()
	return a, ""
}

// release uncounts a connection admitted for addr (invalid: not counted
// per address).
func (l *Limiter) release(addr netip.Addr) {
	l.total.Add(-1)
	if !addr.IsValid() {
		return
	}
	l.mu.Lock()
	if n := l.perIP[addr] - 1; n > 0 {
		l.perIP[addr] = n
	} else {
		delete(l.perIP, addr)
	}
	l.mu.Unlock()
}

func (l *Limiter) refuse(c net.Conn, reason string, answer bool) {
	if reason == ReasonPerIP {
		l.refusedPerIP.Add(1)
	} else {
		l.refusedMax.Add(1)
	}
	if !answer || l.polite.Add(1) > politeMax {
		if answer {
			l.polite.Add(-1)
		}
		c.Close()
		return
	}
	go func() {
		defer l.polite.Add(-1)
		answer503(c, reason)
	}()
}

// answer503 tells the client why, then closes gently: the request it may
// have sent is read and dropped first, or closing with unread data would
// reset the connection and lose the answer.
func answer503(c net.Conn, reason string) {
	defer c.Close()
	body := "503 Service Unavailable: too many connections\n"
	if reason == ReasonPerIP {
		body = "503 Service Unavailable: too many connections from your address\n"
	}
	_ = c.SetDeadline(time.Now().Add(time.Second))
	_, err := io.WriteString(c, "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"+
		"Retry-After: 1\r\nConnection: close\r\nContent-Length: "+strconv.Itoa(len(body))+"\r\n\r\n"+body)
	if err != nil {
		return
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(c, 64<<10))
}

func peerAddr(a net.Addr) netip.Addr {
	switch t := a.(type) {
	case *net.TCPAddr:
		ip, ok := netip.AddrFromSlice(t.IP)
		if ok {
			return ip.Unmap()
		}
	default:
		if ap, err := netip.ParseAddrPort(a.String()); err == nil {
			return ap.Addr().Unmap()
		}
	}
	return netip.Addr{}
}

func exempt(nets []netip.Prefix, a netip.Addr) bool {
	for _, n := range nets {
		if n.Contains(a) {
			return true
		}
	}
	return false
}

// conn is a held connection; closing it (once) frees its place.
type conn struct {
	net.Conn
	lim    *Limiter
	addr   netip.Addr
	closed atomic.Bool
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	if c.closed.CompareAndSwap(false, true) {
		c.lim.release(c.addr)
	}
	return err
}

// ReadFrom keeps sendfile(2) for static files on plain TCP.
func (c *conn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{c.Conn}, r)
}

// CloseWrite lets a server half-close, and a tunnel pass a FIN through.
func (c *conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// NetConn returns the wrapped connection.
func (c *conn) NetConn() net.Conn { return c.Conn }
