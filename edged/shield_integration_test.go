package main

// Integration tests of what shields the application: per-client limits,
// access control, authentication, error pages, try_files and the access
// log, against the real edged binary and real upstreams.

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
