package proxy

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"testing"
)

// discardWriter is a minimal ResponseWriter so the benchmark measures the
// proxy, not a recorder.
type discardWriter struct{ h http.Header }

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(int)             {}
func (w *discardWriter) Flush()                      {}

func benchUpstream(b *testing.B) *upstream {
	body := []byte("hello, world\n")
	return startTCP(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header()["Content-Type"] = []string{"text/plain"}
		w.Header()["Content-Length"] = []string{"13"}
		w.Write(body)
	}))
}

// BenchmarkProxyKeepAlive: parallel GETs through the handler to a real
// loopback upstream over kept-alive connections.
func BenchmarkProxyKeepAlive(b *testing.B) {
	up := benchUpstream(b)
	p, err := NewPool(UpstreamConfig{Name: "bench", Servers: servers(up.Addr), MaxFails: 1, Retries: 2}, nil, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	h := NewHandler(p, HandlerOptions{})
	b.SetParallelism(16) // many clients in flight, as under load
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		r := httptest.NewRequest("GET", "http://example.com/some/path?q=1", nil)
		r.RemoteAddr = "192.0.2.7:41234"
		r.Header.Set("User-Agent", "bench")
		r.Header.Set("Accept", "*/*")
		r.Header.Set("X-Request-Id", "0123456789abcdef")
		w := &discardWriter{h: make(http.Header)}
		for pb.Next() {
			clear(w.h)
			h.ServeHTTP(w, r)
		}
	})
}

// BenchmarkProxyKeepAliveHTTP adds a real front server and client, as a
// request through edged sees it (the client's cost is included).
func BenchmarkProxyKeepAliveHTTP(b *testing.B) {
	up := benchUpstream(b)
	p, err := NewPool(UpstreamConfig{Name: "bench", Servers: servers(up.Addr), MaxFails: 1, Retries: 2}, nil, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	fr := httptest.NewServer(NewHandler(p, HandlerOptions{}))
	defer fr.Close()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	b.SetParallelism(16)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			res, err := client.Get(fr.URL + "/x")
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
		}
	})
}

func BenchmarkSelect(b *testing.B) {
	for _, pol := range []string{"round_robin", "least_conn", "random_two", "hash", "first"} {
		b.Run(pol, func(b *testing.B) {
			ws := []int{1, 2, 1, 3, 1, 1, 2, 1}
			key := ""
			if pol == "hash" {
				key = "header:X-User"
			}
			p := testPool(b, pol, key, ws...)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				r, _ := http.NewRequest("GET", "http://x/", nil)
				i := 0
				for pb.Next() {
					i++
					r.Header["X-User"] = userKeys[i&1023]
					sel := selection{r: r, now: nanotime(), key: p.hashKey, client: "192.0.2.1"}
					if pol == "hash" {
						sel.keyHash = sel.hashKey()
					}
					s := p.pickAcquire(&sel)
					if s == nil {
						b.Fatal("no server")
					}
					s.release()
				}
			})
		})
	}
}

var userKeys = func() [][]string {
	k := make([][]string, 1024)
	for i := range k {
		k[i] = []string{fmt.Sprintf("user-%d", i)}
	}
	return k
}()

// BenchmarkHTTPUtilReverseProxy is the standard library's proxy in the same
// setup, as a yardstick for BenchmarkProxyKeepAlive.
func BenchmarkHTTPUtilReverseProxy(b *testing.B) {
	up := benchUpstream(b)
	target, _ := url.Parse("http://" + up.Addr)
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.Transport = &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}
	b.SetParallelism(16)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		r := httptest.NewRequest("GET", "http://example.com/some/path?q=1", nil)
		r.RemoteAddr = "192.0.2.7:41234"
		r.Header.Set("User-Agent", "bench")
		r.Header.Set("Accept", "*/*")
		r.Header.Set("X-Request-Id", "0123456789abcdef")
		w := &discardWriter{h: make(http.Header)}
		for pb.Next() {
			clear(w.h)
			rp.ServeHTTP(w, r)
		}
	})
}
