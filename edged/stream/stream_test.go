package stream

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/edgeapp/edgeapp/edged/proxy"
)

func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	return ln.Addr().String()
}

func startStream(t *testing.T, st *Settings) (*Server, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pool, err := proxy.NewPool(proxy.UpstreamConfig{Name: "echo", Servers: []proxy.ServerConfig{{Addr: echoServer(t), Weight: 1}}}, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	st.Pool = pool
	s := New("test", []net.Listener{ln}, st, Metrics{Active: func(int) {}, Finished: func(string) {}, Bytes: func(int64, int64) {}})
	errc := make(chan error, 1)
	s.Serve(errc)
	return s, ln.Addr().String()
}

func roundTrip(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != msg {
		t.Fatalf("echo %q, %v", buf, err)
	}
}

func TestStopWaitsThenCloses(t *testing.T) {
	s, addr := startStream(t, &Settings{})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	roundTrip(t, c, "hello")
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	if n := s.Stop(ctx); n != 1 {
		t.Fatalf("Stop closed %d connections, want the 1 still open", n)
	}
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Fatalf("Stop returned after %v, before its deadline", d)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("connection still open after Stop")
	}
	if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		t.Fatal("listener still accepting after Stop")
	}
}

func TestIdleTimeoutClosesAndHalfCloseFinishes(t *testing.T) {
	_, addr := startStream(t, &Settings{IdleTimeout: 200 * time.Millisecond})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	roundTrip(t, c, "ping")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("read data from an idle stream")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("idle stream was not closed by idle_timeout")
	}

	// A client that half-closes still gets the rest of the answer.
	c2, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	io.WriteString(c2, "last words")
	c2.(*net.TCPConn).CloseWrite()
	c2.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c2)
	if err != nil || string(b) != "last words" {
		t.Fatalf("after half-close: %q, %v", b, err)
	}
}
