package engine

import (
	"net/url"
	"reflect"
	"testing"
)

var originForms = []string{
	"/", "/a", "/static/1k.bin", "/a/b/c?x=1&y=2", "/a?", "/a??", "/a?b?c", "/?", "/a?=", "/a?x=%41",
	"/a%20b", "/a%2Fb", "/a b", "/a\x7f", "/a?\x01", "/é", "/a#frag", "/a!b", "/a*b", "/a(b)", "/a'b",
	"/$&+,:;=@-_.~", "//host/path", "///x", "*", "", "a/b", "http://h/x", "/a%zz",
}

// parseOriginForm must agree with url.ParseRequestURI on everything it
// takes, and leave the rest to it.
func checkOriginForm(t *testing.T, target string) {
	var got url.URL
	if !parseOriginForm(target, &got) {
		return
	}
	want, err := url.ParseRequestURI(target)
	if err != nil {
		t.Fatalf("%q: taken, but ParseRequestURI refuses it: %v", target, err)
	}
	if !reflect.DeepEqual(&got, want) {
		t.Fatalf("%q: got %#v, ParseRequestURI %#v", target, got, *want)
	}
}

func TestParseOriginForm(t *testing.T) {
	taken := 0
	for _, target := range originForms {
		checkOriginForm(t, target)
		var u url.URL
		if parseOriginForm(target, &u) {
			taken++
		}
	}
	if taken < 10 {
		t.Fatalf("only %d of the usual targets took the fast path", taken)
	}
}

func FuzzParseOriginForm(f *testing.F) {
	for _, target := range originForms {
		f.Add(target)
	}
	f.Fuzz(checkOriginForm)
}
