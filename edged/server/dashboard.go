package server

import (
	"context"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/edgeapp/edgeapp/edged/config"
	"github.com/edgeapp/edgeapp/edged/dashboard"
)

// The status page (edged/dashboard): the admin socket serves it under
// /dashboard/, routes with status_page = true under their path, and
// `edged dashboard` takes its snapshots from the admin socket. Each
// snapshot is built here from the running state; nothing of it comes from
// the configuration's secrets.

// dashPrefix is where the admin socket serves the page.
const dashPrefix = "/dashboard/"

// dashState is what the page needs beyond the runtime: the routes'
// histories (kept across reloads) and when each upstream server's state
// last changed.
type dashState struct {
	histories dashboard.Histories
	once      sync.Once
	source    dashboard.Source // one feed for the admin socket and every status_page route

	mu      sync.Mutex
	servers map[[2]string]*serverSeen // by pool and address
}

type serverSeen struct {
	state, reason, change string
	since                 time.Time
}

// dashboardHandler serves the page under prefix, from this server's
// snapshots.
func (s *Server) dashboardHandler(prefix string) http.Handler {
	s.dash.once.Do(func() {
		s.dash.source = dashboard.Shared(dashboard.SnapshotSource(s.DashboardSnapshot), dashboard.DefaultInterval/2)
	})
	return dashboard.Handler(dashboard.Options{Prefix: prefix, Source: s.dash.source, Stopping: s.stopping.Load})
}

// appdMetrics serves the metrics of every appd [dashboard] appd matches,
// labelled by app, for Prometheus: GET /appd/metrics on the admin socket.
func (s *Server) appdMetrics(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	if err := dashboard.WriteAppdMetrics(r.Context(), s.current.Load().cfg.Dashboard.Appd, w); err != nil {
		s.log.Warn("writing appd's metrics", "err", err)
	}
}

// describeRoute is the page's one-line summary of a route's handler.
func describeRoute(rc config.Route) string {
	var parts []string
	switch {
	case rc.StatusPage:
		parts = append(parts, "status page")
	case rc.Upstream != "":
		parts = append(parts, "upstream "+rc.Upstream)
		if rc.Cache != "" {
			parts = append(parts, "cache "+rc.Cache)
		}
		if rc.Static != "" {
			parts = append(parts, "files first")
		}
	case rc.Static != "":
		parts = append(parts, "static files")
	case rc.Redirect != "":
		parts = append(parts, "redirect")
	default:
		parts = append(parts, "respond")
	}
	return strings.Join(parts, ", ")
}

// DashboardSnapshot is the state the status page shows.
func (s *Server) DashboardSnapshot(ctx context.Context) *dashboard.Snapshot {
	rt := s.current.Load()
	now := time.Now()
	snap := &dashboard.Snapshot{Time: now}
	fams := s.gather()
	e := &dashboard.Edged{
		Version: s.opts.Version, PID: os.Getpid(), Generation: rt.generation, LoadedAt: rt.loadedAt,
		Connections:        fams.byLabel("edged_connections_active", "listener"),
		ConnectionsRefused: fams.byLabel("edged_connections_refused_total", "reason"),
	}
	e.Host, _ = os.Hostname()
	if st := fams.sum("process_start_time_seconds", nil); st > 0 {
		e.Started = time.Unix(int64(st), 0)
	}
	if le := s.lastError.Load(); le != nil {
		e.LastReload = &dashboard.Reload{At: le.At, Error: dashboard.Redact(le.Err)}
	} else if rt.generation > 1 {
		e.LastReload = &dashboard.Reload{At: rt.loadedAt, OK: true}
	}
	e.Sites = s.dashSites(rt, now.Unix())
	e.Upstreams = s.dashUpstreams(rt, now)
	e.Certificates = s.dashCertificates(now)
	e.Caches = s.dashCaches(rt, fams)
	e.Limits = dashLimits(rt, fams)
	snap.Edged = e
	snap.Apps = dashboard.Apps(ctx, rt.cfg.Dashboard.Appd)
	return snap
}

func (s *Server) dashSites(rt *runtime, now int64) []dashboard.Site {
	var out []dashboard.Site
	for _, site := range rt.router.Sites() {
		sd := site.Data.(*siteData)
		ds := dashboard.Site{Name: sd.name, Hosts: site.Hosts, TLS: sd.tls}
		for _, r := range site.Routes {
			rd := r.Data.(*routeData)
			path := r.Path
			if r.Exact {
				path = "= " + path
			}
			dr := dashboard.Route{Name: r.Name, Path: path, Handler: rd.desc}
			if st, ok := s.dash.histories.Stats(rd.labels.site, rd.labels.route, now); ok {
				dr.Stats = st
			}
			ds.Routes = append(ds.Routes, dr)
		}
		out = append(out, ds)
	}
	return out
}

// noteServers records each upstream server's state, and when and why it
// last changed: housekeeping calls it every second, so the page's "since"
// is right to a second even for changes nobody was watching.
func (s *Server) noteServers(rt *runtime, now time.Time) map[[2]string]*serverSeen {
	s.dash.mu.Lock()
	defer s.dash.mu.Unlock()
	seen := make(map[[2]string]*serverSeen, len(s.dash.servers))
	for name, pool := range rt.pools {
		for _, st := range pool.Status() {
			k := [2]string{name, st.Addr}
			prev := s.dash.servers[k]
			cur := &serverSeen{state: st.State, reason: st.Reason}
			switch {
			case prev == nil:
				// first seen: since is unknown
			case prev.state != st.State:
				cur.since = now
				cur.change = prev.state + " → " + st.State
				if prev.state == "down" && prev.reason != "" {
					cur.change += " (was: " + prev.reason + ")"
				}
			default:
				cur.since, cur.change = prev.since, prev.change
			}
			seen[k] = cur
		}
	}
	s.dash.servers = seen
	return seen
}

// dashUpstreams reports every pool's servers, with when and why each one
// last changed state.
func (s *Server) dashUpstreams(rt *runtime, now time.Time) []dashboard.Upstream {
	names := make([]string, 0, len(rt.pools))
	for name := range rt.pools {
		names = append(names, name)
	}
	sort.Strings(names)
	seen := s.noteServers(rt, now) // a new map each time: nobody writes to it after
	var out []dashboard.Upstream
	for _, name := range names {
		u := dashboard.Upstream{Name: name, Policy: "round_robin"}
		if uc := rt.cfg.Upstreams[name]; uc != nil && uc.Policy != "" {
			u.Policy = uc.Policy
		}
		for _, st := range rt.pools[name].Status() {
			ds := dashboard.Server{
				Addr: st.Addr, State: st.State, Reason: dashboard.Redact(st.Reason),
				Weight: st.Weight, Backup: st.Backup, Active: st.Active, Fails: st.Fails, Requests: st.Requests,
				LastCheck: st.LastCheck,
			}
			if sn := seen[[2]string{name, st.Addr}]; sn != nil {
				ds.Since, ds.LastChange = sn.since, dashboard.Redact(sn.change)
			}
			u.Servers = append(u.Servers, ds)
		}
		out = append(out, u)
	}
	return out
}

func (s *Server) dashCertificates(now time.Time) []dashboard.Certificate {
	var out []dashboard.Certificate
	for _, c := range s.tls.Status() {
		state, _, _ := strings.Cut(c.State, ":")
		dc := dashboard.Certificate{
			Host: c.Host, Mode: c.Mode, OnDemand: c.OnDemand, Issuer: c.Issuer, NotAfter: c.NotAfter,
			State: state, LastError: dashboard.Redact(c.LastError), Since: c.Since,
		}
		dc.Alarm = state == "failed" || state == "expired" || c.RenewalOverdue ||
			(!c.NotAfter.IsZero() && c.NotAfter.Sub(now) < dashboard.AlarmLeft)
		out = append(out, dc)
	}
	return out
}

func (s *Server) dashCaches(rt *runtime, fams families) []dashboard.Cache {
	s.cacheMu.Lock()
	names := make([]string, 0, len(s.caches))
	for name := range s.caches {
		names = append(names, name)
	}
	s.cacheMu.Unlock()
	sort.Strings(names)
	var out []dashboard.Cache
	for _, name := range names {
		is := map[string]string{"cache": name}
		c := dashboard.Cache{
			Name:        name,
			Hits:        fams.sum("edged_cache_hits_total", is),
			Misses:      fams.sum("edged_cache_misses_total", is),
			MemoryBytes: fams.sum("edged_cache_bytes", map[string]string{"cache": name, "tier": "memory"}),
			DiskBytes:   fams.sum("edged_cache_bytes", map[string]string{"cache": name, "tier": "disk"}),
			Objects:     fams.sum("edged_cache_objects", is),
			Evictions:   fams.sum("edged_cache_evictions_total", is),
		}
		if c.Hits+c.Misses > 0 {
			c.HitRatio = c.Hits / (c.Hits + c.Misses)
		}
		if cc := rt.cfg.Caches[name]; cc != nil {
			c.MemoryMax, c.DiskMax = int64(cc.Memory), int64(cc.DiskMax)
			if cc.Disk == "" {
				c.DiskMax = 0
			}
		}
		out = append(out, c)
	}
	return out
}

func dashLimits(rt *runtime, fams families) []dashboard.Limit {
	var out []dashboard.Limit
	for _, z := range rt.zoneList() {
		st := z.Status()
		l := dashboard.Limit{
			Name: st.Name, Key: st.Key, Rate: st.Rate, Burst: st.Burst, Concurrent: st.Concurrent, DryRun: st.DryRun,
			Keys: st.Keys, MaxKeys: st.MaxKeys,
			Refused: fams.sum("edged_limit_requests_total", map[string]string{"zone": st.Name, "result": "refused"}),
		}
		for _, k := range st.Busiest {
			l.Busiest = append(l.Busiest, dashboard.LimitKey{Key: dashboard.KeyLabel(st.Key, k.Key), Tokens: k.Tokens, Active: k.Active})
		}
		out = append(out, l)
	}
	return out
}

// families are the server's metrics at one moment, by name: the page reads
// the same numbers /metrics exports, without a second set of counters.
type families map[string]*dto.MetricFamily

func (s *Server) gather() families {
	mfs, _ := s.registry.Gather() // a collector's error leaves its series out; the rest is good
	out := make(families, len(mfs))
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out
}

func seriesValue(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Untyped != nil:
		return m.Untyped.GetValue()
	}
	return 0
}

func matches(m *dto.Metric, want map[string]string) bool {
	n := 0
	for _, lp := range m.GetLabel() {
		if v, ok := want[lp.GetName()]; ok {
			if v != lp.GetValue() {
				return false
			}
			n++
		}
	}
	return n == len(want)
}

// sum adds up the series of name whose labels include want.
func (f families) sum(name string, want map[string]string) float64 {
	mf := f[name]
	if mf == nil {
		return 0
	}
	var total float64
	for _, m := range mf.GetMetric() {
		if matches(m, want) {
			total += seriesValue(m)
		}
	}
	return total
}

// byLabel adds up name's series by the value of one label.
func (f families) byLabel(name, label string) map[string]float64 {
	out := map[string]float64{}
	mf := f[name]
	if mf == nil {
		return out
	}
	for _, m := range mf.GetMetric() {
		for _, lp := range m.GetLabel() {
			if lp.GetName() == label {
				out[lp.GetValue()] += seriesValue(m)
			}
		}
	}
	return out
}
