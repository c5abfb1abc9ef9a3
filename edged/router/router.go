// Package router picks the site for a request's Host and the route for its
// path. A Router is built once per configuration and never changes, so
// lookups take no lock.
package router

import (
	"fmt"
	"net/http"
	"sort"
	"strings"
)

// Route is one path rule of a site and the handler chain compiled for it.
type Route struct {
	Path    string
	Exact   bool
	Handler http.Handler
	// Name identifies the route in logs and metrics, e.g. "example.com/static/".
	Name string
	// Data is whatever the caller attaches (metrics, options).
	Data any
}

// matches reports whether the route's prefix matches path on a segment
// boundary: "/api" matches "/api" and "/api/x" but not "/apix"; "/api/"
// matches "/api/" and below. This is what people mean by a prefix, and
// avoids nginx's "location /api" surprise.
func (r *Route) matches(path string) bool {
	if r.Exact {
		return path == r.Path
	}
	if !strings.HasPrefix(path, r.Path) {
		return false
	}
	return len(path) == len(r.Path) || r.Path[len(r.Path)-1] == '/' || path[len(r.Path)] == '/'
}

// Site is a virtual host with its routes.
type Site struct {
	Name   string
	Hosts  []string // exact names and "*.suffix" wildcards; "*" or none = default
	Routes []Route
	Data   any

	exact  map[string]*Route
	prefix []*Route // longest first
}

// Router maps Host and path to a site and route.
type Router struct {
	exact    map[string]*Site
	wildcard []wildcardSite // longest suffix first
	fallback *Site
	sites    []*Site
}

type wildcardSite struct {
	suffix string // ".example.com"
	site   *Site
}

// New compiles sites into a Router. Host names are matched case-insensitively;
// a later duplicate is an error (config validation reports it earlier, with
// its line).
func New(sites []*Site) (*Router, error) {
	rt := &Router{exact: map[string]*Site{}, sites: sites}
	for _, s := range sites {
		s.exact = map[string]*Route{}
		s.prefix = s.prefix[:0]
		for i := range s.Routes {
			r := &s.Routes[i]
			if r.Exact {
				s.exact[r.Path] = r
			} else {
				s.prefix = append(s.prefix, r)
			}
		}
		sort.SliceStable(s.prefix, func(i, j int) bool { return len(s.prefix[i].Path) > len(s.prefix[j].Path) })
		isDefault := len(s.Hosts) == 0
		for _, h := range s.Hosts {
			h = strings.ToLower(strings.TrimSuffix(h, "."))
			switch {
			case h == "*":
				isDefault = true
			case strings.HasPrefix(h, "*."):
				rt.wildcard = append(rt.wildcard, wildcardSite{suffix: h[1:], site: s})
			default:
				if _, dup := rt.exact[h]; dup {
					return nil, fmt.Errorf("host %q is in two sites", h)
				}
				rt.exact[h] = s
			}
		}
		if isDefault {
			if rt.fallback != nil {
				return nil, fmt.Errorf("two default sites: %s and %s", rt.fallback.Name, s.Name)
			}
			rt.fallback = s
		}
	}
	sort.SliceStable(rt.wildcard, func(i, j int) bool { return len(rt.wildcard[i].suffix) > len(rt.wildcard[j].suffix) })
	return rt, nil
}

// Sites returns the sites in configuration order.
func (rt *Router) Sites() []*Site { return rt.sites }

// Site returns the site for a Host header value (port and trailing dot
// ignored), or the default site, or nil.
func (rt *Router) Site(host string) *Site {
	host = NormalizeHost(host)
	if s, ok := rt.exact[host]; ok {
		return s
	}
	for _, w := range rt.wildcard {
		// "*.example.com" covers one or more labels before example.com,
		// but not example.com itself.
		if len(host) > len(w.suffix) && strings.HasSuffix(host, w.suffix) {
			return w.site
		}
	}
	return rt.fallback
}

// Route returns the route of s for path: an exact match first, else the
// longest matching prefix, else nil.
func (s *Site) Route(path string) *Route {
	if r, ok := s.exact[path]; ok {
		return r
	}
	for _, r := range s.prefix {
		if r.matches(path) {
			return r
		}
	}
	return nil
}

// NormalizeHost strips the port and a trailing dot and lowercases, without
// allocating when the host is already in that form.
func NormalizeHost(host string) string {
	if i := strings.LastIndexByte(host, ':'); i >= 0 && !strings.HasSuffix(host, "]") {
		host = host[:i]
	}
	host = strings.TrimSuffix(host, ".")
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	for i := 0; i < len(host); i++ {
		if c := host[i]; c >= 'A' && c <= 'Z' {
			return strings.ToLower(host)
		}
	}
	return host
}
