package server

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// countingUpstream answers with the body length it read and counts the
// connections it accepted.
func countingUpstream(t *testing.T) (string, *atomic.Int32) {
	var conns atomic.Int32
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "%d %v", n, err)
	}))
	up.Config.ConnState = func(c net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	up.Start()
	t.Cleanup(up.Close)
	return strings.TrimPrefix(up.URL, "http://"), &conns
}

func bufferingConfig(up, route, server string) string {
	return `
[server]
http = ["127.0.0.1:0"]
https = []
admin = ""
client_body_timeout = "500ms"
temp_dir = "{{DIR}}"
` + server + `
[tls]
storage = "{{DIR}}/tls"
[[site]]
[[site.route]]
path = "/app/"
upstream = "app"
` + route + `
[upstream.app]
servers = ["` + up + `"]
`
}

// TestSlowUploadNeverReachesTheApp: by default a request body is read
// whole before an upstream connection is made; one that stops arriving is
// answered 408 at client_body_timeout and never reaches the app.
func TestSlowUploadNeverReachesTheApp(t *testing.T) {
	up, conns := countingUpstream(t)
	ts := startServer(t, bufferingConfig(up, "", ""))
	got := ts.raw("POST /app/x HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + strings.Repeat("x", 40000))
	if !strings.HasPrefix(got, "HTTP/1.1 408 ") {
		t.Fatalf("got %q, want 408", got)
	}
	if n := conns.Load(); n != 0 {
		t.Fatalf("the app got %d connections for a body that never arrived", n)
	}
	// A whole body goes through, spooled to temp_dir and gone after.
	res, err := http.Post(ts.url+"/app/x", "text/plain", strings.NewReader(strings.Repeat("y", 100000)))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || string(b) != "100000 <nil>" {
		t.Fatalf("got %d %q", res.StatusCode, b)
	}
	if es, _ := os.ReadDir(ts.dir); hasSpool(es) {
		t.Fatal("a spool file has a name in temp_dir")
	}
}

func hasSpool(es []os.DirEntry) bool {
	for _, e := range es {
		if strings.Contains(e.Name(), "spool") {
			return true
		}
	}
	return false
}

// TestRequestBufferingOff: request_buffering = false streams the body, so
// the app sees the request while the client is still sending.
func TestRequestBufferingOff(t *testing.T) {
	up, conns := countingUpstream(t)
	ts := startServer(t, bufferingConfig(up, "request_buffering = false\nresponse_buffering = false", ""))
	c, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	io.WriteString(c, "POST /app/x HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello")
	waitUntil(t, "the app to get the streamed request", func() bool { return conns.Load() == 1 })
	io.WriteString(c, "world")
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	if string(b) != "10 <nil>" {
		t.Fatalf("got %q", b)
	}
}

// TestBufferingSettingsChecked: the keys are checked with file, line and
// key.
func TestBufferingSettingsChecked(t *testing.T) {
	for _, c := range []struct{ server, route, want string }{
		{`temp_dir = "relative/dir"`, "", "server.temp_dir"},
		{`temp_dir = "/nonexistent/edged-spool"`, "", "server.temp_dir"},
		{`response_buffer_size = "100B"`, "", "server.response_buffer_size"},
	} {
		dir := t.TempDir()
		path := dir + "/edged.toml"
		cfg := strings.ReplaceAll(bufferingConfig("127.0.0.1:9", c.route, ""), `temp_dir = "{{DIR}}"`, c.server)
		cfg = strings.ReplaceAll(cfg, "{{DIR}}", dir)
		os.WriteFile(path, []byte(cfg), 0o644)
		_, err := New(Options{ConfigPath: path, Version: "test", Log: slog.New(slog.DiscardHandler)})
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "edged.toml:") {
			t.Errorf("%s: got %v, want an error naming edged.toml:LINE and %s", c.server, err, c.want)
		}
	}
}

// TestUpstreamTLSSettingsChecked: tls keys of an upstream are checked with
// file, line and key, files included (edged -t reads them).
func TestUpstreamTLSSettingsChecked(t *testing.T) {
	for _, c := range []struct{ keys, want string }{
		{`tls_ca = "/etc/ca.pem"`, "upstream.app.tls_ca: goes with tls = true"},
		{"tls = true\ntls_ca = \"ca.pem\"", "want an absolute path"},
		{"tls = true\ntls_cert = \"/c.pem\"", "give both or neither"},
		{"tls = true\ntls_ca = \"/nonexistent/ca.pem\"", "tls_ca: open /nonexistent/ca.pem"},
	} {
		dir := t.TempDir()
		path := dir + "/edged.toml"
		cfg := strings.ReplaceAll(bufferingConfig("127.0.0.1:9", "", "")+c.keys+"\n", "{{DIR}}", dir)
		os.WriteFile(path, []byte(cfg), 0o644)
		_, err := New(Options{ConfigPath: path, Version: "test", Log: slog.New(slog.DiscardHandler)})
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "edged.toml:") {
			t.Errorf("%s: got %v, want an error naming edged.toml:LINE and saying %q", c.keys, err, c.want)
		}
	}
}
