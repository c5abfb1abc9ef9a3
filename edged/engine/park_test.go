package engine

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func parkedCount(s *Server) int {
	if p := s.park.Load(); p != nil {
		return p.count()
	}
	return 0
}

// TestParkedConnection: an idle kept-alive connection is parked (no
// goroutine), is served when its next request comes, parks again, and is
// closed by idle_timeout while parked.
func TestParkedConnection(t *testing.T) {
	s, addr := start(t, http.HandlerFunc(hello), Options{IdleTimeout: 600 * time.Millisecond, parkAfter: 50 * time.Millisecond})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	for i, path := range []string{"/one", "/two"} {
		io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n")
		if _, body := readResponse(t, br, "GET"); body != "hello GET "+path {
			t.Fatalf("request %d: %q", i, body)
		}
		waitUntil(t, "the connection to be parked", func() bool { return parkedCount(s) == 1 })
	}
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("parked connection not closed by idle_timeout: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("closed %v after parking, idle_timeout is 600ms", d)
	}
	waitUntil(t, "the parked connection to be forgotten", func() bool { return parkedCount(s) == 0 })
}

// TestShutdownClosesParked: a parked connection counts as idle for the
// drain, and a client that closes a parked connection is noticed.
func TestShutdownClosesParked(t *testing.T) {
	s, addr := start(t, http.HandlerFunc(hello), Options{IdleTimeout: time.Minute, parkAfter: 50 * time.Millisecond, DrainQuiet: 10 * time.Millisecond})
	var conns []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		readResponse(t, bufio.NewReader(c), "GET")
		conns = append(conns, c)
	}
	waitUntil(t, "three parked connections", func() bool { return parkedCount(s) == 3 })
	conns[0].Close()
	waitUntil(t, "the client's close to be seen", func() bool { return parkedCount(s) == 2 })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown with parked connections: %v", err)
	}
	for _, c := range conns[1:] {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Errorf("parked connection after Shutdown: %v", err)
		}
	}
}

// TestShutdownServesWaitingParked: a parked connection whose request is
// already in the kernel when the drain finds it quiet is served, not
// closed. The parker is kept from seeing the request (its registration
// is removed), so the drain is the first to look at the connection.
func TestShutdownServesWaitingParked(t *testing.T) {
	s, addr := start(t, http.HandlerFunc(hello), Options{IdleTimeout: time.Minute, parkAfter: 50 * time.Millisecond, DrainQuiet: 10 * time.Millisecond})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	io.WriteString(c, "GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
	readResponse(t, br, "GET")
	waitUntil(t, "the connection to be parked", func() bool { return parkedCount(s) == 1 })
	p := s.park.Load()
	p.mu.Lock()
	for fd := range p.conns {
		if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, fd, nil); err != nil {
			t.Error(err)
		}
	}
	p.mu.Unlock()
	io.WriteString(c, "GET /waiting HTTP/1.1\r\nHost: x\r\n\r\n")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Shutdown(ctx) }()
	res, body := readResponse(t, br, "GET")
	if body != "hello GET /waiting" || !res.Close {
		t.Errorf("request waiting on a parked connection at shutdown: %q close=%v", body, res.Close)
	}
	if err := <-done; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}
