package static

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"

	"github.com/edgeapp/edgeapp/edged/engine/enginetest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgeapp/edgeapp/edged/compress"
	"github.com/klauspost/compress/zstd"
)

const secret = "TOP-SECRET-OUTSIDE-ROOT"

// tree is a served directory with the files the tests use, and a
// directory beside it that must never be reachable.
type tree struct {
	root, outside string
	files         map[string][]byte
}

func gz(t testing.TB, b []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

func zst(t testing.TB, b []byte) []byte {
	e, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	return e.EncodeAll(b, nil)
}

func newTree(t testing.TB) *tree {
	t.Helper()
	base := t.TempDir()
	tr := &tree{root: filepath.Join(base, "root"), outside: filepath.Join(base, "outside"), files: map[string][]byte{}}
	rnd := rand.New(rand.NewPCG(1, 2))
	big := make([]byte, 1<<20)
	for i := range big {
		big[i] = byte(rnd.Uint32())
	}
	js := []byte(strings.Repeat("console.log('hello static world');\n", 200))
	css := []byte(strings.Repeat("body { color: #333; margin: 0 }\n", 100))
	files := map[string][]byte{
		"index.html":               []byte("<!DOCTYPE html><title>home</title>"),
		"app.js":                   js,
		"app.js.gz":                gz(t, js),
		"app.js.zst":               zst(t, js),
		"app.js.br":                []byte("not really brotli, but served as the br sidecar"),
		"style.css":                css,
		"style.css.gz":             gz(t, css),
		"data.json":                []byte(`{"items":[` + strings.Repeat(`{"a":1,"b":"two"},`, 300) + `{}]}`),
		"img.png":                  big[:5000],
		"img.png.gz":               []byte("must never be served"),
		"big.bin":                  big,
		"one.txt":                  make([]byte, 1024),
		"mod.wasm":                 []byte("\x00asm"),
		"vector.svg":               []byte("<svg xmlns='http://www.w3.org/2000/svg'/>"),
		"noext":                    []byte("<html><script>alert(1)</script>"),
		"UPPER.CSS":                []byte("a{}"),
		"sub/index.html":           []byte("sub index"),
		"sub/page.html":            []byte("sub page"),
		"empty/.keep":              nil,
		".env":                     []byte("SECRET=1"),
		".git/config":              []byte("[core]"),
		".well-known/security.txt": []byte("Contact: mailto:sec@example.com"),
		"weird <name>&\".txt":      []byte("weird"),
	}
	for name, b := range files {
		p := filepath.Join(tr.root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		tr.files[name] = b
	}
	if err := os.MkdirAll(tr.outside, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tr.outside, "secret.txt"), []byte(secret), 0o644); err != nil {
		t.Fatal(err)
	}
	links := map[string]string{
		"link-in":      "app.js",
		"sub/link-up":  "../app.js",
		"link-out":     filepath.Join(tr.outside, "secret.txt"),
		"link-out-rel": "../outside/secret.txt",
		"linkdir-out":  tr.outside,
		"abs-in":       filepath.Join(tr.root, "app.js"),
		"loop":         "loop",
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(tr.root, name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := syscall.Mkfifo(filepath.Join(tr.root, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	return tr
}

func serveTree(t testing.TB, o Options) *httptest.Server {
	t.Helper()
	h, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	srv := enginetest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

var client = &http.Client{
	Transport:     &http.Transport{DisableCompression: true},
	Timeout:       30 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

func do(t testing.TB, method, url string, hdr ...string) (*http.Response, []byte) {
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

// raw sends a request line exactly as given, so that no client cleans or
// re-encodes the path, and returns the parsed response.
func raw(t testing.TB, srv *httptest.Server, target string) (*http.Response, []byte) {
	t.Helper()
	c, err := net.DialTimeout("tcp", srv.Listener.Addr().String(), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n", target); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading response to %q: %v", target, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func TestNewErrors(t *testing.T) {
	tr := newTree(t)
	bad := []Options{
		{},
		{Root: filepath.Join(tr.root, "missing")},
		{Root: filepath.Join(tr.root, "app.js")},
		{Root: tr.root, Prefix: "static/"},
		{Root: tr.root, Fallback: "index.html"},
		{Root: tr.root, Fallback: "/../x"},
		{Root: tr.root, Index: []string{"a/b"}},
		{Root: tr.root, Precompressed: []string{"deflate"}},
	}
	for _, o := range bad {
		if _, err := New(o); err == nil {
			t.Errorf("New(%+v) accepted", o)
		}
	}
}

// useOsRoot switches a handler to the fallback used where openat2 is
// unavailable, so that both resolution paths face the same table.
func useOsRoot(t testing.TB, h http.Handler) {
	o := h.(*handler).fs
	o.useOpenat2 = false
	rd, err := o.openRoot()
	if err != nil {
		t.Fatal(err)
	}
	if rd.osRoot == nil {
		t.Fatal("fallback root not opened")
	}
	o.cur.Store(rd)
}

func TestTraversal(t *testing.T) {
	for _, mode := range []string{"openat2", "os.Root"} {
		t.Run(mode, func(t *testing.T) { testTraversal(t, mode) })
	}
}

func testTraversal(t *testing.T, mode string) {
	tr := newTree(t)
	for _, prefix := range []string{"/static/", "/static", "/"} {
		h, err := New(Options{Root: tr.root, Prefix: prefix})
		if err != nil {
			t.Fatal(err)
		}
		if mode == "os.Root" {
			useOsRoot(t, h)
		}
		srv := enginetest.NewServer(h)
		defer srv.Close()
		p := strings.TrimSuffix(prefix, "/")
		cases := []struct {
			target string
			want   int
		}{
			{p + "/../outside/secret.txt", 400},
			{p + "/%2e%2e/outside/secret.txt", 400},
			{p + "/%2E%2E/outside/secret.txt", 400},
			{p + "/.%2e/outside/secret.txt", 400},
			{p + "/sub/../../outside/secret.txt", 400},
			{p + "/..%2foutside/secret.txt", 400},
			{p + "/%2e%2e%2foutside%2fsecret.txt", 400},
			{p + "/sub%2fpage.html", 400},
			{p + "/sub%2Fpage.html", 400},
			{p + "/%5c..%5coutside", 400},
			{p + "/app.js%00", 400},
			{p + "/%00", 400},
			{p + "/..\\outside\\secret.txt", 404},
			{p + "/%252e%252e/outside/secret.txt", 404},
			{p + "/link-out", 404},
			{p + "/link-out-rel", 404},
			{p + "/linkdir-out/secret.txt", 404},
			{p + "/abs-in", 404}, // absolute symlinks count as leaving the root
			{p + "/loop", 404},
			{p + "/fifo", 404},
			{p + "/.env", 404},
			{p + "/%2eenv", 404},
			{p + "/.git/config", 404},
			{p + "/sub/../.git/config", 400},
			{"http://test" + p + "/../outside/secret.txt", 400},
			{p + "/link-in", 200},
			{p + "/sub/link-up", 200},
			{p + "/./app.js", 200},
			{p + "//app.js", 200},
			{p + "/.well-known/security.txt", 200},
			{p + "/" + strings.Repeat("a", 5000), 404},
			{p + "/" + strings.Repeat("a/", 3000) + "x", 404},
		}
		for _, c := range cases {
			t.Run(strings.ReplaceAll(prefix+" "+c.target, "/", "∕"), func(t *testing.T) {
				resp, b := raw(t, srv, c.target)
				if resp.StatusCode != c.want {
					t.Errorf("status %d, want %d (body %q)", resp.StatusCode, c.want, b)
				}
				if bytes.Contains(b, []byte(secret)) {
					t.Fatalf("served a file outside the root")
				}
			})
		}
		if prefix == "/static" {
			if resp, _ := raw(t, srv, "/staticfoo/app.js"); resp.StatusCode != 404 {
				t.Errorf("/staticfoo under prefix /static: %d", resp.StatusCode)
			}
			if resp, _ := raw(t, srv, "/static../outside/secret.txt"); resp.StatusCode != 404 && resp.StatusCode != 400 {
				t.Errorf("/static../: %d", resp.StatusCode)
			}
		}
	}
}

func TestSymlinksAllowed(t *testing.T) {
	tr := newTree(t)
	srv := serveTree(t, Options{Root: tr.root, AllowSymlinksOutsideRoot: true})
	for _, target := range []string{"/link-out", "/linkdir-out/secret.txt", "/link-out-rel"} {
		resp, b := raw(t, srv, target)
		if resp.StatusCode != 200 || string(b) != secret {
			t.Errorf("%s: %d %q", target, resp.StatusCode, b)
		}
	}
	// The request path still cannot climb out.
	if resp, _ := raw(t, srv, "/../outside/secret.txt"); resp.StatusCode != 400 {
		t.Errorf("traversal with symlinks allowed: %d", resp.StatusCode)
	}
}

func TestSidecarMatrix(t *testing.T) {
	tr := newTree(t)
	srv := serveTree(t, Options{Root: tr.root, Prefix: "/static/"})
	cases := []struct {
		file, ae, want string // want: sidecar encoding or ""
	}{
		{"app.js", "", ""},
		{"app.js", "gzip", "gzip"},
		{"app.js", "br", "br"},
		{"app.js", "zstd", "zstd"},
		{"app.js", "gzip, deflate, br, zstd", "br"},
		{"app.js", "gzip, zstd", "zstd"},
		{"app.js", "gzip;q=1, br;q=0.5, zstd;q=0.9", "gzip"},
		{"app.js", "br;q=0, zstd;q=0, gzip;q=0", ""},
		{"app.js", "br;q=0, *", "zstd"},
		{"app.js", "*", "br"},
		{"app.js", "*;q=0", ""},
		{"app.js", "identity", ""},
		{"style.css", "br, zstd, gzip", "gzip"},
		{"style.css", "br, zstd", ""},
		{"data.json", "br, zstd, gzip", ""},
		{"img.png", "gzip", ""},
	}
	etags := map[string]map[string]bool{}
	for _, c := range cases {
		t.Run(c.file+" "+c.ae, func(t *testing.T) {
			resp, b := do(t, "GET", srv.URL+"/static/"+c.file, "Accept-Encoding", c.ae)
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			if got := resp.Header.Get("Content-Encoding"); got != c.want {
				t.Fatalf("Content-Encoding %q, want %q", got, c.want)
			}
			wantCT := contentType(c.file)[0]
			if got := resp.Header.Get("Content-Type"); got != wantCT {
				t.Errorf("Content-Type %q, want the original's %q", got, wantCT)
			}
			wantVary := c.file != "img.png"
			if got := resp.Header.Values("Vary"); wantVary && (len(got) != 1 || got[0] != "Accept-Encoding") || !wantVary && len(got) != 0 {
				t.Errorf("Vary %q", got)
			}
			name := c.file + map[string]string{"": "", "gzip": ".gz", "br": ".br", "zstd": ".zst"}[c.want]
			if !bytes.Equal(b, tr.files[name]) {
				t.Fatalf("body is not %s", name)
			}
			switch c.want {
			case "gzip":
				r, err := gzip.NewReader(bytes.NewReader(b))
				if err != nil {
					t.Fatal(err)
				}
				if d, _ := io.ReadAll(r); !bytes.Equal(d, tr.files[c.file]) {
					t.Fatal("gzip sidecar does not decode to the original")
				}
			case "zstd":
				d, err := zstd.NewReader(nil)
				if err != nil {
					t.Fatal(err)
				}
				if out, err := d.DecodeAll(b, nil); err != nil || !bytes.Equal(out, tr.files[c.file]) {
					t.Fatalf("zstd sidecar does not decode to the original: %v", err)
				}
			}
			if etags[c.file] == nil {
				etags[c.file] = map[string]bool{}
			}
			etags[c.file][c.want+" "+resp.Header.Get("Etag")] = true
		})
	}
	// One ETag per encoding of app.js: identity, gzip, br, zstd.
	seen := map[string]string{}
	for k := range etags["app.js"] {
		enc, tag, _ := strings.Cut(k, " ")
		if other, dup := seen[tag]; dup && other != enc {
			t.Errorf("ETag %s shared by %q and %q", tag, enc, other)
		}
		seen[tag] = enc
	}
	if len(seen) != 4 {
		t.Errorf("want 4 distinct ETags for app.js, got %v", seen)
	}
}

func TestSidecarsDisabled(t *testing.T) {
	tr := newTree(t)
	srv := serveTree(t, Options{Root: tr.root, Precompressed: []string{}})
	resp, b := do(t, "GET", srv.URL+"/app.js", "Accept-Encoding", "gzip, br, zstd")
	if resp.Header.Get("Content-Encoding") != "" || resp.Header.Get("Vary") != "" || !bytes.Equal(b, tr.files["app.js"]) {
		t.Fatalf("headers %v", resp.Header)
	}
}

func TestRanges(t *testing.T) {
	tr := newTree(t)
	srv := serveTree(t, Options{Root: tr.root})
	big := tr.files["big.bin"]
	size := len(big)
	single := []struct {
		rng        string
		start, end int // inclusive
	}{
		{"bytes=0-99", 0, 99},
		{"bytes=100-", 100, size - 1},
		{"bytes=-100", size - 100, size - 1},
		{"bytes=1000-999999999", 1000, size - 1},
		{"BYTES=5-5", 5, 5},
		{"bytes=-99999999", 0, size - 1},
	}
	for _, c := range single {
		resp, b := do(t, "GET", srv.URL+"/big.bin", "Range", c.rng)
		if resp.StatusCode != 206 {
			t.Fatalf("%s: status %d", c.rng, resp.StatusCode)
		}
		if want := fmt.Sprintf("bytes %d-%d/%d", c.start, c.end, size); resp.Header.Get("Content-Range") != want {
			t.Errorf("%s: Content-Range %q, want %q", c.rng, resp.Header.Get("Content-Range"), want)
		}
		if !bytes.Equal(b, big[c.start:c.end+1]) {
			t.Errorf("%s: body differs", c.rng)
		}
	}

	// Multi-range.
	resp, b := do(t, "GET", srv.URL+"/big.bin", "Range", "bytes=0-9, 100-199, -5")
	mt, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if resp.StatusCode != 206 || err != nil || mt != "multipart/byteranges" {
		t.Fatalf("multi: status %d type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if resp.ContentLength != int64(len(b)) {
		t.Errorf("multi: Content-Length %d, body %d", resp.ContentLength, len(b))
	}
	mr := multipart.NewReader(bytes.NewReader(b), params["boundary"])
	wantParts := [][2]int{{0, 9}, {100, 199}, {size - 5, size - 1}}
	for i, wp := range wantParts {
		part, err := mr.NextPart()
		if err != nil {
			t.Fatalf("part %d: %v", i, err)
		}
		pb, _ := io.ReadAll(part)
		if !bytes.Equal(pb, big[wp[0]:wp[1]+1]) {
			t.Errorf("part %d body differs", i)
		}
		if want := fmt.Sprintf("bytes %d-%d/%d", wp[0], wp[1], size); part.Header.Get("Content-Range") != want {
			t.Errorf("part %d Content-Range %q", i, part.Header.Get("Content-Range"))
		}
		if part.Header.Get("Content-Type") != "application/octet-stream" {
			t.Errorf("part %d Content-Type %q", i, part.Header.Get("Content-Type"))
		}
	}
	if _, err := mr.NextPart(); err != io.EOF {
		t.Errorf("extra part: %v", err)
	}

	// Unsatisfiable, malformed, too many.
	resp, _ = do(t, "GET", srv.URL+"/big.bin", "Range", fmt.Sprintf("bytes=%d-", size))
	if resp.StatusCode != 416 || resp.Header.Get("Content-Range") != fmt.Sprintf("bytes */%d", size) {
		t.Errorf("unsatisfiable: %d %q", resp.StatusCode, resp.Header.Get("Content-Range"))
	}
	for _, rng := range []string{"bytes=abc", "bytes=5-1", "items=0-1", strings.Repeat("bytes=0-1,", 1) + strings.Repeat("2-3,", 40) + "4-5", "bytes=0-,0-"} {
		resp, b := do(t, "GET", srv.URL+"/big.bin", "Range", rng)
		if resp.StatusCode != 200 || len(b) != size {
			t.Errorf("%q: status %d, %d bytes; want the whole file", rng, resp.StatusCode, len(b))
		}
	}

	// If-Range.
	resp, _ = do(t, "GET", srv.URL+"/big.bin")
	etag, lm := resp.Header.Get("Etag"), resp.Header.Get("Last-Modified")
	for _, c := range []struct {
		ifRange string
		want    int
	}{{etag, 206}, {`"stale"`, 200}, {"W/" + etag, 200}, {lm, 206}, {"Mon, 02 Jan 2006 15:04:05 GMT", 200}} {
		resp, _ := do(t, "GET", srv.URL+"/big.bin", "Range", "bytes=0-9", "If-Range", c.ifRange)
		if resp.StatusCode != c.want {
			t.Errorf("If-Range %q: status %d, want %d", c.ifRange, resp.StatusCode, c.want)
		}
	}

	// Range over a precompressed sidecar: offsets into the coded bytes.
	gzb := tr.files["app.js.gz"]
	resp, b = do(t, "GET", srv.URL+"/app.js", "Accept-Encoding", "gzip", "Range", "bytes=10-29")
	if resp.StatusCode != 206 || resp.Header.Get("Content-Encoding") != "gzip" || !bytes.Equal(b, gzb[10:30]) {
		t.Errorf("sidecar range: %d %q", resp.StatusCode, resp.Header.Get("Content-Encoding"))
	}
	if want := fmt.Sprintf("bytes 10-29/%d", len(gzb)); resp.Header.Get("Content-Range") != want {
		t.Errorf("sidecar Content-Range %q, want %q", resp.Header.Get("Content-Range"), want)
	}
	resp, b = do(t, "GET", srv.URL+"/app.js", "Accept-Encoding", "gzip", "Range", "bytes=0-1,5-6")
	if resp.StatusCode != 200 || !bytes.Equal(b, gzb) {
		t.Errorf("multi-range on a sidecar: status %d; want the whole sidecar", resp.StatusCode)
	}
}

func TestConditional(t *testing.T) {
	tr := newTree(t)
	srv := serveTree(t, Options{Root: tr.root, CacheControl: "public, max-age=60"})
	resp, _ := do(t, "GET", srv.URL+"/app.js")
	etag, lm := resp.Header.Get("Etag"), resp.Header.Get("Last-Modified")
	if !strings.HasPrefix(etag, `"`) || lm == "" || resp.Header.Get("Cache-Control") != "public, max-age=60" {
		t.Fatalf("validators: %q %q %v", etag, lm, resp.Header)
	}
	earlier := time.Now().Add(-48 * time.Hour).UTC().Format(http.TimeFormat)
	cases := []struct {
		hdr  []string
		want int
	}{
		{[]string{"If-None-Match", etag}, 304},
		{[]string{"If-None-Match", "W/" + etag}, 304},
		{[]string{"If-None-Match", `"x", ` + etag}, 304},
		{[]string{"If-None-Match", "*"}, 304},
		{[]string{"If-None-Match", `"other"`}, 200},
		{[]string{"If-Modified-Since", lm}, 304},
		{[]string{"If-Modified-Since", earlier}, 200},
		{[]string{"If-None-Match", `"other"`, "If-Modified-Since", lm}, 200}, // INM wins
		{[]string{"If-Match", etag}, 200},
		{[]string{"If-Match", `"other"`}, 412},
		{[]string{"If-Match", "W/" + etag}, 412}, // strong comparison
		{[]string{"If-Unmodified-Since", earlier}, 412},
		{[]string{"If-Unmodified-Since", lm}, 200},
	}
	for _, c := range cases {
		resp, b := do(t, "GET", srv.URL+"/app.js", c.hdr...)
		if resp.StatusCode != c.want {
			t.Errorf("%q: status %d, want %d", c.hdr, resp.StatusCode, c.want)
			continue
		}
		if c.want == 304 {
			if len(b) != 0 || resp.Header.Get("Etag") != etag || resp.Header.Get("Cache-Control") == "" || resp.Header.Get("Vary") == "" || resp.Header.Get("Content-Type") != "" {
				t.Errorf("%q: 304 headers %v", c.hdr, resp.Header)
			}
		}
	}
	// A sidecar's validator only matches that coding.
	resp, _ = do(t, "GET", srv.URL+"/app.js", "Accept-Encoding", "gzip")
	gzTag := resp.Header.Get("Etag")
	if r, _ := do(t, "GET", srv.URL+"/app.js", "Accept-Encoding", "gzip", "If-None-Match", gzTag); r.StatusCode != 304 {
		t.Errorf("gzip etag with gzip: %d", r.StatusCode)
	}
	if r, _ := do(t, "GET", srv.URL+"/app.js", "If-None-Match", gzTag); r.StatusCode != 200 {
		t.Errorf("gzip etag without gzip: %d", r.StatusCode)
	}
	// HEAD carries the GET's headers and no body.
	resp, b := do(t, "HEAD", srv.URL+"/app.js")
	if resp.StatusCode != 200 || len(b) != 0 || resp.Header.Get("Content-Length") != fmt.Sprint(len(tr.files["app.js"])) || resp.Header.Get("Etag") != etag {
		t.Errorf("HEAD: %d %v", resp.StatusCode, resp.Header)
	}
}

func TestDirectoriesAndMethods(t *testing.T) {
	tr := newTree(t)
	srv := serveTree(t, Options{Root: tr.root, Prefix: "/static/"})
	cases := []struct {
		method, target string
		want           int
		body, location string
	}{
		{"GET", "/static/", 200, "<!DOCTYPE html><title>home</title>", ""},
		{"GET", "/static", 308, "", "/static/"},
		{"GET", "/static/sub", 308, "", "/static/sub/"},
		{"GET", "/static/sub?x=1&y=%20", 308, "", "/static/sub/?x=1&y=%20"},
		{"GET", "/static/sub/", 200, "sub index", ""},
		{"GET", "/static/sub/page.html", 200, "sub page", ""},
		{"GET", "/static/sub/page.html/", 404, "", ""},
		{"GET", "/static/empty/", 403, "", ""},
		{"GET", "/static/nope.txt", 404, "", ""},
		{"GET", "/other/app.js", 404, "", ""},
		{"POST", "/static/app.js", 405, "", ""},
		{"DELETE", "/static/app.js", 405, "", ""},
	}
	for _, c := range cases {
		resp, b := do(t, c.method, srv.URL+c.target)
		if resp.StatusCode != c.want {
			t.Errorf("%s %s: status %d, want %d", c.method, c.target, resp.StatusCode, c.want)
		}
		if c.body != "" && string(b) != c.body {
			t.Errorf("%s %s: body %q", c.method, c.target, b)
		}
		if c.location != "" && resp.Header.Get("Location") != c.location {
			t.Errorf("%s %s: Location %q, want %q", c.method, c.target, resp.Header.Get("Location"), c.location)
		}
		if c.want == 405 && resp.Header.Get("Allow") != "GET, HEAD" {
			t.Errorf("405 without Allow: %v", resp.Header)
		}
	}
	// A protocol-relative open redirect must not come out of "//host".
	resp, _ := raw(t, serveTree(t, Options{Root: tr.root}), "//sub")
	if loc := resp.Header.Get("Location"); resp.StatusCode != 308 || loc != "/sub/" {
		t.Errorf("//sub: %d Location %q", resp.StatusCode, loc)
	}
}

func TestListing(t *testing.T) {
	tr := newTree(t)
	srv := serveTree(t, Options{Root: tr.root, Browse: true, Index: []string{"none.html"}})
	resp, b := do(t, "GET", srv.URL+"/")
	body := string(b)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("status %d type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if !strings.Contains(body, "weird &lt;name&gt;&amp;&#34;.txt") || strings.Contains(body, "<name>") {
		t.Errorf("names not escaped:\n%s", body)
	}
	if !strings.Contains(body, `href="./weird%20%3Cname%3E&amp;%22.txt"`) {
		t.Errorf("href not escaped:\n%s", body)
	}
	if strings.Contains(body, ".env") || strings.Contains(body, ".git") {
		t.Errorf("hidden entries listed")
	}
	if !strings.Contains(body, `href="./sub/"`) || !strings.Contains(body, ">app.js<") {
		t.Errorf("entries missing:\n%s", body)
	}
	if resp, b := do(t, "GET", srv.URL+"/weird%20%3Cname%3E&%22.txt"); resp.StatusCode != 200 || string(b) != "weird" {
		t.Errorf("following the escaped link: %d %q", resp.StatusCode, b)
	}
	if resp, b := do(t, "HEAD", srv.URL+"/"); resp.StatusCode != 200 || len(b) != 0 {
		t.Errorf("HEAD listing: %d, %d bytes", resp.StatusCode, len(b))
	}
	if resp, _ := do(t, "GET", srv.URL+"/.git/"); resp.StatusCode != 404 {
		t.Errorf("listing a hidden directory: %d", resp.StatusCode)
	}
	off := serveTree(t, Options{Root: tr.root, Index: []string{"none.html"}})
	if resp, _ := do(t, "GET", off.URL+"/"); resp.StatusCode != 403 {
		t.Errorf("listing off: %d", resp.StatusCode)
	}
}

func TestFallback(t *testing.T) {
	tr := newTree(t)
	srv := serveTree(t, Options{Root: tr.root, Prefix: "/app/", Fallback: "/index.html"})
	for _, p := range []string{"/app/route/deep", "/app/missing.js", "/app/sub/nope"} {
		resp, b := do(t, "GET", srv.URL+p)
		if resp.StatusCode != 200 || string(b) != string(tr.files["index.html"]) || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
			t.Errorf("%s: %d %q", p, resp.StatusCode, b)
		}
	}
	resp, b := do(t, "GET", srv.URL+"/app/app.js")
	if resp.StatusCode != 200 || !bytes.Equal(b, tr.files["app.js"]) {
		t.Errorf("existing file: %d", resp.StatusCode)
	}
	for target, want := range map[string]int{"/app/.env": 404, "/app/../outside/secret.txt": 400, "/app/link-out": 404, "/app/empty/": 403} {
		if resp, _ := raw(t, srv, target); resp.StatusCode != want {
			t.Errorf("%s: %d, want %d", target, resp.StatusCode, want)
		}
	}
	srv = serveTree(t, Options{Root: tr.root, Fallback: "/gone.html"})
	if resp, _ := do(t, "GET", srv.URL+"/x"); resp.StatusCode != 404 {
		t.Errorf("missing fallback: %d", resp.StatusCode)
	}
}

func TestContentTypes(t *testing.T) {
	tr := newTree(t)
	srv := serveTree(t, Options{Root: tr.root})
	for file, want := range map[string]string{
		"app.js":     "text/javascript; charset=utf-8",
		"style.css":  "text/css; charset=utf-8",
		"UPPER.CSS":  "text/css; charset=utf-8",
		"data.json":  "application/json",
		"mod.wasm":   "application/wasm",
		"vector.svg": "image/svg+xml",
		"img.png":    "image/png",
		"noext":      "application/octet-stream",
		"big.bin":    "application/octet-stream",
		"one.txt":    "text/plain; charset=utf-8",
	} {
		resp, _ := do(t, "GET", srv.URL+"/"+file)
		if got := resp.Header.Get("Content-Type"); got != want {
			t.Errorf("%s: %q, want %q", file, got, want)
		}
	}
}

// TestSendfileBody checks big bodies arrive intact on the sendfile path,
// directly and through the compress middleware's pass-through.
func TestSendfileBody(t *testing.T) {
	tr := newTree(t)
	h, err := New(Options{Root: tr.root})
	if err != nil {
		t.Fatal(err)
	}
	mw, err := compress.New(compress.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for name, handler := range map[string]http.Handler{"plain": h, "compress": mw(h)} {
		srv := enginetest.NewServer(handler)
		defer srv.Close()
		for _, f := range []string{"big.bin", "img.png"} {
			resp, b := do(t, "GET", srv.URL+"/"+f, "Accept-Encoding", "gzip")
			if !bytes.Equal(b, tr.files[f]) || resp.ContentLength != int64(len(b)) {
				t.Errorf("%s %s: %d bytes, Content-Length %d", name, f, len(b), resp.ContentLength)
			}
		}
	}
}

// TestThroughCompress checks the pair as the router chains them: a
// sidecar is not compressed again, a plain compressible file is.
func TestThroughCompress(t *testing.T) {
	tr := newTree(t)
	h, err := New(Options{Root: tr.root})
	if err != nil {
		t.Fatal(err)
	}
	mw, err := compress.New(compress.Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv := enginetest.NewServer(mw(h))
	defer srv.Close()

	resp, b := do(t, "GET", srv.URL+"/app.js", "Accept-Encoding", "gzip")
	if resp.Header.Get("Content-Encoding") != "gzip" || !bytes.Equal(b, tr.files["app.js.gz"]) {
		t.Errorf("sidecar through compress: %q, body is the sidecar: %v", resp.Header.Get("Content-Encoding"), bytes.Equal(b, tr.files["app.js.gz"]))
	}
	if v := resp.Header.Values("Vary"); len(v) != 1 {
		t.Errorf("Vary %q", v)
	}
	if resp.ContentLength != int64(len(tr.files["app.js.gz"])) {
		t.Errorf("sidecar lost its Content-Length: %d", resp.ContentLength)
	}

	resp, b = do(t, "GET", srv.URL+"/data.json", "Accept-Encoding", "zstd")
	if resp.Header.Get("Content-Encoding") != "zstd" {
		t.Fatalf("data.json not compressed: %v", resp.Header)
	}
	d, _ := zstd.NewReader(nil)
	if out, err := d.DecodeAll(b, nil); err != nil || !bytes.Equal(out, tr.files["data.json"]) {
		t.Fatalf("decoding: %v", err)
	}
	etag := resp.Header.Get("Etag")
	if !strings.HasPrefix(etag, "W/") {
		t.Errorf("ETag %q not weakened", etag)
	}
	if r, _ := do(t, "GET", srv.URL+"/data.json", "Accept-Encoding", "zstd", "If-None-Match", etag); r.StatusCode != 304 || r.Header.Get("Etag") != etag {
		t.Errorf("revalidating the compressed response: %d %q", r.StatusCode, r.Header.Get("Etag"))
	}
	resp, b = do(t, "GET", srv.URL+"/data.json", "Accept-Encoding", "zstd", "Range", "bytes=0-9")
	if resp.StatusCode != 206 || resp.Header.Get("Content-Encoding") != "" || !bytes.Equal(b, tr.files["data.json"][:10]) {
		t.Errorf("range through compress: %d %q", resp.StatusCode, resp.Header.Get("Content-Encoding"))
	}
}

// TestRootSwap replaces the directory Root's symlink points to, as a
// deploy does, and waits for the handler to serve the new one.
func TestRootSwap(t *testing.T) {
	base := t.TempDir()
	for _, d := range []string{"a", "b"} {
		os.MkdirAll(filepath.Join(base, d), 0o755)
		os.WriteFile(filepath.Join(base, d, "v.txt"), []byte(d), 0o644)
	}
	link := filepath.Join(base, "current")
	if err := os.Symlink(filepath.Join(base, "a"), link); err != nil {
		t.Fatal(err)
	}
	h, err := New(Options{Root: link, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	srv := enginetest.NewServer(h)
	defer srv.Close()
	if _, b := do(t, "GET", srv.URL+"/v.txt"); string(b) != "a" {
		t.Fatalf("before: %q", b)
	}
	tmp := filepath.Join(base, "next")
	os.Symlink(filepath.Join(base, "b"), tmp)
	if err := os.Rename(tmp, link); err != nil {
		t.Fatal(err)
	}
	// Make the once-a-second recheck due now instead of waiting for it.
	h.(*handler).fs.next.Store(0)
	if _, b := do(t, "GET", srv.URL+"/v.txt"); string(b) != "b" {
		t.Fatalf("still serving %q after the root was swapped", b)
	}
	// Root disappearing keeps the last directory served.
	os.Remove(link)
	h.(*handler).fs.next.Store(0)
	if _, b := do(t, "GET", srv.URL+"/v.txt"); string(b) != "b" {
		t.Fatalf("after the root path vanished: %q", b)
	}
}

// TestConcurrentRootSwap serves from many goroutines while the root is
// swapped back and forth and rechecked on every request (run with -race).
func TestConcurrentRootSwap(t *testing.T) {
	base := t.TempDir()
	for _, d := range []string{"a", "b"} {
		os.MkdirAll(filepath.Join(base, d), 0o755)
		os.WriteFile(filepath.Join(base, d, "v.txt"), []byte(d), 0o644)
	}
	link := filepath.Join(base, "current")
	os.Symlink(filepath.Join(base, "a"), link)
	h, err := New(Options{Root: link, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	o := h.(*handler).fs
	srv := enginetest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.next.Store(0)
		h.ServeHTTP(w, r)
	}))
	defer srv.Close()
	done := make(chan struct{})
	swapped := make(chan struct{})
	go func() {
		defer close(swapped)
		for i := 0; ; i++ {
			select {
			case <-done:
				return
			default:
			}
			tmp := filepath.Join(base, "next")
			os.Symlink(filepath.Join(base, []string{"a", "b"}[i%2]), tmp)
			os.Rename(tmp, link)
		}
	}()
	errs := make(chan error, 8)
	for g := 0; g < 8; g++ {
		go func() {
			for i := 0; i < 40; i++ {
				resp, err := client.Get(srv.URL + "/v.txt")
				if err != nil {
					errs <- err
					return
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != 200 || (string(b) != "a" && string(b) != "b") {
					errs <- fmt.Errorf("status %d body %q", resp.StatusCode, b)
					return
				}
			}
			errs <- nil
		}()
	}
	for g := 0; g < 8; g++ {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	close(done)
	<-swapped
}

// TestSidecarMissCache: a sidecar found missing is not looked for again
// for a moment (identity is served meanwhile, which is always correct),
// and is found once the remembered miss is gone.
func TestSidecarMissCache(t *testing.T) {
	dir := t.TempDir()
	body := []byte(strings.Repeat("late();\n", 100))
	os.WriteFile(filepath.Join(dir, "late.js"), body, 0o644)
	h, err := New(Options{Root: dir})
	if err != nil {
		t.Fatal(err)
	}
	srv := enginetest.NewServer(h)
	defer srv.Close()
	if resp, _ := do(t, "GET", srv.URL+"/late.js", "Accept-Encoding", "gzip, br"); resp.Header.Get("Content-Encoding") != "" {
		t.Fatalf("no sidecar yet, got %q", resp.Header.Get("Content-Encoding"))
	}
	os.WriteFile(filepath.Join(dir, "late.js.gz"), gz(t, body), 0o644)
	if resp, b := do(t, "GET", srv.URL+"/late.js", "Accept-Encoding", "gzip, br"); resp.Header.Get("Content-Encoding") != "" || !bytes.Equal(b, body) {
		t.Fatalf("within the miss TTL: %q", resp.Header.Get("Content-Encoding"))
	}
	h.(*handler).fs.misses.Store(new(missCache)) // as when missTTL has passed
	if resp, _ := do(t, "GET", srv.URL+"/late.js", "Accept-Encoding", "gzip, br"); resp.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("after the miss expired: %q", resp.Header.Get("Content-Encoding"))
	}
	// A client accepting only br still finds nothing; gzip stays found.
	if resp, _ := do(t, "GET", srv.URL+"/late.js", "Accept-Encoding", "br"); resp.Header.Get("Content-Encoding") != "" {
		t.Fatalf("br: %q", resp.Header.Get("Content-Encoding"))
	}
	if resp, _ := do(t, "GET", srv.URL+"/late.js", "Accept-Encoding", "gzip"); resp.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("gzip again: %q", resp.Header.Get("Content-Encoding"))
	}
}
