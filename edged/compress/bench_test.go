package compress

import (
	"net/http"
	"testing"
)

// discardWriter is a ResponseWriter that keeps nothing, so the benchmark
// measures the middleware and the encoder, not a recorder.
type discardWriter struct {
	h    http.Header
	n    int64
	code int
}

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) WriteHeader(code int)        { d.code = code }
func (d *discardWriter) Write(p []byte) (int, error) { d.n += int64(len(p)); return len(p), nil }

// BenchmarkCompress measures one JSON response through the middleware,
// handler included (it sets two headers and writes the body).
func BenchmarkCompress(b *testing.B) {
	mw, err := New(Options{})
	if err != nil {
		b.Fatal(err)
	}
	ct := []string{"application/json"}
	for _, size := range []int{1 << 10, 64 << 10} {
		body := jsonBody(size)
		h := mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header()["Content-Type"] = ct
			w.Write(body)
		}))
		for _, enc := range []string{"gzip", "zstd", "identity"} {
			name := enc + "/" + map[int]string{1 << 10: "1KiB", 64 << 10: "64KiB"}[size]
			b.Run(name, func(b *testing.B) {
				req, _ := http.NewRequest("GET", "/", nil)
				req.Header.Set("Accept-Encoding", enc)
				w := &discardWriter{h: http.Header{}}
				b.SetBytes(int64(len(body)))
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					clear(w.h)
					w.n = 0
					h.ServeHTTP(w, req)
				}
				b.ReportMetric(float64(w.n)/float64(len(body)), "ratio")
			})
		}
	}
}
