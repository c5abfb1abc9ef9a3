package compress

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"

	"github.com/edgeapp/edgeapp/edged/engine/enginetest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
)

func jsonBody(n int) []byte {
	var b bytes.Buffer
	b.WriteString("[")
	for i := 0; b.Len() < n-40; i++ {
		fmt.Fprintf(&b, `{"id":%d,"name":"item %d","ok":true},`, i, i)
	}
	for b.Len() < n-1 {
		b.WriteByte(' ')
	}
	b.WriteString("]")
	return b.Bytes()
}

// client never adds Accept-Encoding nor decodes: the tests see raw bytes.
var client = &http.Client{Transport: &http.Transport{DisableCompression: true}, Timeout: 30 * time.Second}

func serve(t testing.TB, o Options, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	mw, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	srv := enginetest.NewServer(mw(h))
	t.Cleanup(srv.Close)
	return srv
}

func get(t testing.TB, method, url string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

func decode(t testing.TB, enc string, b []byte) []byte {
	t.Helper()
	out, err := decodeBody(enc, b)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// decodeBody undoes a Content-Encoding; safe to call off the test goroutine.
func decodeBody(enc string, b []byte) ([]byte, error) {
	var r io.Reader
	switch enc {
	case "":
		return b, nil
	case "gzip":
		g, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("gzip header: %w", err)
		}
		r = g
	case "zstd":
		z, err := zstd.NewReader(bytes.NewReader(b))
		if err != nil {
			return nil, err
		}
		defer z.Close()
		r = z
	default:
		return nil, fmt.Errorf("unexpected encoding %q", enc)
	}
	out, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("decoding %s: %w", enc, err)
	}
	return out, nil
}

func TestNegotiationMatrix(t *testing.T) {
	body := jsonBody(4096)
	srv := serve(t, Options{}, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	})
	cases := []struct{ ae, want string }{
		{"", ""},
		{"gzip", "gzip"},
		{"zstd", "zstd"},
		{"gzip, deflate, br, zstd", "zstd"}, // tie: server order
		{"gzip;q=1, zstd;q=0.5", "gzip"},
		{"zstd;q=0, gzip", "gzip"},
		{"zstd;q=0.000, gzip;q=0.001", "gzip"},
		{"*", "zstd"},
		{"*;q=0", ""},
		{"*;q=0.5, zstd;q=0", "gzip"},
		{"identity", ""},
		{"br", ""},
		{"x-gzip", "gzip"},
		{"GZIP ; Q=0.8", "gzip"},
		{"gzip;q=2", ""},   // malformed weight: not acceptable
		{"gzip;q=abc", ""}, // malformed weight: not acceptable
	}
	for _, c := range cases {
		t.Run(c.ae, func(t *testing.T) {
			resp, b := get(t, "GET", srv.URL, "Accept-Encoding", c.ae)
			if got := resp.Header.Get("Content-Encoding"); got != c.want {
				t.Fatalf("Content-Encoding %q, want %q", got, c.want)
			}
			if resp.Header.Get("Vary") != "Accept-Encoding" {
				t.Fatalf("Vary %q", resp.Header.Values("Vary"))
			}
			if resp.ContentLength != -1 && resp.ContentLength != int64(len(b)) {
				t.Fatalf("Content-Length %d for %d bytes", resp.ContentLength, len(b))
			}
			if !bytes.Equal(decode(t, c.want, b), body) {
				t.Fatal("decoded body differs")
			}
		})
	}
}

func TestRank(t *testing.T) {
	offers := []string{"br", "zstd", "gzip"}
	cases := []struct {
		ae   string
		want []int
	}{
		{"gzip, zstd, br", []int{0, 1, 2}},
		{"gzip;q=0.9, br;q=0.1", []int{2, 0}},
		{"*;q=0.2, gzip", []int{2, 0, 1}},
		{"zstd;q=0, *", []int{0, 2}},
		{"gzip;q=0.5, gzip;q=0.9, zstd;q=0.7", []int{2, 1}},
		{" , ;q=1, ", nil},
	}
	for _, c := range cases {
		got := Rank(c.ae, offers, nil)
		if fmt.Sprint(got) != fmt.Sprint(c.want) && !(len(got) == 0 && len(c.want) == 0) {
			t.Errorf("Rank(%q) = %v, want %v", c.ae, got, c.want)
		}
	}
	if allocs := testing.AllocsPerRun(100, func() {
		var buf [8]int
		Rank("gzip, deflate, br, zstd", offers, buf[:0])
	}); allocs != 0 {
		t.Errorf("Rank allocates %v times", allocs)
	}
}

func TestNotCompressed(t *testing.T) {
	big := jsonBody(8192)
	cases := []struct {
		name     string
		reqHdr   []string
		h        http.HandlerFunc
		wantVary bool
	}{
		{"already-encoded", nil, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Content-Encoding", "br")
			w.Write(big)
		}, false},
		{"image", nil, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "image/png")
			w.Write(big)
		}, false},
		{"image-configured", nil, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "video/mp4")
			w.Write(big)
		}, false},
		{"unlisted-type", nil, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/octet-stream")
			w.Write(big)
		}, false},
		{"no-transform", nil, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			w.Header().Set("Cache-Control", "public, No-Transform")
			w.Write(big)
		}, false},
		{"range-request", []string{"Range", "bytes=0-99"}, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			w.Write(big)
		}, false},
		{"206", nil, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			w.Header().Set("Content-Range", fmt.Sprintf("bytes 0-%d/99999", len(big)-1))
			w.WriteHeader(http.StatusPartialContent)
			w.Write(big)
		}, false},
		{"small-announced", nil, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			w.Header().Set("Content-Length", "1023")
			w.Write(big[:1023])
		}, false},
		{"small-streamed", nil, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			w.Write(big[:600])
			w.Write(big[600:1023])
		}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			srv := serve(t, Options{Types: []string{"text/*", "application/json", "video/*"}}, c.h)
			hdr := append([]string{"Accept-Encoding", "gzip, zstd"}, c.reqHdr...)
			resp, b := get(t, "GET", srv.URL, hdr...)
			if ce := resp.Header.Get("Content-Encoding"); ce != "" && ce != "br" {
				t.Fatalf("compressed with %q", ce)
			}
			if hasVary := resp.Header.Get("Vary") != ""; hasVary != c.wantVary {
				t.Fatalf("Vary %q, want present=%v", resp.Header.Values("Vary"), c.wantVary)
			}
			if !bytes.HasPrefix(big, b) || len(b) == 0 {
				t.Fatalf("body changed (%d bytes)", len(b))
			}
			if strings.HasPrefix(c.name, "small") && resp.ContentLength != int64(len(b)) {
				t.Fatalf("Content-Length %d for %d bytes", resp.ContentLength, len(b))
			}
		})
	}
}

func TestMinSizeThreshold(t *testing.T) {
	body := jsonBody(4096)
	for _, n := range []int{0, 1, 99, 100, 101, 4096} {
		for _, announce := range []bool{false, true} {
			t.Run(fmt.Sprintf("%d-announce=%v", n, announce), func(t *testing.T) {
				srv := serve(t, Options{MinSize: 100}, func(w http.ResponseWriter, r *http.Request) {
					w.Header().Set("Content-Type", "application/json")
					if announce {
						w.Header().Set("Content-Length", fmt.Sprint(n))
					}
					// Byte-sized writes exercise the buffering edge.
					for i := 0; i < n; i++ {
						w.Write(body[i : i+1])
					}
				})
				resp, b := get(t, "GET", srv.URL, "Accept-Encoding", "gzip")
				want := ""
				if n >= 100 {
					want = "gzip"
				}
				if got := resp.Header.Get("Content-Encoding"); got != want {
					t.Fatalf("Content-Encoding %q, want %q", got, want)
				}
				if want == "" && resp.ContentLength != int64(n) {
					t.Fatalf("identity Content-Length %d, want %d", resp.ContentLength, n)
				}
				if !bytes.Equal(decode(t, want, b), body[:n]) {
					t.Fatal("body differs")
				}
			})
		}
	}
}

func TestHeadersAdjusted(t *testing.T) {
	body := jsonBody(4096)
	srv := serve(t, Options{}, func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Type", "application/json; charset=utf-8")
		h.Set("Content-Length", fmt.Sprint(len(body)))
		h.Set("Accept-Ranges", "bytes")
		h.Set("ETag", `"v1"`)
		h.Add("Vary", "Origin")
		if r.URL.Path == "/dup" {
			h.Add("Vary", "accept-encoding")
		}
		if r.URL.Path == "/304" {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Write(body)
	})
	resp, b := get(t, "GET", srv.URL, "Accept-Encoding", "gzip")
	if resp.Header.Get("Etag") != `W/"v1"` {
		t.Errorf("ETag %q, want weak", resp.Header.Get("Etag"))
	}
	if v := resp.Header.Values("Vary"); strings.Join(v, ",") != "Origin,Accept-Encoding" {
		t.Errorf("Vary %q", v)
	}
	if resp.Header.Get("Accept-Ranges") != "" {
		t.Error("Accept-Ranges kept on a compressed response")
	}
	if !bytes.Equal(decode(t, "gzip", b), body) {
		t.Error("body differs")
	}

	resp, _ = get(t, "GET", srv.URL+"/dup", "Accept-Encoding", "gzip")
	if v := resp.Header.Values("Vary"); len(v) != 2 {
		t.Errorf("Vary duplicated: %q", v)
	}

	resp, b = get(t, "HEAD", srv.URL, "Accept-Encoding", "gzip")
	if resp.Header.Get("Content-Encoding") != "gzip" || resp.Header.Get("Content-Length") != "" || len(b) != 0 {
		t.Errorf("HEAD: headers %v, %d body bytes; want the GET's headers and no body", resp.Header, len(b))
	}

	resp, _ = get(t, "GET", srv.URL+"/304", "Accept-Encoding", "gzip")
	if resp.StatusCode != 304 || resp.Header.Get("Content-Encoding") != "" || resp.Header.Get("Etag") != `W/"v1"` {
		t.Errorf("304: status %d headers %v", resp.StatusCode, resp.Header)
	}
}

func TestSniffedType(t *testing.T) {
	page := "<!DOCTYPE html><html><body>" + strings.Repeat("<p>hello</p>", 300) + "</body></html>"
	srv := serve(t, Options{}, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, page)
	})
	resp, b := get(t, "GET", srv.URL, "Accept-Encoding", "zstd")
	if resp.Header.Get("Content-Encoding") != "zstd" || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("headers %v", resp.Header)
	}
	if string(decode(t, "zstd", b)) != page {
		t.Fatal("body differs")
	}
}

// TestFlushStreams checks that a flushed event reaches the client decoded
// while the handler is still running (SSE through the encoder).
func TestFlushStreams(t *testing.T) {
	for _, enc := range []string{"gzip", "zstd"} {
		t.Run(enc, func(t *testing.T) {
			release := make(chan struct{})
			srv := serve(t, Options{}, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/event-stream")
				io.WriteString(w, "data: one\n\n")
				http.NewResponseController(w).Flush()
				select {
				case <-release:
				case <-r.Context().Done():
					return
				}
				io.WriteString(w, "data: two\n\n")
			})
			req, _ := http.NewRequest("GET", srv.URL, nil)
			req.Header.Set("Accept-Encoding", enc)
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.Header.Get("Content-Encoding") != enc {
				t.Fatalf("Content-Encoding %q", resp.Header.Get("Content-Encoding"))
			}
			var r io.Reader
			if enc == "gzip" {
				g, err := gzip.NewReader(resp.Body)
				if err != nil {
					t.Fatal(err)
				}
				r = g
			} else {
				z, err := zstd.NewReader(resp.Body, zstd.WithDecoderConcurrency(1))
				if err != nil {
					t.Fatal(err)
				}
				defer z.Close()
				r = z
			}
			first := make([]byte, len("data: one\n\n"))
			if _, err := io.ReadFull(r, first); err != nil || string(first) != "data: one\n\n" {
				t.Fatalf("first event %q, %v", first, err)
			}
			close(release)
			rest, err := io.ReadAll(r)
			if err != nil || string(rest) != "data: two\n\n" {
				t.Fatalf("rest %q, %v", rest, err)
			}
		})
	}
}

func TestHijackAndController(t *testing.T) {
	srv := serve(t, Options{}, func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		if err := rc.SetWriteDeadline(time.Now().Add(time.Minute)); err != nil {
			http.Error(w, "deadline: "+err.Error(), 500)
			return
		}
		conn, brw, err := rc.Hijack()
		if err != nil {
			http.Error(w, "hijack: "+err.Error(), 500)
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nhijacked")
		brw.Flush()
	})
	resp, b := get(t, "GET", srv.URL, "Accept-Encoding", "gzip")
	if resp.StatusCode != 200 || string(b) != "hijacked" {
		t.Fatalf("status %d body %q", resp.StatusCode, b)
	}
}

// TestReadFromPassthrough serves a file through io.Copy (as the static
// handler does) for an incompressible and a compressible type.
func TestReadFromPassthrough(t *testing.T) {
	dir := t.TempDir()
	body := jsonBody(100 << 10)
	p := filepath.Join(dir, "f")
	if err := os.WriteFile(p, body, 0o644); err != nil {
		t.Fatal(err)
	}
	srv := serve(t, Options{}, func(w http.ResponseWriter, r *http.Request) {
		f, err := os.Open(p)
		if err != nil {
			t.Error(err)
			return
		}
		defer f.Close()
		w.Header().Set("Content-Type", r.URL.Query().Get("type"))
		if r.URL.Query().Get("len") != "" {
			w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		}
		io.Copy(w, &io.LimitedReader{R: f, N: int64(len(body))})
	})
	for _, q := range []string{"type=image/webp&len=1", "type=application/json&len=1", "type=application/json", "type=image/webp"} {
		t.Run(q, func(t *testing.T) {
			resp, b := get(t, "GET", srv.URL+"/?"+q, "Accept-Encoding", "gzip")
			enc := resp.Header.Get("Content-Encoding")
			if (enc == "gzip") != strings.Contains(q, "json") {
				t.Fatalf("Content-Encoding %q", enc)
			}
			if !bytes.Equal(decode(t, enc, b), body) {
				t.Fatal("body differs")
			}
		})
	}
}

// TestConcurrentPooling runs many mixed requests at once so that pooled
// writers and encoders are reused across encodings and sizes (run with -race).
func TestConcurrentPooling(t *testing.T) {
	bodies := [][]byte{jsonBody(10), jsonBody(2000), jsonBody(70000)}
	srv := serve(t, Options{}, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		var i int
		fmt.Sscan(r.URL.Query().Get("i"), &i)
		w.Write(bodies[i])
	})
	encs := []string{"gzip", "zstd", ""}
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 30; i++ {
				bi, enc := (g+i)%3, encs[(g*7+i)%3]
				req, _ := http.NewRequest("GET", fmt.Sprintf("%s/?i=%d", srv.URL, bi), nil)
				req.Header.Set("Accept-Encoding", enc)
				resp, err := client.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				got := resp.Header.Get("Content-Encoding")
				out, derr := decodeBody(got, b)
				if err != nil || derr != nil || !bytes.Equal(out, bodies[bi]) {
					t.Errorf("body %d via %q differs (%v, %v)", bi, got, err, derr)
					return
				}
			}
		}()
	}
	wg.Wait()
}

func TestOptionErrors(t *testing.T) {
	bad := []Options{
		{Types: []string{"text"}},
		{Types: []string{"*/*/*"}},
		{Encodings: []string{"br"}},
		{Encodings: []string{"gzip", "gzip"}},
		{GzipLevel: 10},
		{ZstdLevel: 23},
		{MinSize: -1},
	}
	for _, o := range bad {
		if _, err := New(o); err == nil {
			t.Errorf("New(%+v) accepted", o)
		}
	}
}

// TestEncoderMemory bounds what one pooled encoder costs, since every
// concurrently compressed response holds one: the figures in the package
// documentation come from here.
func TestEncoderMemory(t *testing.T) {
	m, err := newMiddleware(Options{})
	if err != nil {
		t.Fatal(err)
	}
	var w responseWriter
	w.rw = httptest.NewRecorder()
	body := jsonBody(64 << 10)
	for _, c := range m.codings {
		r := testing.Benchmark(func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				enc := c.reset(c.pool.New(), &w)
				enc.Write(body)
				enc.Close()
				w.rw.(*httptest.ResponseRecorder).Body.Reset()
			}
		})
		t.Logf("%s: one new encoder plus a 64KiB body: %d KiB allocated", c.name, r.AllocedBytesPerOp()>>10)
		if r.AllocedBytesPerOp() > 3<<20 {
			t.Errorf("%s encoder takes %d bytes; pooled encoders should stay under 3MiB", c.name, r.AllocedBytesPerOp())
		}
	}
}
