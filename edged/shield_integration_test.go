package main

// Integration tests of what shields the application: per-client limits,
// access control, authentication, error pages, try_files and the access
// log, against the real edged binary and real upstreams.

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// readJSONLog returns the access log's records, after making edged flush
// it (SIGUSR1 reopens, which writes what is buffered first).
func readJSONLog(t *testing.T, e *edged, path string, want int) []map[string]any {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(path)
		var out []map[string]any
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			if line == "" {
				continue
			}
			var m map[string]any
			if err := json.Unmarshal([]byte(line), &m); err != nil {
				t.Fatalf("access log line is not JSON: %v\n%s", err, line)
			}
			out = append(out, m)
		}
		if len(out) >= want {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("access log has %d records after 10s, want %d:\n%s", len(out), want, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestAccessLogFields: the client address after trusted_proxies, the
// upstream's address, status and time, the cache status, bytes and the
// request ID all reach a JSON access log.
func TestAccessLogFields(t *testing.T) {
	up := upstream(t, "a")
	e := startEdged(t, fmt.Sprintf(`
[server]
admin = "{{ADMIN}}"
trusted_proxies = ["127.0.0.0/8"]
[access_log]
output = "{{DIR}}/access.json"
format = "json"
fields = ["client", "peer", "method", "uri", "status", "bytes_in", "bytes_out", "request_id", "route", "upstream", "upstream_status", "upstream_time", "cache", "header:X-Tenant"]
[cache.c]
memory = "16MiB"
[upstream.app]
servers = [%q]
[[site]]
  [[site.route]]
  path = "/"
  upstream = "app"
  cache = "c"
  [[site.route]]
  path = "/quiet"
  respond = "shh"
  access_log = false
`, up))
	c := &http.Client{Timeout: 10 * time.Second}
	do := func(method, path, xff string, body string) {
		t.Helper()
		req, _ := http.NewRequest(method, e.httpURL+path, strings.NewReader(body))
		if xff != "" {
			req.Header.Set("X-Forwarded-For", xff)
		}
		req.Header.Set("X-Tenant", "blue")
		res, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
	}
	do("GET", "/quiet", "", "")
	do("GET", "/upload", "198.51.100.9, 203.0.113.7, 127.0.0.5", "")
	do("POST", "/upload", "", "0123456789")
	recs := readJSONLog(t, e, filepath.Join(filepath.Dir(e.config), "access.json"), 2)
	if len(recs) != 2 {
		t.Fatalf("want 2 records (the quiet route is not logged), got %v", recs)
	}
	byMethod := map[string]map[string]any{}
	for _, r := range recs {
		byMethod[r["method"].(string)] = r
	}
	g, p := byMethod["GET"], byMethod["POST"]
	if g["client"] != "203.0.113.7" || g["peer"] != "127.0.0.1" {
		t.Errorf("client after trusted proxies: %v", g)
	}
	if g["upstream"] != up || g["upstream_status"] != 200.0 || g["cache"] != "MISS" || g["status"] != 200.0 {
		t.Errorf("upstream and cache: %v", g)
	}
	if ut, ok := g["upstream_time"].(float64); !ok || ut <= 0 || ut > 10 {
		t.Errorf("upstream_time: %v", g["upstream_time"])
	}
	if g["header_x_tenant"] != "blue" || g["route"] != "default/" || g["request_id"] == "" {
		t.Errorf("header, route, request id: %v", g)
	}
	if p["client"] != "127.0.0.1" || p["cache"] != "BYPASS" || p["bytes_out"] != 2.0 || p["bytes_in"] != 10.0 {
		t.Errorf("POST record: %v", p)
	}
}

// adminGet fetches a path from edged's admin socket.
func adminGet(t *testing.T, e *edged, path string) string {
	t.Helper()
	admin := filepath.Join(filepath.Dir(e.config), "admin.sock")
	ac := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return net.Dial("unix", admin)
	}}}
	res, err := ac.Get("http://edged" + path)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return string(b)
}

// TestRateLimit: a client hammering a limited route for a window gets the
// rate plus the burst through to a real upstream and 429 with Retry-After
// for the rest; another route is not limited; the zone's state shows in
// /status and /metrics.
func TestRateLimit(t *testing.T) {
	up := upstream(t, "a")
	e := startEdged(t, fmt.Sprintf(`
[server]
admin = "{{ADMIN}}"
[limit.api]
rate = "20r/s"
burst = 10
nodelay = true
[upstream.app]
servers = [%q]
[[site]]
limit = ["api"]
  [[site.route]]
  path = "/"
  upstream = "app"
  [[site.route]]
  path = "/free/"
  upstream = "app"
  limit = []
`, up))
	c := &http.Client{Timeout: 10 * time.Second}
	const window = 2 * time.Second
	start := time.Now()
	// The window runs from the first admitted answer to the last, so that
	// scheduling delays on a busy host before and after do not count.
	var first, last time.Time
	var ok, refused int
	for i := 0; time.Since(start) < window && i < 100000; i++ {
		res, err := c.Get(e.httpURL + "/x")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		switch res.StatusCode {
		case 200:
			if first.IsZero() {
				first = time.Now()
			}
			last = time.Now()
			ok++
		case 429:
			refused++
			if ra := res.Header.Get("Retry-After"); ra != "1" {
				t.Fatalf("Retry-After %q", ra)
			}
		default:
			t.Fatalf("status %d", res.StatusCode)
		}
	}
	elapsed := last.Sub(first)
	want := 20*elapsed.Seconds() + 11
	t.Logf("%d admitted, %d refused in %v (want about %.0f admitted)", ok, refused, elapsed, want)
	if float64(ok) < want-3 || float64(ok) > want+3 || refused == 0 {
		t.Fatalf("%d admitted, %d refused in %v; want about %.0f admitted", ok, refused, elapsed, want)
	}
	for range 50 {
		if code, _ := get(t, c, e.httpURL+"/free/x"); code != 200 {
			t.Fatalf("route with limit = [] answered %d", code)
		}
	}
	var st struct {
		Limits []struct {
			Name    string
			Keys    int
			Busiest []struct{ Key string }
		}
	}
	if err := json.Unmarshal([]byte(adminGet(t, e, "/status")), &st); err != nil || len(st.Limits) != 1 || st.Limits[0].Name != "api" || st.Limits[0].Keys != 1 {
		t.Fatalf("/status limits: %v %+v", err, st)
	}
	metrics := adminGet(t, e, "/metrics")
	for _, want := range []string{
		fmt.Sprintf(`edged_limit_requests_total{result="refused",route="default/",site="default",zone="api"} %d`, refused),
		`edged_limit_keys{zone="api"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// TestLimitStateSurvivesReload: a client that spent its allowance stays
// refused after a reload that keeps the zone, and a new zone starts fresh.
func TestLimitStateSurvivesReload(t *testing.T) {
	cfg := `
[server]
admin = "{{ADMIN}}"
[limit.%s]
rate = "1r/m"
burst = 2
nodelay = true
[[site]]
limit = [%q]
  [[site.route]]
  path = "/"
  respond = %q
`
	e := startEdged(t, fmt.Sprintf(cfg, "slow", "slow", "one"))
	c := &http.Client{Timeout: 10 * time.Second}
	var codes []int
	for range 4 {
		code, _ := get(t, c, e.httpURL+"/")
		codes = append(codes, code)
	}
	if fmt.Sprint(codes) != "[200 200 200 429]" {
		t.Fatalf("before reload: %v", codes)
	}
	e.reload(fmt.Sprintf(cfg, "slow", "slow", "two"))
	if code, body := get(t, c, e.httpURL+"/"); code != 429 {
		t.Fatalf("after a reload keeping the zone: %d %q", code, body)
	}
	e.reload(fmt.Sprintf(cfg, "other", "other", "three"))
	if code, body := get(t, c, e.httpURL+"/"); code != 200 || body != "three" {
		t.Fatalf("with a new zone: %d %q", code, body)
	}
}

// TestAllowDenyAfterTrustedProxies: allow/deny decide on the client
// address after trusted_proxies, per site and per route; from a peer that
// is not trusted, X-Forwarded-For is ignored.
func TestAllowDenyAfterTrustedProxies(t *testing.T) {
	up := upstream(t, "a")
	cfg := `
[server]
admin = "{{ADMIN}}"
trusted_proxies = %s
[upstream.app]
servers = [%q]
[[site]]
allow = ["203.0.113.0/24"]
  [[site.route]]
  path = "/"
  upstream = "app"
  [[site.route]]
  path = "/open/"
  respond = "open"
  allow = ["all"]
  [[site.route]]
  path = "/lan/"
  respond = "lan"
  allow = ["all"]
  deny = ["203.0.113.128/25"]
`
	e := startEdged(t, fmt.Sprintf(cfg, `["127.0.0.0/8"]`, up))
	c := &http.Client{Timeout: 10 * time.Second}
	status := func(path, xff string) int {
		t.Helper()
		req, _ := http.NewRequest("GET", e.httpURL+path, nil)
		if xff != "" {
			req.Header.Set("X-Forwarded-For", xff)
		}
		res, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return res.StatusCode
	}
	for _, cse := range []struct {
		path, xff string
		want      int
	}{
		{"/a", "203.0.113.5", 200},
		{"/a", "198.51.100.1", 403},
		{"/a", "", 403}, // the proxy itself is not in the allow list
		{"/a", "203.0.113.5, 198.51.100.1", 403},
		{"/open/", "198.51.100.1", 200},
		{"/lan/", "203.0.113.5", 200},
		{"/lan/", "203.0.113.200", 403},
	} {
		if got := status(cse.path, cse.xff); got != cse.want {
			t.Errorf("trusted: %s from %q: %d, want %d", cse.path, cse.xff, got, cse.want)
		}
	}
	e.reload(fmt.Sprintf(cfg, `[]`, up))
	if got := status("/a", "203.0.113.5"); got != 403 {
		t.Errorf("a forged X-Forwarded-For from an untrusted peer passed: %d", got)
	}
	if !strings.Contains(adminGet(t, e, "/metrics"), `edged_access_denied_total{route="default/",site="default"}`) {
		t.Error("edged_access_denied_total missing")
	}
}

// TestBasicAndForwardAuth: a site behind basic auth with a real htpasswd
// file, a public route inside it, and a route behind a real forward-auth
// service whose answer's headers reach the upstream.
func TestBasicAndForwardAuth(t *testing.T) {
	htpasswd, err := exec.LookPath("htpasswd")
	if err != nil {
		t.Skip("htpasswd not installed (Debian package apache2-utils)")
	}
	dir := t.TempDir()
	pwfile := filepath.Join(dir, "htpasswd")
	if out, err := exec.Command(htpasswd, "-cbB", "-C", "5", pwfile, "alice", "wonderland").CombinedOutput(); err != nil {
		t.Fatalf("htpasswd: %v\n%s", err, out)
	}
	authSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") == "Bearer let-me-in" && r.Header.Get("X-Forwarded-Uri") == "/api/x" {
			w.Header().Set("X-User", "svc-42")
			return
		}
		w.WriteHeader(http.StatusForbidden)
		io.WriteString(w, "no entry")
	}))
	defer authSrv.Close()
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "app %s user=%s", r.URL.Path, r.Header.Get("X-User"))
	}))
	defer app.Close()
	e := startEdged(t, fmt.Sprintf(`
[server]
admin = "{{ADMIN}}"
[upstream.app]
servers = [%q]
[[site]]
basic_auth = { realm = "staff", htpasswd = %q }
  [[site.route]]
  path = "/"
  upstream = "app"
  [[site.route]]
  path = "/healthz"
  respond = "ok"
  auth = false
  [[site.route]]
  path = "/api/"
  upstream = "app"
  forward_auth = { url = "%s/check", copy_headers = ["X-User"] }
`, strings.TrimPrefix(app.URL, "http://"), pwfile, authSrv.URL))
	c := &http.Client{Timeout: 10 * time.Second}
	do := func(path, user, pass, bearer, xuser string) (int, string, http.Header) {
		t.Helper()
		req, _ := http.NewRequest("GET", e.httpURL+path, nil)
		if user != "" {
			req.SetBasicAuth(user, pass)
		}
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		if xuser != "" {
			req.Header.Set("X-User", xuser)
		}
		res, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		return res.StatusCode, string(b), res.Header
	}
	if code, _, h := do("/page", "", "", "", ""); code != 401 || !strings.Contains(h.Get("Www-Authenticate"), `realm="staff"`) {
		t.Fatalf("no credentials: %d %v", code, h)
	}
	if code, _, _ := do("/page", "alice", "wrong", "", ""); code != 401 {
		t.Fatalf("wrong password: %d", code)
	}
	if code, body, _ := do("/page", "alice", "wonderland", "", "forged"); code != 200 || body != "app /page user=forged" {
		t.Fatalf("alice: %d %q", code, body)
	}
	if code, body, _ := do("/healthz", "", "", "", ""); code != 200 || body != "ok" {
		t.Fatalf("public route: %d %q", code, body)
	}
	if code, body, _ := do("/api/x", "", "", "let-me-in", "forged"); code != 200 || body != "app /api/x user=svc-42" {
		t.Fatalf("forward auth allowed: %d %q", code, body)
	}
	if code, body, _ := do("/api/x", "", "", "wrong", "forged"); code != 403 || body != "no entry" {
		t.Fatalf("forward auth denied: %d %q", code, body)
	}
	authSrv.Close()
	if code, _, _ := do("/api/x", "", "", "let-me-in", ""); code != 502 {
		t.Fatalf("forward auth service down: %d", code)
	}
	e.waitLog("forward auth: the authentication service did not answer")
}

// waitLog waits for edged to write a line containing want (its output
// reaches the test through a pipe, after the response).
func (e *edged) waitLog(want string) {
	e.t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(e.stderr.String(), want); {
		if time.Now().After(deadline) {
			e.t.Fatalf("edged did not log %q:\n%s", want, e.stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestErrorPagesAndMaintenance: a site's pages replace edged's own errors
// (no route, a dead upstream) but not the upstream's, unless a route
// intercepts them; a route in maintenance answers 503 with its page and
// Retry-After without reaching the app, except for the allowed clients.
func TestErrorPagesAndMaintenance(t *testing.T) {
	var appHits atomic.Int32
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		appHits.Add(1)
		if strings.HasSuffix(r.URL.Path, "/boom") {
			http.Error(w, "Traceback (most recent call last)", http.StatusInternalServerError)
			return
		}
		io.WriteString(w, "app "+r.URL.Path)
	}))
	defer app.Close()
	dir := t.TempDir()
	for name, body := range map[string]string{"404.html": "<h1>no such page</h1>", "50x.html": "<h1>we are on it</h1>", "maint.html": "<h1>back at five</h1>"} {
		os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644)
	}
	e := startEdged(t, fmt.Sprintf(`
[server]
admin = "{{ADMIN}}"
trusted_proxies = ["127.0.0.0/8"]
[upstream.app]
servers = [%q]
[upstream.dead]
servers = [%q]
[[site]]
error_pages = { 404 = "%[3]s/404.html", 5xx = "%[3]s/50x.html" }
  [[site.route]]
  path = "/app/"
  upstream = "app"
  [[site.route]]
  path = "/strict/"
  upstream = "app"
  intercept_errors = true
  [[site.route]]
  path = "/dead/"
  upstream = "dead"
  [[site.route]]
  path = "/shop/"
  upstream = "app"
  maintenance = { enabled = true, page = "%[3]s/maint.html", retry_after = "10m", allow = ["192.0.2.0/24"] }
`, strings.TrimPrefix(app.URL, "http://"), closedPort(t), dir))
	c := &http.Client{Timeout: 10 * time.Second}
	do := func(path, xff string) (int, string, http.Header) {
		t.Helper()
		req, _ := http.NewRequest("GET", e.httpURL+path, nil)
		if xff != "" {
			req.Header.Set("X-Forwarded-For", xff)
		}
		res, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		return res.StatusCode, string(b), res.Header
	}
	for _, cse := range []struct {
		path, xff, body string
		status          int
	}{
		{"/nowhere", "", "<h1>no such page</h1>", 404},
		{"/dead/x", "", "<h1>we are on it</h1>", 502},
		{"/app/boom", "", "Traceback (most recent call last)\n", 500},
		{"/strict/boom", "", "<h1>we are on it</h1>", 500},
		{"/app/ok", "", "app /app/ok", 200},
		{"/shop/cart", "198.51.100.1", "<h1>back at five</h1>", 503},
		{"/shop/cart", "192.0.2.7", "app /shop/cart", 200},
	} {
		code, body, h := do(cse.path, cse.xff)
		if code != cse.status || body != cse.body {
			t.Errorf("%s from %q: %d %q, want %d %q", cse.path, cse.xff, code, body, cse.status, cse.body)
		}
		if strings.HasSuffix(body, "</h1>") && h.Get("Content-Type") != "text/html; charset=utf-8" {
			t.Errorf("%s: page Content-Type %q", cse.path, h.Get("Content-Type"))
		}
		if cse.status == 503 && h.Get("Retry-After") != "600" {
			t.Errorf("maintenance Retry-After %q", h.Get("Retry-After"))
		}
	}
	// The app saw /app/boom, /strict/boom, /app/ok and the allowed client's
	// /shop/cart, never the refused one.
	if n := appHits.Load(); n != 4 {
		t.Errorf("the app got %d requests, want 4", n)
	}
	// A reload that turns maintenance off and names a missing page fails
	// and keeps serving; a good one lifts maintenance.
	cfg, _ := os.ReadFile(e.config)
	e.reload(strings.Replace(string(cfg), "maint.html", "missing.html", 1))
	if code, _, _ := do("/shop/cart", "198.51.100.1"); code != 503 {
		t.Errorf("after a failed reload: %d", code)
	}
	e.waitLog("reload failed")
	e.reload(strings.Replace(string(cfg), "enabled = true", "enabled = false", 1))
	if code, body, _ := do("/shop/cart", "198.51.100.1"); code != 200 || body != "app /shop/cart" {
		t.Errorf("maintenance off: %d %q", code, body)
	}
}

// TestTryFilesThenApp: one route serves what exists under its static root
// and sends everything else to the application (nginx's
// try_files $uri $uri/ @app).
func TestTryFilesThenApp(t *testing.T) {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "app %s %s", r.Method, r.URL.Path)
	}))
	defer app.Close()
	root := t.TempDir()
	os.WriteFile(filepath.Join(root, "style.css"), []byte("body{}"), 0o644)
	os.WriteFile(filepath.Join(root, ".env"), []byte("SECRET=1"), 0o644)
	os.MkdirAll(filepath.Join(root, "docs"), 0o755)
	os.WriteFile(filepath.Join(root, "docs", "index.html"), []byte("<p>docs</p>"), 0o644)
	os.MkdirAll(filepath.Join(root, "empty"), 0o755)
	e := startEdged(t, fmt.Sprintf(`
[server]
admin = "{{ADMIN}}"
[upstream.app]
servers = [%q]
[[site]]
  [[site.route]]
  path = "/"
  static = %q
  upstream = "app"
`, strings.TrimPrefix(app.URL, "http://"), root))
	c := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, cse := range []struct{ method, path, want string }{
		{"GET", "/style.css", "body{}"},
		{"HEAD", "/style.css", ""},
		{"GET", "/docs/", "<p>docs</p>"},
		{"GET", "/login", "app GET /login"},
		{"POST", "/style.css", "app POST /style.css"},
		{"GET", "/docs", "app GET /docs"},
		{"GET", "/empty/", "app GET /empty/"},
		{"GET", "/.env", "app GET /.env"},
		{"GET", "/style.css/x", "app GET /style.css/x"},
	} {
		req, _ := http.NewRequest(cse.method, e.httpURL+cse.path, nil)
		res, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || string(b) != cse.want {
			t.Errorf("%s %s: %d %q, want %q", cse.method, cse.path, res.StatusCode, b, cse.want)
		}
	}
}

// TestAccessLogToJournal: with output = "journal", each request is one
// native journal record with structured fields. edged is built with the
// journal's socket path pointed at a socket this test reads, which speaks
// journald's native protocol as journald does.
func TestAccessLogToJournal(t *testing.T) {
	if testing.Short() {
		t.Skip("builds another edged")
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "journal.sock")
	bin := filepath.Join(dir, "edged-journal")
	build := exec.Command("go", "build", "-o", bin, "-ldflags", "-X github.com/coreos/go-systemd/v22/journal.journalSocket="+sock, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building edged: %v\n%s", err, out)
	}
	jl, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer jl.Close()
	saved := edgedBin // tests in this package never run in parallel
	edgedBin = bin
	e := startEdged(t, `
[server]
admin = "{{ADMIN}}"
[access_log]
output = "journal"
fields = ["client", "method", "uri", "status", "route", "header:X-Tenant"]
[[site]]
  [[site.route]]
  path = "/"
  respond = "hello"
`)
	edgedBin = saved
	req, _ := http.NewRequest("GET", e.httpURL+"/page?x=1", nil)
	req.Header.Set("X-Tenant", "blue")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	buf := make([]byte, 64<<10)
	jl.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		n, err := jl.Read(buf)
		if err != nil {
			t.Fatalf("no access record reached the journal socket: %v", err)
		}
		rec := parseJournal(t, buf[:n])
		if rec["SYSLOG_IDENTIFIER"] != "edged-access" {
			continue // edged's own log lines, if any
		}
		want := map[string]string{
			"HTTP_CLIENT": "127.0.0.1", "HTTP_METHOD": "GET", "HTTP_URI": "/page?x=1", "HTTP_STATUS": "200",
			"HTTP_ROUTE": "default/", "HTTP_HEADER_X_TENANT": "blue", "PRIORITY": "6",
		}
		for k, v := range want {
			if rec[k] != v {
				t.Errorf("%s = %q, want %q (record %q)", k, rec[k], v, rec)
			}
		}
		if !strings.Contains(rec["MESSAGE"], `"GET /page?x=1 `+clientProto()+`" 200 5`) {
			t.Errorf("MESSAGE %q", rec["MESSAGE"])
		}
		return
	}
}

// parseJournal reads journald's native datagram format: KEY=value lines,
// or KEY, a newline, a 64-bit little-endian length and the raw value.
func parseJournal(t *testing.T, b []byte) map[string]string {
	t.Helper()
	rec := map[string]string{}
	for len(b) > 0 {
		nl := bytes.IndexByte(b, '\n')
		if nl < 0 {
			t.Fatalf("record without a final newline: %q", b)
		}
		line := b[:nl]
		if k, v, ok := bytes.Cut(line, []byte("=")); ok {
			rec[string(k)] = string(v)
			b = b[nl+1:]
			continue
		}
		if len(b) < nl+1+8 {
			t.Fatalf("short binary field %q", line)
		}
		size := binary.LittleEndian.Uint64(b[nl+1 : nl+9])
		start := nl + 9
		if uint64(len(b)) < uint64(start)+size+1 {
			t.Fatalf("binary field %q longer than the record", line)
		}
		rec[string(line)] = string(b[start : start+int(size)])
		b = b[start+int(size)+1:]
	}
	return rec
}

// TestCheckReadsShieldFiles: edged -t reads the htpasswd files and error
// pages a reload would read, and names what is missing.
func TestCheckReadsShieldFiles(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "edged.toml")
	os.WriteFile(cfg, []byte(`
[server]
admin = ""
[[site]]
error_pages = { 404 = "`+dir+`/404.html" }
  [[site.route]]
  path = "/"
  respond = "hi"
  basic_auth = { htpasswd = "`+dir+`/htpasswd" }
`), 0o644)
	out, err := exec.Command(edgedBin, "-t", "-config", cfg).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "404.html: no such file") || !strings.Contains(string(out), "htpasswd: no such file") {
		t.Fatalf("edged -t: %v\n%s", err, out)
	}
}

// TestSatisfyAny: with satisfy = "any", the office network passes without
// a password and everyone else may log in; with the default "all", both
// are needed.
func TestSatisfyAny(t *testing.T) {
	hash, err := bcryptHash("pw")
	if err != nil {
		t.Fatal(err)
	}
	e := startEdged(t, `
[server]
admin = "{{ADMIN}}"
trusted_proxies = ["127.0.0.0/8"]
[[site]]
allow = ["192.0.2.0/24"]
basic_auth = { users = { alice = "`+hash+`" } }
  [[site.route]]
  path = "/any/"
  respond = "in"
  satisfy = "any"
  [[site.route]]
  path = "/all/"
  respond = "in"
`)
	c := &http.Client{Timeout: 10 * time.Second}
	status := func(path, xff string, login bool) int {
		t.Helper()
		req, _ := http.NewRequest("GET", e.httpURL+path, nil)
		req.Header.Set("X-Forwarded-For", xff)
		if login {
			req.SetBasicAuth("alice", "pw")
		}
		res, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	for _, cse := range []struct {
		path, xff string
		login     bool
		want      int
	}{
		{"/any/", "192.0.2.5", false, 200},
		{"/any/", "198.51.100.1", false, 401},
		{"/any/", "198.51.100.1", true, 200},
		{"/all/", "192.0.2.5", false, 401},
		{"/all/", "192.0.2.5", true, 200},
		{"/all/", "198.51.100.1", true, 403},
	} {
		if got := status(cse.path, cse.xff, cse.login); got != cse.want {
			t.Errorf("%s from %s (login %v): %d, want %d", cse.path, cse.xff, cse.login, got, cse.want)
		}
	}
}

func bcryptHash(pw string) (string, error) {
	h, err := bcrypt.GenerateFromPassword([]byte(pw), 4)
	return string(h), err
}
