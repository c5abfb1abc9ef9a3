// Package server runs edged: it owns the listeners and the HTTP servers for
// the whole life of the process, compiles each configuration into an
// immutable runtime (router, pools, handler chains) and swaps it in on
// reload, so that a reload never closes a connection or drops a request.
package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/edgeapp/edgeapp/edged/access"
	"github.com/edgeapp/edgeapp/edged/accesslog"
	"github.com/edgeapp/edgeapp/edged/auth"
	"github.com/edgeapp/edgeapp/edged/cache"
	"github.com/edgeapp/edgeapp/edged/cluster"
	"github.com/edgeapp/edgeapp/edged/config"
	"github.com/edgeapp/edgeapp/edged/connlimit"
	"github.com/edgeapp/edgeapp/edged/limit"
	"github.com/edgeapp/edgeapp/edged/proxy"
	"github.com/edgeapp/edgeapp/edged/reqinfo"
	"github.com/edgeapp/edgeapp/edged/tlsconf"
	"github.com/edgeapp/edgeapp/internal/systemd"
)

// Options are what main knows before the first configuration is read.
type Options struct {
	ConfigPath string
	Version    string
	Log        *slog.Logger
	Notifier   *systemd.Notifier
}

// Server is one running edged.
type Server struct {
	opts     Options
	log      *slog.Logger
	notifier *systemd.Notifier

	registry      *prometheus.Registry
	metrics       *metrics
	proxyMetrics  *proxy.Metrics
	cacheMetrics  *cache.Metrics
	limitMetrics  *limit.Metrics
	accessMetrics *access.Metrics
	authMetrics   *auth.Metrics
	tlsMetrics    *tlsconf.Metrics
	tls           *tlsconf.Manager
	cluster       *cluster.Cluster // nil without [cluster] (cluster.go)
	purger        *cluster.Purger
	discoverers   map[string]*cluster.Discoverer // by upstream; under reloadMu (cluster.go)

	cacheMu   sync.Mutex
	caches    map[string]*cache.Cache
	cacheOpts map[string]string

	current   atomic.Pointer[runtime]
	accessLog atomic.Pointer[accesslog.Logger]
	reloadMu  sync.Mutex
	lastError atomic.Pointer[reloadResult]

	httpSrv, httpsSrv frontend
	adminSrv          *http.Server
	httpLns, httpsLns []net.Listener
	adminLn           net.Listener
	httpsPort         string
	serveErr          chan error
	idPrefix          string
	idSeq             atomic.Uint64
	startCfg          *config.Config
	conns             conns
	limiter           *connlimit.Limiter
	stopping          atomic.Bool
	stopFlush         chan struct{}
	pp                proxyProtocol // PROXY protocol listeners (proxyproto.go)
	checkOnly         bool          // edged -t: prepare opens nothing a running edged holds (reload.go)
	wd                watchdog      // the self-probe before each WATCHDOG=1 (watchdog.go)
	quic              quicListeners // HTTP/3 (h3.go)
	streams           streams       // [[stream]] proxies (streams.go)
	dash              dashState     // the status page (dashboard.go)
}

type reloadResult struct {
	At  time.Time
	Err string
}

// New loads and prepares the configuration, opens the listeners and puts
// the configuration in service, but accepts nothing until Serve.
func New(opts Options) (*Server, error) {
	cfg, err := config.Load(opts.ConfigPath)
	if err != nil {
		return nil, err
	}
	s := &Server{
		opts: opts, log: opts.Log, notifier: opts.Notifier,
		caches:    map[string]*cache.Cache{},
		cacheOpts: map[string]string{},
		serveErr:  make(chan error, 8),
		startCfg:  cfg,
		stopFlush: make(chan struct{}),
	}
	var idb [6]byte
	rand.Read(idb[:])
	s.idPrefix = hex.EncodeToString(idb[:])
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	s.initMetrics(reg)

	if err := checkTLS(cfg, s.log); err != nil {
		return nil, err
	}
	if err := s.openListeners(cfg); err != nil {
		return nil, err
	}
	s.wd.token = newWatchdogToken()
	s.probeTarget()
	if err := s.openCluster(cfg); err != nil {
		s.closeListeners()
		return nil, err
	}
	tlsOpts := tlsOptions(cfg, s.log)
	if cfg.TLS.Storage == config.StorageEtcd {
		tlsOpts.Backend = s.cluster.Storage()
	}
	s.tls, err = tlsconf.New(tlsOpts, s.tlsMetrics)
	if err != nil {
		s.closeCluster()
		s.closeListeners()
		return nil, fmt.Errorf("setting up TLS: %w", err)
	}
	p, err := s.prepare(cfg, nil)
	if err != nil {
		s.tls.Close()
		s.closeCluster()
		s.closeListeners()
		return nil, err
	}
	s.limiter = connlimit.New(p.rt.connLimits)
	s.metrics.registerLimiter(s.registry, s.limiter)
	s.commit(p, nil)
	s.startClusterPurges()
	return s, nil
}

// initMetrics makes edged's metrics and each part's in reg.
func (s *Server) initMetrics(reg *prometheus.Registry) {
	s.registry = reg
	s.metrics = newMetrics(reg)
	s.proxyMetrics = proxy.NewMetrics(reg)
	s.cacheMetrics = cache.NewMetrics(reg)
	s.limitMetrics = limit.NewMetrics(reg, func() []*limit.Zone { return s.current.Load().zoneList() })
	s.accessMetrics = access.NewMetrics(reg)
	s.authMetrics = auth.NewMetrics(reg)
	s.tlsMetrics = tlsconf.NewMetrics(reg)
}

func (s *Server) openListeners(cfg *config.Config) error {
	act := systemd.TakeActivated()
	var err error
	var fromSystemd bool
	s.httpLns, fromSystemd, err = act.ListenOrBind("http", cfg.Server.HTTP)
	if err != nil {
		return err
	}
	s.logListeners("http", s.httpLns, fromSystemd)
	needHTTPS := len(act.Files("https")) > 0
	for _, sc := range cfg.Sites {
		needHTTPS = needHTTPS || sc.TLS.Mode != "off"
	}
	if needHTTPS {
		s.httpsLns, fromSystemd, err = act.ListenOrBind("https", cfg.Server.HTTPS)
		if err != nil {
			s.closeListeners()
			return err
		}
		s.logListeners("https", s.httpsLns, fromSystemd)
		if len(s.httpsLns) > 0 {
			if tcp, ok := s.httpsLns[0].Addr().(*net.TCPAddr); ok && tcp.Port != 443 {
				s.httpsPort = strconv.Itoa(tcp.Port)
			}
		}
	}
	if len(s.httpLns)+len(s.httpsLns) == 0 {
		return errors.New("no listener: systemd passed no http/https socket and [server] http and https are empty")
	}
	s.wrapProxyProtocol(cfg)
	if err := s.openQUIC(cfg); err != nil {
		s.closeListeners()
		return err
	}
	if err := s.openStreams(cfg); err != nil {
		s.closeListeners()
		return err
	}
	if cfg.Server.Admin != "" {
		warnAdminAddress(s.log, cfg.Server.Admin, cfg.Server.AdminTokenFile)
		s.adminLn, err = systemd.Bind(cfg.Server.Admin)
		if err != nil {
			s.closeListeners()
			return cfg.Doc.Errorf("server.admin", "admin socket: %v; set [server] admin = \"\" to turn it off, or to a socket path this process may create (such as \"unix:/tmp/edged-admin.sock\")", err)
		}
	}
	return nil
}

func (s *Server) logListeners(kind string, lns []net.Listener, fromSystemd bool) {
	for _, ln := range lns {
		src := "bound"
		if fromSystemd {
			src = "from systemd"
		}
		s.log.Info("listening", "listener", kind, "addr", ln.Addr().String(), "socket", src)
	}
}

func (s *Server) closeListeners() {
	for _, ln := range append(append(s.httpLns, s.httpsLns...), s.adminLn) {
		if ln != nil {
			ln.Close()
		}
	}
}

// Serve serves until ctx is done, then shuts down gracefully. Reload and
// ReopenLogs may be called meanwhile from another goroutine.
func (s *Server) Serve(ctx context.Context) error {
	cfg := s.startCfg
	httpHandler := s.tls.HTTPChallenge(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { s.serve(w, r, false) }))
	secureHandler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { s.serve(w, r, true) })
	var wrapHTTP, wrapHTTPS func(net.Listener) net.Listener
	s.httpSrv, wrapHTTP = s.newFrontend(cfg, "http", httpHandler, nil)
	s.httpsSrv, wrapHTTPS = s.newFrontend(cfg, "https", s.withAltSvc(secureHandler), s.tls.TLSConfig())
	for _, ln := range s.httpLns {
		go s.runServer(s.httpSrv, wrapHTTP(s.limiter.Listener(ln, true)))
	}
	if s.wd.pipe != nil {
		go s.runServer(s.httpSrv, s.wd.pipe)
	}
	for _, ln := range s.httpsLns {
		go s.runServer(s.httpsSrv, wrapHTTPS(s.limiter.Listener(ln, false)))
	}
	s.startQUIC(cfg, secureHandler)
	s.startStreams(s.current.Load())
	if s.adminLn != nil {
		s.adminSrv = &http.Server{Handler: s.adminAuth(s.adminHandler()), ReadHeaderTimeout: 10 * time.Second}
		go s.runServer(s.adminSrv, s.adminLn)
	}
	go s.housekeeping()
	s.notifier.Ready(s.statusLine())
	s.log.Info("edged started", "version", s.opts.Version, "config", s.opts.ConfigPath, "sites", len(cfg.Sites))

	var err error
	select {
	case <-ctx.Done():
	case err = <-s.serveErr:
		s.log.Error("a listener failed; shutting down", "err", err)
	}
	s.shutdown()
	return err
}

func (s *Server) runServer(srv frontend, ln net.Listener) {
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) && !s.stopping.Load() {
		s.serveErr <- fmt.Errorf("serving %s: %w", ln.Addr(), err)
	}
}

func (s *Server) shutdown() {
	rt := s.current.Load()
	timeout := rt.cfg.Server.ShutdownTimeout.D()
	// Every response from here on closes its connection; set before
	// STOPPING=1 so that whoever sees the notification sees the drain.
	s.stopping.Store(true)
	s.notifier.Stopping(fmt.Sprintf("draining connections (up to %v)", timeout))
	s.log.Info("shutting down: no new connections, finishing requests in flight", "timeout", timeout)
	// Stop accepting (systemd keeps its copy of the sockets, so new
	// connections wait in the backlog for the next edged), and let
	// requests already on their way arrive before the server's Shutdown.
	for _, ln := range append(append([]net.Listener{}, s.httpLns...), s.httpsLns...) {
		ln.Close()
	}
	deadline := time.Now().Add(timeout)
	if busy := s.conns.drain(deadline, 500*time.Millisecond); busy > 0 {
		s.log.Warn("shutdown deadline passed with connections still busy; closing them", "connections", busy)
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	var wg sync.WaitGroup
	for _, srv := range []frontend{s.httpSrv, s.httpsSrv} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Shutdown(ctx); err != nil {
				s.log.Warn("shutdown deadline passed; closing the remaining connections", "err", err)
				srv.Close()
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.stopQUIC(ctx)
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.stopStreams(ctx)
	}()
	wg.Wait()
	if s.adminSrv != nil {
		s.adminSrv.Close()
	}
	s.stopDiscovery()
	for _, p := range rt.pools {
		p.Close()
	}
	s.cacheMu.Lock()
	for name, c := range s.caches {
		if err := c.Close(); err != nil {
			s.log.Warn("closing cache", "cache", name, "err", err)
		}
	}
	s.cacheMu.Unlock()
	s.tls.Close()
	s.closeCluster()
	close(s.stopFlush)
	s.accessLog.Load().Close()
	s.log.Info("edged stopped")
}

// housekeeping flushes the access log every second and keeps systemd's
// STATUS= line current as certificates are obtained or fail.
func (s *Server) housekeeping() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	lastStatus := s.statusLine()
	for i := 1; ; i++ {
		select {
		case <-s.stopFlush:
			return
		case now := <-t.C:
			s.accessLog.Load().Flush()
			s.noteServers(s.current.Load(), now) // the status page's "since" (dashboard.go)
			if i%5 == 0 {
				if st := s.statusLine(); st != lastStatus {
					s.notifier.Status(st)
					lastStatus = st
				}
			}
		}
	}
}

// Reload reads the configuration again and swaps it in. A configuration that
// does not load or compile changes nothing: the old one keeps serving.
func (s *Server) Reload() error {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	s.notifier.Reloading("reloading " + s.opts.ConfigPath)
	err := s.reload()
	if err != nil {
		s.metrics.reloads.WithLabelValues("failed").Inc()
		s.lastError.Store(&reloadResult{At: time.Now(), Err: err.Error()})
		s.log.Error("reload failed; still serving the previous configuration", "config", s.opts.ConfigPath, "err", strings.ReplaceAll(err.Error(), "\n", "; "))
	} else {
		s.metrics.reloads.WithLabelValues("ok").Inc()
		s.lastError.Store(nil)
	}
	s.notifier.Ready(s.statusLine())
	return err
}

func (s *Server) reload() error {
	cfg, err := config.Load(s.opts.ConfigPath)
	if err != nil {
		return err
	}
	old := s.current.Load()
	p, err := s.prepare(cfg, old)
	if err != nil {
		return err
	}
	s.commit(p, old)
	s.log.Info("configuration reloaded", "config", s.opts.ConfigPath, "generation", p.rt.generation, "sites", len(cfg.Sites))
	return nil
}

// warnRestartOnly names settings that only a restart applies: they belong
// to listeners and connections that a reload deliberately keeps.
func (s *Server) warnRestartOnly(old, cur *config.Config) {
	o, c := old.Server, cur.Server
	for _, d := range []struct {
		key     string
		changed bool
	}{
		{"server.http", !reflect.DeepEqual(o.HTTP, c.HTTP)},
		{"server.https", !reflect.DeepEqual(o.HTTPS, c.HTTPS)},
		{"server.admin", o.Admin != c.Admin},
		{"server timeouts and max_header_bytes", o.ReadHeaderTimeout != c.ReadHeaderTimeout || o.ReadTimeout != c.ReadTimeout || o.WriteTimeout != c.WriteTimeout || o.IdleTimeout != c.IdleTimeout || o.MaxHeaderBytes != c.MaxHeaderBytes || o.H2C != c.H2C},
		{"server.engine", o.Engine != c.Engine},
		{"tls account settings", !reflect.DeepEqual(old.TLS, cur.TLS)},
		{"cluster", !reflect.DeepEqual(old.Cluster, cur.Cluster)},
	} {
		if d.changed {
			s.log.Warn("setting changed; it takes effect at the next restart (systemctl restart edged)", "setting", d.key)
		}
	}
}

// ReopenLogs reopens the access log file (SIGUSR1, after rotation).
func (s *Server) ReopenLogs() {
	if err := s.accessLog.Load().Reopen(); err != nil {
		s.log.Error("reopening access log; keeping the old file", "err", err)
		return
	}
	s.log.Info("access log reopened")
}

func (s *Server) statusLine() string {
	rt := s.current.Load()
	st := fmt.Sprintf("serving %d sites, %d upstreams; config generation %d", len(rt.cfg.Sites), len(rt.pools), rt.generation)
	if sum := s.tls.Summary(); sum != "" {
		st += "; " + sum
	}
	if s.cluster != nil {
		if sum := s.cluster.Summary(); sum != "" {
			st += "; " + sum
		}
	}
	if le := s.lastError.Load(); le != nil {
		st += "; LAST RELOAD FAILED at " + le.At.Format(time.TimeOnly) + ": " + firstLine(le.Err)
	}
	return st
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " (and more)"
	}
	return s
}

// serve is the top of every request: site, redirect to HTTPS, route, then
// the route's handler chain, with logging and metrics around it.
func (s *Server) serve(w http.ResponseWriter, r *http.Request, secure bool) {
	if r.URL.Path == watchdogPath && s.isWatchdogProbe(r) {
		answerProbe(w)
		return
	}
	start := time.Now()
	rt := s.current.Load()
	rw := getWriter(w)
	defer putWriter(rw)
	info := reqinfo.From(r.Context())
	if info == nil {
		// net/http: one record per request (HTTP/2 streams share a
		// connection, so it cannot be per connection).
		info = infoPool.Get().(*reqinfo.Info)
		defer putInfo(info)
		r = r.WithContext(reqinfo.NewContext(r.Context(), info))
	}
	if proxy.IsGRPC(r.Header) {
		rw.grpc, rw.info = true, info
	}
	// What the client named in Connection goes before edged sets anything
	// of its own, so that the client cannot have it removed.
	proxy.StripConnectionListed(r.Header)
	info.SetClient(r.RemoteAddr, r.Header["X-Forwarded-For"], rt.trusted)
	var body *countingBody
	if r.Body != nil && r.Body != http.NoBody {
		body = &countingBody{ReadCloser: r.Body}
		r.Body = body
	}
	s.armDeadlines(w, rw, body, rt, start)
	if s.stopping.Load() {
		w.Header()["Connection"] = []string{"close"}
	}
	if rt.requestID != "" {
		var echo []string
		info.RequestID, echo = s.requestID(rt, r, info.Trusted)
		w.Header()[rt.requestID] = echo
	}
	var rm *routeMetrics
	logged := true
	defer func() {
		if rw.grpcHeld {
			rw.sendGRPCStatus()
		}
		end := time.Now() // one clock read for the deadlines, metrics and log
		rw.finishDeadlines(body, end)
		if rw.status == 0 {
			rw.status = http.StatusOK // handler wrote nothing
		}
		if rm != nil {
			rm.observe(rw.status, start, end.Sub(start))
		}
		if body != nil {
			info.BytesIn = max(info.BytesIn, body.n.Load())
		}
		if al := s.accessLog.Load(); al != nil && logged {
			al.Log(&accesslog.Entry{
				Time: start, Request: r, Info: info, Status: rw.status, BytesOut: rw.bytes,
				Duration: end.Sub(start), ResponseHeader: rw.Header(),
			})
		}
	}()
	if !normalizeURL(r.URL) {
		plainError(rw, http.StatusBadRequest, "400 Bad Request: the path goes above the root or hides a \"..\" behind an encoded slash\n")
		return
	}
	site := rt.router.Site(r.Host)
	if site == nil {
		plainError(rw, http.StatusNotFound, "no site is configured for this host\n")
		return
	}
	sd := site.Data.(*siteData)
	info.Site = sd.name
	if !secure && sd.redirectHTTPS {
		target := "https://" + hostOnly(r.Host)
		if rt.httpsPort != "" {
			target += ":" + rt.httpsPort
		}
		rw.Header()["Location"] = []string{target + r.URL.RequestURI()}
		rw.WriteHeader(http.StatusPermanentRedirect)
		return
	}
	route := site.Route(r.URL.Path)
	if route == nil {
		sd.pages.Error(rw, r, http.StatusNotFound, "not found\n")
		return
	}
	rd := route.Data.(*routeData)
	rm, info.Route = rd.metrics, route.Name
	logged = !rd.noLog
	if secure && sd.hsts != nil {
		rw.Header()["Strict-Transport-Security"] = sd.hsts
	}
	rw.respOps = rd.respOps
	rd.handler.ServeHTTP(rw, r)
}

var infoPool = sync.Pool{New: func() any { return new(reqinfo.Info) }}

func putInfo(i *reqinfo.Info) {
	i.Reset()
	infoPool.Put(i)
}

// requestID keeps an incoming ID from a trusted proxy and otherwise makes
// one: a random per-process prefix and a counter, unique without a
// syscall per request. It returns the ID and the value for the response
// header.
func (s *Server) requestID(rt *runtime, r *http.Request, trusted bool) (string, []string) {
	if v := r.Header.Get(rt.requestID); v != "" && len(v) <= 128 && trusted {
		return v, []string{v}
	}
	// One allocation holds the ID's bytes and the request's and the
	// response's header values (distinct slices: a handler may change
	// one of them).
	m := new(madeID)
	n := copy(m.b[:], s.idPrefix)
	out := strconv.AppendUint(m.b[:n], s.idSeq.Add(1), 16)
	id := unsafe.String(&out[0], len(out)) // m.b is never written again
	m.req[0], m.resp[0] = id, id
	r.Header[rt.requestID] = m.req[:]
	return id, m.resp[:]
}

// madeID is a request ID made by requestID and the header values that
// carry it.
type madeID struct {
	req, resp [1]string
	b         [32]byte
}
