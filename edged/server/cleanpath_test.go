package server

import (
	"net/url"
	"strings"
	"testing"
)

func TestCleanPath(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"/", "/"},
		{"/a/b", "/a/b"},
		{"/a/b/", "/a/b/"},
		{"/.well-known/acme-challenge/x", "/.well-known/acme-challenge/x"},
		{"/a..b/c.d/...", "/a..b/c.d/..."},
		{"/app/x/../private/a", "/app/private/a"},
		{"/app/./private/a", "/app/private/a"},
		{"/app//private/a", "/app/private/a"},
		{"//app///private//a//", "/app/private/a/"},
		{"/app/%2e%2e/app/private/a", "/app/private/a"},
		{"/app/%2E/private/a", "/app/private/a"},
		{"/app/.%2e/app/private/a", "/app/private/a"},
		{"/app/x/..", "/app/"},
		{"/app/x/.", "/app/x/"},
		{"/app/..", "/"},
		{"/%61pp/b", "/app/b"},
		{"/a%2fb/c", "/a%2Fb/c"}, // an encoded slash stays encoded
		{"/a%20b", "/a%20b"},
		{"/a%c3%a9", "/a%C3%A9"},
		{"/app/Private/a", "/app/Private/a"}, // case is kept
		{"/a;b/c", "/a;b/c"},
		{"*", "*"},
	} {
		got, ok := cleanPath(c.in)
		if !ok || got != c.want {
			t.Errorf("cleanPath(%q) = %q, %v; want %q", c.in, got, ok, c.want)
		}
		if again, ok := cleanPath(got); !ok || again != got {
			t.Errorf("cleanPath(%q) is not stable: %q", got, again)
		}
	}
	for _, bad := range []string{
		"/..", "/../etc/passwd", "/a/../../b", "/%2e%2e/x", "/a/%2E%2E/%2e%2e/b",
		"/app/..%2fprivate/a", "/app/..%2Fprivate/a", "/app/x%2f..%2fprivate", "/app/..%5cprivate", "/app/..\\private",
		"/app/..;/private/a", "/app/.;x/private", "/a%00b", "/a%zz", "/a%2",
	} {
		if got, ok := cleanPath(bad); ok {
			t.Errorf("cleanPath(%q) = %q, want refused", bad, got)
		}
	}
	if n := testing.AllocsPerRun(100, func() { cleanPath("/static/css/app.min.css") }); n != 0 {
		t.Errorf("a clean path costs %v allocations", n)
	}
}

func TestNormalizeURL(t *testing.T) {
	for _, c := range []struct{ in, path, escaped string }{
		{"/app/x/../a%2fb", "/app/a/b", "/app/a%2Fb"},
		{"/app/%2e/b%20c", "/app/b c", "/app/b%20c"},
		{"/clean/path", "/clean/path", "/clean/path"},
	} {
		u, err := url.ParseRequestURI(c.in)
		if err != nil {
			t.Fatal(err)
		}
		if !normalizeURL(u) || u.Path != c.path || u.EscapedPath() != c.escaped {
			t.Errorf("%s: path %q escaped %q; want %q %q", c.in, u.Path, u.EscapedPath(), c.path, c.escaped)
		}
	}
}

// FuzzCleanPath: whatever comes in, what comes out has no empty, "." or
// ".." segment, starts with "/", is stable, and decodes to a path with no
// dot-segment either.
func FuzzCleanPath(f *testing.F) {
	for _, s := range []string{"/", "/a/../b", "/%2e%2e/", "//a//b", "/a%2fb", "/..;/x", "/a\\..\\b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		if in == "" || in[0] != '/' {
			return
		}
		out, ok := cleanPath(in)
		if !ok {
			return
		}
		if out[0] != '/' {
			t.Fatalf("%q -> %q", in, out)
		}
		if again, ok := cleanPath(out); !ok || again != out {
			t.Fatalf("%q -> %q -> %q, %v", in, out, again, ok)
		}
		segs := strings.Split(out[1:], "/")
		for i, s := range segs {
			if (s == "" && i != len(segs)-1) || s == "." || s == ".." {
				t.Fatalf("%q -> %q has segment %q", in, out, s)
			}
		}
		if dec, err := url.PathUnescape(out); err == nil {
			for _, s := range strings.Split(strings.ReplaceAll(dec, "\\", "/"), "/") {
				if i := strings.IndexByte(s, ';'); i >= 0 {
					s = s[:i]
				}
				if s == ".." || s == "." {
					t.Fatalf("%q -> %q decodes to %q", in, out, dec)
				}
			}
		}
	})
}
