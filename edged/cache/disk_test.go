package cache

import (
	"bytes"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// diskFiles lists the entry files under dir.
func diskFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		rel, _ := filepath.Rel(dir, p)
		if err == nil && !d.IsDir() && !strings.HasPrefix(rel, tmpDir+string(filepath.Separator)) {
			out = append(out, p)
		}
		return nil
	})
	return out
}

// lockedBuf collects log output.
type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.b.String(), s)
}

var (
	smallBody = strings.Repeat("s", 3000)
	bigBody   = strings.Repeat("0123456789abcdef", 20000) // 320 KB, above MemoryObjectMax below
)

func diskOrigin(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "max-age=3600")
	w.Header().Set("Vary", "Accept-Language")
	if r.URL.Path == "/big" {
		w.Write([]byte(bigBody))
		return
	}
	w.Write([]byte(smallBody + r.Header.Get("Accept-Language")))
}

func diskOpts(dir string) Options {
	return Options{DiskDir: dir, MemoryObjectMax: 64 << 10, MaxObjectSize: 4 << 20}
}

// restart closes the cache (flushing queued disk writes) and opens it
// again on the same directory, waiting for the index to load.
func (e *env) restart(o Options) {
	e.t.Helper()
	e.cache.Close()
	e.open(o)
	<-e.cache.disk.loaded
}

func TestDiskWarmRestart(t *testing.T) {
	dir := t.TempDir()
	e := newEnv(t, diskOpts(dir), diskOrigin)
	e.get("/small", "Accept-Language: en")
	e.get("/small", "Accept-Language: de")
	e.get("/big")
	if e.hits() != 3 {
		t.Fatalf("origin hits %d", e.hits())
	}
	// A body above MemoryObjectMax went to disk without being kept in memory.
	host := strings.TrimPrefix(e.front.URL, "http://")
	if o, _ := e.cache.lookup(e.cache.makeKey("http", host, "/big", ""), http.Header{}); o == nil || o.mem.Load() != nil || o.disk.Load() == nil {
		t.Fatal("the big body is not a disk-only entry")
	}
	e.restart(diskOpts(dir))
	if n := len(diskFiles(t, dir)); n != 3 {
		t.Fatalf("%d entries on disk, want 3", n)
	}
	for _, c := range []struct{ path, lang, want string }{
		{"/small", "en", smallBody + "en"}, {"/small", "de", smallBody + "de"}, {"/big", "", bigBody},
	} {
		var hdr []string
		if c.lang != "" {
			hdr = append(hdr, "Accept-Language: "+c.lang)
		}
		r := e.get(c.path, hdr...)
		if r.body != c.want || !strings.Contains(r.header.Get("Cache-Status"), "hit") {
			t.Fatalf("%s %s after restart: %d bytes, Cache-Status %q", c.path, c.lang, len(r.body), r.header.Get("Cache-Status"))
		}
	}
	if e.hits() != 3 {
		t.Fatalf("origin hits %d after restart, want still 3", e.hits())
	}
	// ranges from a disk-only body
	r := e.get("/big", "Range: bytes=16-31")
	if r.status != 206 || r.body != bigBody[16:32] {
		t.Fatalf("range from disk: %d %q", r.status, r.body)
	}
	// purge removes the files too
	if n := e.cache.PurgeAll(); n != 3 {
		t.Fatalf("purged %d, want 3", n)
	}
	if n := len(diskFiles(t, dir)); n != 0 {
		t.Fatalf("%d files left after purge", n)
	}
}

// damage applies fn to the one entry file of path.
func damage(t *testing.T, dir string, want string, fn func(path string, b []byte)) {
	t.Helper()
	for _, p := range diskFiles(t, dir) {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte(`"k":"`)) && bytes.Contains(b, []byte(want)) {
			fn(p, b)
			return
		}
	}
	t.Fatalf("no entry for %s", want)
}

func TestDiskCorruptAndTruncatedEntries(t *testing.T) {
	for _, tc := range []struct {
		name   string
		path   string
		break_ func(p string, b []byte)
	}{
		{"body byte flipped (small)", "/small", func(p string, b []byte) { b[10] ^= 0xff; os.WriteFile(p, b, 0o600) }},
		{"body byte flipped (big)", "/big", func(p string, b []byte) { b[100000] ^= 0xff; os.WriteFile(p, b, 0o600) }},
		{"metadata byte flipped", "/small", func(p string, b []byte) {
			i := bytes.Index(b, []byte(`"k":"`))
			b[i+6] ^= 0x01
			os.WriteFile(p, b, 0o600)
		}},
		{"truncated", "/big", func(p string, b []byte) { os.Truncate(p, int64(len(b)-7)) }},
		{"truncated to the body only", "/small", func(p string, b []byte) { os.Truncate(p, int64(len(smallBody))) }},
		{"empty", "/big", func(p string, b []byte) { os.Truncate(p, 0) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			e := newEnv(t, diskOpts(dir), diskOrigin)
			want := bigBody
			if tc.path == "/small" {
				want = smallBody
			}
			e.get(tc.path)
			e.cache.Close()
			damage(t, dir, tc.path, tc.break_)
			e.restart(diskOpts(dir))
			r := e.get(tc.path)
			if r.body != want {
				t.Fatalf("served a damaged entry: %d bytes", len(r.body))
			}
			if e.hits() != 2 {
				t.Fatalf("origin hits %d, want 2 (the damaged entry refetched)", e.hits())
			}
			// and it is stored again
			if r := e.get(tc.path); r.body != want || e.hits() != 2 {
				t.Fatalf("not stored again: hits %d", e.hits())
			}
		})
	}
}

func TestDiskUnwritable(t *testing.T) {
	var logs lockedBuf
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o600)
	o := diskOpts(filepath.Join(file, "cache")) // under a regular file: even root cannot mkdir it
	o.Log = slog.New(slog.NewTextHandler(&logs, nil))
	e := newEnv(t, o, diskOrigin)
	for range 3 {
		if r := e.get("/big"); r.body != bigBody {
			t.Fatalf("got %d bytes", len(r.body))
		}
		if r := e.get("/s1"); r.body != smallBody {
			t.Fatalf("got %d bytes", len(r.body))
		}
	}
	// small ones are still cached in memory; big ones cannot be stored
	if e.hits() != 4 {
		t.Fatalf("origin hits %d, want 4", e.hits())
	}
	e.cache.Close() // drain the writer
	if n := logs.count("level=ERROR"); n != 1 {
		t.Fatalf("%d error lines, want exactly 1:\n%s", n, logs.b.String())
	}
}

// A disk that fills up: a tmpfs too small for the body. Needs root.
func TestDiskFull(t *testing.T) {
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=128k", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a small tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", dir).Run() })
	var logs lockedBuf
	o := diskOpts(dir)
	o.Log = slog.New(slog.NewTextHandler(&logs, nil))
	e := newEnv(t, o, diskOrigin)
	for range 2 {
		if r := e.get("/big"); r.body != bigBody {
			t.Fatalf("got %d bytes from a full disk", len(r.body))
		}
	}
	if e.hits() != 2 {
		t.Fatalf("origin hits %d, want 2", e.hits())
	}
	if r := e.get("/s1"); r.body != smallBody {
		t.Fatal("small body")
	}
	if r := e.get("/s1"); r.body != smallBody || e.hits() != 3 {
		t.Fatalf("small body not cached in memory: hits %d", e.hits())
	}
	e.cache.Close()
	if ents, _ := os.ReadDir(filepath.Join(dir, tmpDir)); len(ents) != 0 {
		t.Fatalf("%d temp files left", len(ents))
	}
}

func TestDiskBounded(t *testing.T) {
	dir := t.TempDir()
	o := diskOpts(dir)
	o.DiskMaxBytes = 2 << 20 // about 6 big bodies; at most a quarter each
	e := newEnv(t, o, diskOrigin)
	for i := range 14 {
		e.get("/big?i=" + string(rune('a'+i)))
	}
	waitFor(t, "disk bound", func() bool { b, _ := e.cache.disk.usage(); return b <= o.DiskMaxBytes })
	var total int64
	for _, p := range diskFiles(t, dir) {
		st, _ := os.Stat(p)
		total += st.Size()
	}
	if total > o.DiskMaxBytes {
		t.Fatalf("%d bytes on disk, bound %d", total, o.DiskMaxBytes)
	}
	if total == 0 {
		t.Fatal("nothing on disk")
	}
}

// TestDiskRevalidationRewritesMetadata: a 304 refreshes a large disk-only
// entry (well above the old 8 MiB limit on rewrites) in place: after a
// restart the entry is fresh without asking the origin, and its body is
// intact.
func TestDiskRevalidationRewritesMetadata(t *testing.T) {
	big := strings.Repeat("0123456789abcdef", 10<<16) // 10 MiB
	dir := t.TempDir()
	o := Options{DiskDir: dir, MemoryObjectMax: 64 << 10, MaxObjectSize: 32 << 20, DiskMaxBytes: 256 << 20}
	var e *env
	e = newEnv(t, o, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=10")
		w.Header().Set("ETag", `"e1"`)
		if r.Header.Get("If-None-Match") == `"e1"` {
			w.Header().Set("X-Refreshed", "yes")
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Write([]byte(big))
	})
	if r := e.get("/big"); len(r.body) != len(big) {
		t.Fatalf("fill: %d bytes", len(r.body))
	}
	files := diskFiles(t, dir)
	if len(files) != 1 {
		t.Fatalf("%d entry files", len(files))
	}
	e.clock.Advance(11 * time.Second)
	if r := e.get("/big"); !strings.Contains(r.header.Get("Cache-Status"), "fwd-status=304") || r.body != big {
		t.Fatalf("revalidation: %q, %d bytes", r.header.Get("Cache-Status"), len(r.body))
	}
	waitFor(t, "the metadata rewrite", func() bool {
		b, err := os.ReadFile(files[0])
		return err == nil && bytes.Contains(b, []byte("X-Refreshed"))
	})
	e.restart(o)
	e.clock.Advance(5 * time.Second)
	r := e.get("/big")
	if !strings.Contains(r.header.Get("Cache-Status"), "hit") || r.header.Get("X-Refreshed") != "yes" || r.body != big {
		t.Fatalf("after a restart: Cache-Status %q, X-Refreshed %q, %d bytes; want a hit of the refreshed entry", r.header.Get("Cache-Status"), r.header.Get("X-Refreshed"), len(r.body))
	}
	if e.hits() != 2 {
		t.Fatalf("origin hits %d, want 2 (fill and revalidation)", e.hits())
	}
	if n := len(diskFiles(t, dir)); n != 1 {
		t.Fatalf("%d entry files, want the one rewritten in place", n)
	}
}

// TestTrailersStored: trailers the origin sends after the body reach the
// client that fetched the response, every hit, and hits after a restart.
func TestTrailersStored(t *testing.T) {
	dir := t.TempDir()
	o := diskOpts(dir)
	e := newEnv(t, o, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=3600")
		w.Header().Set("Trailer", "X-Checksum")
		w.Write([]byte("body with a trailer"))
		w.Header().Set("X-Checksum", "abc123")
		w.Header().Set(http.TrailerPrefix+"X-Late", "undeclared")
	})
	get := func(what string) {
		t.Helper()
		res, err := e.client.Get(e.front.URL + "/t")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if string(b) != "body with a trailer" || res.Trailer.Get("X-Checksum") != "abc123" || res.Trailer.Get("X-Late") != "undeclared" {
			t.Fatalf("%s: body %q, trailers %v, Cache-Status %q", what, b, res.Trailer, res.Header.Get("Cache-Status"))
		}
	}
	get("the fetching client")
	get("a hit")
	waitFor(t, "the disk copy", func() bool { return len(diskFiles(t, dir)) == 1 })
	e.restart(o)
	get("a hit after a restart")
	if e.hits() != 1 {
		t.Fatalf("origin hits %d, want 1", e.hits())
	}
}
