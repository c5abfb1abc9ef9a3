package static

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeapp/edgeapp/edged/engine/enginetest"
)

// TestOpenFileCacheSeesEveryChange serves a small file often enough to be
// cached, then changes it every way a deploy or an editor does: each
// change is served at once, and a cached name turned into a symlink out of
// the root is refused as before.
func TestOpenFileCacheSeesEveryChange(t *testing.T) {
	tr := newTree(t)
	h, err := New(Options{Root: tr.root})
	if err != nil {
		t.Fatal(err)
	}
	o := h.(*handler).fs
	srv := serveHandler(t, h)
	path := filepath.Join(tr.root, "one.txt")
	want := func(step, body string) {
		t.Helper()
		for range 3 {
			res, b := do(t, "GET", srv.URL+"/one.txt")
			if res.StatusCode != 200 || string(b) != body {
				t.Fatalf("%s: %d %q, want %q", step, res.StatusCode, b, body)
			}
		}
	}
	os.WriteFile(path, []byte("first"), 0o644)
	want("first version", "first")
	if v, ok := o.files.Load().m.Load("one.txt"); !ok {
		t.Fatal("a file requested three times is not cached")
	} else if _, ok := v.(*cachedFile); !ok {
		t.Fatalf("cache entry %T, want the contents", v)
	}
	// In place, longer.
	os.WriteFile(path, []byte("second, longer"), 0o644)
	want("edited in place", "second, longer")
	// In place, same length.
	os.WriteFile(path, []byte("SECOND, LONGER"), 0o644)
	want("same length", "SECOND, LONGER")
	// A new file renamed over it (how deploys replace files).
	tmp := filepath.Join(tr.root, ".tmp")
	os.WriteFile(tmp, []byte("renamed into place"), 0o644)
	os.Rename(tmp, path)
	want("renamed over", "renamed into place")
	// Removed.
	os.Remove(path)
	if res, _ := do(t, "GET", srv.URL+"/one.txt"); res.StatusCode != 404 {
		t.Fatalf("removed: %d", res.StatusCode)
	}
	// Replaced by a symlink out of the root.
	os.Symlink(filepath.Join(tr.outside, "secret.txt"), path)
	for range 3 {
		if res, b := do(t, "GET", srv.URL+"/one.txt"); res.StatusCode == 200 || strings.Contains(string(b), secret) {
			t.Fatalf("symlink out of the root served from the cache: %d %q", res.StatusCode, b)
		}
	}
	// Ranges come from the cached bytes too.
	os.Remove(path)
	os.WriteFile(path, []byte("0123456789"), 0o644)
	want("ranges, warm", "0123456789")
	if res, b := do(t, "GET", srv.URL+"/one.txt", "Range", "bytes=2-4"); res.StatusCode != 206 || string(b) != "234" {
		t.Fatalf("range from the cache: %d %q", res.StatusCode, b)
	}
}

func serveHandler(t testing.TB, h http.Handler) *httptest.Server {
	t.Helper()
	srv := enginetest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}
