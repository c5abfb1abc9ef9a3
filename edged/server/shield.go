package server

import (
	"fmt"
	"net/http"
	"sort"

	"github.com/edgeapp/edgeapp/edged/access"
	"github.com/edgeapp/edgeapp/edged/auth"
	"github.com/edgeapp/edgeapp/edged/config"
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
// outermost runs first: allow/deny, limits, authentication. A route's
// setting replaces its site's.
func (s *Server) shieldRoute(rt *runtime, sc config.Site, rc config.Route, site, route, key string, h http.Handler) (http.Handler, error) {
	var err error
	if h, err = s.authRoute(rt, sc, rc, site, route, h); err != nil {
		return nil, err
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
	allow, deny := sc.Allow, sc.Deny
	if rc.Allow != nil || rc.Deny != nil {
		allow, deny = rc.Allow, rc.Deny
	}
	if len(allow)+len(deny) > 0 {
		l, err := access.New(allow, deny)
		if err != nil {
			return nil, err
		}
		h = access.Handler(l, s.accessMetrics, site, route, h)
	}
	return h, nil
}

// authRoute adds basic or forward auth. Site-level settings compile once
// per site (rt.shared), so its routes share the failed-login counters and
// the verified-password cache.
func (s *Server) authRoute(rt *runtime, sc config.Site, rc config.Route, site, route string, h http.Handler) (http.Handler, error) {
	if rc.Auth != nil && !*rc.Auth {
		return h, nil
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
				return nil, fmt.Errorf("basic_auth: %w", err)
			}
			rt.share(ba, b)
		}
		return b.Handler(s.authMetrics, site, route, h), nil
	case fa != nil:
		f, ok := rt.shared[fa].(*auth.Forward)
		if !ok {
			var err error
			f, err = auth.NewForward(auth.ForwardOptions{URL: fa.URL, CopyHeaders: fa.CopyHeaders, Timeout: fa.Timeout.D(), Log: s.log})
			if err != nil {
				return nil, fmt.Errorf("forward_auth: %w", err)
			}
			rt.share(fa, f)
		}
		return f.Handler(s.authMetrics, site, route, h), nil
	}
	return h, nil
}

// share keeps an object compiled from a site-level setting for the site's
// other routes.
func (rt *runtime) share(key, v any) {
	if rt.shared == nil {
		rt.shared = map[any]any{}
	}
	rt.shared[key] = v
}
