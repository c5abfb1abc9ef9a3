package server

import (
	"context"
	"fmt"
	"log/slog"
	"reflect"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgeapp/edgeapp/edged/accesslog"
	"github.com/edgeapp/edgeapp/edged/cache"
	"github.com/edgeapp/edgeapp/edged/config"
	"github.com/edgeapp/edgeapp/edged/tlsconf"
)

// A configuration goes into service in two phases, as nginx checks a whole
// configuration before it touches the running one:
//
//   - prepare builds everything that can fail (the runtime with its pools,
//     zones and handler chains, the caches it opens, the access log, the
//     certificates' side) and changes nothing that serves, registers no
//     metric series and leaves nothing behind: what it made is either
//     committed or discarded;
//   - commit puts it in service with one pointer swap and cannot fail.
//
// Start is prepare and commit, a reload the same beside the running
// configuration, and `edged -t` prepare alone (opening nothing that a
// running edged holds: caches and certificates are checked, not opened).

// prepared is a configuration built and checked, not yet serving.
type prepared struct {
	cfg       *config.Config
	rt        *runtime
	accessLog *accesslog.Logger // a new logger, or nil to keep the running one
	tls       *tlsconf.Plan     // nil in check mode
}

// prepare builds cfg beside prev (nil at start). On error nothing it made
// is left open.
func (s *Server) prepare(cfg *config.Config, prev *runtime) (p *prepared, err error) {
	if err := checkTLS(cfg, s.log); err != nil {
		return nil, err
	}
	p = &prepared{cfg: cfg}
	defer func() {
		if err != nil {
			p.discard(prev)
			s.forgetRefused(cfg, prev)
			p = nil
		}
	}()
	if p.rt, err = s.compile(cfg, prev); err != nil {
		return p, err
	}
	if !s.checkOnly {
		if p.tls, err = s.tls.Prepare(context.Background(), tlsSites(cfg)); err != nil {
			return p, cfg.Doc.Errorf("tls", "%v", err)
		}
	}
	if prev == nil || !reflect.DeepEqual(cfg.AccessLog, prev.cfg.AccessLog) {
		if p.accessLog, err = accesslog.Open(accessLogOptions(cfg, s.log)); err != nil {
			return p, cfg.Doc.Errorf("access_log", "%v", err)
		}
	}
	return p, nil
}

// discard closes what prepare opened and the running configuration does
// not share: new pools, newly opened caches, a new access log.
func (p *prepared) discard(prev *runtime) {
	if p.rt != nil {
		p.rt.closeUnshared(prev)
	}
	if p.accessLog != nil {
		p.accessLog.Close()
	}
}

// commit puts p in service in place of old (nil at start). It cannot fail:
// everything fallible happened in prepare.
func (s *Server) commit(p *prepared, old *runtime) {
	rt, cfg := p.rt, p.cfg
	if old != nil {
		s.warnRestartOnly(old.cfg, cfg)
	}
	s.cacheMu.Lock()
	for name, c := range rt.newCaches {
		s.caches[name] = c
		s.cacheOpts[name] = fmt.Sprint(cacheOptions(name, cfg.Caches[name]))
	}
	s.cacheMu.Unlock()
	s.bindRouteMetrics(rt, old)
	for name, pool := range rt.pools {
		if old == nil || old.pools[name] != pool {
			pool.Start()
		}
	}
	s.current.Store(rt)
	s.commitDiscovery(rt)
	if p.accessLog != nil {
		if prevLog := s.accessLog.Swap(p.accessLog); prevLog != nil {
			prevLog.Close()
		}
	}
	s.limiter.SetLimits(rt.connLimits)
	if old == nil || old.cfg.Server.MaxConnections != cfg.Server.MaxConnections {
		warnFileLimit(s.log, cfg.Server.MaxConnections)
	}
	if old != nil {
		s.reloadProxyProtocol(old.cfg, cfg)
		s.warnQUICRestart(old.cfg, cfg)
		s.reloadStreams(old.cfg, cfg, rt)
		// Requests already routed to the old pools finish there; Close
		// only stops their health checks and idle connections.
		for name, pool := range old.pools {
			if rt.pools[name] != pool {
				pool.Close()
			}
		}
	}
	s.tls.Commit(context.Background(), p.tls)
	s.metrics.configGen.Set(float64(rt.generation))
	s.metrics.lastReload.SetToCurrentTime()
}

// routeLabels identifies a route's metric series.
type routeLabels struct{ site, route string }

// bindRouteMetrics gives each route of rt its metric series, made only
// now that rt goes into service, and drops the series of routes that old
// had and rt has not.
func (s *Server) bindRouteMetrics(rt, old *runtime) {
	keep := map[routeLabels]bool{}
	for _, site := range rt.router.Sites() {
		for i := range site.Routes {
			rd := site.Routes[i].Data.(*routeData)
			rd.metrics = s.metrics.forRoute(rd.labels.site, rd.labels.route)
			rd.metrics.hist = s.dash.histories.Route(rd.labels.site, rd.labels.route)
			keep[rd.labels] = true
		}
	}
	s.dash.histories.Keep(func(site, route string) bool { return keep[routeLabels{site, route}] })
	if old == nil {
		return
	}
	for _, site := range old.router.Sites() {
		for i := range site.Routes {
			if l := site.Routes[i].Data.(*routeData).labels; !keep[l] {
				s.forgetRoute(l)
			}
		}
	}
}

// forgetRoute drops every series of a route not in service.
func (s *Server) forgetRoute(l routeLabels) {
	s.metrics.dropRoute(l.site, l.route)
	// The shields label a route with its site in front (shieldRoute).
	s.limitMetrics.ForgetRoute(l.site, l.site+l.route)
	s.accessMetrics.ForgetRoute(l.site, l.site+l.route)
	s.authMetrics.ForgetRoute(l.site, l.site+l.route)
}

// forgetRefused drops the series that building cfg made for routes the
// running configuration (cur, nil at start) does not have: the shields'
// handlers make theirs when built, before the configuration is accepted.
// The labels come from cfg itself, so a compile that stopped halfway is
// covered too.
func (s *Server) forgetRefused(cfg *config.Config, cur *runtime) {
	running := map[routeLabels]bool{}
	if cur != nil {
		for _, site := range cur.router.Sites() {
			for i := range site.Routes {
				running[site.Routes[i].Data.(*routeData).labels] = true
			}
		}
	}
	for _, sc := range cfg.Sites {
		name := siteName(sc)
		for _, rc := range sc.Routes {
			if l := (routeLabels{name, routeName(rc)}); !running[l] {
				s.forgetRoute(l)
			}
		}
	}
}

// Check validates the configuration at path as a reload would, without
// starting anything or touching what a running edged holds: `edged -t`.
func Check(path string) error {
	cfg, err := config.Load(path)
	if err != nil {
		return err
	}
	log := slog.New(slog.DiscardHandler)
	s := &Server{
		log: log, checkOnly: true,
		caches: map[string]*cache.Cache{}, cacheOpts: map[string]string{},
	}
	s.initMetrics(prometheus.NewRegistry())
	if err := checkTLS(cfg, log); err != nil {
		return err // the options' errors with their lines, before New refuses them
	}
	s.tls, err = tlsconf.New(tlsOptions(cfg, log), s.tlsMetrics)
	if err != nil {
		return cfg.Doc.Errorf("tls", "%v", err)
	}
	defer s.tls.Close()
	p, err := s.prepare(cfg, nil)
	if err != nil {
		return err
	}
	p.discard(nil)
	return nil
}
