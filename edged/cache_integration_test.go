package main

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
)

// TestCacheThroughEdged runs the cache inside the real edged with
// compression on: each coding is compressed once and stored as a variant
// (a hit is the stored bytes, the upstream is not asked again), clients
// that accept the same codings share a variant, a conditional request is
// answered 304 with the stored ETag, and an upstream that echoes the
// request ID does not make hits replay the first request's ID.
func TestCacheThroughEdged(t *testing.T) {
	body := strings.Repeat("a compressible line of text for the cache test\n", 64)
	var hits atomic.Int64
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("Cache-Control", "max-age=600")
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("ETag", `"v1"`)
		w.Header().Set("X-Request-ID", r.Header.Get("X-Request-ID")) // echoed
		io.WriteString(w, body)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	e := startEdged(t, fmt.Sprintf(`
[server]
admin = ""
[[site]]
  [[site.route]]
  path = "/"
  upstream = "app"
  cache = "c"
[upstream.app]
servers = [%q]
[cache.c]
memory = "16MiB"
`, ln.Addr().String()))
	client := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	t.Cleanup(client.CloseIdleConnections)
	type result struct {
		status              int
		ce, cs, etag, rid   string
		vary, length, plain string
	}
	do := func(hdr ...string) result {
		t.Helper()
		req, _ := http.NewRequest("GET", e.httpURL+"/doc.txt", nil)
		for _, h := range hdr {
			k, v, _ := strings.Cut(h, ": ")
			req.Header.Set(k, v)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		plain := raw
		if resp.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(bytes.NewReader(raw))
			if err != nil {
				t.Fatalf("gzip body: %v", err)
			}
			plain, _ = io.ReadAll(zr)
		}
		return result{resp.StatusCode, resp.Header.Get("Content-Encoding"), resp.Header.Get("Cache-Status"),
			resp.Header.Get("ETag"), resp.Header.Get("X-Request-ID"), resp.Header.Get("Vary"), resp.Header.Get("Content-Length"), string(plain)}
	}

	first := do("Accept-Encoding: gzip, deflate, br")
	if first.ce != "gzip" || first.plain != body || !strings.Contains(first.cs, "stored") {
		t.Fatalf("first gzip request: %+v", first)
	}
	again := do("Accept-Encoding: br,gzip, deflate") // the same codings, another order
	if again.ce != "gzip" || again.plain != body || !strings.Contains(again.cs, "hit") || again.length == "" {
		t.Fatalf("second gzip request is not a hit of the stored gzip variant: %+v", again)
	}
	if again.rid == first.rid || again.rid == "" {
		t.Fatalf("request IDs: first %q, hit %q: the hit must carry its own", first.rid, again.rid)
	}
	plain := do()
	if plain.ce != "" || plain.plain != body || strings.Contains(plain.cs, "hit") {
		t.Fatalf("identity request: %+v, want the identity variant fetched", plain)
	}
	plain2 := do()
	if plain2.ce != "" || !strings.Contains(plain2.cs, "hit") || !strings.Contains(plain2.vary, "Accept-Encoding") {
		t.Fatalf("identity hit: %+v", plain2)
	}
	if n := hits.Load(); n != 2 {
		t.Fatalf("upstream asked %d times, want 2 (one per coding)", n)
	}
	nm := do("Accept-Encoding: deflate, gzip, br", "If-None-Match: "+first.etag)
	if nm.status != 304 || nm.etag != first.etag || nm.etag == "" {
		t.Fatalf("conditional request on the gzip variant: %+v, want 304 with ETag %s", nm, first.etag)
	}
	if n := hits.Load(); n != 2 {
		t.Fatalf("upstream asked %d times, want still 2", n)
	}
}
