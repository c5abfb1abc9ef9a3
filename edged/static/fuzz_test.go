package static

import (
	"strings"
	"testing"
)

// FuzzCleanName checks the invariant the file system relies on: an
// accepted name never climbs, never is absolute, has no empty or dot
// elements, and hides dotfiles.
func FuzzCleanName(f *testing.F) {
	for _, s := range []string{"", "/", "/a/b", "/../x", "a/./b", "//a//b//", "/.env", "/.well-known/x", "/a/..", "/...", "/.", "/a/.b/c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, rel string) {
		name, code := cleanName(rel, false)
		if code != 0 {
			return
		}
		if name == "." {
			return
		}
		if strings.HasPrefix(name, "/") || strings.HasSuffix(name, "/") {
			t.Fatalf("%q -> %q: slash at an end", rel, name)
		}
		for _, seg := range strings.Split(name, "/") {
			if seg == "" || seg == "." || seg == ".." {
				t.Fatalf("%q -> %q: element %q", rel, name, seg)
			}
			if seg[0] == '.' && seg != ".well-known" {
				t.Fatalf("%q -> %q: hidden element %q", rel, name, seg)
			}
		}
	})
}
