package proxyproto

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	pp "github.com/pires/go-proxyproto"
)

type refusals struct {
	mu sync.Mutex
	n  map[string]int
	ch chan string
}

func (r *refusals) add(reason string) {
	r.mu.Lock()
	r.n[reason]++
	r.mu.Unlock()
	r.ch <- reason
}

func listen(t *testing.T, trusted ...string) (*Listener, *refusals) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var pfx []netip.Prefix
	for _, s := range trusted {
		pfx = append(pfx, netip.MustParsePrefix(s))
	}
	r := &refusals{n: map[string]int{}, ch: make(chan string, 16)}
	l := NewListener(ln, Options{Trusted: pfx, Timeout: 300 * time.Millisecond, Refused: r.add, Name: "test"})
	t.Cleanup(func() { l.Close() })
	return l, r
}

func dial(t *testing.T, l *Listener, first []byte) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if first != nil {
		if _, err := c.Write(first); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

func accept(t *testing.T, l *Listener) net.Conn {
	t.Helper()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() { c, err := l.Accept(); ch <- res{c, err} }()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatal(r.err)
		}
		t.Cleanup(func() { r.c.Close() })
		return r.c
	case <-time.After(5 * time.Second):
		t.Fatal("Accept returned nothing")
	}
	return nil
}

func header(t *testing.T, version byte, src, dst string) []byte {
	t.Helper()
	h := pp.HeaderProxyFromAddrs(version, net.TCPAddrFromAddrPort(netip.MustParseAddrPort(src)), net.TCPAddrFromAddrPort(netip.MustParseAddrPort(dst)))
	b, err := h.Format()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestHeaderGivesTheClientAddress(t *testing.T) {
	for _, tc := range []struct {
		name    string
		version byte
		src     string
	}{
		{"v1 IPv4", 1, "203.0.113.7:51234"},
		{"v2 IPv4", 2, "203.0.113.8:40000"},
		{"v1 IPv6", 1, "[2001:db8::1]:443"},
		{"v2 IPv6", 2, "[2001:db8::2]:80"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, _ := listen(t, "127.0.0.0/8")
			dst := "198.51.100.1:443"
			if tc.src[0] == '[' {
				dst = "[2001:db8::ff]:443"
			}
			// The header and the first request bytes arrive together: the
			// bytes read past the header must reach the reader.
			payload := append(header(t, tc.version, tc.src, dst), "GET / HTTP/1.1\r\n\r\n"...)
			c := dial(t, l, payload)
			sc := accept(t, l)
			if got := sc.RemoteAddr().String(); got != tc.src {
				t.Fatalf("RemoteAddr %s, want %s", got, tc.src)
			}
			if !sc.(*Conn).Proxied() {
				t.Fatal("Proxied is false")
			}
			if sc.LocalAddr().String() != l.Addr().String() {
				t.Fatalf("LocalAddr %s, want the socket's own %s", sc.LocalAddr(), l.Addr())
			}
			buf := make([]byte, 64)
			n, err := io.ReadAtLeast(sc, buf, len("GET / HTTP/1.1\r\n\r\n"))
			if err != nil || string(buf[:n]) != "GET / HTTP/1.1\r\n\r\n" {
				t.Fatalf("read %q, %v", buf[:n], err)
			}
			// Both directions still work after the header.
			sc.Write([]byte("ok"))
			n, _ = io.ReadFull(c, buf[:2])
			if string(buf[:n]) != "ok" {
				t.Fatalf("client read %q", buf[:n])
			}
		})
	}
}

func TestLocalHeaderKeepsTheSenderAddress(t *testing.T) {
	l, _ := listen(t, "127.0.0.1/32")
	h := &pp.Header{Version: 2, Command: pp.LOCAL, TransportProtocol: pp.UNSPEC}
	b, err := h.Format()
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, l, b)
	sc := accept(t, l)
	if sc.RemoteAddr().String() != c.LocalAddr().String() {
		t.Fatalf("RemoteAddr %s, want the sender's %s", sc.RemoteAddr(), c.LocalAddr())
	}
	if sc.(*Conn).Proxied() {
		t.Fatal("a LOCAL header is not a proxied client")
	}
}

func expectRefusal(t *testing.T, r *refusals, c net.Conn, want string) {
	t.Helper()
	select {
	case got := <-r.ch:
		if got != want {
			t.Fatalf("refused for %q, want %q", got, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("not refused (want %q)", want)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, errTimeout) {
		t.Fatalf("connection still open after refusal: %v", err)
	}
}

var errTimeout = errors.New("timeout")

func TestUntrustedPeerIsRefused(t *testing.T) {
	// Even with a well-formed header: only trusted senders may name a client.
	l, r := listen(t, "10.0.0.0/8")
	c := dial(t, l, header(t, 2, "203.0.113.7:1", "198.51.100.1:443"))
	expectRefusal(t, r, c, ReasonUntrusted)
}

func TestTrustedPeerWithoutHeaderIsRefused(t *testing.T) {
	l, r := listen(t, "127.0.0.1/32")
	c := dial(t, l, []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	expectRefusal(t, r, c, ReasonNoHeader)
}

func TestSilentPeerTimesOut(t *testing.T) {
	l, r := listen(t, "127.0.0.1/32")
	c := dial(t, l, nil)
	expectRefusal(t, r, c, ReasonNoHeader)
}

func TestBadHeaderIsRefused(t *testing.T) {
	l, r := listen(t, "127.0.0.1/32")
	c := dial(t, l, []byte("PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n"))
	expectRefusal(t, r, c, ReasonBadHeader)
}

func TestSlowSenderDoesNotHoldUpOthers(t *testing.T) {
	l, _ := listen(t, "127.0.0.1/32")
	slow := dial(t, l, []byte("PROXY TCP4 "))
	_ = slow
	dial(t, l, header(t, 1, "192.0.2.1:1000", "192.0.2.2:80"))
	sc := accept(t, l)
	if sc.RemoteAddr().String() != "192.0.2.1:1000" {
		t.Fatalf("got %s", sc.RemoteAddr())
	}
}

func TestSetTrustedAppliesToNewConnections(t *testing.T) {
	l, r := listen(t, "10.0.0.0/8")
	c := dial(t, l, header(t, 1, "192.0.2.1:1000", "192.0.2.2:80"))
	expectRefusal(t, r, c, ReasonUntrusted)
	l.SetTrusted([]netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")})
	dial(t, l, header(t, 1, "192.0.2.1:1000", "192.0.2.2:80"))
	if got := accept(t, l).RemoteAddr().String(); got != "192.0.2.1:1000" {
		t.Fatalf("got %s", got)
	}
}

func TestCloseEndsAccept(t *testing.T) {
	l, _ := listen(t, "127.0.0.1/32")
	pending := dial(t, l, nil) // header never comes
	errc := make(chan error, 1)
	go func() { _, err := l.Accept(); errc <- err }()
	l.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Accept after Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Accept did not return after Close")
	}
	pending.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := pending.Read(make([]byte, 1)); err == nil {
		t.Fatal("pending connection still open after Close")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("pending connection not closed by Close")
	}
}

func TestWriteHeaderRoundTrip(t *testing.T) {
	for _, v := range []int{1, 2} {
		l, _ := listen(t, "127.0.0.1/32")
		c := dial(t, l, nil)
		client := AddrPort("203.0.113.9:5555")
		if err := WriteHeader(c, v, client, AddrPort("192.0.2.1:993")); err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("a1 LOGIN"))
		sc := accept(t, l)
		if sc.RemoteAddr().String() != "203.0.113.9:5555" {
			t.Fatalf("v%d: got %s", v, sc.RemoteAddr())
		}
		var buf bytes.Buffer
		io.CopyN(&buf, sc, 8)
		if buf.String() != "a1 LOGIN" {
			t.Fatalf("v%d: payload %q", v, buf.String())
		}
	}
	// A client that is not an IP address: the receiver keeps the socket's.
	l, _ := listen(t, "127.0.0.1/32")
	c := dial(t, l, nil)
	if err := WriteHeader(c, 1, &net.UnixAddr{Name: "@x", Net: "unix"}, AddrPort("192.0.2.1:993")); err != nil {
		t.Fatal(err)
	}
	if sc := accept(t, l); sc.(*Conn).Proxied() {
		t.Fatal("PROXY UNKNOWN gave a client address")
	}
}

func TestParseVersion(t *testing.T) {
	for in, want := range map[string]int{"": 0, "off": 0, "v1": 1, "v2": 2} {
		if got, err := ParseVersion(in); err != nil || got != want {
			t.Fatalf("%q: %d, %v", in, got, err)
		}
	}
	if _, err := ParseVersion("2"); err == nil {
		t.Fatal("2 accepted")
	}
}
