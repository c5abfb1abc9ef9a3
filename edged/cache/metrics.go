package cache

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the cache metrics of the process, labelled by cache name.
// Create them once with NewMetrics and pass them to every Open.
type Metrics struct {
	hits, misses, stale, coalesced, revalidations, bypass *prometheus.CounterVec
	evictions, storeErrors                                *prometheus.CounterVec

	mu     sync.Mutex
	caches map[string]*Cache
	bytes  *prometheus.Desc
	objs   *prometheus.Desc
}

// NewMetrics creates the cache metrics and registers them with reg (which
// may be nil, e.g. in tests).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	cv := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "edged", Subsystem: "cache", Name: name, Help: help},
			append([]string{"cache"}, labels...))
	}
	m := &Metrics{
		hits:          cv("hits_total", "Requests answered from the cache (fresh, or stale within stale-while-revalidate)."),
		misses:        cv("misses_total", "Requests forwarded to the origin (miss, revalidation or bypass)."),
		stale:         cv("stale_served_total", "Stale responses served (stale-while-revalidate, stale-if-error, max-stale)."),
		coalesced:     cv("coalesced_waits_total", "Requests that waited for another request's origin fetch of the same key."),
		revalidations: cv("revalidations_total", "Conditional requests sent to the origin to revalidate stored responses.", "result"),
		bypass:        cv("bypass_total", "Requests passed to the origin without consulting the cache (unsafe methods, upgrades)."),
		evictions:     cv("evictions_total", "Objects evicted from a tier to make room.", "tier"),
		storeErrors:   cv("store_errors_total", "Responses that could not be written to a tier.", "tier"),
		caches:        map[string]*Cache{},
		bytes:         prometheus.NewDesc("edged_cache_bytes", "Bytes held by a cache tier.", []string{"cache", "tier"}, nil),
		objs:          prometheus.NewDesc("edged_cache_objects", "Objects held by a cache tier.", []string{"cache", "tier"}, nil),
	}
	if reg != nil {
		reg.MustRegister(m.hits, m.misses, m.stale, m.coalesced, m.revalidations, m.bypass, m.evictions, m.storeErrors, m)
	}
	return m
}

// Describe and Collect report the tier sizes at scrape time, so the
// request path never updates a gauge.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.bytes
	ch <- m.objs
}

func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	caches := make([]*Cache, 0, len(m.caches))
	for _, c := range m.caches {
		caches = append(caches, c)
	}
	m.mu.Unlock()
	for _, c := range caches {
		b, n := c.mem.usage()
		ch <- prometheus.MustNewConstMetric(m.bytes, prometheus.GaugeValue, float64(b), c.o.Name, "memory")
		ch <- prometheus.MustNewConstMetric(m.objs, prometheus.GaugeValue, float64(n), c.o.Name, "memory")
		if c.disk != nil {
			b, n := c.disk.usage()
			ch <- prometheus.MustNewConstMetric(m.bytes, prometheus.GaugeValue, float64(b), c.o.Name, "disk")
			ch <- prometheus.MustNewConstMetric(m.objs, prometheus.GaugeValue, float64(n), c.o.Name, "disk")
		}
	}
}

// cacheMetrics are one cache's counters, resolved once so the request path
// only does atomic adds.
type cacheMetrics struct {
	hits, misses, stale, coalesced, bypass prometheus.Counter
	reval304, revalFull, revalErr          prometheus.Counter
	memEvict, diskEvict                    prometheus.Counter
	memErr, diskErr                        prometheus.Counter
}

func (m *Metrics) attach(c *Cache) cacheMetrics {
	m.mu.Lock()
	m.caches[c.o.Name] = c
	m.mu.Unlock()
	n := c.o.Name
	return cacheMetrics{
		hits: m.hits.WithLabelValues(n), misses: m.misses.WithLabelValues(n), stale: m.stale.WithLabelValues(n),
		coalesced: m.coalesced.WithLabelValues(n), bypass: m.bypass.WithLabelValues(n),
		reval304: m.revalidations.WithLabelValues(n, "not_modified"), revalFull: m.revalidations.WithLabelValues(n, "modified"),
		revalErr: m.revalidations.WithLabelValues(n, "error"),
		memEvict: m.evictions.WithLabelValues(n, "memory"), diskEvict: m.evictions.WithLabelValues(n, "disk"),
		memErr: m.storeErrors.WithLabelValues(n, "memory"), diskErr: m.storeErrors.WithLabelValues(n, "disk"),
	}
}

// detach stops reporting c; its counters go too, so that a cache opened
// for a configuration that was then refused leaves no series behind.
func (m *Metrics) detach(c *Cache) {
	m.mu.Lock()
	gone := m.caches[c.o.Name] == c
	if gone {
		delete(m.caches, c.o.Name)
	}
	m.mu.Unlock()
	if gone {
		l := prometheus.Labels{"cache": c.o.Name}
		for _, v := range []*prometheus.CounterVec{m.hits, m.misses, m.stale, m.coalesced, m.revalidations, m.bypass, m.evictions, m.storeErrors} {
			v.DeletePartialMatch(l)
		}
	}
}
