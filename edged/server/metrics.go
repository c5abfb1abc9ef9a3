package server

import (
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/edgeapp/edgeapp/edged/connlimit"
	"github.com/edgeapp/edgeapp/edged/dashboard"
)

// metrics are edged's own request metrics; sub-systems register theirs.
type metrics struct {
	requests    *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	connections *prometheus.GaugeVec
	reloads     *prometheus.CounterVec
	lastReload  prometheus.Gauge
	configGen   prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edged_requests_total", Help: "Requests served, by site, route and status class.",
		}, []string{"site", "route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "edged_request_duration_seconds",
			Help:    "Time from request headers read to response end, by site and route.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"site", "route"}),
		connections: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "edged_connections_active", Help: "Open client connections, by listener.",
		}, []string{"listener"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edged_reloads_total", Help: "Configuration reloads, by result.",
		}, []string{"result"}),
		lastReload: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "edged_config_last_reload_success_timestamp_seconds", Help: "When the running configuration was loaded.",
		}),
		configGen: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "edged_config_generation", Help: "How many configurations were loaded since start (1 = the first).",
		}),
	}
	reg.MustRegister(m.requests, m.duration, m.connections, m.reloads, m.lastReload, m.configGen)
	return m
}

// routeMetrics are resolved once per route at compile time so the request
// path does no label lookups.
type routeMetrics struct {
	byClass  [6]prometheus.Counter // index status/100; 0 for anything odd
	duration prometheus.Observer
	hist     *dashboard.RouteHistory // the status page's recent history
}

func (m *metrics) forRoute(site, route string) *routeMetrics {
	rm := &routeMetrics{duration: m.duration.WithLabelValues(site, route)}
	for i, c := range []string{"other", "1xx", "2xx", "3xx", "4xx", "5xx"} {
		rm.byClass[i] = m.requests.WithLabelValues(site, route, c)
	}
	return rm
}

// dropRoute removes the series of a route that left the configuration.
func (m *metrics) dropRoute(site, route string) {
	for _, c := range []string{"other", "1xx", "2xx", "3xx", "4xx", "5xx"} {
		m.requests.DeleteLabelValues(site, route, c)
	}
	m.duration.DeleteLabelValues(site, route)
}

func (rm *routeMetrics) observe(status int, start time.Time, took time.Duration) {
	c := status / 100
	if c < 1 || c > 5 {
		c = 0
	}
	rm.byClass[c].Inc()
	rm.duration.Observe(took.Seconds())
	if rm.hist != nil {
		rm.hist.Observe(start.Add(took).Unix(), status, took)
	}
}

// registerLimiter exports the connection caps' refusals.
func (m *metrics) registerLimiter(reg prometheus.Registerer, l *connlimit.Limiter) {
	for _, reason := range []string{connlimit.ReasonMax, connlimit.ReasonPerIP} {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        "edged_connections_refused_total",
			Help:        "Client connections refused by max_connections or max_connections_per_ip, by cap.",
			ConstLabels: prometheus.Labels{"reason": reason},
		}, func() float64 { return float64(l.Refused(reason)) }))
	}
}

// filesNeeded is the open-file limit under which max_connections cannot
// be reached: each proxied connection holds an upstream connection too
// (nginx counts both against worker_connections, and its docs size
// worker_rlimit_nofile likewise), and listeners, idle upstream
// connections, cache files and the journal need some more.
func filesNeeded(maxConns int) uint64 { return uint64(maxConns)*2 + 256 }

// warnFileLimit says, at start and when a reload changes max_connections,
// when max_connections cannot be reached because the process may not open
// that many files (LimitNOFILE=; Go raised the soft limit to the hard one
// at start): past the limit accepting fails with EMFILE, and the accept
// loops log it and retry with a backoff, as nginx does.
func warnFileLimit(log *slog.Logger, maxConns int) {
	var rl unix.Rlimit
	if maxConns <= 0 || unix.Getrlimit(unix.RLIMIT_NOFILE, &rl) != nil {
		return
	}
	if need := filesNeeded(maxConns); rl.Cur < need {
		log.Warn("the open-file limit is too low for max_connections; past it, new connections wait in the listen queue and accepting them logs \"too many open files\"",
			"limit", rl.Cur, "max_connections", maxConns, "needed", need, "fix", "raise LimitNOFILE= (systemctl edit edged) or lower [server] max_connections")
	}
}
