package proxy

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"
)

func tcpEcho(t *testing.T) string {
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
			go func() { buf := make([]byte, 64); n, _ := c.Read(buf); c.Write(buf[:n]); c.Close() }()
		}
	}()
	return ln.Addr().String()
}

func deadAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := ln.Addr().String()
	ln.Close()
	return a
}

func TestDialStreamFailsOverAndCounts(t *testing.T) {
	up, dead := tcpEcho(t), deadAddr(t)
	p, err := NewPool(UpstreamConfig{Name: "mail", Policy: "first", MaxFails: 1, FailTimeout: time.Minute, Retries: 2,
		Servers: []ServerConfig{{Addr: dead, Weight: 1}, {Addr: up, Weight: 1}}}, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	p.Start()
	c, err := p.DialStream(context.Background(), "192.0.2.1:5000")
	if err != nil {
		t.Fatal(err)
	}
	if c.Addr != up {
		t.Fatalf("stream went to %s, want the live %s", c.Addr, up)
	}
	st := p.Status()
	if st[0].State != "down" || st[1].Active != 1 {
		t.Fatalf("status %+v: want the dead server down and the stream counted", st)
	}
	c.Write([]byte("hi"))
	buf := make([]byte, 2)
	if _, err := c.Read(buf); err != nil || string(buf) != "hi" {
		t.Fatalf("read %q %v", buf, err)
	}
	c.Close()
	c.Close() // twice is harmless
	if a := p.Status()[1].Active; a != 0 {
		t.Fatalf("active %d after Close", a)
	}
}

func TestDialStreamNoServer(t *testing.T) {
	dead := deadAddr(t)
	p, _ := NewPool(UpstreamConfig{Name: "x", Retries: 0, Servers: []ServerConfig{{Addr: dead, Weight: 1}}}, nil, nil, nil)
	defer p.Close()
	_, err := p.DialStream(context.Background(), "192.0.2.1")
	var de *DialError
	if !errors.As(err, &de) {
		t.Fatalf("err %v, want a DialError", err)
	}
}

func TestConnectHealthCheck(t *testing.T) {
	up, dead := tcpEcho(t), deadAddr(t)
	p, _ := NewPool(UpstreamConfig{Name: "x", Servers: []ServerConfig{{Addr: up, Weight: 1}, {Addr: dead, Weight: 1}},
		Health: HealthConfig{Connect: true, Interval: 50 * time.Millisecond, Timeout: 50 * time.Millisecond, Rise: 1, Fall: 1}}, nil, nil, nil)
	p.Start()
	defer p.Close()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		st := p.Status()
		if st[1].State == "down" && st[0].State == "up" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status %+v: want the closed port down by its connect check", st)
		}
	}
}
