package server

import (
	"bufio"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestConnectionCannotStripEdgeHeaders: headers a client names in
// Connection are removed before edged sets its own, so naming the request
// ID or a route's request_headers.set in Connection removes the client's
// copy, not edged's (issue 9, finding 4).
func TestConnectionCannotStripEdgeHeaders(t *testing.T) {
	up := echoUpstream(t, "X-Request-Id", "X-Route", "X-Client")
	ts := startServer(t, `
[[site]]
[[site.route]]
path = "/"
upstream = "app"
request_headers.set = { X-Route = "edge" }
[upstream.app]
servers = ["`+up+`"]
`)
	code, body, hdr := ts.get("/a", "Connection", "X-Request-Id, X-Route, X-Client, keep-alive",
		"X-Request-Id", "forged", "X-Route", "forged", "X-Client", "hop")
	id := hdr.Get("X-Request-Id")
	want := "GET /a\nX-Request-Id=" + id + "\nX-Route=edge\nX-Client=\n"
	if code != 200 || id == "" || id == "forged" || body != want {
		t.Fatalf("got %d, id %q, upstream saw\n%s\nwant\n%s", code, id, body, want)
	}
}

// TestClientAddressAfterTrustedProxies: server.serve works out the client
// once; X-Real-IP upstream and the access log both use it.
func TestClientAddressAfterTrustedProxies(t *testing.T) {
	up := echoUpstream(t, "X-Real-Ip", "X-Forwarded-For")
	for _, c := range []struct {
		trusted, want, xff string
	}{
		{`[]`, "127.0.0.1", "127.0.0.1"},
		{`["127.0.0.0/8"]`, "203.0.113.9", "203.0.113.9, 127.0.0.1"},
	} {
		ts := startServer(t, `
[server]
http = ["127.0.0.1:0"]
https = []
admin = ""
trusted_proxies = `+c.trusted+`
[tls]
storage = "{{DIR}}/tls"
[access_log]
output = "{{DIR}}/access.log"
format = "json"
[[site]]
[[site.route]]
path = "/"
upstream = "app"
[upstream.app]
servers = ["`+up+`"]
`)
		_, body, _ := ts.get("/x", "X-Forwarded-For", "203.0.113.9", "X-Real-IP", "198.51.100.1")
		if want := "GET /x\nX-Real-Ip=" + c.want + "\nX-Forwarded-For=" + c.xff + "\n"; body != want {
			t.Errorf("trusted %s: upstream saw\n%s\nwant\n%s", c.trusted, body, want)
		}
		line := waitForLine(t, filepath.Join(ts.dir, "access.log"))
		var e struct {
			RemoteIP string `json:"client"`
		}
		if err := json.Unmarshal([]byte(line), &e); err != nil || e.RemoteIP != c.want {
			t.Errorf("trusted %s: access log %s (remote %q), want %s", c.trusted, line, e.RemoteIP, c.want)
		}
	}
}

// waitForLine waits for the first line of a file the access log flushes
// every second.
func waitForLine(t *testing.T, path string) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		b, _ := os.ReadFile(path)
		if i := strings.IndexByte(string(b), '\n'); i > 0 {
			return string(b[:i])
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing in %s", path)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestPathBypassRefused: a stricter route under a proxied prefix cannot be
// reached around by dot-segments, doubled slashes or their encodings, and
// the upstream receives the normalised path (issue 9, finding 1).
func TestPathBypassRefused(t *testing.T) {
	up := echoUpstream(t)
	ts := startServer(t, `
[[site]]
[[site.route]]
path = "/app/"
upstream = "app"
[[site.route]]
path = "/app/private/"
respond = "private"
status = 403
[upstream.app]
servers = ["`+up+`"]
`)
	for _, c := range []struct {
		path string
		code int
		body string
	}{
		{"/app/x/../private/a", 403, "private"},
		{"/app/./private/a", 403, "private"},
		{"/app//private/a", 403, "private"},
		{"/app/%2e%2e/app/private/a", 403, "private"},
		{"/app/%2E/private/a", 403, "private"},
		{"/app/.%2e/app/private/a", 403, "private"},
		{"//app///private/a", 403, "private"},
		{"/app/x/%2e%2e/%70rivate/a", 403, "private"},
		{"/app/..%2fprivate/a", 400, ""},
		{"/app/..%5Cprivate/a", 400, ""},
		{"/app/..;/private/a", 400, ""},
		{"/app/../../etc/passwd", 400, ""},
		{"/app/%00", 400, ""},
		// What is not a bypass reaches the upstream, normalised.
		{"/app/x/../b?q=1", 200, "GET /app/b?q=1\n"},
		{"/app/a%2fb", 200, "GET /app/a%2Fb\n"},
		{"/app/Private/a", 200, "GET /app/Private/a\n"}, // case variants stay distinct, as in nginx
	} {
		resp := ts.raw("GET " + c.path + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
		code, body := splitResponse(t, resp)
		if code != c.code || (c.body != "" && body != c.body) {
			t.Errorf("GET %s: %d %q; want %d %q", c.path, code, body, c.code, c.body)
		}
	}
}

// splitResponse parses one raw HTTP/1.1 response.
func splitResponse(t *testing.T, raw string) (int, string) {
	t.Helper()
	res, err := http.ReadResponse(bufio.NewReader(strings.NewReader(raw)), nil)
	if err != nil {
		t.Fatalf("reading %q: %v", raw, err)
	}
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// TestAdminToken: with admin_token_file, every admin request needs the
// bearer token (issue 9, finding 7), and a token file that is too short
// is refused at start with its line.
func TestAdminToken(t *testing.T) {
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "admin.token")
	os.WriteFile(tokenFile, []byte("0123456789abcdef0123456789abcdef\n"), 0o600)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	adminAddr := ln.Addr().String()
	ln.Close()
	ts := startServer(t, `
[server]
http = ["127.0.0.1:0"]
https = []
admin = "`+adminAddr+`"
admin_token_file = "`+tokenFile+`"
[tls]
storage = "{{DIR}}/tls"
[[site]]
[[site.route]]
path = "/"
respond = "ok"
`)
	_ = ts
	for _, c := range []struct {
		auth string
		code int
	}{{"", 401}, {"Bearer wrong", 401}, {"Basic MDEyMzQ1Njc4OWFiY2RlZg==", 401}, {"Bearer 0123456789abcdef0123456789abcdef", 200}} {
		req, _ := http.NewRequest("GET", "http://"+adminAddr+"/status", nil)
		if c.auth != "" {
			req.Header.Set("Authorization", c.auth)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != c.code {
			t.Errorf("Authorization %q: %d, want %d", c.auth, res.StatusCode, c.code)
		}
	}

	os.WriteFile(tokenFile, []byte("short\n"), 0o600)
	cfg := filepath.Join(dir, "short.toml")
	os.WriteFile(cfg, []byte("[server]\nhttp = [\"127.0.0.1:0\"]\nhttps = []\nadmin = \"unix:"+dir+"/a.sock\"\nadmin_token_file = \""+tokenFile+"\"\n[tls]\nstorage = \""+dir+"/tls\"\n[[site]]\n[[site.route]]\npath = \"/\"\nrespond = \"ok\"\n"), 0o644)
	if _, err := New(Options{ConfigPath: cfg, Log: slog.New(slog.DiscardHandler)}); err == nil || !strings.Contains(err.Error(), "short.toml:5: server.admin_token_file") || !strings.Contains(err.Error(), "at least 16") {
		t.Fatalf("a short token: %v", err)
	}
}

// TestAdminDirectoryHint: an admin socket that cannot be made says what
// to set instead.
func TestAdminDirectoryHint(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "edged.toml")
	os.WriteFile(cfg, []byte("[server]\nhttp = [\"127.0.0.1:0\"]\nhttps = []\nadmin = \"unix:"+dir+"/no/such/admin.sock\"\n[tls]\nstorage = \""+dir+"/tls\"\n[[site]]\n[[site.route]]\npath = \"/\"\nrespond = \"ok\"\n"), 0o644)
	_, err := New(Options{ConfigPath: cfg, Log: slog.New(slog.DiscardHandler)})
	if err == nil || !strings.Contains(err.Error(), "edged.toml:4: server.admin") || !strings.Contains(err.Error(), `admin = ""`) {
		t.Fatalf("got %v", err)
	}
}
