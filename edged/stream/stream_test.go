package stream

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
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

// TestTLSBothWays terminates TLS from the client and speaks TLS to a TLS
// echo server verified against its own root, as upstream_tls does.
func TestTLSBothWays(t *testing.T) {
	cert, pool := testCert(t, "echo.test")
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
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
	front, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p, _ := proxy.NewPool(proxy.UpstreamConfig{Name: "tlsecho", Servers: []proxy.ServerConfig{{Addr: ln.Addr().String(), Weight: 1}}}, nil, nil, nil)
	t.Cleanup(p.Close)
	s := New("tls", []net.Listener{front}, &Settings{
		Pool:        p,
		TLS:         &tls.Config{Certificates: []tls.Certificate{cert}},
		UpstreamTLS: &tls.Config{RootCAs: pool, ServerName: "echo.test"},
	}, Metrics{Active: func(int) {}, Finished: func(string) {}, Bytes: func(int64, int64) {}})
	s.Serve(make(chan error, 1))
	c, err := tls.Dial("tcp", front.Addr().String(), &tls.Config{RootCAs: pool, ServerName: "echo.test"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	roundTrip(t, c, "through two TLS connections")

	// A server whose certificate does not verify gets no bytes.
	s.Update(&Settings{Pool: p, TLS: &tls.Config{Certificates: []tls.Certificate{cert}}, UpstreamTLS: &tls.Config{RootCAs: x509.NewCertPool(), ServerName: "echo.test"}})
	c2, err := tls.Dial("tcp", front.Addr().String(), &tls.Config{RootCAs: pool, ServerName: "echo.test"})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	c2.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c2, "x")
	if _, err := c2.Read(make([]byte, 1)); err == nil {
		t.Fatal("stream joined to a server whose certificate does not verify")
	}
}

func testCert(t *testing.T, name string) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}
