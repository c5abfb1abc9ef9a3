package router

import (
	"testing"
)

func build(t *testing.T) *Router {
	t.Helper()
	sites := []*Site{
		{Name: "example", Hosts: []string{"example.com", "WWW.example.com"}, Routes: []Route{
			{Path: "/", Name: "root"},
			{Path: "/static/", Name: "static"},
			{Path: "/api", Name: "api"},
			{Path: "/api/v2/", Name: "api2"},
			{Path: "/healthz", Exact: true, Name: "health"},
		}},
		{Name: "wild", Hosts: []string{"*.example.com"}, Routes: []Route{{Path: "/", Name: "wild-root"}}},
		{Name: "deeper", Hosts: []string{"*.eu.example.com"}, Routes: []Route{{Path: "/x", Name: "deeper-x"}}},
		{Name: "default", Routes: []Route{{Path: "/", Name: "default-root"}}},
	}
	rt, err := New(sites)
	if err != nil {
		t.Fatal(err)
	}
	return rt
}

func TestSiteSelection(t *testing.T) {
	rt := build(t)
	cases := map[string]string{
		"example.com":          "example",
		"Example.COM:8080":     "example",
		"www.example.com.":     "example",
		"shop.example.com":     "wild",
		"a.b.example.com":      "wild",
		"x.eu.example.com":     "deeper",
		"eu.example.com":       "wild",
		"other.org":            "default",
		"":                     "default",
		"[::1]:443":            "default",
		"notexample.com":       "default",
		"example.com.evil.org": "default",
	}
	for host, want := range cases {
		if got := rt.Site(host); got == nil || got.Name != want {
			t.Errorf("Site(%q) = %v, want %s", host, got, want)
		}
	}
}

func TestRouteSelection(t *testing.T) {
	s := build(t).Site("example.com")
	cases := map[string]string{
		"/":               "root",
		"/index.html":     "root",
		"/static/app.css": "static",
		"/static":         "root", // "/static/" needs the slash
		"/api":            "api",
		"/api/users":      "api",
		"/apix":           "root", // segment boundary
		"/api/v2/items":   "api2",
		"/api/v2":         "api",
		"/healthz":        "health",
		"/healthz/deep":   "root", // exact only
	}
	for path, want := range cases {
		if got := s.Route(path); got == nil || got.Name != want {
			t.Errorf("Route(%q) = %v, want %s", path, got, want)
		}
	}
	if r := build(t).Site("x.eu.example.com").Route("/y"); r != nil {
		t.Errorf("route without match = %v", r.Name)
	}
}

func TestDuplicatesRejected(t *testing.T) {
	if _, err := New([]*Site{{Hosts: []string{"a.com"}}, {Hosts: []string{"A.com"}}}); err == nil {
		t.Error("duplicate host accepted")
	}
	if _, err := New([]*Site{{Hosts: []string{"*"}}, {}}); err == nil {
		t.Error("two default sites accepted")
	}
}

func BenchmarkLookup(b *testing.B) {
	rt := build(&testing.T{})
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		s := rt.Site("www.example.com:443")
		if s.Route("/api/v2/items/42") == nil {
			b.Fatal("no route")
		}
	}
}
