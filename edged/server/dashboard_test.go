package server

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeapp/edgeapp/edged/dashboard"
)

// dashConfig has a proxied route behind a cache and a limit zone keyed by
// a header, a route behind basic auth, a status page for loopback clients
// only, and secrets in every place that has one: an on-demand ask URL
// with a token, a TSIG secret file, a basic-auth hash.
const dashConfig = `
[server]
http = ["127.0.0.1:0"]
https = []
admin = ""
[tls]
storage = "{{DIR}}/tls"
[tls.on_demand]
ask = "http://127.0.0.1:9/ask?token=ASKTOKEN-1234"
[tls.dns]
server = "127.0.0.1:53"
zone = "example.test."
tsig_key = "edged."
tsig_secret_file = "{{DIR}}/tsig.secret"
[dashboard]
appd = ["{{DIR}}/appd/*.ctl"]

[[site]]
hosts = ["a.example"]
tls = "off"
  [[site.route]]
  path = "/app/"
  upstream = "app"
  cache = "main"
  limit = ["perkey"]
  [[site.route]]
  path = "/private/"
  respond = "private"
  basic_auth = { users = { ops = "$2y$10$abcdefghijklmnopqrstuuJ8Xb0P5wqZQm4gS1iYx4hY8mM3sVvG2" } }
  [[site.route]]
  path = "/_status/"
  status_page = true
  allow = ["127.0.0.1/32"]
  [[site.route]]
  path = "/_closed/"
  status_page = true
  allow = ["192.0.2.0/24"]

[upstream.app]
servers = ["{{UP}}"]

[cache.main]
memory = "32MiB"

[limit.perkey]
key = "header:X-Api-Key"
rate = "1r/m"
burst = 0
`

func dashServer(t *testing.T) *testServer {
	t.Helper()
	up := echoUpstream(t)
	dir := t.TempDir()
	secret := "VFNJRy1TRUNSRVQtdmFsdWU="
	if err := os.WriteFile(filepath.Join(dir, "tsig.secret"), []byte(secret), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := strings.ReplaceAll(strings.ReplaceAll(dashConfig, "{{UP}}", up), "{{DIR}}/tsig.secret", filepath.Join(dir, "tsig.secret"))
	return startServer(t, cfg)
}

func (ts *testServer) snapshot() (*dashboard.Snapshot, string) {
	ts.t.Helper()
	code, body, hdr := ts.get("/_status/status.json", "Host", "a.example")
	if code != 200 || hdr.Get("Content-Type") != "application/json" || hdr.Get("Cache-Control") != "no-store" {
		ts.t.Fatalf("status.json: %d %v\n%s", code, hdr, body)
	}
	var s dashboard.Snapshot
	if err := json.Unmarshal([]byte(body), &s); err != nil {
		ts.t.Fatalf("status.json: %v\n%s", err, body)
	}
	return &s, body
}

func TestDashboardSnapshot(t *testing.T) {
	ts := dashServer(t)
	// One a minute per key: the first passes, the next three are refused.
	for i := 0; i < 4; i++ {
		ts.get("/app/x", "Host", "a.example", "X-Api-Key", "key-SECRETKEY")
	}
	// The rates leave the second under way out: wait for the next one.
	var s *dashboard.Snapshot
	var body string
	deadline := time.Now().Add(10 * time.Second)
	for {
		s, body = ts.snapshot()
		if r := findRoute(s, "a.example/app/"); r != nil && r.Rate > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the route's rate stayed 0:\n%s", body)
		}
		time.Sleep(200 * time.Millisecond)
	}
	e := s.Edged
	if e == nil || e.Version != "test" || e.Generation != 1 || e.PID != os.Getpid() || e.LastReload != nil {
		t.Fatalf("edged: %+v", e)
	}
	r := findRoute(s, "a.example/app/")
	if r.Handler != "upstream app, cache main" || len(r.Requests) == 0 || r.Requests[len(r.Requests)-1] == 0 && r.Requests[len(r.Requests)-2] == 0 {
		t.Errorf("route: %+v", r)
	}
	if r.P99 <= 0 || r.P50 > r.P99 {
		t.Errorf("percentiles p50 %v p99 %v", r.P50, r.P99)
	}
	if len(e.Upstreams) != 1 || e.Upstreams[0].Name != "app" || e.Upstreams[0].Policy != "round_robin" ||
		len(e.Upstreams[0].Servers) != 1 || e.Upstreams[0].Servers[0].State != "up" || e.Upstreams[0].Servers[0].Requests == 0 {
		t.Errorf("upstreams: %+v", e.Upstreams)
	}
	if len(e.Caches) != 1 || e.Caches[0].Name != "main" || e.Caches[0].MemoryMax != 32<<20 || e.Caches[0].Misses == 0 {
		t.Errorf("caches: %+v", e.Caches)
	}
	if len(e.Limits) != 1 || e.Limits[0].Refused != 3 || len(e.Limits[0].Busiest) != 1 || e.Limits[0].Keys != 1 {
		t.Errorf("limits: %+v", e.Limits)
	}
	if len(s.Apps) != 0 {
		t.Errorf("apps without a control socket: %+v", s.Apps)
	}
	for _, secret := range []string{"ASKTOKEN", "VFNJRy1TRUNSRVQtdmFsdWU", "abcdefghijklmnopqrstuuJ8Xb0P5", "SECRETKEY"} {
		if strings.Contains(body, secret) {
			t.Errorf("status.json shows a secret (%s):\n%s", secret, body)
		}
	}
}

func findRoute(s *dashboard.Snapshot, name string) *dashboard.Route {
	if s.Edged == nil {
		return nil
	}
	for _, site := range s.Edged.Sites {
		for i := range site.Routes {
			if site.Routes[i].Name == name {
				return &site.Routes[i]
			}
		}
	}
	return nil
}

// TestDashboardPage: the page and its files from a status_page route,
// with headers that keep it to itself; nothing else under the prefix, no
// other method, and nobody outside the allow list.
func TestDashboardPage(t *testing.T) {
	ts := dashServer(t)
	for path, want := range map[string]string{
		"/_status/":            "text/html; charset=utf-8",
		"/_status/app.js":      "text/javascript; charset=utf-8",
		"/_status/style.css":   "text/css; charset=utf-8",
		"/_status/favicon.svg": "image/svg+xml",
	} {
		code, body, hdr := ts.get(path, "Host", "a.example")
		if code != 200 || hdr.Get("Content-Type") != want || len(body) < 100 {
			t.Errorf("%s: %d %q (%d bytes)", path, code, hdr.Get("Content-Type"), len(body))
		}
		if !strings.Contains(hdr.Get("Content-Security-Policy"), "default-src 'none'") || hdr.Get("X-Frame-Options") != "DENY" {
			t.Errorf("%s: headers %v", path, hdr)
		}
	}
	if code, _, _ := ts.get("/_status/nothing", "Host", "a.example"); code != 404 {
		t.Errorf("unknown file: %d", code)
	}
	req, _ := http.NewRequest("POST", ts.url+"/_status/status.json", nil)
	req.Host = "a.example"
	if res, err := http.DefaultClient.Do(req); err != nil || res.StatusCode != 405 {
		t.Errorf("POST: %v %v", res, err)
	} else {
		res.Body.Close()
	}
	if code, body, _ := ts.get("/_closed/status.json", "Host", "a.example"); code != 403 {
		t.Errorf("status page outside its allow list: %d %s", code, body)
	}
}

// TestDashboardEvents: the event stream sends a snapshot at once and
// another a second later.
func TestDashboardEvents(t *testing.T) {
	ts := dashServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", ts.url+"/_status/events", nil)
	req.Host = "a.example"
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("content type %q", res.Header.Get("Content-Type"))
	}
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var times []time.Time
	for len(times) < 2 && sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		var s dashboard.Snapshot
		if err := json.Unmarshal([]byte(line), &s); err != nil || s.Edged == nil {
			t.Fatalf("event: %v %s", err, line)
		}
		times = append(times, s.Time)
	}
	if len(times) != 2 || !times[1].After(times[0]) {
		t.Fatalf("events at %v (%v)", times, sc.Err())
	}
}

// TestDashboardReloadResult: a failed reload is on the page, with what it
// quoted from the configuration scrubbed; a good one after it clears it.
func TestDashboardReloadResult(t *testing.T) {
	ts := dashServer(t)
	good, err := os.ReadFile(ts.path)
	if err != nil {
		t.Fatal(err)
	}
	bad := strings.Replace(string(good), `ask = "http://127.0.0.1:9/ask?token=ASKTOKEN-1234"`, `ask = "ftp://127.0.0.1:9/ask?token=ASKTOKEN-1234"`, 1)
	os.WriteFile(ts.path, []byte(bad), 0o644)
	if err := ts.srv.Reload(); err == nil || !strings.Contains(err.Error(), "ASKTOKEN") {
		t.Fatalf("the bad reload: %v", err) // the log and the admin socket say it all
	}
	s, body := ts.snapshot()
	lr := s.Edged.LastReload
	if lr == nil || lr.OK || !strings.Contains(lr.Error, "tls.on_demand.ask") || strings.Contains(body, "ASKTOKEN") {
		t.Fatalf("after a failed reload: %+v\n%s", lr, body)
	}
	os.WriteFile(ts.path, good, 0o644)
	if err := ts.srv.Reload(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(dashboard.DefaultInterval) // the snapshot shared by viewers is renewed
	s, _ = ts.snapshot()
	if lr := s.Edged.LastReload; lr == nil || !lr.OK || s.Edged.Generation != 2 {
		t.Fatalf("after a good reload: %+v gen %d", lr, s.Edged.Generation)
	}
}

// TestDashboardServerChange: a server that goes down shows when and from
// what, noted by housekeeping even while nobody watches the page.
func TestDashboardServerChange(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	ts := startServer(t, `
[[site]]
hosts = ["a.example"]
tls = "off"
  [[site.route]]
  path = "/"
  upstream = "app"
  [[site.route]]
  path = "/_status/"
  status_page = true
  allow = ["127.0.0.1"]
[upstream.app]
servers = ["`+strings.TrimPrefix(up.URL, "http://")+`"]
health = { path = "/", interval = "200ms", timeout = "100ms", fall = 1, rise = 1 }
`)
	s, _ := ts.snapshot()
	if sv := s.Edged.Upstreams[0].Servers[0]; sv.State != "up" || !sv.Since.IsZero() {
		t.Fatalf("at start: %+v", sv)
	}
	up.Close()
	closed := time.Now()
	// Wait for the health check to see it, without asking the page.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if st := ts.srv.Status().Upstreams["app"][0]; st.State == "down" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the server never went down")
		}
	}
	time.Sleep(2 * time.Second) // the page is opened later
	var sv dashboard.Server
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		s, _ = ts.snapshot()
		if sv = s.Edged.Upstreams[0].Servers[0]; sv.State == "down" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the page never showed it down: %+v", sv)
		}
	}
	if sv.LastChange != "up → down" || !strings.Contains(sv.Reason, "health check") {
		t.Errorf("change %q, reason %q", sv.LastChange, sv.Reason)
	}
	if sv.Since.Before(closed) || sv.Since.After(closed.Add(2*time.Second)) {
		t.Errorf("down since %v; the server closed at %v", sv.Since, closed)
	}
}
