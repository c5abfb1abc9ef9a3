package proxy

import (
	"bytes"
	"context"
	"github.com/prometheus/client_golang/prometheus"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"

	"github.com/edgeapp/edgeapp/edged/engine/enginetest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// upstream is a real HTTP server for tests, on loopback TCP or a unix socket.
type upstream struct {
	Addr string // as written in the config
	srv  *http.Server
	ln   net.Listener
	mu   sync.Mutex
	hits int
}

func (u *upstream) Hits() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.hits
}

// Close stops the server and drops its connections, like a killed process.
func (u *upstream) Close() { u.srv.Close() }

func serveOn(t testing.TB, ln net.Listener, addr string, h http.Handler) *upstream {
	return serveOnState(t, ln, addr, h, nil)
}

func serveOnState(t testing.TB, ln net.Listener, addr string, h http.Handler, cs func(net.Conn, http.ConnState)) *upstream {
	u := &upstream{Addr: addr, ln: ln}
	u.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.hits++
		u.mu.Unlock()
		h.ServeHTTP(w, r)
	}), ConnState: cs}
	go func() { _ = u.srv.Serve(ln) }()
	t.Cleanup(u.Close)
	return u
}

func startTCP(t testing.TB, h http.Handler) *upstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return serveOn(t, ln, ln.Addr().String(), h)
}

// restartTCP listens again on a closed upstream's address.
func restartTCP(t testing.TB, addr string, h http.Handler) *upstream {
	t.Helper()
	var ln net.Listener
	var err error
	deadline := time.Now().Add(10 * time.Second)
	for {
		if ln, err = net.Listen("tcp", addr); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	return serveOn(t, ln, addr, h)
}

func startUnix(t testing.TB, h http.Handler) *upstream {
	t.Helper()
	dir, err := os.MkdirTemp("", "pxy") // short: sun_path is 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	p := filepath.Join(dir, "u.sock")
	ln, err := net.Listen("unix", p)
	if err != nil {
		t.Fatal(err)
	}
	return serveOn(t, ln, "unix:"+p, h)
}

// refusedAddr is a loopback port nobody listens on.
func refusedAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := ln.Addr().String()
	ln.Close()
	return a
}

// named answers with its name, so tests see which server took a request.
func named(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("X-Server", name)
		io.WriteString(w, name)
	})
}

// logBuf collects log lines.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logBuf) Count(sub string) int { return strings.Count(l.String(), sub) }

func newLog() (*slog.Logger, *logBuf) {
	lb := &logBuf{}
	return slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug})), lb
}

// bufferedRun is set for the second pass of the suite (TestMain), which
// runs every test again with edged's default buffering on the routes that
// do not choose their own.
var bufferedRun bool

// streamingOnly skips a test of streamed bodies in the buffered pass.
func streamingOnly(t *testing.T) {
	if bufferedRun {
		t.Skip("tests streamed bodies; it ran in the unbuffered pass")
	}
}

// front is edged's stand-in: an HTTP server on loopback with the proxy
// handler, as the server layer would mount it.
type front struct {
	pool *Pool
	srv  *httptest.Server
	log  *logBuf
	m    *Metrics
	reg  *prometheus.Registry
}

func newFront(t testing.TB, cfg UpstreamConfig, o HandlerOptions) *front {
	t.Helper()
	log, lb := newLog()
	if cfg.Name == "" {
		cfg.Name = "app"
	}
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	p, err := NewPool(cfg, nil, m, log)
	if err != nil {
		t.Fatal(err)
	}
	p.Start()
	t.Cleanup(p.Close)
	o.Log = log
	if bufferedRun && o.Buffering == (Buffering{}) {
		o.Buffering = DefaultBuffering()
		o.Buffering.Dir = t.TempDir()
	}
	srv := enginetest.NewServer(NewHandler(p, o))
	t.Cleanup(srv.Close)
	return &front{pool: p, srv: srv, log: lb, m: m, reg: reg}
}

func (f *front) URL() string { return f.srv.URL }

func servers(addrs ...string) []ServerConfig {
	out := make([]ServerConfig, len(addrs))
	for i, a := range addrs {
		out[i] = ServerConfig{Addr: a}
	}
	return out
}

// get does a GET and returns status and body; the body read must succeed.
func get(t testing.TB, url string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return do(t, req)
}

func do(t testing.TB, req *http.Request) (*http.Response, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(req.Context(), 30*time.Second)
	defer cancel()
	res, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	b, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", req.Method, req.URL, err)
	}
	return res, string(b)
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func statusOf(p *Pool, addr string) ServerStatus {
	for _, s := range p.Status() {
		if s.Addr == addr {
			return s
		}
	}
	return ServerStatus{}
}
