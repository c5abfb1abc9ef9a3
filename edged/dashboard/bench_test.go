package dashboard

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// BenchmarkRouteObserve is what the request path pays for the page's
// history: one call per request, from every core at once on one route.
func BenchmarkRouteObserve(b *testing.B) {
	var h RouteHistory
	now := time.Now().Unix()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			i++
			h.Observe(now+int64(i>>14), 200, time.Duration(i&1023)*time.Microsecond)
		}
	})
}

// BenchmarkPrometheusObserve is the route's Prometheus histogram and
// counter, which the request path already pays, for comparison.
func BenchmarkPrometheusObserve(b *testing.B) {
	hist := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "x", Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}})
	ctr := prometheus.NewCounter(prometheus.CounterOpts{Name: "y"})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			i++
			ctr.Inc()
			hist.Observe(float64(i&1023) * 1e-6)
		}
	})
}

// BenchmarkRouteStats is one route's share of a page update.
func BenchmarkRouteStats(b *testing.B) {
	var h RouteHistory
	now := time.Now().Unix()
	for s := now - HistorySeconds; s < now; s++ {
		for i := 0; i < 20; i++ {
			h.Observe(s, 200+i%4*100, time.Duration(i)*time.Millisecond)
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		h.Stats(now, now-HistorySeconds)
	}
}
