package proxy

import (
	"sync"
	"time"

	"github.com/edgeapp/edgeapp/edged/spool"

	"github.com/prometheus/client_golang/prometheus"
)

// Failure causes, the "cause" label of edged_upstream_failures_total.
const (
	causeConnect        = iota // dial failed: refused, no such socket, unreachable
	causeConnectTimeout        // dial timed out
	causeTimeout               // no response header within ResponseHeaderTimeout
	causeBroken                // connection closed or reset before the response header
	causeBody                  // died while the response body was streaming
	causeProtocol              // malformed response
	numCauses
)

var causeNames = [numCauses]string{"connect", "connect_timeout", "timeout", "broken", "body", "protocol"}

var classNames = [...]string{"1xx", "2xx", "3xx", "4xx", "5xx", "error"}

const classError = 5

// Metrics holds the proxy's Prometheus collectors. Create it once per process
// and share it among all pools, across reloads.
type Metrics struct {
	requests    *prometheus.CounterVec
	latency     *prometheus.HistogramVec
	retries     *prometheus.CounterVec
	failures    *prometheus.CounterVec
	unavailable *prometheus.CounterVec
	waits       *prometheus.CounterVec

	// Buffering: bytes by direction and medium, files by direction.
	spoolBytes [2][2]prometheus.Counter
	spoolFiles [2]prometheus.Counter

	upDesc, inflightDesc *prometheus.Desc

	mu    sync.Mutex
	pools map[string]*Pool // the newest live pool per upstream name
}

// NewMetrics creates the collectors and registers them with reg (nil: not
// registered, still usable).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edged_upstream_requests_total",
			Help: "Requests sent to upstream servers, by response status class (error: no response).",
		}, []string{"upstream", "server", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "edged_upstream_response_header_seconds",
			Help:    "Time from sending a request upstream to its response header.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"upstream", "server"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edged_upstream_retries_total",
			Help: "Requests sent again to another server after a failed attempt.",
		}, []string{"upstream"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edged_upstream_failures_total",
			Help: "Failed attempts to talk to an upstream server, by cause.",
		}, []string{"upstream", "server", "cause"}),
		unavailable: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edged_upstream_unavailable_total",
			Help: "Requests answered 503 because no server of the upstream was available.",
		}, []string{"upstream"}),
		waits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edged_proxy_wait_seconds_total",
			Help: "Time buffered exchanges spent waiting on the client (reading its body, writing the response) and on the upstream (reading the response body).",
		}, []string{"upstream", "side"}),
		upDesc: prometheus.NewDesc("edged_upstream_server_up",
			"1 if the upstream server takes requests, 0 if health checks or failures took it out.",
			[]string{"upstream", "server", "backup"}, nil),
		inflightDesc: prometheus.NewDesc("edged_upstream_in_flight",
			"Requests in flight to the upstream server.", []string{"upstream", "server"}, nil),
		pools: map[string]*Pool{},
	}
	spoolBytes := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "edged_proxy_spooled_bytes_total",
		Help: "Body bytes buffered between client and upstream, by direction (request, response) and medium (memory, file).",
	}, []string{"direction", "medium"})
	spoolFiles := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "edged_proxy_spool_files_total",
		Help: "Bodies that did not fit in memory and went to a temporary file, by direction.",
	}, []string{"direction"})
	for d, dn := range []string{"request", "response"} {
		for k, mn := range []string{"memory", "file"} {
			m.spoolBytes[d][k] = spoolBytes.WithLabelValues(dn, mn)
		}
		m.spoolFiles[d] = spoolFiles.WithLabelValues(dn)
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.latency, m.retries, m.failures, m.unavailable, m.waits, spoolBytes, spoolFiles, (*gaugeCollector)(m))
	}
	return m
}

// Directions of buffered bodies.
const (
	dirRequest = iota
	dirResponse
)

// waitCounters are an upstream's edged_proxy_wait_seconds_total children.
type waitCounters struct{ client, upstream prometheus.Counter }

func (m *Metrics) waitsFor(upstream string) waitCounters {
	return waitCounters{m.waits.WithLabelValues(upstream, "client"), m.waits.WithLabelValues(upstream, "upstream")}
}

// spooled counts what a spool held and the time its exchange waited.
func (p *Pool) spooled(dir int, sp *spool.Spool, client, upstream time.Duration) {
	mem, file, madeFile := sp.Stats()
	m := p.m
	m.spoolBytes[dir][0].Add(float64(mem))
	if madeFile {
		m.spoolBytes[dir][1].Add(float64(file))
		m.spoolFiles[dir].Inc()
	}
	p.waited(client, upstream)
}

// waited counts the time a buffered exchange waited on either side.
func (p *Pool) waited(client, upstream time.Duration) {
	if client > 0 {
		p.waitC.client.Add(client.Seconds())
	}
	if upstream > 0 {
		p.waitC.upstream.Add(upstream.Seconds())
	}
}

// gaugeCollector reports health and in-flight gauges straight from the live
// pools, so a removed server's series disappears with it.
type gaugeCollector Metrics

func (g *gaugeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- g.upDesc
	ch <- g.inflightDesc
}

func (g *gaugeCollector) Collect(ch chan<- prometheus.Metric) {
	g.mu.Lock()
	pools := make([]*Pool, 0, len(g.pools))
	for _, p := range g.pools {
		pools = append(pools, p)
	}
	g.mu.Unlock()
	for _, p := range pools {
		now := nanotime()
		for _, s := range p.servers() {
			up := 0.0
			if s.st.healthy(now) {
				up = 1
			}
			backup := "false"
			if s.cfg.Backup {
				backup = "true"
			}
			ch <- prometheus.MustNewConstMetric(g.upDesc, prometheus.GaugeValue, up, p.name, s.cfg.Addr, backup)
			ch <- prometheus.MustNewConstMetric(g.inflightDesc, prometheus.GaugeValue, float64(s.st.active.Load()), p.name, s.cfg.Addr)
		}
	}
}

// serverMetrics are the children of one server, resolved once so the request
// path does no label lookups.
type serverMetrics struct {
	requests [len(classNames)]prometheus.Counter
	failures [numCauses]prometheus.Counter
	latency  prometheus.Observer
}

func (m *Metrics) forServer(upstream, addr string) *serverMetrics {
	sm := &serverMetrics{latency: m.latency.WithLabelValues(upstream, addr)}
	for i, c := range classNames {
		sm.requests[i] = m.requests.WithLabelValues(upstream, addr, c)
	}
	for i, c := range causeNames {
		sm.failures[i] = m.failures.WithLabelValues(upstream, addr, c)
	}
	return sm
}

// forget drops the series of a server that left the configuration.
func (m *Metrics) forget(upstream, addr string) {
	l := prometheus.Labels{"upstream": upstream, "server": addr}
	m.requests.DeletePartialMatch(l)
	m.latency.DeletePartialMatch(l)
	m.failures.DeletePartialMatch(l)
}

// publish makes p the pool whose gauges are reported for its name.
func (m *Metrics) publish(p *Pool) {
	m.mu.Lock()
	m.pools[p.name] = p
	m.mu.Unlock()
}

// retire removes p from reporting if no newer pool took its name, and
// reports whether it did (the upstream left the configuration).
func (m *Metrics) retire(p *Pool) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.pools[p.name] == p {
		delete(m.pools, p.name)
		return true
	}
	return false
}

func statusClass(code int) int {
	if code < 100 || code > 599 {
		return classError
	}
	return code/100 - 1
}
