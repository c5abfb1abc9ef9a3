package proxy

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"testing"

	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/edgeapp/edgeapp/internal/grpcecho"
)

// runGRPCBenchUpstream is the gRPC benchmarks' upstream process: a grpc-go
// server (h2c) until stdin closes.
func runGRPCBenchUpstream() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	fmt.Println(ln.Addr().String())
	srv, _, _ := grpcecho.Serve(ln, "bench")
	io.Copy(io.Discard, os.Stdin)
	srv.Stop()
}

// BenchmarkProxyGRPCUnary: parallel unary gRPC calls through the handler
// (as edged's HTTP/2 server hands them over) to a grpc-go server in a
// child process over one multiplexed h2c connection. cpu-µs/op is the
// proxy's own CPU per call.
func BenchmarkProxyGRPCUnary(b *testing.B) {
	addr := childUpstream(b, "PROXY_BENCH_UPSTREAM=grpc")
	p, err := NewPool(UpstreamConfig{Name: "bench", Protocol: ProtoH2C, Servers: servers(addr), MaxFails: 1, Retries: 2}, nil, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	h := NewHandler(p, HandlerOptions{})
	msg := grpcFrame(b, wrapperspb.String("hello"))
	b.SetParallelism(16)
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	b.RunParallel(func(pb *testing.PB) {
		hdr := http.Header{"Content-Type": {"application/grpc"}, "Te": {"trailers"}, "User-Agent": {"grpc-go/bench"}}
		w := &discardWriter{h: make(http.Header)}
		for pb.Next() {
			r := &http.Request{Method: "POST", Proto: "HTTP/2.0", ProtoMajor: 2, Host: "example.com",
				URL: grpcBenchURL, Header: hdr, RemoteAddr: "192.0.2.7:41234", ContentLength: -1,
				Body: io.NopCloser(bytes.NewReader(msg))}
			clear(w.h)
			h.ServeHTTP(w, r)
			if v := w.h[http.TrailerPrefix+"Grpc-Status"]; len(v) != 1 || v[0] != "0" {
				b.Fatalf("call failed: %v", w.h)
			}
		}
	})
	b.ReportMetric(float64(cpuTime()-cpu0)/1e3/float64(b.N), "cpu-µs/op")
}

var grpcBenchURL = mustURL("/edged.test.Echo/Say")

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}
