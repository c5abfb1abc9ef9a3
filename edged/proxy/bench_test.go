package proxy

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"

	"github.com/edgeapp/edgeapp/edged/engine/enginetest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// discardWriter is a minimal ResponseWriter so the benchmark measures the
// proxy, not a recorder.
type discardWriter struct{ h http.Header }

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(int)             {}
func (w *discardWriter) Flush()                      {}

// TestMain doubles as the benchmarks' upstream process, so that their CPU
// figures count the proxy alone.
func TestMain(m *testing.M) {
	switch os.Getenv("PROXY_BENCH_UPSTREAM") {
	case "1":
		runBenchUpstream()
		return
	case "grpc":
		runGRPCBenchUpstream() // grpc_bench_test.go
		return
	}
	code := m.Run()
	if code == 0 && flag.Lookup("test.bench").Value.String() == "" {
		// Everything again with buffering, edged's default for routes.
		bufferedRun = true
		code = m.Run()
	}
	os.Exit(code)
}

func runBenchUpstream() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	fmt.Println(ln.Addr().String())
	body := []byte("hello, world\n")
	closing := os.Getenv("PROXY_BENCH_CLOSE") == "1"
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header()["Content-Type"] = []string{"text/plain"}
		w.Header()["Content-Length"] = []string{"13"}
		if closing { // as gunicorn's sync workers: a connection per request
			w.Header()["Connection"] = []string{"close"}
		}
		w.Write(body)
	}))
	io.Copy(io.Discard, os.Stdin) // until the benchmark closes our stdin
}

// childUpstream starts the upstream in a child process and returns its
// address; env adds to its environment.
func childUpstream(b *testing.B, env ...string) string {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(append(os.Environ(), "PROXY_BENCH_UPSTREAM=1"), env...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { stdin.Close(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		b.Fatal(err)
	}
	return strings.TrimSpace(line)
}

// cpuTime is this process's user+system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func benchUpstream(b *testing.B) *upstream {
	body := []byte("hello, world\n")
	return startTCP(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header()["Content-Type"] = []string{"text/plain"}
		w.Header()["Content-Length"] = []string{"13"}
		w.Write(body)
	}))
}

// BenchmarkProxyKeepAlive: parallel GETs through the handler to a real
// loopback upstream (a child process) over kept-alive connections.
// cpu-µs/op is the proxy's own CPU per request.
func BenchmarkProxyKeepAlive(b *testing.B) {
	addr := childUpstream(b)
	p, err := NewPool(UpstreamConfig{Name: "bench", Servers: servers(addr), MaxFails: 1, Retries: 2}, nil, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	runHandlerBench(b, NewHandler(p, HandlerOptions{}))
}

// BenchmarkProxyNewConnPerRequest: as BenchmarkProxyKeepAlive, but the
// upstream answers Connection: close (gunicorn's sync workers), so every
// request dials a new connection.
func BenchmarkProxyNewConnPerRequest(b *testing.B) {
	addr := childUpstream(b, "PROXY_BENCH_CLOSE=1")
	p, err := NewPool(UpstreamConfig{Name: "bench", Servers: servers(addr), MaxFails: 1, Retries: 2}, nil, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	runHandlerBench(b, NewHandler(p, HandlerOptions{}))
}

// BenchmarkHTTPUtilNewConnPerRequest is the standard library's proxy
// against the same closing upstream.
func BenchmarkHTTPUtilNewConnPerRequest(b *testing.B) {
	target, _ := url.Parse("http://" + childUpstream(b, "PROXY_BENCH_CLOSE=1"))
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.Transport = &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}
	runHandlerBench(b, rp)
}

func runHandlerBench(b *testing.B, h http.Handler) {
	b.SetParallelism(16) // many clients in flight, as under load
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
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
	b.ReportMetric(float64(cpuTime()-cpu0)/1e3/float64(b.N), "cpu-µs/op")
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
	fr := enginetest.NewServer(NewHandler(p, HandlerOptions{}))
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
	for _, name := range []string{"round_robin", "least_conn", "random_two", "hash", "hash_equal_weights", "first"} {
		b.Run(name, func(b *testing.B) {
			pol := name
			ws := []int{1, 2, 1, 3, 1, 1, 2, 1}
			if name == "hash_equal_weights" {
				pol, ws = "hash", []int{1, 1, 1, 1, 1, 1, 1, 1}
			}
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
	target, _ := url.Parse("http://" + childUpstream(b))
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.Transport = &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}
	runHandlerBench(b, rp)
}
