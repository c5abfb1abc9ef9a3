package cache

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgeapp/edgeapp/edged/compress"
)

// cpuTime is this process's user+system CPU time: on a shared machine the
// CPU a hit costs is steadier than the wall time it takes.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkHitChain measures a 1 KiB text hit through the route chain as
// edged builds it, with the compression middleware either outside the
// cache (every hit compressed again, as before stored variants) or inside
// it (the compressed variant stored once, a hit is bytes from memory).
func BenchmarkHitChain(b *testing.B) {
	body := strings.Repeat("edged caches compressed variants; ", 31)[:1024]
	origin := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=3600")
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("ETag", `"abc"`)
		w.Write([]byte(body))
	})
	mw, err := compress.New(compress.Options{})
	if err != nil {
		b.Fatal(err)
	}
	for _, order := range []string{"compress-outside", "compress-inside"} {
		for _, ae := range []string{"identity", "gzip"} {
			b.Run(order+"/"+ae, func(b *testing.B) {
				c, err := Open(Options{MemoryBytes: 64 << 20}, nil)
				if err != nil {
					b.Fatal(err)
				}
				defer c.Close()
				var h http.Handler
				if order == "compress-outside" {
					h = mw(c.Handler(origin, HandlerOptions{}))
				} else {
					h = c.Handler(mw(origin), HandlerOptions{})
				}
				req := httptest.NewRequest("GET", "http://example.com/obj", nil)
				if ae != "identity" {
					req.Header.Set("Accept-Encoding", ae)
				}
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				want := rec.Body.Len()
				if ae == "gzip" && rec.Header().Get("Content-Encoding") != "gzip" {
					b.Fatal("not compressed")
				}
				b.ReportAllocs()
				cpu0 := cpuTime()
				defer func() { b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op") }()
				b.RunParallel(func(pb *testing.PB) {
					w := &discardWriter{h: make(http.Header, 16)}
					r := req.Clone(req.Context())
					for pb.Next() {
						clear(w.h)
						w.n = 0
						h.ServeHTTP(w, r)
						if w.n != want {
							panic("short body")
						}
					}
				})
			})
		}
	}
}
