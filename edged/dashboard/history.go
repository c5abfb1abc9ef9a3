package dashboard

import (
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// HistorySeconds is how far back a route's history goes: the page's
// sparklines span it, its rates and percentiles are over the last minute.
const HistorySeconds = 300

// latencyBounds are the upper bounds of the latency buckets; the last
// bucket holds everything slower. They follow the 1-2-5 steps an operator
// reads (a percentile is interpolated inside its bucket), from a quarter
// of a millisecond to ten seconds.
var latencyBounds = [...]time.Duration{
	250 * time.Microsecond, 500 * time.Microsecond,
	time.Millisecond, 2 * time.Millisecond, 3 * time.Millisecond, 5 * time.Millisecond, 7500 * time.Microsecond,
	10 * time.Millisecond, 15 * time.Millisecond, 20 * time.Millisecond, 30 * time.Millisecond, 50 * time.Millisecond, 75 * time.Millisecond,
	100 * time.Millisecond, 150 * time.Millisecond, 200 * time.Millisecond, 300 * time.Millisecond, 500 * time.Millisecond, 750 * time.Millisecond,
	time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second,
}

const latencyBuckets = len(latencyBounds) + 1

// bucket is one second of a route's requests. sec says which second it
// holds: a writer that finds an older second claims the bucket by setting
// sec to -1 with a compare-and-swap, zeroes it and publishes the new
// second; writers that meet a bucket being reset yield until it is
// published (a few dozen stores, once a second per route), so no sample
// is lost even when the resetting goroutine is preempted mid-reset.
type bucket struct {
	sec      atomic.Int64
	requests atomic.Uint32
	errors   atomic.Uint32 // 5xx answers
	latency  [latencyBuckets]atomic.Uint32
}

// RouteHistory is one route's last HistorySeconds seconds of requests,
// errors and latencies: a ring of per-second buckets updated with atomic
// adds, so any number of requests record into it at once with no lock
// and no allocation. It is about 34 KiB per route.
type RouteHistory struct {
	ring [HistorySeconds]bucket
}

// Observe records one request that ended at the Unix second now with the
// status and time taken.
func (h *RouteHistory) Observe(now int64, status int, took time.Duration) {
	b := &h.ring[now%HistorySeconds]
	for {
		s := b.sec.Load()
		if s == now {
			break
		}
		if s > now {
			return // a clock that went back: this second is gone already
		}
		if s < 0 {
			runtime.Gosched() // another writer is resetting the bucket
			continue
		}
		if b.sec.CompareAndSwap(s, -1) {
			b.requests.Store(0)
			b.errors.Store(0)
			for i := range b.latency {
				b.latency[i].Store(0)
			}
			b.sec.Store(now)
			break
		}
	}
	b.requests.Add(1)
	if status >= 500 {
		b.errors.Add(1)
	}
	b.latency[latencyIndex(took)].Add(1)
}

// latencyIndex is the bucket of d: a binary search over the bounds.
func latencyIndex(d time.Duration) int {
	lo, hi := 0, len(latencyBounds)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if d > latencyBounds[m] {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

// window sums the seconds (now-n, now] into w; seconds being rewritten
// while it reads are left out.
func (h *RouteHistory) window(now int64, n int, w *sums) {
	for s := now - int64(n) + 1; s <= now; s++ {
		h.second(s, w)
	}
}

// second adds second s to w if the ring still holds it.
func (h *RouteHistory) second(s int64, w *sums) {
	if s < 0 {
		return
	}
	b := &h.ring[s%HistorySeconds]
	if b.sec.Load() != s {
		return
	}
	var one sums
	one.requests = uint64(b.requests.Load())
	one.errors = uint64(b.errors.Load())
	for i := range b.latency {
		one.latency[i] = uint64(b.latency[i].Load())
	}
	if b.sec.Load() != s {
		return // reset while read
	}
	w.add(&one)
}

type sums struct {
	requests, errors uint64
	latency          [latencyBuckets]uint64
}

func (w *sums) add(o *sums) {
	w.requests += o.requests
	w.errors += o.errors
	for i := range w.latency {
		w.latency[i] += o.latency[i]
	}
}

// quantile is the latency below which a fraction q of the requests
// finished, interpolated inside its bucket; 0 without requests.
func (w *sums) quantile(q float64) time.Duration {
	var total uint64
	for _, c := range w.latency {
		total += c
	}
	if total == 0 {
		return 0
	}
	rank := q * float64(total)
	var seen float64
	for i, c := range w.latency {
		if c == 0 {
			continue
		}
		if seen+float64(c) >= rank {
			lo := time.Duration(0)
			if i > 0 {
				lo = latencyBounds[i-1]
			}
			if i == len(latencyBounds) {
				return lo // slower than the last bound: say the bound
			}
			hi := latencyBounds[i]
			frac := (rank - seen) / float64(c)
			return lo + time.Duration(frac*float64(hi-lo))
		}
		seen += float64(c)
	}
	return latencyBounds[len(latencyBounds)-1]
}

// Stats is a route's traffic as the page shows it.
type Stats struct {
	// Over the last minute (or since the route appeared):
	Rate      float64 `json:"rate"`       // requests per second
	ErrorRate float64 `json:"error_rate"` // share of 5xx answers, 0..1
	P50       float64 `json:"p50_ms"`
	P90       float64 `json:"p90_ms"`
	P99       float64 `json:"p99_ms"`
	// Series over the whole history, oldest first, one point per Step
	// seconds: requests per second, 5xx per second, p99 in milliseconds
	// (0 where there were no requests).
	Step     int       `json:"step_seconds"`
	Requests []float64 `json:"requests"`
	Errors   []float64 `json:"errors"`
	P99s     []float64 `json:"p99s_ms"`
}

// statsWindow is the span of the rate, error rate and percentiles.
const statsWindow = 60

// SeriesStep is the width of a sparkline point, in seconds.
const SeriesStep = 5

// Stats summarises the history at the Unix second now. The second under
// way is left out (it is still filling), and so are the seconds before
// since (the route's first appearance), so that a young route's rate is
// not diluted.
func (h *RouteHistory) Stats(now int64, since int64) Stats {
	end := now - 1
	st := Stats{Step: SeriesStep}
	span := int64(statsWindow)
	if age := end - since + 1; age < span {
		span = max(age, 1)
	}
	var w sums
	h.window(end, int(span), &w)
	if w.requests > 0 {
		st.Rate = float64(w.requests) / float64(span)
		st.ErrorRate = float64(w.errors) / float64(w.requests)
		st.P50, st.P90, st.P99 = ms(w.quantile(.5)), ms(w.quantile(.9)), ms(w.quantile(.99))
	}
	points := (HistorySeconds - SeriesStep) / SeriesStep // the oldest bucket may be rewritten as we read
	st.Requests = make([]float64, points)
	st.Errors = make([]float64, points)
	st.P99s = make([]float64, points)
	for i := range points {
		last := end - int64(points-1-i)*SeriesStep
		var p sums
		h.window(last, SeriesStep, &p)
		st.Requests[i] = float64(p.requests) / SeriesStep
		st.Errors[i] = float64(p.errors) / SeriesStep
		if p.requests > 0 {
			st.P99s[i] = ms(p.quantile(.99))
		}
	}
	return st
}

func ms(d time.Duration) float64 { return math.Round(float64(d)/1e4) / 100 }

// Histories keeps each route's history across reloads, by site and route
// name: a route that stays keeps its sparklines. Only commit and the
// page's snapshots use it, never the request path.
type Histories struct {
	mu     sync.Mutex
	routes map[[2]string]*routeEntry
}

type routeEntry struct {
	h     *RouteHistory
	since int64
}

// Route returns the history of site's route, made on first use.
func (hs *Histories) Route(site, route string) *RouteHistory {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if hs.routes == nil {
		hs.routes = map[[2]string]*routeEntry{}
	}
	k := [2]string{site, route}
	if e := hs.routes[k]; e != nil {
		return e.h
	}
	e := &routeEntry{h: new(RouteHistory), since: time.Now().Unix()}
	hs.routes[k] = e
	return e.h
}

// Keep forgets every route keep says no to (those a reload removed).
func (hs *Histories) Keep(keep func(site, route string) bool) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	for k := range hs.routes {
		if !keep(k[0], k[1]) {
			delete(hs.routes, k)
		}
	}
}

// Stats summarises site's route at now; ok is false for a route without
// a history.
func (hs *Histories) Stats(site, route string, now int64) (Stats, bool) {
	hs.mu.Lock()
	e := hs.routes[[2]string{site, route}]
	hs.mu.Unlock()
	if e == nil {
		return Stats{}, false
	}
	return e.h.Stats(now, e.since), true
}
