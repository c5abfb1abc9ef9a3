package static

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgeapp/edgeapp/edged/compress"
)

// BenchmarkStatic fetches one file per op over a kept-alive loopback
// connection from a real http.Server (client cost included; the client
// is a raw conn so that it stays small next to the server).
func BenchmarkStatic(b *testing.B) {
	dir := b.TempDir()
	for _, size := range []int{1 << 10, 64 << 10, 1 << 20} {
		os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%d.txt", size)), make([]byte, size), 0o644)
	}
	h, err := New(Options{Root: dir})
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	defer srv.Close()
	for _, c := range []struct {
		name string
		size int
		ae   string
	}{{"1KiB", 1 << 10, ""}, {"1KiB-browserAE", 1 << 10, "Accept-Encoding: gzip, deflate, br, zstd\r\n"}, {"64KiB", 64 << 10, ""}, {"1MiB", 1 << 20, ""}} {
		b.Run(c.name, func(b *testing.B) {
			conn, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			defer conn.Close()
			req := []byte(fmt.Sprintf("GET /f%d.txt HTTP/1.1\r\nHost: bench\r\n%s\r\n", c.size, c.ae))
			br := bufio.NewReaderSize(conn, 64<<10)
			b.SetBytes(int64(c.size))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := conn.Write(req); err != nil {
					b.Fatal(err)
				}
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					b.Fatal(err)
				}
				n, _ := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || n != int64(c.size) {
					b.Fatalf("status %d, %d bytes", resp.StatusCode, n)
				}
			}
		})
	}
}

// BenchmarkStatic1KiB is the figure the issue asks for: a 1 KiB file over
// a real loopback http.Server.
func BenchmarkStatic1KiB(b *testing.B) {
	dir := b.TempDir()
	os.WriteFile(filepath.Join(dir, "one.txt"), make([]byte, 1024), 0o644)
	h, err := New(Options{Root: dir})
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	defer srv.Close()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	req := []byte("GET /one.txt HTTP/1.1\r\nHost: bench\r\n\r\n")
	br := bufio.NewReaderSize(conn, 64<<10)
	b.SetBytes(1024)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		conn.Write(req)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}

// discardWriter is a ResponseWriter that keeps nothing, so that
// BenchmarkHandler counts the handler's own allocations.
type discardWriter struct {
	h http.Header
	n int64
}

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) WriteHeader(int)             {}
func (d *discardWriter) Write(p []byte) (int, error) { d.n += int64(len(p)); return len(p), nil }

// BenchmarkHandler is the handler alone (open, fstat, headers, read),
// without a network: where its time and allocations go.
func BenchmarkHandler(b *testing.B) {
	dir := b.TempDir()
	os.WriteFile(filepath.Join(dir, "one.txt"), make([]byte, 1024), 0o644)
	os.MkdirAll(filepath.Join(dir, "a", "b"), 0o755)
	os.WriteFile(filepath.Join(dir, "a", "b", "app.js"), make([]byte, 1024), 0o644)
	os.WriteFile(filepath.Join(dir, "a", "b", "app.js.gz"), make([]byte, 100), 0o644)
	sh, err := New(Options{Root: dir})
	if err != nil {
		b.Fatal(err)
	}
	mw, err := compress.New(compress.Options{})
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name, path, ae string
		h              http.Handler
	}{
		{"1KiB", "/one.txt", "", sh},
		{"1KiB-browserAE-nosidecar", "/one.txt", "gzip, deflate, br, zstd", sh},
		{"sidecar-gzip", "/a/b/app.js", "gzip, deflate, br, zstd", sh},
		{"1KiB-via-compress-noAE", "/one.txt", "", mw(sh)},
		{"sidecar-gzip-via-compress", "/a/b/app.js", "gzip, deflate, br, zstd", mw(sh)},
	} {
		h := c.h
		b.Run(c.name, func(b *testing.B) {
			req, _ := http.NewRequest("GET", c.path, nil)
			if c.ae != "" {
				req.Header.Set("Accept-Encoding", c.ae)
			}
			w := &discardWriter{h: http.Header{}}
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				clear(w.h)
				h.ServeHTTP(w, req)
			}
		})
	}
}

// BenchmarkBaseline is the floor under BenchmarkStatic1KiB: the same
// loopback round trip with a handler that writes 1 KiB from memory.
func BenchmarkBaseline(b *testing.B) {
	body := make([]byte, 1024)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1024")
		w.Write(body)
	}), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	defer srv.Close()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	req := []byte("GET /one.txt HTTP/1.1\r\nHost: bench\r\n\r\n")
	br := bufio.NewReaderSize(conn, 64<<10)
	b.SetBytes(1024)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		conn.Write(req)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}
