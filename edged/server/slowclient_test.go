package server

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// slowConfig has a proxy route, a static route with a 64 MiB file and
// short client_body_timeout and send_timeout.
func slowConfig(t *testing.T, up, extra string) (string, string) {
	www := t.TempDir()
	if err := os.WriteFile(filepath.Join(www, "small.txt"), []byte("small\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(www, "big.bin"))
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(64 << 20)
	f.Close()
	return `
[server]
http = ["127.0.0.1:0"]
https = []
admin = ""
client_body_timeout = "300ms"
send_timeout = "300ms"
` + extra + `
[tls]
storage = "{{DIR}}/tls"
[[site]]
[[site.route]]
path = "/app/"
upstream = "app"
[[site.route]]
path = "/static/"
static = "` + www + `"
[upstream.app]
servers = ["` + up + `"]
`, www
}

// bigUpstream reads the request body (if any) and answers 64 MiB.
func bigUpstream(t *testing.T) string {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Length", "67108864")
		buf := make([]byte, 1<<20)
		for range 64 {
			if _, err := w.Write(buf); err != nil {
				return
			}
		}
	}))
	t.Cleanup(up.Close)
	return strings.TrimPrefix(up.URL, "http://")
}

// TestBodyThatNeverArrives: a request announcing a body it never sends is
// answered and its connection closed after client_body_timeout, on proxy
// and static routes alike (issue 9, finding 3: such a connection stayed
// open for good).
func TestBodyThatNeverArrives(t *testing.T) {
	cfg, _ := slowConfig(t, bigUpstream(t), "")
	ts := startServer(t, cfg)
	for _, c := range []struct{ path, status string }{
		{"/app/x", "HTTP/1.1 408 "},
		{"/static/small.txt", "HTTP/1.1 "},
	} {
		start := time.Now()
		got := ts.raw("POST " + c.path + " HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
		if !strings.HasPrefix(got, c.status) {
			t.Errorf("%s: got %q after %v, want %q and the connection closed", c.path, got, time.Since(start), c.status)
		}
	}
}

// TestClientThatNeverReads: a client that asks for a large response and
// reads nothing loses its connection after send_timeout, for a file sent
// with sendfile and for a proxied response.
func TestClientThatNeverReads(t *testing.T) {
	cfg, _ := slowConfig(t, bigUpstream(t), "")
	ts := startServer(t, cfg)
	for _, path := range []string{"/static/big.bin", "/app/big"} {
		c, err := net.Dial("tcp", ts.addr)
		if err != nil {
			t.Fatal(err)
		}
		c.(*net.TCPConn).SetReadBuffer(4096)
		if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, path+": edged accepting the connection", func() bool { return ts.srv.limiter.Open() == 1 })
		waitUntil(t, path+": edged closing the connection of a client that reads nothing", func() bool { return ts.srv.limiter.Open() == 0 })
		c.Close()
	}
}

// TestSlowButMovingBodyIsNotCut: the timeout runs between two reads, not
// over the whole body: a body sent in pieces, each well within the
// timeout, arrives whole even though it takes several timeouts in all.
func TestSlowButMovingBodyIsNotCut(t *testing.T) {
	got := make(chan int64, 1)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		got <- n
	}))
	t.Cleanup(up.Close)
	cfg, _ := slowConfig(t, strings.TrimPrefix(up.URL, "http://"), "")
	cfg = strings.Replace(cfg, `client_body_timeout = "300ms"`, `client_body_timeout = "1s"`, 1)
	ts := startServer(t, cfg)
	pr, pw := io.Pipe()
	go func() {
		for range 10 {
			pw.Write([]byte("0123456789"))
			time.Sleep(250 * time.Millisecond) // the pace of a slow client (2.5 s in all), not synchronisation
		}
		pw.Close()
	}()
	req, _ := http.NewRequest("POST", ts.url+"/app/upload", pr)
	req.ContentLength = 100
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 || <-got != 100 {
		t.Fatalf("status %d", res.StatusCode)
	}
}

// TestConnectionCaps: past max_connections_per_ip a client gets a short
// 503, counted in the metrics.
func TestConnectionCaps(t *testing.T) {
	cfg, _ := slowConfig(t, bigUpstream(t), "max_connections_per_ip = 2\n")
	ts := startServer(t, cfg)
	for range 2 {
		c, err := net.Dial("tcp", ts.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	got := ts.raw("GET /static/small.txt HTTP/1.1\r\nHost: x\r\n\r\n")
	if !strings.HasPrefix(got, "HTTP/1.1 503 ") || !strings.Contains(got, "too many connections from your address") {
		t.Fatalf("third connection got %q", got)
	}
	if n := metricValue(t, ts, "edged_connections_refused_total", "reason", "max_connections_per_ip"); n != 1 {
		t.Fatalf("edged_connections_refused_total{reason=max_connections_per_ip} = %v", n)
	}
}

// metricValue reads one counter or gauge from edged's registry.
func metricValue(t *testing.T, ts *testServer, name, label, value string) float64 {
	t.Helper()
	mfs, err := ts.srv.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					if c := m.GetCounter(); c != nil {
						return c.GetValue()
					}
					return m.GetGauge().GetValue()
				}
			}
		}
	}
	t.Fatalf("no %s{%s=%q}", name, label, value)
	return 0
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
