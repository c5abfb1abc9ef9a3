package h2

import (
	"io"
	"net/http"
	"testing"
)

// BenchmarkRequests: small GETs on concurrent streams of one connection,
// client and server in this process (so ns/op counts both; allocs/op
// shows what a request costs the server beside x/net's client).
func BenchmarkRequests(b *testing.B) {
	_, c, url := testServer(b, Options{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Request-Id", "0123456789ab")
		io.WriteString(w, "hello, world\n")
	}))
	b.ReportAllocs()
	b.SetParallelism(4)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			res, err := c.Get(url)
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
		}
	})
}
