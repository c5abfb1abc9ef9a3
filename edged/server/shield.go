package server

import (
	"fmt"
	"net/http"
	"sort"

	"github.com/edgeapp/edgeapp/edged/access"
	"github.com/edgeapp/edgeapp/edged/auth"
	"github.com/edgeapp/edgeapp/edged/config"
	"github.com/edgeapp/edgeapp/edged/errorpage"
	"github.com/edgeapp/edgeapp/edged/limit"
)

// compileLimits builds the [limit.NAME] zones. Each takes over the per-key
// state of the running zone of the same name and key (prev may be nil), so
// clients keep their buckets across a reload; nothing of prev changes.
func (s *Server) compileLimits(cfg *config.Config, rt, prev *runtime, fail func(string, error)) {
	rt.zones = map[string]*limit.Zone{}
	for name, zc := range cfg.Limits {
		var old *limit.Zone
		if prev != nil {
			old = prev.zones[name]
		}
		z, err := limit.NewZone(zc.LimitConfig(name), old, s.log)
		if err != nil {
			fail("limit."+name, err)
			continue
		}
		rt.zones[name] = z
	}
}

// zoneList is the running zones, by name (for /status and /metrics).
func (rt *runtime) zoneList() []*limit.Zone {
	if rt == nil {
		return nil
	}
	out := make([]*limit.Zone, 0, len(rt.zones))
	for _, z := range rt.zones {
		out = append(out, z)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name() < out[j].Name() })
	return out
}

// shieldRoute wraps a route's handler in what holds clients back; the
// outermost runs first: maintenance, error pages, allow/deny, limits,
// authentication. A route's setting replaces its site's.
func (s *Server) shieldRoute(rt *runtime, sc config.Site, rc config.Route, site, route string, h http.Handler) (http.Handler, error) {
	h, err := s.guardRoute(rt, sc, rc, site, route, h)
	if err != nil {
		return nil, err
	}
	return pagesRoute(rt, sc, rc, h)
}

// guardRoute adds allow/deny, limits and authentication. With
// satisfy = "any" a client the allow/deny lists let in needs no
// authentication, and one they keep out may still authenticate (nginx's
// satisfy any); the limits then come first.
func (s *Server) guardRoute(rt *runtime, sc config.Site, rc config.Route, site, route string, h http.Handler) (http.Handler, error) {
	authed, hasAuth, err := s.authRoute(rt, sc, rc, site, route, h)
	if err != nil {
		return nil, err
	}
	allow, deny := sc.Allow, sc.Deny
	if rc.Allow != nil || rc.Deny != nil {
		allow, deny = rc.Allow, rc.Deny
	}
	var acl *access.List
	if len(allow)+len(deny) > 0 {
		if acl, err = access.New(allow, deny); err != nil {
			return nil, err
		}
	}
	satisfy := sc.Satisfy
	if rc.Satisfy != "" {
		satisfy = rc.Satisfy
	}
	any := satisfy == "any" && acl != nil && hasAuth
	if any {
		h = access.Either(acl, h, authed)
	} else {
		h = authed
	}
	names := sc.Limit
	if rc.Limit != nil {
		names = rc.Limit
	}
	if len(names) > 0 {
		zones := make([]*limit.Zone, 0, len(names))
		for _, n := range names {
			z := rt.zones[n]
			if z == nil {
				return nil, fmt.Errorf("limit zone %q did not compile", n)
			}
			zones = append(zones, z)
		}
		h = limit.Handler(zones, s.limitMetrics, site, route, h)
	}
	if acl != nil && !any {
		h = access.Handler(acl, s.accessMetrics, site, route, h)
	}
	return h, nil
}

// pagesRoute adds error pages and the maintenance switch, outermost. A
// route's error_pages add to its site's (the route's win per status);
// intercept_errors and maintenance replace the site's. Maintenance with a
// page of its own answers before the error pages; without one, a 503 error
// page replaces its default text.
func pagesRoute(rt *runtime, sc config.Site, rc config.Route, h http.Handler) (http.Handler, error) {
	merged := map[string]string{}
	for k, v := range sc.ErrorPages {
		merged[k] = v
	}
	for k, v := range rc.ErrorPages {
		merged[k] = v
	}
	intercept := sc.InterceptErrors
	if rc.InterceptErrors != nil {
		intercept = rc.InterceptErrors
	}
	mc := sc.Maintenance
	if rc.Maintenance != nil {
		mc = rc.Maintenance
	}
	var m *errorpage.Maintenance
	if mc != nil && mc.Enabled {
		var pg *errorpage.Page
		if mc.Page != "" {
			var err error
			if pg, err = rt.page(mc.Page); err != nil {
				return nil, fmt.Errorf("maintenance: %w", err)
			}
		}
		var err error
		if m, err = errorpage.NewMaintenance(pg, mc.RetryAfter.D(), mc.Allow); err != nil {
			return nil, fmt.Errorf("maintenance: %w", err)
		}
	}
	if m != nil && !m.HasPage() {
		h = m.Handler(h)
	}
	if len(merged) > 0 {
		pages, err := rt.pages(merged, intercept != nil && *intercept)
		if err != nil {
			return nil, err
		}
		h = pages.Handler(h)
	}
	if m != nil && m.HasPage() {
		h = m.Handler(h)
	}
	return h, nil
}

// pages compiles an error_pages table, reading each file once per
// configuration.
func (rt *runtime) pages(files map[string]string, intercept bool) (*errorpage.Pages, error) {
	var ranges []errorpage.Range
	for code, file := range files {
		span, err := config.ParseStatusPattern(code)
		if err != nil {
			return nil, fmt.Errorf("error_pages: %w", err)
		}
		pg, err := rt.page(file)
		if err != nil {
			return nil, fmt.Errorf("error_pages: %w", err)
		}
		ranges = append(ranges, errorpage.Range{Lo: span[0], Hi: span[1], Page: pg})
	}
	return errorpage.New(ranges, intercept), nil
}

type pageKey string

func (rt *runtime) page(path string) (*errorpage.Page, error) {
	if pg, ok := rt.shared[pageKey(path)].(*errorpage.Page); ok {
		return pg, nil
	}
	pg, err := errorpage.ReadPage(path)
	if err != nil {
		return nil, err
	}
	rt.share(pageKey(path), pg)
	return pg, nil
}

// sitePages are the error pages of a site, for its own errors outside any
// route (no route matches); nil when it has none.
func sitePages(rt *runtime, sc config.Site) (*errorpage.Pages, error) {
	if len(sc.ErrorPages) == 0 {
		return nil, nil
	}
	return rt.pages(sc.ErrorPages, false)
}

// authRoute adds basic or forward auth. Site-level settings compile once
// per site (rt.shared), so its routes share the failed-login counters and
// the verified-password cache.
func (s *Server) authRoute(rt *runtime, sc config.Site, rc config.Route, site, route string, h http.Handler) (http.Handler, bool, error) {
	if rc.Auth != nil && !*rc.Auth {
		return h, false, nil
	}
	ba, fa := sc.BasicAuth, sc.ForwardAuth
	if rc.BasicAuth != nil || rc.ForwardAuth != nil {
		ba, fa = rc.BasicAuth, rc.ForwardAuth
	}
	switch {
	case ba != nil:
		b, ok := rt.shared[ba].(*auth.Basic)
		if !ok {
			var err error
			b, err = auth.NewBasic(auth.BasicOptions{
				Realm: ba.Realm, Users: ba.Users, Htpasswd: ba.Htpasswd,
				FailRate: ba.FailRate, FailBurst: ba.FailBurst, Log: s.log,
			})
			if err != nil {
				return nil, false, fmt.Errorf("basic_auth: %w", err)
			}
			rt.share(ba, b)
		}
		return b.Handler(s.authMetrics, site, route, h), true, nil
	case fa != nil:
		f, ok := rt.shared[fa].(*auth.Forward)
		if !ok {
			var err error
			f, err = auth.NewForward(auth.ForwardOptions{URL: fa.URL, CopyHeaders: fa.CopyHeaders, Timeout: fa.Timeout.D(), Log: s.log})
			if err != nil {
				return nil, false, fmt.Errorf("forward_auth: %w", err)
			}
			rt.share(fa, f)
		}
		return f.Handler(s.authMetrics, site, route, h), true, nil
	}
	return h, false, nil
}

// share keeps an object compiled from a site-level setting for the site's
// other routes.
func (rt *runtime) share(key, v any) {
	if rt.shared == nil {
		rt.shared = map[any]any{}
	}
	rt.shared[key] = v
}
