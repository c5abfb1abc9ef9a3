package server

import (
	"github.com/prometheus/client_golang/prometheus"
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
}

func (m *metrics) forRoute(site, route string) *routeMetrics {
	rm := &routeMetrics{duration: m.duration.WithLabelValues(site, route)}
	for i, c := range []string{"other", "1xx", "2xx", "3xx", "4xx", "5xx"} {
		rm.byClass[i] = m.requests.WithLabelValues(site, route, c)
	}
	return rm
}

func (rm *routeMetrics) observe(status int, seconds float64) {
	c := status / 100
	if c < 1 || c > 5 {
		c = 0
	}
	rm.byClass[c].Inc()
	rm.duration.Observe(seconds)
}
