package sockdiag

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func listenerFile(t *testing.T, ln net.Listener) *os.File {
	t.Helper()
	var f *os.File
	var err error
	switch l := ln.(type) {
	case *net.TCPListener:
		f, err = l.File()
	case *net.UnixListener:
		f, err = l.File()
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// queueOf polls until the kernel shows want queued connections (the TCP
// handshake completes asynchronously to Dial's return on some kernels).
func queueOf(t *testing.T, p *Prober, f *os.File, want uint32) Queue {
	t.Helper()
	var q Queue
	var err error
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if q, err = p.AcceptQueue(f); err == nil && q.Queued == want {
			return q
		}
	}
	t.Fatalf("queue %+v %v, want %d queued", q, err, want)
	return q
}

func TestAcceptQueue(t *testing.T) {
	p, err := Open()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for _, tc := range []struct {
		network, addr string
		mptcp         bool
	}{
		{"unix", filepath.Join(t.TempDir(), "s.sock"), false},
		{"tcp4", "127.0.0.1:0", false},
		{"tcp6", "[::1]:0", false},
		{"tcp4", "127.0.0.1:0", true}, // Go's default where the kernel has MPTCP
	} {
		t.Run(fmt.Sprintf("%s mptcp=%v", tc.network, tc.mptcp), func(t *testing.T) {
			var lc net.ListenConfig
			lc.SetMultipathTCP(tc.mptcp)
			ln, err := lc.Listen(context.Background(), tc.network, tc.addr)
			if err != nil {
				if tc.network == "tcp6" {
					t.Skipf("no IPv6 loopback: %v", err)
				}
				t.Fatal(err)
			}
			defer ln.Close()
			f := listenerFile(t, ln)
			q := queueOf(t, p, f, 0)
			if q.Backlog == 0 {
				t.Errorf("backlog 0: %+v", q)
			}
			var conns []net.Conn
			for i := 0; i < 3; i++ {
				c, err := net.Dial(ln.Addr().Network(), ln.Addr().String())
				if err != nil {
					t.Fatal(err)
				}
				conns = append(conns, c)
			}
			queueOf(t, p, f, 3)
			c, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			c.Close()
			queueOf(t, p, f, 2)
			for _, c := range conns {
				c.Close()
			}
		})
	}
}

func TestNotAListener(t *testing.T) {
	p, err := Open()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	f, _ := c.(*net.UDPConn).File()
	defer f.Close()
	if _, err := p.AcceptQueue(f); !errors.Is(err, ErrNotListener) {
		t.Errorf("UDP socket: %v", err)
	}
}
