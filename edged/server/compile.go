package server

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/edgeapp/edgeapp/edged/accesslog"
	"github.com/edgeapp/edgeapp/edged/cache"
	"github.com/edgeapp/edgeapp/edged/compress"
	"github.com/edgeapp/edgeapp/edged/config"
	"github.com/edgeapp/edgeapp/edged/connlimit"
	"github.com/edgeapp/edgeapp/edged/errorpage"
	"github.com/edgeapp/edgeapp/edged/limit"
	"github.com/edgeapp/edgeapp/edged/proxy"
	"github.com/edgeapp/edgeapp/edged/router"
	"github.com/edgeapp/edgeapp/edged/static"
	"github.com/edgeapp/edgeapp/edged/stream"
	"github.com/edgeapp/edgeapp/edged/tlsconf"
	"github.com/edgeapp/edgeapp/internal/tomlconf"
	"golang.org/x/sys/unix"
)

// runtime is one compiled configuration. It is immutable once built; a
// reload builds a new one and swaps the pointer, so requests in flight finish
// on the runtime they started on.
type runtime struct {
	cfg        *config.Config
	router     *router.Router
	pools      map[string]*proxy.Pool
	zones      map[string]*limit.Zone // [limit.NAME]; their per-key state passes to the next runtime
	shared     map[any]any            // site-level shield objects, by their config pointer (shield.go)
	trusted    []netip.Prefix
	requestID  string // header name, "" when disabled
	generation int
	loadedAt   time.Time
	httpsPort  string                      // for redirects when https is not on 443
	streams    map[string]*stream.Settings // by [[stream]] name (streams.go)

	// client_body_timeout and send_timeout, for engines without their own
	bodyTimeout, sendTimeout time.Duration
	connLimits               connlimit.Limits
	adminToken               string // bearer token the admin API requires; "" = none
	// caches opened for this runtime; commit makes them process-wide,
	// discard closes them
	newCaches map[string]*cache.Cache
}

type siteData struct {
	name          string
	pages         *errorpage.Pages // error_pages, for 404 when no route matches
	tls           bool
	redirectHTTPS bool
	hsts          []string
}

type routeData struct {
	handler http.Handler
	respOps *headerOps
	metrics *routeMetrics // bound at commit (reload.go)
	labels  routeLabels
	desc    string // the handler, as the status page shows it
	noLog   bool   // access_log = false on the route
	// earlyData: safe HTTP/3 requests may be served from 0-RTT data.
	earlyData bool
}

// compile builds a runtime from a validated config. prev (may be nil)
// lends its upstream pools, so health state carries over for servers that
// did not change. Nothing is started: the caller starts the new pools after
// a successful compile and closes them if the swap does not happen.
func (s *Server) compile(cfg *config.Config, prev *runtime) (*runtime, error) {
	rt := &runtime{cfg: cfg, pools: map[string]*proxy.Pool{}, loadedAt: time.Now(), httpsPort: s.httpsPort}
	if prev != nil {
		rt.generation = prev.generation + 1
	} else {
		rt.generation = 1
	}
	rt.bodyTimeout, rt.sendTimeout = cfg.Server.ClientBodyTimeout.D(), cfg.Server.SendTimeout.D()
	if cfg.Server.RequestIDHeader != "-" {
		rt.requestID = http.CanonicalHeaderKey(cfg.Server.RequestIDHeader)
	}
	rt.trusted = tomlconf.Prefixes(cfg.Server.TrustedProxies)
	rt.connLimits = connlimit.Limits{Max: cfg.Server.MaxConnections, PerIP: cfg.Server.MaxConnectionsPerIP, Exempt: rt.trusted}
	var errs tomlconf.Errors
	fail := func(key string, err error) {
		errs = append(errs, cfg.Doc.Errorf(key, "%v", err))
	}
	if cfg.Server.Admin != "" {
		tok, err := ReadAdminToken(cfg.Server.AdminTokenFile)
		if err != nil {
			fail("server.admin_token_file", err)
		}
		rt.adminToken = tok
	}
	for name, u := range cfg.Upstreams {
		pc := u.ProxyConfig(name)
		s.withDiscovered(name, u, &pc)
		if err := pc.Validate(); err != nil {
			fail("upstream."+name, err)
			continue
		}
		var old *proxy.Pool
		if prev != nil {
			old = prev.pools[name]
		}
		pool, err := proxy.NewPool(pc, old, s.proxyMetrics, s.log)
		if err != nil {
			fail("upstream."+name, err)
			continue
		}
		rt.pools[name] = pool
	}
	s.compileLimits(cfg, rt, prev, fail)
	s.attachClusterLimits(cfg, rt)
	if err := s.compileStreams(cfg, rt); err != nil {
		fail("stream", err)
	}
	var compressMW func(http.Handler) http.Handler
	if mw, err := compress.New(cfg.Compress.Options()); err != nil {
		fail("compress", err)
	} else {
		compressMW = mw
	}
	var sites []*router.Site
	for i, sc := range cfg.Sites {
		name := siteName(sc)
		sd := &siteData{name: name, tls: sc.TLS.Mode != "off"}
		sd.redirectHTTPS = sd.tls && *sc.RedirectHTTP
		if sd.tls && cfg.TLS.HSTS != "" {
			sd.hsts = []string{cfg.TLS.HSTS}
		}
		site := &router.Site{Name: name, Hosts: sc.Hosts, Data: sd}
		if pages, err := sitePages(rt, sc); err != nil {
			fail(fmt.Sprintf("site[%d]", i), err)
		} else {
			sd.pages = pages
		}
		for j, rc := range sc.Routes {
			key := fmt.Sprintf("site[%d].route[%d]", i, j)
			h, err := s.routeHandler(cfg, rt, rc, compressMW)
			if err != nil {
				fail(key, err)
				continue
			}
			rname := routeName(rc)
			if h, err = s.shieldRoute(rt, sc, rc, name, name+rname, h); err != nil {
				fail(key, err)
				continue
			}
			site.Routes = append(site.Routes, router.Route{
				Path: rc.Path, Exact: rc.Exact, Name: name + rname,
				Data: &routeData{
					handler:   h,
					respOps:   newHeaderOps(rc.ResponseHeaders.Set, rc.ResponseHeaders.Add, rc.ResponseHeaders.Remove),
					labels:    routeLabels{name, rname},
					desc:      describeRoute(rc),
					noLog:     rc.AccessLog != nil && !*rc.AccessLog,
					earlyData: rc.EarlyData,
				},
			})
		}
		sites = append(sites, site)
	}
	if err := errs.Err(); err != nil {
		rt.closeUnshared(prev)
		return nil, err
	}
	r, err := router.New(sites)
	if err != nil {
		rt.closeUnshared(prev)
		return nil, err
	}
	rt.router = r
	return rt, nil
}

// closeUnshared closes what a runtime that will not be used opened and
// prev (the running one, or nil) does not share: pools and new caches.
func (rt *runtime) closeUnshared(prev *runtime) {
	closePools(rt.pools, prev)
	for _, c := range rt.newCaches {
		c.Close()
	}
}

// closePools closes the pools of a runtime that will not be used, except
// those it shares with prev.
func closePools(pools map[string]*proxy.Pool, prev *runtime) {
	for name, p := range pools {
		if prev != nil && prev.pools[name] == p {
			continue
		}
		p.Close()
	}
}

// routeName is a route's label in metrics: its path, "=" before an exact one.
func routeName(rc config.Route) string {
	if rc.Exact {
		return "=" + rc.Path
	}
	return rc.Path
}

func siteName(sc config.Site) string {
	for _, h := range sc.Hosts {
		if h != "*" {
			return strings.ToLower(h)
		}
	}
	return "default"
}

// routeHandler builds the chain for one route, innermost first:
// handler, compression, cache, request header edits, body limit.
func (s *Server) routeHandler(cfg *config.Config, rt *runtime, rc config.Route, compressMW func(http.Handler) http.Handler) (http.Handler, error) {
	var h http.Handler
	compressOn := compressMW != nil && (rc.Compress == nil || *rc.Compress)
	switch {
	case rc.Upstream != "":
		pool := rt.pools[rc.Upstream]
		if pool == nil {
			return nil, fmt.Errorf("upstream %q did not start", rc.Upstream)
		}
		strip := ""
		if rc.StripPrefix {
			strip = strings.TrimSuffix(rc.Path, "/")
		}
		h = proxy.NewHandler(pool, proxy.HandlerOptions{
			TrustedProxies:  rt.trusted,
			StripPrefix:     strip,
			FlushInterval:   cfg.Upstreams[rc.Upstream].FlushInterval.D(),
			RequestIDHeader: rt.requestID,
			Upgrades:        rc.Upgrades,
			Buffering:       buffering(cfg, rc),
			Log:             s.log,
		})
		if rc.Cache != "" {
			c, err := s.cacheFor(rt, rc.Cache, cfg.Caches[rc.Cache])
			if err != nil {
				return nil, err
			}
			if compressOn {
				// Compression inside the cache: each coding is made once
				// and stored as a variant (Vary: Accept-Encoding), so a
				// hit is stored bytes, never compressed again.
				h = compressMW(h)
				compressOn = false
			}
			h = c.Handler(h, cache.HandlerOptions{RequestIDHeader: rt.requestID, SetCookie: cache.SetCookieModes[rc.CacheSetCookie]})
		}
		if rc.Static != "" {
			// try_files $uri $uri/ @app: files first, the app for the rest.
			so := s.staticOptions(rc)
			so.Next = h
			sh, err := static.New(so)
			if err != nil {
				return nil, err
			}
			h = sh
		}
	case rc.Static != "":
		sh, err := static.New(s.staticOptions(rc))
		if err != nil {
			return nil, err
		}
		h = sh
	case rc.StatusPage:
		h, compressOn = s.dashboardHandler(rc.Path), false // events are a stream
	case rc.Redirect != "":
		h = newRedirect(rc.Status, rc.Redirect)
	default:
		h = newRespond(rc.Status, rc.Respond)
	}
	if compressOn {
		h = compressMW(h)
	}
	if ops := newHeaderOps(rc.RequestHeaders.Set, rc.RequestHeaders.Add, rc.RequestHeaders.Remove); ops != nil {
		h = &requestHeaders{ops: ops, next: h}
	}
	limit := int64(cfg.Server.MaxBody)
	if rc.MaxBody != 0 {
		limit = int64(rc.MaxBody)
	}
	if limit > 0 {
		h = &limitBody{max: limit, next: h}
	}
	return h, nil
}

func (s *Server) staticOptions(rc config.Route) static.Options {
	o := rc.StaticOptions()
	o.Log = s.log
	return o
}

// buffering is a route's request and response buffering: on unless the
// route turns it off, sized by [server].
func buffering(cfg *config.Config, rc config.Route) proxy.Buffering {
	s := cfg.Server
	return proxy.Buffering{
		Request:         rc.RequestBuffering == nil || *rc.RequestBuffering,
		Response:        rc.ResponseBuffering == nil || *rc.ResponseBuffering,
		Dir:             s.TempDir,
		RequestMemory:   int64(s.ClientBodyBufferSize),
		ResponseMemory:  int64(s.ResponseBufferSize),
		ResponseFileMax: int64(s.ResponseTempMax),
	}
}

// cacheFor returns the process-wide cache of that name, or opens it for
// rt: a cache outlives reloads (its contents are worth keeping), so only
// a cache the running configuration lacks is opened, and it becomes
// process-wide only when rt is committed. A disk directory that cannot be
// used refuses the configuration. In check mode (edged -t) nothing that a
// running edged may hold is opened: the directory is checked and the
// cache is a throwaway in memory.
func (s *Server) cacheFor(rt *runtime, name string, cc *config.Cache) (*cache.Cache, error) {
	opts := cacheOptions(name, cc)
	s.cacheMu.Lock()
	c, ok := s.caches[name]
	changed := ok && s.cacheOpts[name] != fmt.Sprint(opts)
	s.cacheMu.Unlock()
	if ok {
		if changed && !s.checkOnly {
			s.log.Warn("cache settings changed; they take effect at the next restart", "cache", name)
		}
		return c, nil
	}
	if c, ok := rt.newCaches[name]; ok {
		return c, nil
	}
	if opts.DiskDir != "" {
		if err := checkCacheDir(opts.DiskDir); err != nil {
			return nil, fmt.Errorf("cache %q: %w", name, err)
		}
	}
	m := s.cacheMetrics
	if s.checkOnly {
		opts.DiskDir = ""
	}
	c, err := cache.Open(opts, m)
	if err != nil {
		return nil, fmt.Errorf("opening cache %q: %w", name, err)
	}
	if rt.newCaches == nil {
		rt.newCaches = map[string]*cache.Cache{}
	}
	rt.newCaches[name] = c
	return c, nil
}

// checkCacheDir says whether a cache's disk directory is usable: an
// existing directory this process may write, or one it could create
// (its nearest existing parent is a writable directory). It creates
// nothing.
func checkCacheDir(dir string) error {
	for d := dir; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if errors.Is(err, os.ErrNotExist) && d != "/" {
			continue
		}
		if err != nil {
			return fmt.Errorf("disk directory %s: %w", dir, err)
		}
		if !fi.IsDir() {
			return fmt.Errorf("disk directory %s: %s is not a directory", dir, d)
		}
		if err := unix.Access(d, unix.W_OK|unix.X_OK); err != nil {
			return fmt.Errorf("disk directory %s: %s is not writable: %w", dir, d, err)
		}
		return nil
	}
}

func cacheOptions(name string, cc *config.Cache) cache.Options {
	return cache.Options{
		Name: name, MemoryBytes: int64(cc.Memory), DiskDir: cc.Disk, DiskMaxBytes: int64(cc.DiskMax),
		MaxObjectSize: int64(cc.MaxObject), Heuristic: cc.Heuristic,
		StaleWhileRevalidate: cc.StaleWhileRevalidate.D(), StaleIfError: cc.StaleIfError.D(),
		LockTimeout: cc.LockTimeout.D(), IgnoreQuery: cc.IgnoreQuery, SortQuery: cc.SortQuery,
		OwnCacheControl: cc.TargetedCacheControl, IgnoreCDNCacheControl: cc.CDNCacheControl != nil && !*cc.CDNCacheControl,
	}
}

// tlsSites maps the config's sites to what the certificate manager needs,
// one for one ("off" sites included, as no-ops) so that an error's site
// index is the config's.
func tlsSites(cfg *config.Config) []tlsconf.Site {
	out := make([]tlsconf.Site, 0, len(cfg.Sites))
	for _, sc := range cfg.Sites {
		out = append(out, tlsconf.Site{Hosts: sc.Hosts, Mode: sc.TLS.Mode, CertFile: sc.TLS.Cert, KeyFile: sc.TLS.Key, OnDemand: sc.OnDemand})
	}
	return append(out, streamTLSSites(cfg)...) // after the sites: index len(cfg.Sites)+i is stream[i]
}

// checkTLS validates the TLS options and sites without side effects, and
// places each problem at its site's line.
func checkTLS(cfg *config.Config, log *slog.Logger) error {
	err := tlsconf.Validate(tlsOptions(cfg, log), tlsSites(cfg))
	if err == nil {
		return nil
	}
	var errs tomlconf.Errors
	for _, e := range unjoin(err) {
		var se *tlsconf.SiteError
		var oe *tlsconf.OptionError
		if errors.As(e, &se) && se.Index >= len(cfg.Sites) {
			errs = append(errs, cfg.Doc.Errorf(fmt.Sprintf("stream[%d].%s", se.Index-len(cfg.Sites), se.Field), "%v", se.Err))
		} else if errors.As(e, &se) {
			errs = append(errs, cfg.Doc.Errorf(fmt.Sprintf("site[%d].%s", se.Index, se.Field), "%v", se.Err))
		} else if errors.As(e, &oe) {
			errs = append(errs, cfg.Doc.Errorf("tls."+oe.Field, "%v", oe.Err))
		} else {
			errs = append(errs, cfg.Doc.Errorf("tls", "%v", e))
		}
	}
	return errs.Err()
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, unjoin(e)...)
		}
		return out
	}
	return []error{err}
}

func tlsOptions(cfg *config.Config, log *slog.Logger) tlsconf.Options {
	t := cfg.TLS
	o := tlsconf.Options{
		Email: t.Email, CA: t.CA, CARoot: t.CARoot, Challenges: t.Challenges, Storage: t.Storage,
		KeyType: t.KeyType, RenewalWindowRatio: t.RenewalRatio, Profile: t.Profile,
		AltHTTPPort: t.AltHTTPPort, AltTLSALPNPort: t.AltTLSPort, Log: log,
	}
	if t.Storage == config.StorageEtcd {
		o.Storage = cfg.LocalStateDir() // the etcd storage's local copy and the exported root
	}
	if d := t.DNS; d.IsSet() {
		o.DNS = &tlsconf.DNS{Server: d.Server, Zone: d.Zone, KeyName: d.TSIGKey, Algorithm: d.TSIGAlgorithm,
			SecretFile: d.TSIGSecretFile, TTL: d.TTL.D(), Resolvers: d.Resolvers,
			PropagationTimeout: d.PropagationTimeout.D(), PropagationDelay: d.PropagationDelay.D()}
	}
	if t.OnDemand.Ask != "" {
		o.OnDemand = &tlsconf.OnDemand{Ask: t.OnDemand.Ask, RateLimit: t.OnDemand.Rate, RateInterval: t.OnDemand.Interval.D(), RefuseCacheFor: time.Minute,
			AskRate: t.OnDemand.AskRate, AskConcurrency: t.OnDemand.AskConcurrency}
	}
	return o
}

func accessLogOptions(cfg *config.Config, log *slog.Logger) accesslog.Options {
	a := cfg.AccessLog
	return accesslog.Options{Output: a.Output, Format: a.Format, Fields: a.Fields, Log: log}
}
