package server

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeapp/edgeapp/edged/config"
)

// hasSeries reports whether any series of the named metric has label=value.
func hasSeries(t *testing.T, ts *testServer, name, label, value string) bool {
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
					return true
				}
			}
		}
	}
	return false
}

// freshSeries are series the refused configurations would have made.
var freshSeries = []struct{ name, label, value string }{
	{"edged_requests_total", "route", "/new"},
	{"edged_request_duration_seconds", "route", "/new"},
	{"edged_upstream_server_up", "upstream", "fresh"},
	{"edged_upstream_requests_total", "upstream", "fresh"},
	{"edged_proxy_wait_seconds_total", "upstream", "fresh"},
	{"edged_cache_objects", "cache", "fresh"},
	{"edged_cache_hits_total", "cache", "fresh"},
	{"edged_access_denied_total", "route", "new.example/new"},
	{"edged_limit_requests_total", "route", "new.example/new"},
}

// TestFailedReloadsChangeNothing: configurations that config.Load accepts
// but that fail while being prepared (in compile, in the certificates'
// preparation, opening a cache directory) leave the running configuration
// serving and nothing of theirs behind: no pool started, no cache kept
// open, no metric series, no access log.
func TestFailedReloadsChangeNothing(t *testing.T) {
	up := echoUpstream(t)
	ts := startServer(t, `
[[site]]
[[site.route]]
path = "/"
respond = "one"
`)
	notDir := filepath.Join(ts.dir, "plain-file")
	os.WriteFile(notDir, []byte("x"), 0o644)
	// Each adds an upstream, a cache, a route and an access log that the
	// running configuration lacks, and breaks one thing Load cannot see.
	newParts := `
[access_log]
output = "{{DIR}}/new-access.log"
[[site]]
hosts = ["new.example"]
tls = "off"
[[site.route]]
path = "/new"
upstream = "fresh"
cache = "fresh"
deny = ["192.0.2.0/24"]
limit = ["fresh"]
[limit.fresh]
rate = "100r/s"
[upstream.fresh]
servers = ["` + up + `"]
health = { path = "/health", interval = "5s" }
`
	for _, c := range []struct {
		name, extra, want string
	}{
		{"compile", `
[cache.fresh]
[[site]]
hosts = ["pages.example"]
tls = "off"
error_pages = { "404" = "{{DIR}}/no-such-page.html" }
[[site.route]]
path = "/"
respond = "x"
`, "no-such-page.html"},
		{"tls certificate", `
[cache.fresh]
[[site]]
hosts = ["manual.example"]
tls = { cert = "{{DIR}}/plain-file", key = "{{DIR}}/plain-file" }
[[site.route]]
path = "/"
respond = "x"
`, "failed to find any PEM data"},
		{"tls storage", `
[cache.fresh]
[[site]]
hosts = ["internal.example"]
tls = "internal"
[[site.route]]
path = "/"
respond = "x"
`, "certificate storage"},
		{"cache dir", `
[cache.fresh]
disk = "` + notDir + `/cache"
`, "not a directory"},
	} {
		t.Run(c.name, func(t *testing.T) {
			src := newParts + c.extra
			if c.name == "tls storage" {
				// The storage directory became unusable since the start
				// ([tls] storage itself changes only with a restart).
				os.RemoveAll(filepath.Join(ts.dir, "tls"))
				os.WriteFile(filepath.Join(ts.dir, "tls"), []byte("x"), 0o644)
				defer os.Remove(filepath.Join(ts.dir, "tls"))
			}
			ts.write(src)
			if _, err := config.Load(ts.path); err != nil {
				t.Fatalf("the configuration should pass config.Load: %v", err)
			}
			err := ts.srv.Reload()
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("reload: %v, want an error about %q", err, c.want)
			}
			if code, body, _ := ts.get("/"); code != 200 || body != "one" {
				t.Fatalf("after a failed reload: %d %q", code, body)
			}
			if g := ts.srv.current.Load().generation; g != 1 {
				t.Fatalf("generation %d", g)
			}
			if _, ok := ts.srv.caches["fresh"]; ok {
				t.Fatal("the refused configuration's cache stayed open")
			}
			for _, m := range freshSeries {
				if hasSeries(t, ts, m.name, m.label, m.value) {
					t.Errorf("the refused configuration left %s{%s=%q}", m.name, m.label, m.value)
				}
			}
			if _, err := os.Stat(filepath.Join(ts.dir, "new-access.log")); err == nil {
				t.Error("the refused configuration's access log was opened")
			}
		})
	}
	// And the same configuration, fixed, goes in.
	os.WriteFile(filepath.Join(ts.dir, "page.html"), []byte("page"), 0o644)
	ts.write(newParts + "[cache.fresh]\n")
	if err := ts.srv.Reload(); err != nil {
		t.Fatal(err)
	}
	if code, body, _ := ts.get("/new", "Host", "new.example"); code != 200 || !strings.HasPrefix(body, "GET /new") {
		t.Fatalf("after a good reload: %d %q", code, body)
	}
	for _, m := range freshSeries {
		if !hasSeries(t, ts, m.name, m.label, m.value) {
			t.Errorf("the committed configuration has no %s{%s=%q}", m.name, m.label, m.value)
		}
	}
	if _, ok := ts.srv.caches["fresh"]; !ok {
		t.Error("the committed configuration's cache is not process-wide")
	}
}

// TestReloadDropsSeriesOfRemovedRoutes: a route that leaves the
// configuration takes its metric series with it.
func TestReloadDropsSeriesOfRemovedRoutes(t *testing.T) {
	ts := startServer(t, `
[[site]]
[[site.route]]
path = "/"
respond = "one"
[[site.route]]
path = "/gone"
respond = "gone"
`)
	ts.get("/gone")
	if !hasSeries(t, ts, "edged_requests_total", "route", "/gone") {
		t.Fatal("no series for /gone")
	}
	ts.write("[[site]]\n[[site.route]]\npath = \"/\"\nrespond = \"two\"\n")
	if err := ts.srv.Reload(); err != nil {
		t.Fatal(err)
	}
	if hasSeries(t, ts, "edged_requests_total", "route", "/gone") {
		t.Fatal("the removed route's series stayed")
	}
	if !hasSeries(t, ts, "edged_requests_total", "route", "/") {
		t.Fatal("the kept route lost its series")
	}
}

// TestCheckOpensNothing: edged -t prepares without committing and without
// opening what a running edged holds: the cache directory is not created.
func TestCheckOpensNothing(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "edged.toml")
	os.WriteFile(cfg, []byte(`
[server]
http = ["127.0.0.1:0"]
admin = ""
[tls]
storage = "`+dir+`/tls"
[[site]]
[[site.route]]
path = "/"
upstream = "a"
cache = "c"
[upstream.a]
servers = ["127.0.0.1:9"]
[cache.c]
disk = "`+dir+`/cache"
`), 0o644)
	if err := Check(cfg); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"cache", "tls"} {
		if _, err := os.Stat(filepath.Join(dir, p)); err == nil {
			t.Errorf("edged -t created %s", p)
		}
	}
	os.WriteFile(filepath.Join(dir, "cache"), []byte("x"), 0o644)
	if err := Check(cfg); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Fatalf("a cache directory that is a file: %v", err)
	}
}

// TestReloadAndCheckReadDropIns: a site added as a drop-in file is served
// after a reload, and edged -t names a broken drop-in's file and line.
func TestReloadAndCheckReadDropIns(t *testing.T) {
	ts := startServer(t, "include = [\"sites.d/*.toml\"]\n"+serverPreamble+"[[site]]\n[[site.route]]\npath = \"/\"\nrespond = \"default\"\n")
	os.MkdirAll(filepath.Join(ts.dir, "sites.d"), 0o755)
	os.WriteFile(filepath.Join(ts.dir, "sites.d", "shop.toml"), []byte("[[site]]\nhosts = [\"shop.example.com\"]\ntls = \"off\"\n[[site.route]]\npath = \"/\"\nrespond = \"shop\"\n"), 0o644)
	if err := Check(ts.path); err != nil {
		t.Fatal(err)
	}
	if err := ts.srv.Reload(); err != nil {
		t.Fatal(err)
	}
	if code, body, _ := ts.get("/", "Host", "shop.example.com"); code != 200 || body != "shop" {
		t.Fatalf("the drop-in's site: %d %q", code, body)
	}
	os.WriteFile(filepath.Join(ts.dir, "sites.d", "broken.toml"), []byte("[[site]]\nhosts = [\"b.example.com\"]\ntls = \"off\"\n[[site.route]]\npath = \"/\"\nupstream = \"missing\"\n"), 0o644)
	want := filepath.Join(ts.dir, "sites.d", "broken.toml") + ":6: site[0].route[0].upstream: no [upstream.missing] is defined"
	if err := Check(ts.path); err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("edged -t: %v", err)
	}
	if err := ts.srv.Reload(); err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("reload: %v", err)
	}
	if code, body, _ := ts.get("/", "Host", "shop.example.com"); code != 200 || body != "shop" {
		t.Fatalf("after the refused reload: %d %q", code, body)
	}
}
