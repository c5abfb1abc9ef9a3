package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/websocket"

	"github.com/edgeapp/edgeapp/edged/engine/enginetest"
)

func TestProxyForwardsRequestAndResponse(t *testing.T) {
	up := startTCP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Got-Host", r.Host)
		w.Header().Set("X-Got-URI", r.RequestURI)
		w.Header().Set("X-Got-Request-Id", r.Header.Get("X-Request-Id"))
		w.Header().Set("X-Got-UA", r.Header.Get("User-Agent"))
		w.WriteHeader(http.StatusTeapot)
		io.WriteString(w, "hello")
	}))
	f := newFront(t, UpstreamConfig{Servers: servers(up.Addr)}, HandlerOptions{})
	req, _ := http.NewRequest("GET", f.URL()+"/a/b%2Fc?x=1&y=2", nil)
	req.Host = "example.com"
	req.Header.Set("X-Request-Id", "rid-1")
	req.Header.Set("User-Agent", "")
	res, body := do(t, req)
	if res.StatusCode != http.StatusTeapot || body != "hello" {
		t.Fatalf("got %d %q", res.StatusCode, body)
	}
	for k, want := range map[string]string{
		"X-Got-Host": "example.com", "X-Got-URI": "/a/b%2Fc?x=1&y=2", "X-Got-Request-Id": "rid-1", "X-Got-UA": "",
	} {
		if got := res.Header.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
}

func TestHostHeaderAndStripPrefix(t *testing.T) {
	up := startTCP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s", r.Host, r.URL.RequestURI())
	}))
	f := newFront(t, UpstreamConfig{Servers: servers(up.Addr), HostHeader: "internal.app"}, HandlerOptions{StripPrefix: "/api/"})
	for path, want := range map[string]string{
		"/api/users?id=3": "internal.app /users?id=3",
		"/api":            "internal.app /",
		"/api/":           "internal.app /",
		"/api/a%2Fb":      "internal.app /a%2Fb",
	} {
		if _, body := get(t, f.URL()+path); body != want {
			t.Errorf("%s: upstream saw %q, want %q", path, body, want)
		}
	}
}

func TestUnixSocketUpstream(t *testing.T) {
	up := startUnix(t, named("unix"))
	f := newFront(t, UpstreamConfig{Servers: servers(up.Addr)}, HandlerOptions{})
	for i := 0; i < 5; i++ {
		if _, body := get(t, f.URL()+"/"); body != "unix" {
			t.Fatalf("body %q", body)
		}
	}
	if s := statusOf(f.pool, up.Addr); s.Requests != 5 || s.State != "up" {
		t.Fatalf("status %+v", s)
	}
}

func TestAbstractUnixSocketUpstream(t *testing.T) {
	name := fmt.Sprintf("@edged-proxy-test-%d", time.Now().UnixNano())
	ln, err := net.Listen("unix", name)
	if err != nil {
		t.Skip("no abstract sockets here:", err)
	}
	up := serveOn(t, ln, "unix:"+name, named("abstract"))
	f := newFront(t, UpstreamConfig{Servers: servers(up.Addr)}, HandlerOptions{})
	if _, body := get(t, f.URL()+"/"); body != "abstract" {
		t.Fatalf("body %q", body)
	}
}

func TestSlowUpstreamIs504(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	up := startTCP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	f := newFront(t, UpstreamConfig{Servers: servers(up.Addr), MaxFails: 1, ResponseHeaderTimeout: 200 * time.Millisecond}, HandlerOptions{})
	res, body := get(t, f.URL()+"/slow", "X-Request-Id", "rid-504")
	if res.StatusCode != http.StatusGatewayTimeout || !strings.Contains(body, "did not answer in time") {
		t.Fatalf("got %d %q", res.StatusCode, body)
	}
	logs := f.log.String()
	if !strings.Contains(logs, "upstream request failed") || !strings.Contains(logs, "upstream=app") || !strings.Contains(logs, "request_id=rid-504") ||
		!strings.Contains(logs, "server="+up.Addr) || !strings.Contains(logs, "timeout awaiting response headers") {
		t.Fatalf("log line does not name upstream, server and cause:\n%s", logs)
	}
	// A lone server is never taken out by passive health (nginx does the
	// same): the next request is tried again.
	res, _ = get(t, f.URL()+"/slow")
	if res.StatusCode != http.StatusGatewayTimeout {
		t.Fatalf("second request: got %d", res.StatusCode)
	}
	if s := statusOf(f.pool, up.Addr); s.State != "up" {
		t.Fatalf("status %+v", s)
	}
}

// A client that leaves while edged waits for a slow server ends the
// wait: the upstream connection is closed (the server sees its request's
// context cancelled) long before the response header timeout. Both on a
// new upstream connection and on a kept-alive one, whose exchange never
// asks for the request's Done channel until its wait polls the client.
func TestClientGoneEndsUpstreamWait(t *testing.T) {
	gone := make(chan string, 2)
	release := make(chan struct{})
	defer close(release)
	up := startTCP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/warm" {
			return
		}
		select {
		case <-release:
		case <-r.Context().Done():
			gone <- r.URL.Path
		}
	}))
	f := newFront(t, UpstreamConfig{Servers: servers(up.Addr), ResponseHeaderTimeout: time.Minute}, HandlerOptions{})
	addr := strings.TrimPrefix(f.URL(), "http://")
	for _, path := range []string{"/fresh", "/kept"} {
		if path == "/kept" {
			if res, _ := get(t, f.URL()+"/warm"); res.StatusCode != 200 {
				t.Fatalf("warm-up: %d", res.StatusCode)
			}
			if f.pool.servers()[0].cp.idleCount() == 0 {
				t.Fatal("no kept-alive upstream connection after the warm-up")
			}
		}
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path)
		time.Sleep(100 * time.Millisecond) // the request reaches the server
		c.Close()
		select {
		case got := <-gone:
			if got != path {
				t.Fatalf("cancelled %s, want %s", got, path)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: the upstream request was not cancelled 10s after its client left", path)
		}
	}
}

func TestSlowServerTakenOutOfPool(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	slow := startTCP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	fast := startTCP(t, named("fast"))
	f := newFront(t, UpstreamConfig{Servers: servers(slow.Addr, fast.Addr), Policy: "first", MaxFails: 1, ResponseHeaderTimeout: 200 * time.Millisecond}, HandlerOptions{})
	if res, _ := get(t, f.URL()+"/"); res.StatusCode != http.StatusGatewayTimeout {
		t.Fatalf("a GET that was sent is not retried by default: got %d", res.StatusCode)
	}
	if s := statusOf(f.pool, slow.Addr); s.State != "down" || !strings.Contains(s.Reason, "timeout awaiting response headers") {
		t.Fatalf("status %+v", s)
	}
	if _, body := get(t, f.URL()+"/"); body != "fast" {
		t.Fatalf("got %q", body)
	}
}

// dying writes the header and part of the body, then drops the connection.
func dying(chunked bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			panic(err)
		}
		if chunked {
			brw.WriteString("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
		} else {
			brw.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\nhello")
		}
		brw.Flush()
		c.Close()
	})
}

func TestUpstreamDiesMidResponse(t *testing.T) {
	for _, chunked := range []bool{false, true} {
		t.Run(fmt.Sprintf("chunked=%v", chunked), func(t *testing.T) {
			up := startTCP(t, dying(chunked))
			f := newFront(t, UpstreamConfig{Servers: servers(up.Addr)}, HandlerOptions{})
			// The client must see an error: either the connection ends
			// before the buffered header went out, or the body is cut
			// short. Never a clean, short 200.
			res, err := http.Get(f.URL() + "/")
			if err == nil {
				b, rerr := io.ReadAll(res.Body)
				res.Body.Close()
				if rerr == nil {
					t.Fatalf("client read %d %q and a clean end; want a truncated response", res.StatusCode, b)
				}
			}
			waitFor(t, "the log line", func() bool { return f.log.Count("died while sending the response body") == 1 })
		})
	}
}

func TestRefusedConnectionRetriesElsewhere(t *testing.T) {
	good := startTCP(t, named("good"))
	dead := refusedAddr(t)
	f := newFront(t, UpstreamConfig{Servers: servers(dead, good.Addr), Policy: "first", MaxFails: 1, Retries: 2}, HandlerOptions{})
	for i := 0; i < 3; i++ {
		res, body := get(t, f.URL()+"/")
		if res.StatusCode != 200 || body != "good" {
			t.Fatalf("request %d: %d %q", i, res.StatusCode, body)
		}
	}
	s := statusOf(f.pool, dead)
	if s.State != "down" || !strings.Contains(s.Reason, "connection refused") || !strings.HasPrefix(s.Reason, "1 failure in 10s: dial tcp ") {
		t.Fatalf("dead server status %+v", s)
	}
	if n := f.log.Count("upstream server marked down"); n != 1 {
		t.Fatalf("logged down %d times:\n%s", n, f.log)
	}
}

func TestAllRefuseIs502ThenDownIs503(t *testing.T) {
	a, b := refusedAddr(t), startUnix(t, named("x"))
	b.Close() // the socket file stays, nobody accepts: connection refused
	f := newFront(t, UpstreamConfig{Servers: servers(a, b.Addr), MaxFails: 1, Retries: 2}, HandlerOptions{})
	res, body := get(t, f.URL()+"/")
	if res.StatusCode != http.StatusBadGateway || !strings.Contains(body, "could not connect") {
		t.Fatalf("got %d %q", res.StatusCode, body)
	}
	if !strings.Contains(f.log.String(), "attempts=2") {
		t.Fatalf("want both servers tried:\n%s", f.log)
	}
	res, body = get(t, f.URL()+"/")
	if res.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("got %d %q", res.StatusCode, body)
	}
	if logs := f.log.String(); !strings.Contains(logs, "no upstream server available") || !strings.Contains(logs, "connection refused") {
		t.Fatalf("503 log line should say why:\n%s", logs)
	}
}

func TestPassiveHealthServerKilledAndRestarted(t *testing.T) {
	a := startTCP(t, named("a"))
	b := startTCP(t, named("b"))
	f := newFront(t, UpstreamConfig{Servers: servers(a.Addr, b.Addr), MaxFails: 2, FailTimeout: 3 * time.Second, Retries: 1}, HandlerOptions{})
	seen := map[string]int{}
	for i := 0; i < 10; i++ {
		_, body := get(t, f.URL()+"/")
		seen[body]++
	}
	if seen["a"] != 5 || seen["b"] != 5 {
		t.Fatalf("round robin: %v", seen)
	}
	a.Close()
	for i := 0; i < 10; i++ {
		res, body := get(t, f.URL()+"/")
		if res.StatusCode != 200 || body != "b" {
			t.Fatalf("while a is dead: %d %q", res.StatusCode, body)
		}
	}
	if s := statusOf(f.pool, a.Addr); s.State != "down" || s.Fails != 2 {
		t.Fatalf("a: %+v", s)
	}
	a2 := restartTCP(t, a.Addr, named("a"))
	waitFor(t, "a's fail_timeout to pass", func() bool { return statusOf(f.pool, a.Addr).State == "up" })
	for i := 0; i < 10; i++ {
		get(t, f.URL()+"/")
	}
	if a2.Hits() == 0 {
		t.Fatal("restarted server got no requests")
	}
	if s := statusOf(f.pool, a.Addr); s.Fails != 0 {
		t.Fatalf("fails not reset after success: %+v", s)
	}
	if d, u := f.log.Count("upstream server marked down"), f.log.Count("back up"); d != 1 || u != 1 {
		t.Fatalf("down logged %d, up logged %d times:\n%s", d, u, f.log)
	}
}

func TestActiveHealthRiseFall(t *testing.T) {
	var status atomic.Int32
	status.Store(200)
	var checks atomic.Int32
	a := startTCP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			if r.Host != "health.local" {
				w.WriteHeader(400)
				return
			}
			checks.Add(1)
			w.WriteHeader(int(status.Load()))
			return
		}
		io.WriteString(w, "a")
	}))
	b := startTCP(t, named("b"))
	f := newFront(t, UpstreamConfig{Servers: servers(a.Addr, b.Addr), Health: HealthConfig{
		Path: "/healthz", Interval: 20 * time.Millisecond, Timeout: time.Second, Rise: 2, Fall: 3, Host: "health.local",
	}}, HandlerOptions{})
	waitFor(t, "first checks", func() bool { return checks.Load() >= 2 })
	if s := statusOf(f.pool, a.Addr); s.State != "up" || s.LastCheck.IsZero() {
		t.Fatalf("a: %+v", s)
	}
	status.Store(500)
	waitFor(t, "a to go down", func() bool { return statusOf(f.pool, a.Addr).State == "down" })
	if s := statusOf(f.pool, a.Addr); s.Reason != "health check: status 500" {
		t.Fatalf("reason %q", s.Reason)
	}
	n := checks.Load()
	waitFor(t, "more failing checks", func() bool { return checks.Load() >= n+5 })
	if c := f.log.Count("failed its health checks"); c != 1 {
		t.Fatalf("down logged %d times:\n%s", c, f.log)
	}
	for i := 0; i < 6; i++ {
		if _, body := get(t, f.URL()+"/"); body != "b" {
			t.Fatalf("request went to %q while a is down", body)
		}
	}
	status.Store(200)
	waitFor(t, "a to come back", func() bool { return statusOf(f.pool, a.Addr).State == "up" })
	n = checks.Load()
	waitFor(t, "more passing checks", func() bool { return checks.Load() >= n+5 })
	if c := f.log.Count("passed its health checks"); c != 1 {
		t.Fatalf("up logged %d times:\n%s", c, f.log)
	}
	// A reload that turns checks off puts a server they took out back.
	status.Store(500)
	waitFor(t, "a to go down again", func() bool { return statusOf(f.pool, a.Addr).State == "down" })
	cfg := f.pool.cfg
	cfg.Health = HealthConfig{}
	p2, err := NewPool(cfg, f.pool, f.m, nil)
	if err != nil {
		t.Fatal(err)
	}
	if statusOf(p2, a.Addr).State != "down" {
		t.Fatal("state not carried over")
	}
	p2.Start()
	if s := statusOf(p2, a.Addr); s.State != "up" {
		t.Fatalf("checks off, a still %+v", s)
	}
	p2.Close()
	status.Store(200)
	waitFor(t, "a to come back", func() bool { return statusOf(f.pool, a.Addr).State == "up" })

	// Active health off the request path: a dead server is found without traffic.
	b.Close()
	waitFor(t, "b to go down without traffic", func() bool { return statusOf(f.pool, b.Addr).State == "down" })
	if s := statusOf(f.pool, b.Addr); !strings.Contains(s.Reason, "connection refused") {
		t.Fatalf("b reason %q", s.Reason)
	}
}

func TestBackupOnlyWhenPrimariesDown(t *testing.T) {
	a, b := startTCP(t, named("a")), startTCP(t, named("b"))
	c := startUnix(t, named("backup"))
	cfg := UpstreamConfig{Servers: []ServerConfig{{Addr: a.Addr}, {Addr: b.Addr}, {Addr: c.Addr, Backup: true}}, MaxFails: 1, FailTimeout: time.Minute, Retries: 2}
	f := newFront(t, cfg, HandlerOptions{})
	for i := 0; i < 20; i++ {
		if _, body := get(t, f.URL()+"/"); body == "backup" {
			t.Fatal("backup used while primaries are up")
		}
	}
	if s := statusOf(f.pool, c.Addr); s.State != "backup" {
		t.Fatalf("backup state %+v", s)
	}
	a.Close()
	b.Close()
	for i := 0; i < 10; i++ {
		res, body := get(t, f.URL()+"/")
		if res.StatusCode != 200 || body != "backup" {
			t.Fatalf("primaries down: %d %q", res.StatusCode, body)
		}
	}
	if statusOf(f.pool, a.Addr).State != "down" || statusOf(f.pool, b.Addr).State != "down" {
		t.Fatalf("status %+v", f.pool.Status())
	}
}

func TestLeastConnPrefersIdle(t *testing.T) {
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	a := startTCP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			entered <- struct{}{}
			<-release
		}
		io.WriteString(w, "a")
	}))
	b := startTCP(t, named("b"))
	f := newFront(t, UpstreamConfig{Servers: servers(a.Addr, b.Addr), Policy: "least_conn"}, HandlerOptions{})
	done := make(chan string)
	go func() {
		res, err := http.Get(f.URL() + "/hold")
		if err != nil {
			done <- err.Error()
			return
		}
		bb, _ := io.ReadAll(res.Body)
		res.Body.Close()
		done <- string(bb)
	}()
	// The held request may land on b first (a tie); then b is busy and the
	// next /hold goes to a. Either way a holds one request when entered fires.
	for {
		select {
		case <-entered:
		case s := <-done:
			if s != "b" {
				t.Fatalf("unexpected %q", s)
			}
			go func() {
				res, err := http.Get(f.URL() + "/hold")
				if err == nil {
					bb, _ := io.ReadAll(res.Body)
					res.Body.Close()
					done <- string(bb)
				} else {
					done <- err.Error()
				}
			}()
			continue
		}
		break
	}
	for i := 0; i < 10; i++ {
		if _, body := get(t, f.URL()+"/"); body != "b" {
			t.Fatalf("request %d went to busy server %q", i, body)
		}
	}
	if s := statusOf(f.pool, a.Addr); s.Active != 1 {
		t.Fatalf("a active %d", s.Active)
	}
	close(release)
	if s := <-done; s != "a" {
		t.Fatalf("held request answered %q", s)
	}
}

func TestMaxConns(t *testing.T) {
	entered := make(chan struct{})
	release := make(chan struct{})
	a := startTCP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			close(entered)
			<-release
		}
		io.WriteString(w, "a")
	}))
	b := startTCP(t, named("b"))
	f := newFront(t, UpstreamConfig{Servers: []ServerConfig{{Addr: a.Addr, MaxConns: 1}, {Addr: b.Addr, Backup: true}}}, HandlerOptions{})
	done := make(chan error)
	go func() {
		res, err := http.Get(f.URL() + "/hold")
		if err == nil {
			res.Body.Close()
		}
		done <- err
	}()
	<-entered
	if _, body := get(t, f.URL()+"/"); body != "b" {
		t.Fatalf("a is at max_conns, want the backup, got %q", body)
	}
	if s := statusOf(f.pool, a.Addr); !strings.Contains(s.Reason, "max_conns") {
		t.Fatalf("status %+v", s)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// echoUpgrade is a tiny raw upgrade server: after 101 it echoes bytes until
// the client half-closes, then says "bye" and closes.
func echoUpgrade(t testing.TB) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") || !strings.Contains(strings.ToLower(r.Header.Get("Connection")), "upgrade") {
			http.Error(w, "want an upgrade", http.StatusUpgradeRequired)
			return
		}
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-Sub: " + r.Header.Get("X-Sub") + "\r\n\r\n")
		brw.Flush()
		io.Copy(c, brw.Reader)
		io.WriteString(c, "bye")
	})
}

func dialUpgrade(t testing.TB, frontURL string) (net.Conn, *bufio.Reader, *http.Response) {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(frontURL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: example.com\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\nX-Sub: chat\r\n\r\n")
	br := bufio.NewReader(c)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c, br, res
}

func TestWebSocketEchoAndHalfClose(t *testing.T) {
	for _, unix := range []bool{false, true} {
		t.Run(fmt.Sprintf("unix=%v", unix), func(t *testing.T) {
			var up *upstream
			if unix {
				up = startUnix(t, echoUpgrade(t))
			} else {
				up = startTCP(t, echoUpgrade(t))
			}
			f := newFront(t, UpstreamConfig{Servers: servers(up.Addr)}, HandlerOptions{})
			c, br, res := dialUpgrade(t, f.URL())
			defer c.Close()
			if res.StatusCode != 101 || res.Header.Get("Upgrade") != "websocket" || res.Header.Get("X-Sub") != "chat" {
				t.Fatalf("got %d %v", res.StatusCode, res.Header)
			}
			for i := 0; i < 3; i++ {
				msg := fmt.Sprintf("message %d", i)
				io.WriteString(c, msg)
				got := make([]byte, len(msg))
				if _, err := io.ReadFull(br, got); err != nil || string(got) != msg {
					t.Fatalf("echo %q, %v", got, err)
				}
			}
			c.(*net.TCPConn).CloseWrite()
			rest, err := io.ReadAll(br)
			if err != nil || string(rest) != "bye" {
				t.Fatalf("after half-close got %q, %v", rest, err)
			}
			waitFor(t, "the tunnel to end", func() bool { return statusOf(f.pool, up.Addr).Active == 0 })
		})
	}
}

func TestUpgradeRefusedIsOrdinaryResponse(t *testing.T) {
	up := startTCP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no websockets here", http.StatusForbidden)
	}))
	f := newFront(t, UpstreamConfig{Servers: servers(up.Addr)}, HandlerOptions{})
	c, br, res := dialUpgrade(t, f.URL())
	defer c.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != 403 || !strings.Contains(string(b), "no websockets") {
		t.Fatalf("got %d %q", res.StatusCode, b)
	}
	_ = br
}

func TestSSEEventsArriveBeforeTheEnd(t *testing.T) {
	next := make(chan struct{})
	up := startTCP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Content-Length", "") // let net/http choose; stays unknown
		for i := 0; i < 3; i++ {
			fmt.Fprintf(w, "data: event %d\n\n", i)
			w.(http.Flusher).Flush()
			select {
			case <-next:
			case <-r.Context().Done():
				return
			}
		}
	}))
	f := newFront(t, UpstreamConfig{Servers: servers(up.Addr)}, HandlerOptions{})
	res, err := http.Get(f.URL() + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	br := bufio.NewReader(res.Body)
	for i := 0; i < 3; i++ {
		line, err := br.ReadString('\n')
		if err != nil || line != fmt.Sprintf("data: event %d\n", i) {
			t.Fatalf("event %d: %q %v", i, line, err)
		}
		br.ReadString('\n')
		next <- struct{}{} // the upstream sends the next event only now
	}
}

func TestFlushIntervalPositive(t *testing.T) {
	next := make(chan struct{})
	up := startTCP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "12")
		io.WriteString(w, "first ")
		w.(http.Flusher).Flush()
		<-next
		io.WriteString(w, "second")
	}))
	f := newFront(t, UpstreamConfig{Servers: servers(up.Addr)}, HandlerOptions{FlushInterval: 10 * time.Millisecond})
	res, err := http.Get(f.URL() + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b := make([]byte, 6)
	if _, err := io.ReadFull(res.Body, b); err != nil || string(b) != "first " {
		t.Fatalf("%q %v", b, err)
	}
	close(next)
	rest, _ := io.ReadAll(res.Body)
	if string(rest) != "second" {
		t.Fatalf("rest %q", rest)
	}
}

// pattern is a deterministic byte stream for large bodies.
func pattern(i int64) byte { return byte(i*7 + i>>11) }

// patternPeriod is pattern's period: i*7 and i>>11 both move by a
// multiple of 256 when i moves by 1 MiB.
const patternPeriod = 1 << 20

// patternBlock is pattern over one period, made once: the tests that move
// tens of MiB fill and check their buffers by copy and bytes.Equal, not a
// byte at a time, which under the race detector took most of a test's
// time (and, on a loaded machine, more than its bound).
var patternBlock = sync.OnceValue(func() []byte {
	b := make([]byte, patternPeriod)
	for i := range b {
		b[i] = pattern(int64(i))
	}
	return b
})

// fillPattern sets b to pattern from offset off.
func fillPattern(b []byte, off int64) {
	block := patternBlock()
	for len(b) > 0 {
		k := copy(b, block[off%patternPeriod:])
		b, off = b[k:], off+int64(k)
	}
}

// patternMismatch returns the index of the first byte of b that differs
// from pattern at offset off, or -1.
func patternMismatch(b []byte, off int64) int {
	block := patternBlock()
	for done := 0; done < len(b); {
		seg := block[(off+int64(done))%patternPeriod:]
		seg = seg[:min(len(seg), len(b)-done)]
		if !bytes.Equal(b[done:done+len(seg)], seg) {
			for i := range seg {
				if b[done+i] != seg[i] {
					return done + i
				}
			}
		}
		done += len(seg)
	}
	return -1
}

// TestPatternHelpers: fillPattern and patternMismatch agree with pattern
// byte for byte, across a period's end.
func TestPatternHelpers(t *testing.T) {
	for _, off := range []int64{0, 1, patternPeriod - 3000, 5*patternPeriod + 12345} {
		b := make([]byte, 70000)
		fillPattern(b, off)
		for i := range b {
			if b[i] != pattern(off+int64(i)) {
				t.Fatalf("fillPattern at %d: byte %d differs", off, i)
			}
		}
		if i := patternMismatch(b, off); i != -1 {
			t.Fatalf("patternMismatch at %d: %d on a match", off, i)
		}
		b[4321]++
		if i := patternMismatch(b, off); i != 4321 {
			t.Fatalf("patternMismatch at %d: %d, want 4321", off, i)
		}
	}
}

func TestStreamedUploadAndDownload64MiB(t *testing.T) {
	streamingOnly(t)
	const size = 64 << 20
	gotFirstMiB := make(chan struct{})
	up := startTCP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == "POST" {
			h := sha256.New()
			var n int64
			buf := make([]byte, 64<<10)
			signalled := false
			for {
				k, err := r.Body.Read(buf)
				h.Write(buf[:k])
				n += int64(k)
				if !signalled && n >= 1<<20 {
					close(gotFirstMiB)
					signalled = true
				}
				if err == io.EOF {
					break
				}
				if err != nil {
					http.Error(w, err.Error(), 500)
					return
				}
			}
			fmt.Fprintf(w, "%d %s", n, hex.EncodeToString(h.Sum(nil)))
			return
		}
		// Download: the first MiB, then the rest only once the client has it.
		w.Header().Set("Content-Length", fmt.Sprint(size))
		buf := make([]byte, 1<<20)
		for off := int64(0); off < size; off += int64(len(buf)) {
			fillPattern(buf, off)
			if _, err := w.Write(buf); err != nil {
				return
			}
			if off == 0 {
				w.(http.Flusher).Flush()
				select {
				case <-gotFirstMiB:
				case <-r.Context().Done():
					return
				}
			}
		}
	}))
	f := newFront(t, UpstreamConfig{Servers: servers(up.Addr)}, HandlerOptions{})

	pr, pw := io.Pipe()
	want := sha256.New()
	go func() {
		buf := make([]byte, 1<<20)
		for off := int64(0); off < size; off += int64(len(buf)) {
			fillPattern(buf, off)
			want.Write(buf)
			if _, err := pw.Write(buf); err != nil {
				return
			}
			if off == 1<<20 {
				// Not a byte more until the upstream has the first MiB: a
				// proxy that buffers the whole body would deadlock here.
				select {
				case <-gotFirstMiB:
				case <-time.After(60 * time.Second):
					pw.CloseWithError(errors.New("upstream never saw the first MiB: body not streamed"))
					return
				}
			}
		}
		pw.Close()
	}()
	req, _ := http.NewRequest("POST", f.URL()+"/upload", pr)
	res, body := do(t, req)
	if res.StatusCode != 200 || body != fmt.Sprintf("%d %s", size, hex.EncodeToString(want.Sum(nil))) {
		t.Fatalf("upload: %d %q", res.StatusCode, body)
	}

	gotFirstMiB = make(chan struct{})
	res2, err := http.Get(f.URL() + "/download")
	if err != nil {
		t.Fatal(err)
	}
	defer res2.Body.Close()
	first := make([]byte, 1<<20)
	if _, err := io.ReadFull(res2.Body, first); err != nil {
		t.Fatalf("first MiB of the download: %v", err)
	}
	close(gotFirstMiB)
	n := int64(len(first))
	buf := make([]byte, 256<<10)
	for {
		k, err := res2.Body.Read(buf)
		if i := patternMismatch(buf[:k], n); i >= 0 {
			t.Fatalf("download byte %d differs", n+int64(i))
		}
		n += int64(k)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if n != size {
		t.Fatalf("downloaded %d bytes", n)
	}
}

func TestForwardedHeaders(t *testing.T) {
	up := startTCP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "xff=%s|proto=%s|host=%s|fwd=%s",
			strings.Join(r.Header.Values("X-Forwarded-For"), ";"), r.Header.Get("X-Forwarded-Proto"),
			r.Header.Get("X-Forwarded-Host"), strings.Join(r.Header.Values("Forwarded"), ";"))
	}))
	forged := []string{"X-Forwarded-For", "203.0.113.9", "X-Forwarded-Proto", "https", "X-Forwarded-Host", "evil.example", "Forwarded", "for=203.0.113.9"}
	t.Run("untrusted", func(t *testing.T) {
		f := newFront(t, UpstreamConfig{Servers: servers(up.Addr)}, HandlerOptions{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
		req, _ := http.NewRequest("GET", f.URL()+"/", nil)
		req.Host = "site.example"
		for i := 0; i < len(forged); i += 2 {
			req.Header.Set(forged[i], forged[i+1])
		}
		_, body := do(t, req)
		want := `xff=127.0.0.1|proto=http|host=site.example|fwd=for=127.0.0.1;host="site.example";proto=http`
		if body != want {
			t.Fatalf("upstream saw\n%s\nwant\n%s", body, want)
		}
	})
	t.Run("trusted", func(t *testing.T) {
		f := newFront(t, UpstreamConfig{Servers: servers(up.Addr)}, HandlerOptions{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
		req, _ := http.NewRequest("GET", f.URL()+"/", nil)
		req.Host = "site.example"
		for i := 0; i < len(forged); i += 2 {
			req.Header.Set(forged[i], forged[i+1])
		}
		_, body := do(t, req)
		want := `xff=203.0.113.9, 127.0.0.1|proto=https|host=evil.example|fwd=for=203.0.113.9, for=127.0.0.1;host="site.example";proto=http`
		if body != want {
			t.Fatalf("upstream saw\n%s\nwant\n%s", body, want)
		}
	})
}

func TestHopByHopHeadersRemoved(t *testing.T) {
	up := startTCP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var got []string
		for _, k := range []string{"X-Custom", "Keep-Alive", "Proxy-Authorization", "Proxy-Connection", "Upgrade", "X-Kept"} {
			if v := r.Header.Get(k); v != "" {
				got = append(got, k+"="+v)
			}
		}
		got = append(got, "Te="+r.Header.Get("Te"), "Conn="+r.Header.Get("Connection"))
		w.Header().Set("Connection", "X-Resp-Hop")
		w.Header().Set("X-Resp-Hop", "1")
		w.Header().Set("Keep-Alive", "timeout=5")
		w.Header().Set("X-Resp-Kept", "1")
		io.WriteString(w, strings.Join(got, ","))
	}))
	f := newFront(t, UpstreamConfig{Servers: servers(up.Addr)}, HandlerOptions{})
	res, body := get(t, f.URL()+"/", "Connection", "X-Custom, keep-alive", "X-Custom", "secret", "Keep-Alive", "300",
		"Proxy-Authorization", "Basic eA==", "Proxy-Connection", "keep-alive", "Te", "trailers, deflate", "X-Kept", "yes")
	if body != "X-Kept=yes,Te=trailers,Conn=" {
		t.Fatalf("upstream saw %q", body)
	}
	if res.Header.Get("X-Resp-Hop") != "" || res.Header.Get("Keep-Alive") != "" || res.Header.Get("X-Resp-Kept") != "1" {
		t.Fatalf("response headers %v", res.Header)
	}
}

func TestTrailersBothWays(t *testing.T) {
	up := startTCP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Trailer", "X-Checksum")
		w.Write(b)
		w.(http.Flusher).Flush()
		w.Header().Set("X-Checksum", "sum-"+r.Trailer.Get("X-Req-Trailer"))
	}))
	f := newFront(t, UpstreamConfig{Servers: servers(up.Addr)}, HandlerOptions{})
	req, _ := http.NewRequest("POST", f.URL()+"/", io.MultiReader(strings.NewReader("payload")))
	req.ContentLength = -1
	req.Trailer = http.Header{"X-Req-Trailer": nil}
	body := &trailerBody{r: strings.NewReader("payload"), req: req}
	req.Body = body
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if string(b) != "payload" || res.Trailer.Get("X-Checksum") != "sum-abc" {
		t.Fatalf("body %q trailer %v", b, res.Trailer)
	}
}

// trailerBody sets the request trailer once the body is read, as net/http
// wants it.
type trailerBody struct {
	r   io.Reader
	req *http.Request
}

func (b *trailerBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err == io.EOF {
		b.req.Trailer.Set("X-Req-Trailer", "abc")
	}
	return n, err
}
func (b *trailerBody) Close() error { return nil }

// resetter reads the whole request, then drops the connection without
// answering: the request was sent, so retrying it may repeat its effect.
func resetter() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		c, _, _ := http.NewResponseController(w).Hijack()
		c.Close()
	})
}

func TestNoRetryAfterSendUnlessOptedIn(t *testing.T) {
	streamingOnly(t)
	echo := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "b:%s", b)
	})
	t.Run("default", func(t *testing.T) {
		a, b := startTCP(t, resetter()), startTCP(t, echo)
		f := newFront(t, UpstreamConfig{Servers: servers(a.Addr, b.Addr), Policy: "first", MaxFails: 0, Retries: 2}, HandlerOptions{})
		for _, m := range []string{"POST", "GET", "PUT"} {
			req, _ := http.NewRequest(m, f.URL()+"/", strings.NewReader("data"))
			res, body := do(t, req)
			if res.StatusCode != http.StatusBadGateway {
				t.Fatalf("%s: %d %q, want 502 without retry", m, res.StatusCode, body)
			}
		}
		if b.Hits() != 0 {
			t.Fatalf("a request that was sent was retried on b %d times", b.Hits())
		}
	})
	t.Run("retry_idempotent", func(t *testing.T) {
		a, b := startTCP(t, resetter()), startTCP(t, echo)
		f := newFront(t, UpstreamConfig{Servers: servers(a.Addr, b.Addr), Policy: "first", MaxFails: 0, Retries: 2, RetryIdempotent: true, RetryBodyMax: 1024}, HandlerOptions{})
		req, _ := http.NewRequest("PUT", f.URL()+"/", strings.NewReader("small body"))
		if res, body := do(t, req); res.StatusCode != 200 || body != "b:small body" {
			t.Fatalf("PUT: %d %q", res.StatusCode, body)
		}
		// Unknown length, small: buffered too.
		req, _ = http.NewRequest("PUT", f.URL()+"/", io.MultiReader(strings.NewReader("chunked body")))
		if res, body := do(t, req); res.StatusCode != 200 || body != "b:chunked body" {
			t.Fatalf("chunked PUT: %d %q", res.StatusCode, body)
		}
		if res, body := get(t, f.URL()+"/"); res.StatusCode != 200 || body != "b:" {
			t.Fatalf("GET: %d %q", res.StatusCode, body)
		}
		hits := b.Hits()
		// POST is not idempotent; a body over the limit cannot be replayed.
		req, _ = http.NewRequest("POST", f.URL()+"/", strings.NewReader("data"))
		if res, _ := do(t, req); res.StatusCode != http.StatusBadGateway {
			t.Fatalf("POST: %d", res.StatusCode)
		}
		req, _ = http.NewRequest("PUT", f.URL()+"/", strings.NewReader(strings.Repeat("x", 2000)))
		if res, _ := do(t, req); res.StatusCode != http.StatusBadGateway {
			t.Fatalf("large PUT: %d", res.StatusCode)
		}
		if b.Hits() != hits {
			t.Fatal("POST or large PUT retried")
		}
	})
}

func TestClientDisconnectIsNotUpstreamFailure(t *testing.T) {
	entered := make(chan struct{})
	canceled := make(chan struct{})
	up := startTCP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-r.Context().Done()
		close(canceled)
	}))
	other := startTCP(t, named("other"))
	f := newFront(t, UpstreamConfig{Servers: servers(up.Addr, other.Addr), Policy: "first", MaxFails: 1}, HandlerOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", f.URL()+"/", nil)
	go func() { <-entered; cancel() }()
	if _, err := http.DefaultClient.Do(req); err == nil {
		t.Fatal("request not canceled")
	}
	select {
	case <-canceled:
	case <-time.After(20 * time.Second):
		t.Fatal("upstream request not canceled when the client left")
	}
	waitFor(t, "the proxied request to end", func() bool { return statusOf(f.pool, up.Addr).Active == 0 })
	if s := statusOf(f.pool, up.Addr); s.State != "up" || s.Fails != 0 {
		t.Fatalf("client disconnect counted against the server: %+v", s)
	}
}

func TestHashOnClientIPBehindTrustedProxy(t *testing.T) {
	a, b, c := startTCP(t, named("a")), startTCP(t, named("b")), startTCP(t, named("c"))
	f := newFront(t, UpstreamConfig{Servers: servers(a.Addr, b.Addr, c.Addr), Policy: "hash"},
		HandlerOptions{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	first := map[string]string{}
	for round := 0; round < 3; round++ {
		for i := 0; i < 30; i++ {
			ip := fmt.Sprintf("198.51.100.%d", i)
			_, body := get(t, f.URL()+"/", "X-Forwarded-For", ip)
			if round == 0 {
				first[ip] = body
			} else if first[ip] != body {
				t.Fatalf("client %s went to %s, then %s", ip, first[ip], body)
			}
		}
	}
	if a.Hits() == 0 || b.Hits() == 0 || c.Hits() == 0 {
		t.Fatalf("30 clients did not spread over 3 servers: %d %d %d", a.Hits(), b.Hits(), c.Hits())
	}
}

func TestNoRetriesConfigured(t *testing.T) {
	good := startTCP(t, named("good"))
	f := newFront(t, UpstreamConfig{Servers: servers(refusedAddr(t), good.Addr), Policy: "first", Retries: 0}, HandlerOptions{})
	if res, body := get(t, f.URL()+"/"); res.StatusCode != http.StatusBadGateway {
		t.Fatalf("retries = 0: got %d %q", res.StatusCode, body)
	}
	if good.Hits() != 0 {
		t.Fatal("retried although retries = 0")
	}
}

// blackhole is a loopback listener whose accept queue is full, so a new
// connection attempt hangs until it times out.
func blackhole(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
	for i := 0; ; i++ {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			return addr // full
		}
		t.Cleanup(func() { c.Close() })
		if i > 100 {
			t.Fatal("accept queue never filled")
		}
	}
}

func TestConnectTimeout(t *testing.T) {
	hole := blackhole(t)
	good := startTCP(t, named("good"))
	t.Run("retried", func(t *testing.T) {
		f := newFront(t, UpstreamConfig{Servers: servers(hole, good.Addr), Policy: "first", MaxFails: 1, Retries: 1, ConnectTimeout: 200 * time.Millisecond}, HandlerOptions{})
		// POST too: nothing was sent, so any method may go elsewhere.
		req, _ := http.NewRequest("POST", f.URL()+"/", strings.NewReader("body"))
		if res, body := do(t, req); res.StatusCode != 200 || body != "good" {
			t.Fatalf("got %d %q", res.StatusCode, body)
		}
		if s := statusOf(f.pool, hole); s.State != "down" || !strings.Contains(s.Reason, "timeout") {
			t.Fatalf("status %+v", s)
		}
	})
	t.Run("alone", func(t *testing.T) {
		f := newFront(t, UpstreamConfig{Servers: servers(hole), MaxFails: 1, ConnectTimeout: 200 * time.Millisecond}, HandlerOptions{})
		res, body := get(t, f.URL()+"/")
		if res.StatusCode != http.StatusGatewayTimeout || !strings.Contains(body, "did not answer in time") {
			t.Fatalf("got %d %q", res.StatusCode, body)
		}
		if !strings.Contains(f.log.String(), "i/o timeout") {
			t.Fatalf("log does not give the cause:\n%s", f.log)
		}
	})
}

func TestRealWebSocketThroughProxy(t *testing.T) {
	up := startUnix(t, websocket.Handler(func(c *websocket.Conn) {
		for {
			var m string
			if websocket.Message.Receive(c, &m) != nil || websocket.Message.Send(c, m) != nil {
				return
			}
		}
	}))
	f := newFront(t, UpstreamConfig{Servers: servers(up.Addr)}, HandlerOptions{})
	ws, err := websocket.Dial("ws"+strings.TrimPrefix(f.URL(), "http")+"/ws", "", "http://example.com/")
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	ws.SetDeadline(time.Now().Add(30 * time.Second))
	for _, msg := range []string{"hello", strings.Repeat("x", 100000)} {
		if err := websocket.Message.Send(ws, msg); err != nil {
			t.Fatal(err)
		}
		var got string
		if err := websocket.Message.Receive(ws, &got); err != nil || got != msg {
			t.Fatalf("echo of %d bytes: got %d bytes, %v", len(msg), len(got), err)
		}
	}
}

func TestExpectContinue(t *testing.T) {
	streamingOnly(t)
	up := startTCP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/reject" {
			http.Error(w, "too large", http.StatusRequestEntityTooLarge)
			return
		}
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "%d %s", n, r.Header.Get("Expect"))
	}))
	f := newFront(t, UpstreamConfig{Servers: servers(up.Addr)}, HandlerOptions{})
	client := &http.Client{Transport: &http.Transport{ExpectContinueTimeout: 30 * time.Second}}
	var sent atomic.Int64
	send := func(path string) (*http.Response, string) {
		t.Helper()
		body := io.TeeReader(strings.NewReader(strings.Repeat("x", 2<<20)), writerFunc(func(p []byte) (int, error) {
			sent.Add(int64(len(p)))
			return len(p), nil
		}))
		req, _ := http.NewRequest("PUT", f.URL()+path, body)
		req.ContentLength = 2 << 20
		req.Header.Set("Expect", "100-continue")
		res, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		return res, string(b)
	}
	if res, body := send("/"); res.StatusCode != 200 || body != "2097152 100-continue" {
		t.Fatalf("got %d %q", res.StatusCode, body)
	}
	sent.Store(0)
	// The upstream refuses without reading: the client is told so before
	// it sends the body.
	if res, _ := send("/reject"); res.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("got %d", res.StatusCode)
	}
	if n := sent.Load(); n != 0 {
		t.Fatalf("client sent %d body bytes to a request the upstream refused", n)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func TestClientBodyFailuresAreNotUpstreamFailures(t *testing.T) {
	up := startTCP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "%d %v", n, err)
	}))
	other := startTCP(t, named("other"))
	log, lb := newLog()
	p, err := NewPool(UpstreamConfig{Name: "app", Servers: servers(up.Addr, other.Addr), Policy: "first", MaxFails: 1}, nil, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	// The route's body limit, as edged's server layer sets it.
	fr := enginetest.NewServer(http.MaxBytesHandler(NewHandler(p, HandlerOptions{Log: log}), 1000))
	defer fr.Close()

	req, _ := http.NewRequest("POST", fr.URL+"/", io.MultiReader(strings.NewReader(strings.Repeat("x", 5000))))
	res, body := do(t, req)
	if res.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("over the limit: %d %q", res.StatusCode, body)
	}

	// A client that sends less than it announced, then stops sending.
	c, err := net.Dial("tcp", strings.TrimPrefix(fr.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\nonly a little")
	c.(*net.TCPConn).CloseWrite()
	io.Copy(io.Discard, c)

	waitFor(t, "requests to end", func() bool { return statusOf(p, up.Addr).Active == 0 })
	if s := statusOf(p, up.Addr); s.State != "up" || s.Fails != 0 {
		t.Fatalf("the client's broken body was counted against the server: %+v\n%s", s, lb)
	}
	if other.Hits() != 0 {
		t.Fatal("a request with a broken body was retried")
	}
}

func TestXRealIPIsEdgeds(t *testing.T) {
	up := startTCP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%q", r.Header.Values("X-Real-Ip"))
	}))
	t.Run("untrusted", func(t *testing.T) {
		f := newFront(t, UpstreamConfig{Servers: servers(up.Addr)}, HandlerOptions{})
		_, body := get(t, f.URL()+"/", "X-Real-IP", "203.0.113.9", "X-Forwarded-For", "203.0.113.9")
		if body != `["127.0.0.1"]` {
			t.Fatalf("upstream saw X-Real-IP %s", body)
		}
	})
	t.Run("trusted", func(t *testing.T) {
		f := newFront(t, UpstreamConfig{Servers: servers(up.Addr)}, HandlerOptions{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
		_, body := get(t, f.URL()+"/", "X-Real-IP", "198.51.100.1", "X-Forwarded-For", "203.0.113.9")
		if body != `["203.0.113.9"]` {
			t.Fatalf("upstream saw X-Real-IP %s", body)
		}
	})
}

func TestStripConnectionListed(t *testing.T) {
	for _, c := range []struct {
		conn     []string
		wantConn []string
		gone     []string
	}{
		{[]string{"keep-alive"}, []string{"keep-alive"}, nil},
		{[]string{"X-Request-Id, keep-alive", "x-foo"}, []string{"keep-alive"}, []string{"X-Request-Id", "X-Foo"}},
		{[]string{"Upgrade, X-Foo"}, []string{"Upgrade"}, []string{"X-Foo"}},
		{[]string{"X-Foo"}, nil, []string{"X-Foo"}},
		{[]string{"close, TE"}, []string{"close, TE"}, nil},
	} {
		h := http.Header{"Connection": c.conn, "X-Request-Id": {"client"}, "X-Foo": {"1"}, "Te": {"trailers"}, "Upgrade": {"websocket"}, "X-Kept": {"1"}}
		StripConnectionListed(h)
		if fmt.Sprint(h["Connection"]) != fmt.Sprint(c.wantConn) {
			t.Errorf("Connection %q: left %q, want %q", c.conn, h["Connection"], c.wantConn)
		}
		for _, g := range c.gone {
			if _, ok := h[g]; ok {
				t.Errorf("Connection %q: %s not removed", c.conn, g)
			}
		}
		for _, k := range []string{"X-Kept", "Te", "Upgrade"} {
			if _, ok := h[k]; !ok {
				t.Errorf("Connection %q: %s removed", c.conn, k)
			}
		}
	}
	h := http.Header{"Connection": {"keep-alive"}}
	if n := testing.AllocsPerRun(100, func() { StripConnectionListed(h) }); n != 0 {
		t.Fatalf("a plain keep-alive request costs %v allocations", n)
	}
}

// TestOnlyAllowedUpgrades: WebSocket upgrades by default; an h2c upgrade
// (or any other) goes upstream as an ordinary request, without Upgrade,
// unless the route lists it.
func TestOnlyAllowedUpgrades(t *testing.T) {
	up := startTCP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") == "" {
			fmt.Fprintf(w, "plain conn=%q", r.Header.Get("Connection"))
			return
		}
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: " + r.Header.Get("Upgrade") + "\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
		io.Copy(c, brw.Reader)
	}))
	ask := func(t *testing.T, f *front, proto string) (int, string) {
		c, err := net.Dial("tcp", strings.TrimPrefix(f.URL(), "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: "+proto+"\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
		res, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		if res.StatusCode == 101 {
			return 101, res.Header.Get("Upgrade")
		}
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	f := newFront(t, UpstreamConfig{Servers: servers(up.Addr)}, HandlerOptions{})
	if code, got := ask(t, f, "h2c"); code != 200 || got != `plain conn=""` {
		t.Fatalf("h2c by default: %d %q", code, got)
	}
	if code, got := ask(t, f, "foo/2, WebSocket"); code != 101 || got != "WebSocket" {
		t.Fatalf("websocket by default: %d %q", code, got)
	}
	g := newFront(t, UpstreamConfig{Servers: servers(up.Addr)}, HandlerOptions{Upgrades: []string{"h2c"}})
	if code, got := ask(t, g, "h2c"); code != 101 || got != "h2c" {
		t.Fatalf("h2c listed: %d %q", code, got)
	}
	if code, _ := ask(t, g, "websocket"); code != 200 {
		t.Fatalf("websocket not listed: %d", code)
	}
}

func TestDialErrorIsTyped(t *testing.T) {
	dead := refusedAddr(t)
	p, err := NewPool(UpstreamConfig{Name: "x", Servers: servers(dead)}, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	_, err = p.servers()[0].conn(context.Background(), nanotime(), false, false)
	var de *DialError
	if !errors.As(err, &de) || de.Addr != dead || de.Timeout() || classify(err) != causeConnect {
		t.Fatalf("connecting to a refused port: %T %v", err, err)
	}
}

// oneShot is an upstream on raw TCP that answers the first request on each
// connection as a kept-alive one, then reads the next request and closes
// the connection without answering, as a server does that closes an idle
// connection just as a request arrives.
func oneShot(t *testing.T) (addr string, conns *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	conns = new(atomic.Int32)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				req, err := http.ReadRequest(br)
				if err != nil {
					return
				}
				io.Copy(io.Discard, req.Body)
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				if req, err = http.ReadRequest(br); err == nil {
					io.Copy(io.Discard, req.Body)
				}
			}()
		}
	}()
	return ln.Addr().String(), conns
}

// TestStaleConnection: a kept-alive connection that the server closed is
// seen only once a request was written to it (no read while idle). A GET
// goes again on a new connection, to the same server, and nothing counts
// against the server; a POST is not sent twice.
func TestStaleConnection(t *testing.T) {
	addr, conns := oneShot(t)
	other := startTCP(t, named("other"))
	f := newFront(t, UpstreamConfig{Servers: servers(addr, other.Addr), Policy: "first", MaxFails: 1, Retries: 2}, HandlerOptions{})
	for i := 0; i < 3; i++ {
		if res, body := get(t, f.URL()+"/"); res.StatusCode != 200 || body != "ok" {
			t.Fatalf("GET %d: %d %q", i, res.StatusCode, body)
		}
	}
	if n := conns.Load(); n != 3 {
		t.Fatalf("%d connections for 3 GETs, want 3 (each second use resent on a new one)", n)
	}
	if s := statusOf(f.pool, addr); s.State != "up" || s.Fails != 0 {
		t.Fatalf("a stale connection counted against the server: %+v", s)
	}
	if other.Hits() != 0 {
		t.Fatal("a GET on a stale connection went to another server")
	}
	// A POST on the connection the last GET left idle: sent once, so the
	// server may have acted on it; it is answered 502, never sent again.
	req, _ := http.NewRequest("POST", f.URL()+"/", strings.NewReader("data"))
	res, _ := do(t, req)
	if other.Hits() != 0 || conns.Load() != 3 {
		t.Fatalf("POST on a stale connection: %d, sent again (%d connections, other %d)", res.StatusCode, conns.Load(), other.Hits())
	}
	if res.StatusCode != http.StatusBadGateway {
		t.Fatalf("POST on a stale connection: %d, want 502", res.StatusCode)
	}
}

// TestClosedIdleConnectionNotUsedForPOST: before a request that cannot be
// sent twice, an idle connection the server has already closed is noticed
// and a new one is used.
func TestClosedIdleConnectionNotUsedForPOST(t *testing.T) {
	var open atomic.Int32
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var last net.Conn
	up := serveOnState(t, ln, ln.Addr().String(), named("up"), func(c net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			open.Add(1)
			mu.Lock()
			last = c
			mu.Unlock()
		case http.StateClosed:
			open.Add(-1)
		}
	})
	f := newFront(t, UpstreamConfig{Servers: servers(up.Addr)}, HandlerOptions{})
	get(t, f.URL()+"/")
	mu.Lock()
	last.Close() // the server drops the idle connection
	mu.Unlock()
	waitFor(t, "the server to close it", func() bool { return open.Load() == 0 })
	req, _ := http.NewRequest("POST", f.URL()+"/", strings.NewReader("data"))
	if res, body := do(t, req); res.StatusCode != 200 || body != "up" {
		t.Fatalf("POST after the server closed the idle connection: %d %q", res.StatusCode, body)
	}
}
