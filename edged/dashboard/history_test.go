package dashboard

import (
	"math"
	"sync"
	"testing"
	"time"
)

func TestLatencyIndex(t *testing.T) {
	for _, c := range []struct {
		d    time.Duration
		want int
	}{
		{0, 0}, {250 * time.Microsecond, 0}, {251 * time.Microsecond, 1}, {time.Millisecond, 2},
		{1500 * time.Microsecond, 3}, {10 * time.Second, len(latencyBounds) - 1}, {time.Minute, len(latencyBounds)},
	} {
		if got := latencyIndex(c.d); got != c.want {
			t.Errorf("latencyIndex(%v) = %d, want %d", c.d, got, c.want)
		}
	}
}

func TestStatsRateErrorsAndPercentiles(t *testing.T) {
	var h RouteHistory
	const now = 1_000_000
	// 60 seconds of 10 requests each: 9 fast (1-2 ms) and one slow 500 (about 100 ms).
	for s := int64(now - 60); s < now; s++ {
		for i := 0; i < 9; i++ {
			h.Observe(s, 200, 1500*time.Microsecond)
		}
		h.Observe(s, 503, 95*time.Millisecond)
	}
	// The second under way is not counted.
	h.Observe(now, 500, time.Second)
	st := h.Stats(now, now-3600)
	if st.Rate != 10 {
		t.Errorf("rate %v, want 10", st.Rate)
	}
	if math.Abs(st.ErrorRate-0.1) > 1e-9 {
		t.Errorf("error rate %v, want 0.1", st.ErrorRate)
	}
	if st.P50 < 1 || st.P50 > 2 {
		t.Errorf("p50 %v ms, want within the 1-2 ms bucket", st.P50)
	}
	if st.P99 < 75 || st.P99 > 100 {
		t.Errorf("p99 %v ms, want within the 75-100 ms bucket", st.P99)
	}
	n := len(st.Requests)
	if n != (HistorySeconds-SeriesStep)/SeriesStep || len(st.Errors) != n || len(st.P99s) != n {
		t.Fatalf("series lengths %d %d %d", len(st.Requests), len(st.Errors), len(st.P99s))
	}
	// The last 12 points (60 s) carry the traffic, those before are empty.
	for i, v := range st.Requests {
		want := 0.0
		if i >= n-12 {
			want = 10
		}
		if v != want {
			t.Errorf("requests[%d] = %v, want %v", i, v, want)
		}
		if i >= n-12 && st.Errors[i] != 1 {
			t.Errorf("errors[%d] = %v, want 1", i, st.Errors[i])
		}
		if (st.P99s[i] == 0) != (want == 0) {
			t.Errorf("p99s[%d] = %v with %v requests/s", i, st.P99s[i], want)
		}
	}
}

func TestStatsYoungRoute(t *testing.T) {
	var h RouteHistory
	const now = 2_000_000
	for s := int64(now - 5); s < now; s++ {
		h.Observe(s, 200, time.Millisecond)
		h.Observe(s, 200, time.Millisecond)
	}
	// The route appeared 5 seconds ago: 2 requests per second, not 10/60.
	if st := h.Stats(now, now-5); st.Rate != 2 {
		t.Errorf("rate %v, want 2", st.Rate)
	}
	if st := h.Stats(now, now); st.Rate != 2 { // just appeared: the last second
		t.Errorf("rate at birth %v, want 2", st.Rate)
	}
}

// TestRingForgets: a bucket reused HistorySeconds later holds the new
// second only, and seconds older than the ring are gone.
func TestRingForgets(t *testing.T) {
	var h RouteHistory
	const start = 3_000_000
	h.Observe(start, 500, time.Millisecond)
	h.Observe(start+HistorySeconds, 200, time.Millisecond)
	var w sums
	h.window(start+HistorySeconds, HistorySeconds, &w)
	if w.requests != 1 || w.errors != 0 {
		t.Errorf("after a lap: %d requests, %d errors; want 1, 0", w.requests, w.errors)
	}
	var old sums
	h.second(start, &old)
	if old.requests != 0 {
		t.Errorf("a second older than the ring still counts %d requests", old.requests)
	}
	// A clock that goes back never overwrites a newer second.
	h.Observe(start, 500, time.Millisecond)
	var again sums
	h.second(start+HistorySeconds, &again)
	if again.requests != 1 || again.errors != 0 {
		t.Errorf("an older second overwrote the bucket: %+v", again)
	}
}

// TestConcurrentObserve: many writers on the same seconds lose nothing,
// also the samples that met a bucket being reset, and readers run
// meanwhile (the race detector watches).
func TestConcurrentObserve(t *testing.T) {
	var h RouteHistory
	const base = 4_000_000
	const writers, perSecond, seconds = 8, 500, 4
	var wg sync.WaitGroup
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
				h.Stats(base+seconds, base)
			}
		}
	}()
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for s := int64(base); s < base+seconds; s++ {
				for i := 0; i < perSecond; i++ {
					h.Observe(s, 200, time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	var w sums
	h.window(base+seconds-1, seconds, &w)
	total := uint64(writers * perSecond * seconds)
	if w.requests != total {
		t.Errorf("counted %d of %d requests", w.requests, total)
	}
	var lat uint64
	for _, c := range w.latency {
		lat += c
	}
	if lat != w.requests {
		t.Errorf("latency buckets hold %d samples for %d requests", lat, w.requests)
	}
}

func TestHistoriesKeepAcrossReloads(t *testing.T) {
	var hs Histories
	a := hs.Route("example.com", "example.com/")
	if hs.Route("example.com", "example.com/") != a {
		t.Fatal("the same route got a new history")
	}
	b := hs.Route("example.com", "example.com/api/")
	hs.Keep(func(site, route string) bool { return route == "example.com/" })
	if hs.Route("example.com", "example.com/") != a {
		t.Error("a kept route lost its history")
	}
	if hs.Route("example.com", "example.com/api/") == b {
		t.Error("a removed route kept its history")
	}
	if _, ok := hs.Stats("nope", "nope", time.Now().Unix()); ok {
		t.Error("stats for an unknown route")
	}
}
