package server

import (
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

// BenchmarkShieldChain measures one request through serve(), the route
// chain and a fixed response: bare, with an access log file, and behind
// every shield a route can have as well: allow/deny, a rate and
// concurrency zone, basic auth (a verified user) and error pages.
func BenchmarkShieldChain(b *testing.B) {
	hash, _ := bcrypt.GenerateFromPassword([]byte("pw"), 4)
	for _, c := range []struct{ name, route, extra string }{
		{"bare", "", ""},
		{"access_log", "", `
[access_log]
output = "{{DIR}}/access.log"
`},
		{"shielded", `
  limit = ["api"]
  allow = ["127.0.0.0/8", "10.0.0.0/8"]
  deny = ["10.6.0.0/16"]
  basic_auth = { users = { alice = "` + string(hash) + `" } }
  error_pages = { 404 = "{{DIR}}/404.html" }`, `
[limit.api]
rate = "100000000r/s"
burst = 1000
nodelay = true
concurrent = 1000
[access_log]
output = "{{DIR}}/access.log"
`},
	} {
		b.Run(c.name, func(b *testing.B) {
			dir := b.TempDir()
			os.WriteFile(filepath.Join(dir, "404.html"), []byte("<h1>404</h1>"), 0o644)
			cfg := strings.ReplaceAll(`
[server]
http = ["127.0.0.1:0"]
https = []
admin = ""
[tls]
storage = "{{DIR}}/tls"
`+c.extra+`
[[site]]
  [[site.route]]
  path = "/"
  respond = "ok"`+c.route+"\n", "{{DIR}}", dir)
			path := filepath.Join(dir, "edged.toml")
			os.WriteFile(path, []byte(cfg), 0o644)
			s, err := New(Options{ConfigPath: path, Version: "bench", Log: slog.New(slog.DiscardHandler)})
			if err != nil {
				b.Fatal(err)
			}
			defer s.closeListeners()
			defer s.accessLog.Load().Close()
			r := httptest.NewRequest("GET", "http://example.test/x", nil)
			r.RemoteAddr = "127.0.0.1:5555"
			r.SetBasicAuth("alice", "pw")
			w := httptest.NewRecorder()
			s.serve(w, r, false)
			if w.Code != 200 {
				b.Fatalf("status %d", w.Code)
			}
			b.ReportAllocs()
			b.ResetTimer()
			before := cpuTime()
			for b.Loop() {
				w.Body.Reset()
				for k := range w.Header() {
					delete(w.Header(), k)
				}
				s.serve(w, r, false)
			}
			// CPU time per request: steadier than wall time on a busy host.
			b.ReportMetric(float64(cpuTime()-before)/float64(b.N), "cpu-ns/op")
		})
	}
}

// cpuTime is the process's user and system CPU time in nanoseconds.
func cpuTime() int64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}
