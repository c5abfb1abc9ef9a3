package connlimit

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"
)

// serve accepts on a wrapped loopback listener and hands over each
// admitted connection.
func serve(t *testing.T, lim *Limiter, answer bool) (string, <-chan net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	wl := lim.Listener(ln, answer)
	t.Cleanup(func() { wl.Close() })
	ch := make(chan net.Conn, 16)
	go func() {
		for {
			c, err := wl.Accept()
			if err != nil {
				return
			}
			ch <- c
		}
	}()
	return ln.Addr().String(), ch
}

// dialFrom connects from a given loopback source address.
func dialFrom(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func admitted(t *testing.T, ch <-chan net.Conn) net.Conn {
	t.Helper()
	select {
	case c := <-ch:
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("connection not admitted")
		return nil
	}
}

// refused reads what a refused connection is told before it is closed.
func refused(t *testing.T, c net.Conn) string {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("refused connection: %v", err)
	}
	return string(b)
}

func TestCaps(t *testing.T) {
	lim := New(Limits{Max: 3, PerIP: 2})
	addr, ch := serve(t, lim, true)
	dialFrom(t, "127.0.0.1", addr)
	admitted(t, ch)
	dialFrom(t, "127.0.0.1", addr)
	a2 := admitted(t, ch)
	if got := refused(t, dialFrom(t, "127.0.0.1", addr)); !strings.HasPrefix(got, "HTTP/1.1 503 ") || !strings.Contains(got, "from your address") {
		t.Fatalf("third connection from one address got %q", got)
	}
	dialFrom(t, "127.0.0.2", addr)
	admitted(t, ch)
	if got := refused(t, dialFrom(t, "127.0.0.3", addr)); !strings.HasPrefix(got, "HTTP/1.1 503 ") || strings.Contains(got, "your address") {
		t.Fatalf("fourth connection got %q", got)
	}
	if lim.Open() != 3 || lim.Refused(ReasonPerIP) != 1 || lim.Refused(ReasonMax) != 1 {
		t.Fatalf("open %d refused %d/%d", lim.Open(), lim.Refused(ReasonPerIP), lim.Refused(ReasonMax))
	}
	// Closing frees the place, once however often it is closed.
	a2.Close()
	a2.Close()
	if lim.Open() != 2 {
		t.Fatalf("after a close: %d open", lim.Open())
	}
	dialFrom(t, "127.0.0.1", addr)
	admitted(t, ch)
}

func TestTrustedProxyExemptFromPerIP(t *testing.T) {
	lim := New(Limits{Max: 10, PerIP: 1, Exempt: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}})
	addr, ch := serve(t, lim, true)
	for range 3 {
		dialFrom(t, "127.0.0.1", addr)
		admitted(t, ch)
	}
	dialFrom(t, "127.0.0.2", addr)
	admitted(t, ch)
	if got := refused(t, dialFrom(t, "127.0.0.2", addr)); !strings.Contains(got, "503") {
		t.Fatalf("second connection from a non-exempt address got %q", got)
	}
}

func TestTLSListenerCloses(t *testing.T) {
	lim := New(Limits{Max: 1})
	addr, ch := serve(t, lim, false)
	dialFrom(t, "127.0.0.1", addr)
	admitted(t, ch)
	c := dialFrom(t, "127.0.0.1", addr)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if b, err := io.ReadAll(c); len(b) != 0 || (err != nil && !errors.Is(err, syscall.ECONNRESET)) {
		t.Fatalf("a listener that cannot answer wrote %q, %v", b, err)
	}
	if lim.Refused(ReasonMax) != 1 {
		t.Fatal("refusal not counted")
	}
}

func TestLimitsChange(t *testing.T) {
	lim := New(Limits{Max: 1})
	addr, ch := serve(t, lim, true)
	dialFrom(t, "127.0.0.1", addr)
	admitted(t, ch)
	lim.SetLimits(Limits{Max: 2})
	dialFrom(t, "127.0.0.1", addr)
	admitted(t, ch)
	lim.SetLimits(Limits{})
	for range 3 {
		dialFrom(t, "127.0.0.1", addr)
		admitted(t, ch)
	}
}
