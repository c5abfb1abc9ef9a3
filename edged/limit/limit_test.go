package limit

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgeapp/edgeapp/edged/reqinfo"
)

func zone(t testing.TB, c Config) *Zone {
	t.Helper()
	z, err := NewZone(c, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return z
}

var client = Key{Addr: netip.MustParseAddr("192.0.2.1")}

// admitted offers n requests evenly over window (on the zone's own clock,
// from t0) and counts those admitted.
func admitted(z *Zone, k Key, t0 time.Time, n int, window time.Duration) (ok, delayed int) {
	for i := range n {
		d := z.rate.Reserve(k, t0.Add(window*time.Duration(i)/time.Duration(n)))
		if d.OK {
			ok++
			if d.Delay > 0 {
				delayed++
			}
		}
	}
	return ok, delayed
}

// The admitted rate over a window is the configured rate plus the burst,
// whatever the offered load.
func TestAdmittedRateOverWindow(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	for _, c := range []struct {
		cfg         Config
		offered     int
		window      time.Duration
		wantOK      int
		wantDelayed int
	}{
		// 100 r/s offered to 10r/s, nodelay burst 5: 10 per second and the
		// burst once (the 6 of t=0 are the first plus the burst).
		{Config{Rate: "10r/s", Burst: 5, NoDelay: true}, 1000, 10 * time.Second, 105, 0},
		// The same without nodelay: the burst is queued instead.
		{Config{Rate: "10r/s", Burst: 5}, 1000, 10 * time.Second, 105, 104},
		// No burst at all: exactly the rate.
		{Config{Rate: "600r/m"}, 1000, 10 * time.Second, 100, 0},
		// Offered below the rate: everything passes, nothing waits.
		{Config{Rate: "10r/s", Burst: 5}, 50, 10 * time.Second, 50, 0},
	} {
		z := zone(t, c.cfg)
		ok, delayed := admitted(z, client, t0, c.offered, c.window)
		if ok < c.wantOK-1 || ok > c.wantOK+1 || (c.wantDelayed == 0) != (delayed == 0) {
			t.Errorf("%+v: %d offered over %v: %d admitted (%d delayed), want %d (%d delayed)", c.cfg, c.offered, c.window, ok, delayed, c.wantOK, c.wantDelayed)
		}
	}
}

// nginx's delay semantics: of a burst, delay requests pass at once, the
// rest wait their turn at the rate, and beyond burst the answer is no,
// with the time until a request would pass.
func TestDelayAndRetryAfter(t *testing.T) {
	z := zone(t, Config{Rate: "10r/s", Burst: 5, Delay: 2})
	now := time.Unix(1_000_000, 0)
	var delays []time.Duration
	var refused Decision
	for range 7 {
		d := z.rate.Reserve(client, now)
		if !d.OK {
			refused = d
			break
		}
		delays = append(delays, d.Delay.Round(time.Millisecond))
	}
	want := []time.Duration{0, 0, 0, 100 * time.Millisecond, 200 * time.Millisecond, 300 * time.Millisecond}
	if fmt.Sprint(delays) != fmt.Sprint(want) {
		t.Fatalf("delays %v, want %v", delays, want)
	}
	if got := refused.RetryAfter.Round(time.Millisecond); got != 100*time.Millisecond {
		t.Fatalf("RetryAfter %v, want 100ms", got)
	}
	// A cancelled place is given back.
	d := z.rate.Reserve(client, now.Add(100*time.Millisecond))
	if !d.OK {
		t.Fatal("refused after 100ms")
	}
	d.Cancel()
	if d := z.rate.Reserve(client, now.Add(100*time.Millisecond)); !d.OK {
		t.Fatal("the cancelled place was not given back")
	}
}

func TestKeys(t *testing.T) {
	req := func(remote, hdr, cookie string) *http.Request {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = remote
		if hdr != "" {
			r.Header.Set("X-Api-Key", hdr)
		}
		if cookie != "" {
			r.Header.Set("Cookie", cookie)
		}
		return r
	}
	ip, _ := ParseKey("client_ip", 64)
	a, _ := ip.Key(req("[2001:db8:1:2:aaaa::1]:5", "", ""))
	b, _ := ip.Key(req("[2001:db8:1:2:bbbb::9]:5", "", ""))
	c, _ := ip.Key(req("[2001:db8:1:3::1]:5", "", ""))
	if a != b || a == c {
		t.Errorf("IPv6 /64 grouping: %v %v %v", a, b, c)
	}
	full, _ := ParseKey("client_ip", 128)
	a, _ = full.Key(req("[2001:db8:1:2:aaaa::1]:5", "", ""))
	b, _ = full.Key(req("[2001:db8:1:2:bbbb::9]:5", "", ""))
	if a == b {
		t.Error("ipv6_prefix 128 grouped two addresses")
	}
	// The record's client (after trusted_proxies) wins over the peer.
	r := req("127.0.0.1:5", "", "")
	info := &reqinfo.Info{Client: netip.MustParseAddr("203.0.113.9")}
	r = r.WithContext(reqinfo.NewContext(r.Context(), info))
	if k, _ := ip.Key(r); k.Addr.String() != "203.0.113.9" {
		t.Errorf("client from reqinfo: %v", k)
	}
	hk, _ := ParseKey("header:x-api-key", 64)
	if k, ok := hk.Key(req("1.2.3.4:5", "abc", "")); !ok || k.Str != "abc" {
		t.Errorf("header key: %v %v", k, ok)
	}
	if _, ok := hk.Key(req("1.2.3.4:5", "", "")); ok {
		t.Error("a missing header made a key")
	}
	ck, _ := ParseKey("cookie:session", 64)
	if k, ok := ck.Key(req("1.2.3.4:5", "", `theme=dark; session="s1"; x=y`)); !ok || k.Str != "s1" {
		t.Errorf("cookie key: %v %v", k, ok)
	}
	if _, err := ParseKey("query:x", 64); err == nil {
		t.Error("query key accepted")
	}
}

func TestConfigCheck(t *testing.T) {
	for _, c := range []Config{
		{Rate: "fast"}, {Rate: "10r/d"}, {Rate: "-1r/s"}, {}, {Burst: 3, Concurrent: 1},
		{Rate: "1r/s", Burst: 2, Delay: 3}, {Rate: "1r/s", Status: 200}, {Concurrent: 1, Key: "ip"},
		{Rate: "1r/s", IPv6Prefix: 129},
	} {
		if err := c.WithDefaults().Check(); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
	for _, s := range []string{"10r/s", "30 r/m", "0.5r/s", "3600r/h"} {
		if _, err := ParseRate(s); err != nil {
			t.Errorf("%q: %v", s, err)
		}
	}
}

// The store never holds many more keys than max_keys, evicting the least
// recently used, but not keys with requests in flight.
func TestStoreBounded(t *testing.T) {
	z := zone(t, Config{Rate: "1r/s", Concurrent: 10, MaxKeys: 640})
	now := time.Unix(1_000_000, 0)
	busy := z.store.get(Key{Str: "busy"}, 640, z.p, now)
	busy.active.Add(1)
	for i := range 20000 {
		z.rate.Reserve(Key{Str: strconv.Itoa(i)}, now)
	}
	if n := z.store.Len(); n > 640+storeShards {
		t.Fatalf("%d keys held, max_keys 640", n)
	}
	if z.store.get(Key{Str: "busy"}, 640, z.p, now) != busy {
		t.Fatal("a key with a request in flight was evicted")
	}
	// A key just used survives; the oldest idle ones went first.
	z.rate.Reserve(Key{Str: "recent"}, now)
	for i := range 5 {
		z.rate.Reserve(Key{Str: "x" + strconv.Itoa(i)}, now)
	}
	sh := z.store.shard(Key{Str: "recent"})
	sh.mu.Lock()
	_, ok := sh.m[Key{Str: "recent"}]
	sh.mu.Unlock()
	if !ok {
		t.Fatal("the most recently used key was evicted")
	}
}

// A reload hands the buckets to the new zone of the same name and key: a
// client that spent its burst stays limited, at the new rate.
func TestStateCarriedAcrossReload(t *testing.T) {
	old := zone(t, Config{Name: "api", Rate: "1r/s", Burst: 2, NoDelay: true})
	now := time.Unix(1_000_000, 0)
	for range 3 {
		if !old.rate.Reserve(client, now).OK {
			t.Fatal("burst refused")
		}
	}
	next, err := NewZone(Config{Name: "api", Rate: "2r/s", Burst: 2, NoDelay: true}, old, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !next.SharesStateWith(old) {
		t.Fatal("store not handed over")
	}
	if next.rate.Reserve(client, now).OK {
		t.Fatal("the reload gave a spent client a new burst")
	}
	// At 2r/s, one request passes after 500ms.
	if !next.rate.Reserve(client, now.Add(500*time.Millisecond)).OK {
		t.Fatal("the new rate was not applied")
	}
	other, _ := NewZone(Config{Name: "api", Key: "header:X-Key", Rate: "2r/s"}, old, nil)
	if other.SharesStateWith(old) {
		t.Fatal("a zone with another key took the old state")
	}
}

// Through HTTP, with the real clock: a client hammering a route for a
// window gets the rate plus the burst admitted, the rest refused with 429
// and Retry-After. The window is measured where requests are admitted,
// from the first to the last, so that a busy host's scheduling delays on
// the client side do not count.
func TestHandlerRateOverRealWindow(t *testing.T) {
	reg := prometheus.NewRegistry()
	z := zone(t, Config{Name: "api", Rate: "20r/s", Burst: 10, NoDelay: true})
	m := NewMetrics(reg, func() []*Zone { return []*Zone{z} })
	var mu sync.Mutex
	var first, last time.Time
	srv := httptest.NewServer(Handler([]*Zone{z}, m, "site", "site/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		now := time.Now()
		mu.Lock()
		if first.IsZero() {
			first = now
		}
		last = now
		mu.Unlock()
		io.WriteString(w, "ok")
	})))
	defer srv.Close()
	c := srv.Client()
	const window = 1500 * time.Millisecond
	start := time.Now()
	var ok, refused int
	retryAfter := ""
	for i := 0; time.Since(start) < window && i < 100000; i++ {
		res, err := c.Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		switch res.StatusCode {
		case 200:
			ok++
		case 429:
			refused++
			retryAfter = res.Header.Get("Retry-After")
		default:
			t.Fatalf("status %d", res.StatusCode)
		}
	}
	mu.Lock()
	admitting := last.Sub(first)
	mu.Unlock()
	// The first request and a burst of 10 at once, then 20 per second.
	want := 20*admitting.Seconds() + 11
	if float64(ok) < want-1.5 || float64(ok) > want+1.5 || refused == 0 {
		t.Fatalf("%d admitted over %v, %d refused; want about %.1f admitted", ok, admitting, refused, want)
	}
	if retryAfter != "1" {
		t.Fatalf("Retry-After %q, want 1", retryAfter)
	}
	if got := testutil.ToFloat64(m.requests.WithLabelValues("api", "site", "site/", "refused")); int(got) != refused {
		t.Fatalf("refused metric %v, want %d", got, refused)
	}
}

// Without nodelay the burst is queued, not refused: concurrent clients
// of one key all get through, at the zone's rate.
func TestHandlerQueuesAtRate(t *testing.T) {
	z := zone(t, Config{Name: "q", Rate: "40r/s", Burst: 100})
	srv := httptest.NewServer(Handler([]*Zone{z}, nil, "s", "r", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})))
	defer srv.Close()
	const clients, each = 8, 10 // 80 requests: the first passes, 79 wait
	var wg sync.WaitGroup
	var refused atomic.Int32
	start := time.Now()
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := srv.Client()
			for range each {
				res, err := c.Get(srv.URL)
				if err != nil {
					t.Error(err)
					return
				}
				res.Body.Close()
				if res.StatusCode != 200 {
					refused.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	// 79 requests queued behind the first at 40 per second: about 2s.
	rate := float64(clients*each-1) / elapsed.Seconds()
	if refused.Load() != 0 || rate > 44 || rate < 30 {
		t.Fatalf("%d refused; %d requests in %v (%.1f/s), want none refused at about 40/s", refused.Load(), clients*each, elapsed, rate)
	}
}

// limit_conn: at most Concurrent requests of one key at a time; the others
// are refused, and the slots come back when requests end.
func TestConcurrentPerKey(t *testing.T) {
	z := zone(t, Config{Name: "conn", Concurrent: 2, Status: 503})
	release := make(chan struct{})
	var inside atomic.Int32
	entered := make(chan struct{}, 10)
	h := Handler([]*Zone{z}, nil, "s", "r", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		inside.Add(1)
		entered <- struct{}{}
		<-release
	}))
	serve := func(remote string) *httptest.ResponseRecorder {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = remote
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() { defer wg.Done(); serve("192.0.2.1:1") }()
	}
	<-entered
	<-entered
	if w := serve("192.0.2.1:2"); w.Code != 503 || w.Header().Get("Retry-After") == "" {
		t.Fatalf("third concurrent request: %d", w.Code)
	}
	// Another client is not affected.
	wg.Add(1)
	go func() { defer wg.Done(); serve("192.0.2.2:1") }()
	<-entered
	close(release)
	wg.Wait()
	if w := serve("192.0.2.1:3"); w.Code != 200 {
		t.Fatalf("after the others ended: %d", w.Code)
	}
	if inside.Load() != 4 {
		t.Fatalf("%d requests reached the handler, want 4", inside.Load())
	}
}

// A request queued by the rate (no nodelay) waits its turn, and a client
// that leaves while queued is not served and gives its place back.
func TestDelayedRequestWaitsOrLeaves(t *testing.T) {
	z := zone(t, Config{Rate: "5r/s", Burst: 3})
	var served atomic.Int32
	h := Handler([]*Zone{z}, nil, "s", "r", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { served.Add(1) }))
	serve := func(ctx context.Context) int {
		r := httptest.NewRequest("GET", "/", nil).WithContext(ctx)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w.Code
	}
	if serve(context.Background()) != 200 {
		t.Fatal("first request")
	}
	start := time.Now()
	if serve(context.Background()) != 200 {
		t.Fatal("second request")
	}
	if waited := time.Since(start); waited < 150*time.Millisecond {
		t.Fatalf("the queued request waited %v, want about 200ms", waited)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if code := serve(ctx); code != 499 {
		t.Fatalf("a client that left: %d", code)
	}
	if served.Load() != 2 {
		t.Fatalf("served %d", served.Load())
	}
}

func BenchmarkHandler(b *testing.B) {
	z := zone(b, Config{Name: "api", Rate: "1000000r/s", Burst: 1000, NoDelay: true, Concurrent: 1000})
	m := NewMetrics(prometheus.NewRegistry(), func() []*Zone { return nil })
	h := Handler([]*Zone{z}, m, "s", "r", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		r := httptest.NewRequest("GET", "/", nil)
		info := &reqinfo.Info{Client: netip.MustParseAddr("192.0.2.1")}
		r = r.WithContext(reqinfo.NewContext(r.Context(), info))
		w := httptest.NewRecorder()
		i := 0
		for pb.Next() {
			i++
			info.Client = netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})
			h.ServeHTTP(w, r)
		}
	})
}
