package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// rawUpstream answers every request on every connection with the bytes
// reply returns for it, written as they are: for responses a real server
// library would refuse to produce. It counts connections.
func rawUpstream(t *testing.T, reply func(req *http.Request) string) (addr string, conns *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	conns = new(atomic.Int32)
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					io.Copy(io.Discard, req.Body)
					out := reply(req)
					if out == "" {
						return
					}
					if _, err := io.WriteString(c, out); err != nil {
						return
					}
					if strings.Contains(out, "Connection: close") {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String(), conns
}

// TestStrictResponseParsing: responses that RFC 9112 calls ambiguous are
// refused (502), never guessed at, and the connection is not reused.
func TestStrictResponseParsing(t *testing.T) {
	for name, resp := range map[string]string{
		"length and chunked": "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
		"two lengths":        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
		"same length twice":  "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
		"signed length":      "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello",
		"obs-fold":           "HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 5\r\n\r\nhello",
		"space before colon": "HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\nhello",
		"gzip coding":        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
		"bare CR":            "HTTP/1.1 200 OK\r\nX-A: a\rb\r\nContent-Length: 5\r\n\r\nhello",
		"not HTTP":           "SSH-2.0-OpenSSH\r\n\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			addr, _ := rawUpstream(t, func(*http.Request) string { return resp })
			f := newFront(t, UpstreamConfig{Servers: servers(addr)}, HandlerOptions{})
			res, body := get(t, f.URL()+"/")
			if res.StatusCode != http.StatusBadGateway || !strings.Contains(body, "invalid response") {
				t.Fatalf("got %d %q, want 502", res.StatusCode, body)
			}
			if !strings.Contains(f.log.String(), "malformed HTTP/1 message") {
				t.Fatalf("the log does not say why:\n%s", f.log)
			}
		})
	}
}

// TestResponseFraming: bodies delimited as RFC 9112 §6.3 says, and the
// connection reused only when the framing allows it.
func TestResponseFraming(t *testing.T) {
	cases := []struct {
		name, method, resp, want string
		reused                   bool
	}{
		{"length", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", "hello", true},
		{"chunked with extension", "GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;x=y\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n", "hello", true},
		{"HEAD with length", "HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", "", true},
		{"204", "GET", "HTTP/1.1 204 No Content\r\n\r\n", "", true},
		{"304 with length", "GET", "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n", "", true},
		{"until close", "GET", "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nhello", "hello", false},
		{"HTTP/1.0", "GET", "HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello", "hello", false},
		{"HTTP/1.0 keep-alive", "GET", "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 5\r\n\r\nhello", "hello", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			addr, conns := rawUpstream(t, func(*http.Request) string { return c.resp })
			f := newFront(t, UpstreamConfig{Servers: servers(addr)}, HandlerOptions{})
			for i := 0; i < 3; i++ {
				req, _ := http.NewRequest(c.method, f.URL()+"/", nil)
				res, body := do(t, req)
				if res.StatusCode >= 500 || body != c.want {
					t.Fatalf("request %d: %d %q, want %q", i, res.StatusCode, body, c.want)
				}
				if c.method == "HEAD" && res.ContentLength != 5 {
					t.Fatalf("HEAD: Content-Length %d, want the upstream's 5", res.ContentLength)
				}
			}
			if want := map[bool]int32{true: 1, false: 3}[c.reused]; conns.Load() != want {
				t.Fatalf("%d upstream connections for 3 requests, want %d", conns.Load(), want)
			}
		})
	}
}

// TestEarlyHintsPassThrough: a 103 reaches the client before the final
// response, and its fields do not leak into the final response.
func TestEarlyHintsPassThrough(t *testing.T) {
	addr, _ := rawUpstream(t, func(*http.Request) string {
		return "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n" +
			"HTTP/1.1 100 Continue\r\n\r\n" +
			"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
	})
	f := newFront(t, UpstreamConfig{Servers: servers(addr)}, HandlerOptions{})
	c, err := net.Dial("tcp", strings.TrimPrefix(f.URL(), "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(c)
	hints, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if hints.StatusCode != 103 || hints.Header.Get("Link") != "</style.css>; rel=preload" {
		t.Fatalf("first response %d %v, want the 103 with its Link", hints.StatusCode, hints.Header)
	}
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != 200 || string(b) != "ok" || res.Header.Get("Link") != "" {
		t.Fatalf("final response %d %q %v (the 100 must not reach the client, Link not repeated)", res.StatusCode, b, res.Header)
	}
}

// TestUnexpected101: a 101 to a request that asked for no upgrade is a bad
// upstream.
func TestUnexpected101(t *testing.T) {
	addr, _ := rawUpstream(t, func(*http.Request) string {
		return "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
	})
	f := newFront(t, UpstreamConfig{Servers: servers(addr)}, HandlerOptions{})
	if res, _ := get(t, f.URL()+"/"); res.StatusCode != http.StatusBadGateway {
		t.Fatalf("got %d", res.StatusCode)
	}
}

// TestConnectRefused: CONNECT is not proxied to an app.
func TestConnectRefused(t *testing.T) {
	up := startTCP(t, named("up"))
	f := newFront(t, UpstreamConfig{Servers: servers(up.Addr)}, HandlerOptions{})
	c, err := net.Dial("tcp", strings.TrimPrefix(f.URL(), "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusMethodNotAllowed || up.Hits() != 0 {
		t.Fatalf("CONNECT: %d, upstream hits %d", res.StatusCode, up.Hits())
	}
}

// TestIdlePoolFollowsTheLoad: with the default max_idle, 48 clients
// sending requests at once are served over at most 48 upstream
// connections, kept alive across rounds instead of reopened (a fixed
// small pool churns: every request above its size opens a connection).
func TestIdlePoolFollowsTheLoad(t *testing.T) {
	var opened atomic.Int32
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	up := serveOnState(t, ln, ln.Addr().String(), named("up"), func(c net.Conn, s http.ConnState) {
		if s == http.StateNew {
			opened.Add(1)
		}
	})
	f := newFront(t, UpstreamConfig{Servers: servers(up.Addr)}, HandlerOptions{})
	const clients, rounds = 48, 20
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients}}
	var wg sync.WaitGroup
	var failed atomic.Int32
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < rounds; j++ {
				res, err := client.Get(f.URL() + "/")
				if err != nil {
					failed.Add(1)
					return
				}
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
			}
		}()
	}
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d requests failed", failed.Load())
	}
	if n := opened.Load(); n > clients {
		t.Fatalf("%d upstream connections opened for %d requests from %d clients; want at most %d", n, clients*rounds, clients, clients)
	}
	if idle := f.pool.servers()[0].cp.idleCount(); idle == 0 || idle > clients {
		t.Fatalf("%d idle connections kept after the load", idle)
	}
}

// TestIdleTimeoutClosesConnections: idle connections close after
// idle_timeout, with no request to notice it, and earlier when the server
// said so with Keep-Alive: timeout=N.
func TestIdleTimeoutClosesConnections(t *testing.T) {
	var open atomic.Int32
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	up := serveOnState(t, ln, ln.Addr().String(), named("up"), func(c net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			open.Add(1)
		case http.StateClosed:
			open.Add(-1)
		}
	})
	f := newFront(t, UpstreamConfig{Servers: servers(up.Addr), IdleConnTimeout: 300 * time.Millisecond}, HandlerOptions{})
	get(t, f.URL()+"/")
	if open.Load() != 1 {
		t.Fatalf("%d connections open after one request", open.Load())
	}
	waitFor(t, "the idle connection to be closed", func() bool { return open.Load() == 0 })

	addr, conns := rawUpstream(t, func(*http.Request) string {
		return "HTTP/1.1 200 OK\r\nKeep-Alive: timeout=1\r\nContent-Length: 2\r\n\r\nok"
	})
	g := newFront(t, UpstreamConfig{Servers: servers(addr)}, HandlerOptions{})
	get(t, g.URL()+"/")
	if res, body := get(t, g.URL()+"/"); res.StatusCode != 200 || body != "ok" {
		t.Fatalf("%d %q", res.StatusCode, body)
	}
	// timeout=1: the connection is not used once that second has nearly
	// passed, so the request after it opens a new one.
	if conns.Load() != 2 {
		t.Fatalf("%d connections: Keep-Alive: timeout=1 not honoured", conns.Load())
	}
}
