package engine

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"
)

var body1k = make([]byte, 1024)

// BenchmarkKeepAlive measures one request and response over a kept-alive
// loopback connection: the engine's cost per request (and the client's,
// a bare loop on the same connection), with allocations.
func BenchmarkKeepAlive(b *testing.B) {
	for _, eng := range []string{"edged", "net/http"} {
		b.Run(eng, func(b *testing.B) {
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header()["Content-Type"] = []string{"application/octet-stream"}
				w.Header()["Content-Length"] = []string{strconv.Itoa(len(body1k))}
				w.Write(body1k)
			})
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			if eng == "edged" {
				s := New(Options{Handler: h})
				go s.Serve(ln)
				defer s.Close()
			} else {
				s := &http.Server{Handler: h}
				go s.Serve(ln)
				defer s.Close()
			}
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			req := []byte("GET /static/1k.bin HTTP/1.1\r\nHost: bench.test\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n")
			br := bufio.NewReaderSize(c, 8192)
			var hdr [512]byte
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, err := c.Write(req); err != nil {
					b.Fatal(err)
				}
				// The head ends before the 1 KiB body; read both.
				n := 0
				for {
					line, err := br.ReadSlice('\n')
					if err != nil {
						b.Fatal(err)
					}
					n += copy(hdr[:], line)
					if len(line) == 2 {
						break
					}
				}
				if _, err := io.CopyN(io.Discard, br, int64(len(body1k))); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
