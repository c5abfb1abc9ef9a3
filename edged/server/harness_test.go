package server

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeapp/edgeapp/edged/engine/enginetest"
	"github.com/edgeapp/edgeapp/internal/syncbuf"
)

// testServer is a whole edged Server in the test process: the real
// listeners (bound on loopback), compile, reload and serving loop.
type testServer struct {
	t      *testing.T
	srv    *Server
	dir    string
	path   string
	url    string // http://127.0.0.1:PORT
	addr   string
	log    *syncbuf.Buffer
	cancel context.CancelFunc
	done   chan error
}

// serverPreamble binds one loopback port, no HTTPS, no admin socket, and
// keeps certificates under the test's directory.
const serverPreamble = `
[server]
http = ["127.0.0.1:0"]
https = []
admin = ""
[tls]
storage = "{{DIR}}/tls"
`

// startServer writes config (after serverPreamble unless it has its own
// [server]; {{DIR}} is the test's directory) and serves it until the test
// ends.
func startServer(t *testing.T, config string) *testServer {
	t.Helper()
	ts := &testServer{t: t, dir: t.TempDir(), log: &syncbuf.Buffer{}, done: make(chan error, 1)}
	ts.path = filepath.Join(ts.dir, "edged.toml")
	ts.write(config)
	log := slog.New(slog.NewTextHandler(ts.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv, err := New(Options{ConfigPath: ts.path, Version: "test", Log: log})
	if err != nil {
		t.Fatal(err)
	}
	ts.srv = srv
	ts.addr = srv.httpLns[0].Addr().String()
	ts.url = "http://" + ts.addr
	ctx, cancel := context.WithCancel(context.Background())
	ts.cancel = cancel
	go func() { ts.done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-ts.done:
		case <-time.After(60 * time.Second):
			t.Error("edged did not stop within 60s")
		}
		if t.Failed() {
			t.Logf("edged log:\n%s", ts.log.String())
		}
	})
	return ts
}

// write replaces the configuration file.
func (ts *testServer) write(config string) {
	ts.t.Helper()
	if !strings.Contains(config, "[server]") {
		config = serverPreamble + config
	}
	config = strings.ReplaceAll(config, "{{DIR}}", ts.dir)
	config = enginetest.Config(config)
	if err := os.WriteFile(ts.path, []byte(config), 0o644); err != nil {
		ts.t.Fatal(err)
	}
}

// get sends one request with extra header pairs and returns status, body and
// response headers.
func (ts *testServer) get(path string, hdr ...string) (int, string, http.Header) {
	ts.t.Helper()
	req, err := http.NewRequest("GET", ts.url+path, nil)
	if err != nil {
		ts.t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if strings.EqualFold(hdr[i], "Host") {
			req.Host = hdr[i+1]
			continue
		}
		req.Header.Add(hdr[i], hdr[i+1])
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		ts.t.Fatalf("GET %s: %v", path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		ts.t.Fatalf("GET %s: reading body: %v", path, err)
	}
	return res.StatusCode, string(b), res.Header
}

// raw sends bytes exactly as written on a new connection and returns
// everything edged answers until it closes or 10s pass.
func (ts *testServer) raw(request string) string {
	ts.t.Helper()
	c, err := net.Dial("tcp", ts.addr)
	if err != nil {
		ts.t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, request); err != nil {
		ts.t.Fatal(err)
	}
	b, _ := io.ReadAll(c)
	return string(b)
}

// echoUpstream answers every request with its method, path (as received on
// the wire) and the named request headers, one "name=value" per line.
func echoUpstream(t *testing.T, headers ...string) string {
	t.Helper()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s\n", r.Method, r.RequestURI)
		for _, h := range headers {
			fmt.Fprintf(w, "%s=%s\n", h, strings.Join(r.Header.Values(h), ";"))
		}
	}))
	t.Cleanup(up.Close)
	return strings.TrimPrefix(up.URL, "http://")
}
