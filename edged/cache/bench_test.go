package cache

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// discardWriter is a minimal ResponseWriter so the benchmark measures the
// cache's hit path rather than a recorder.
type discardWriter struct {
	h      http.Header
	status int
	n      int
}

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) WriteHeader(code int)        { d.status = code }
func (d *discardWriter) Write(p []byte) (int, error) { d.n += len(p); return len(p), nil }

func benchHit(b *testing.B, size int, parallel bool) {
	body := strings.Repeat("x", size)
	origin := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=3600")
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("ETag", `"abc"`)
		w.Write([]byte(body))
	})
	c, err := Open(Options{MemoryBytes: 64 << 20}, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	h := c.Handler(origin, HandlerOptions{})
	req := httptest.NewRequest("GET", "http://example.com/obj?x=1", nil)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Body.Len() != size {
		b.Fatal("fill failed")
	}
	b.SetBytes(int64(size))
	b.ReportAllocs()
	cpu0 := cpuTime()
	defer func() { b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op") }()
	if parallel {
		b.RunParallel(func(pb *testing.PB) {
			w := &discardWriter{h: make(http.Header, 16)}
			r := req.Clone(req.Context())
			for pb.Next() {
				clear(w.h)
				w.n = 0
				h.ServeHTTP(w, r)
				if w.n != size {
					panic("short body")
				}
			}
		})
		return
	}
	w := &discardWriter{h: make(http.Header, 16)}
	for b.Loop() {
		clear(w.h)
		w.n = 0
		h.ServeHTTP(w, req)
		if w.n != size {
			b.Fatal("short body")
		}
	}
}

// BenchmarkHit measures a memory hit through Cache.Handler.
func BenchmarkHit(b *testing.B) {
	for _, size := range []int{1 << 10, 64 << 10} {
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) { benchHit(b, size, false) })
		b.Run(fmt.Sprintf("%dKiB/parallel", size>>10), func(b *testing.B) { benchHit(b, size, true) })
	}
}

// BenchmarkHitDisk measures a hit whose body is served from the disk tier.
func BenchmarkHitDisk(b *testing.B) {
	size := 2 << 20
	body := strings.Repeat("x", size)
	c, err := Open(Options{DiskDir: b.TempDir(), MemoryObjectMax: 1 << 20}, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	h := c.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=3600")
		w.Write([]byte(body))
	}), HandlerOptions{})
	req := httptest.NewRequest("GET", "http://example.com/big", nil)
	h.ServeHTTP(httptest.NewRecorder(), req)
	b.SetBytes(int64(size))
	b.ReportAllocs()
	w := &discardWriter{h: make(http.Header, 16)}
	for b.Loop() {
		clear(w.h)
		w.n = 0
		h.ServeHTTP(w, req)
		if w.n != size {
			b.Fatalf("short body %d", w.n)
		}
	}
}
