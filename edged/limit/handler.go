package limit

import (
	"log/slog"
	"math"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
)

// Zone is a compiled [limit.NAME]: immutable settings over a Store that
// outlives reloads.
type Zone struct {
	cfg   Config
	key   KeySource
	store *Store
	p     *params     // nil without a rate
	rate  RateLimiter // nil without a rate
	log   *slog.Logger

	lastLog   atomic.Int64 // unix seconds of the last refusal log line
	sinceLast atomic.Int64 // refusals not logged since
}

// NewZone compiles c (validated with Check). prev, the zone of the same
// name in the running configuration (or nil), hands over its Store when
// the key is the same, so that clients keep their state across a reload;
// nothing of prev is changed.
func NewZone(c Config, prev *Zone, log *slog.Logger) (*Zone, error) {
	c = c.WithDefaults()
	if err := c.Check(); err != nil {
		return nil, err
	}
	key, _ := ParseKey(c.Key, c.IPv6Prefix)
	z := &Zone{cfg: c, key: key, log: log}
	if z.log == nil {
		z.log = slog.Default()
	}
	if c.Rate != "" {
		rps, _ := ParseRate(c.Rate)
		z.p = &params{
			limit:   rate.Limit(rps),
			burst:   c.Delay + 1,
			maxWait: time.Duration(float64(c.Burst-c.Delay) / rps * float64(time.Second)),
		}
	}
	spec := storeSpec(key, z.p != nil)
	if prev != nil && prev.store.keySpec == spec {
		z.store = prev.store
	} else {
		z.store = NewStore(key)
		z.store.keySpec = spec
	}
	if z.p != nil {
		z.rate = &local{s: z.store, p: z.p, maxKeys: c.MaxKeys}
	}
	return z, nil
}

func storeSpec(k KeySource, hasRate bool) string {
	if hasRate {
		return k.String() + " rate"
	}
	return k.String()
}

// Name is the zone's name.
func (z *Zone) Name() string { return z.cfg.Name }

// SharesStateWith reports whether z carries on other's per-key state.
func (z *Zone) SharesStateWith(other *Zone) bool { return other != nil && z.store == other.store }

// Status is a zone as /status shows it.
type Status struct {
	Name       string     `json:"name"`
	Key        string     `json:"key"`
	Rate       string     `json:"rate,omitempty"`
	Burst      int        `json:"burst"`
	Delay      int        `json:"delay"`
	Concurrent int        `json:"concurrent,omitempty"`
	Code       int        `json:"status"`
	DryRun     bool       `json:"dry_run,omitempty"`
	Keys       int        `json:"keys"`
	MaxKeys    int        `json:"max_keys"`
	Busiest    []KeyState `json:"busiest,omitempty"`
}

// Status reports z's settings, its keys and up to 20 keys held back now.
func (z *Zone) Status() Status {
	c := z.cfg
	return Status{
		Name: c.Name, Key: z.key.String(), Rate: c.Rate, Burst: c.Burst, Delay: c.Delay,
		Concurrent: c.Concurrent, Code: c.Status, DryRun: c.DryRun,
		Keys: z.store.Len(), MaxKeys: c.MaxKeys, Busiest: z.store.Busiest(20, time.Now()),
	}
}

// Metrics are the limits' Prometheus series, registered once per process.
type Metrics struct {
	requests *prometheus.CounterVec
}

// ForgetRoute drops the series of a route that is not in service: it left
// the configuration, or the configuration that had it was refused.
func (m *Metrics) ForgetRoute(site, route string) {
	m.requests.DeletePartialMatch(prometheus.Labels{"site": site, "route": route})
}

// NewMetrics registers the series. zones is called at each scrape for the
// zones in use (the running configuration's).
func NewMetrics(reg prometheus.Registerer, zones func() []*Zone) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edged_limit_requests_total",
			Help: "Requests checked by a limit zone, by zone, site, route and result (passed, delayed, refused, dry_run).",
		}, []string{"zone", "site", "route", "result"}),
	}
	reg.MustRegister(m.requests, &keysCollector{zones: zones, desc: prometheus.NewDesc(
		"edged_limit_keys", "Keys (clients) a limit zone remembers.", []string{"zone"}, nil)})
	return m
}

type keysCollector struct {
	zones func() []*Zone
	desc  *prometheus.Desc
}

func (c *keysCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *keysCollector) Collect(ch chan<- prometheus.Metric) {
	for _, z := range c.zones() {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(z.store.Len()), z.cfg.Name)
	}
}

// zoneUse is one zone on one route, with its counters resolved.
type zoneUse struct {
	z                                *Zone
	passed, delayed, refused, dryRun prometheus.Counter
}

// Handler applies zones, in order, to the requests of one route; all must
// admit a request. A request delayed by several zones waits the longest
// of their delays.
func Handler(zones []*Zone, m *Metrics, site, route string, next http.Handler) http.Handler {
	h := &handler{next: next}
	for _, z := range zones {
		u := zoneUse{z: z}
		if m != nil {
			u.passed = m.requests.WithLabelValues(z.cfg.Name, site, route, "passed")
			u.delayed = m.requests.WithLabelValues(z.cfg.Name, site, route, "delayed")
			u.refused = m.requests.WithLabelValues(z.cfg.Name, site, route, "refused")
			u.dryRun = m.requests.WithLabelValues(z.cfg.Name, site, route, "dry_run")
		}
		h.zones = append(h.zones, u)
	}
	return h
}

type handler struct {
	zones []zoneUse
	next  http.Handler
}

// held is what one request took from its zones, to give back.
type held struct {
	decisions [4]Decision
	entries   [4]*entry
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	now := time.Now()
	var taken held
	var decisions []Decision
	var entries []*entry
	if len(h.zones) <= len(taken.decisions) {
		decisions, entries = taken.decisions[:len(h.zones)], taken.entries[:len(h.zones)]
	} else {
		decisions, entries = make([]Decision, len(h.zones)), make([]*entry, len(h.zones))
	}
	var delay time.Duration
	for i := range h.zones {
		u := &h.zones[i]
		z := u.z
		k, ok := z.key.Key(r)
		if !ok {
			continue
		}
		if z.rate != nil {
			d := z.rate.Reserve(k, now)
			if !d.OK {
				if z.cfg.DryRun {
					inc(u.dryRun)
					z.noteRefusal(k, "rate", true)
				} else {
					giveBack(decisions[:i], entries[:i])
					inc(u.refused)
					z.noteRefusal(k, "rate", false)
					refuse(w, z.cfg.Status, d.RetryAfter)
					return
				}
			} else {
				decisions[i] = d
				delay = max(delay, d.Delay)
			}
		}
		if c := z.cfg.Concurrent; c > 0 {
			e := z.store.get(k, z.cfg.MaxKeys, z.p, now)
			if e.active.Add(1) > int32(c) {
				e.active.Add(-1)
				if z.cfg.DryRun {
					inc(u.dryRun)
					z.noteRefusal(k, "concurrency", true)
				} else {
					giveBack(decisions[:i+1], entries[:i])
					inc(u.refused)
					z.noteRefusal(k, "concurrency", false)
					refuse(w, z.cfg.Status, time.Second)
					return
				}
			} else {
				entries[i] = e
			}
		}
	}
	defer release(entries)
	if delay > 0 {
		for i := range h.zones {
			if decisions[i].Delay > 0 {
				inc(h.zones[i].delayed)
			} else if decisions[i].OK {
				inc(h.zones[i].passed)
			}
		}
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			// The client left while queued: its place goes to the next.
			t.Stop()
			for i := range decisions {
				decisions[i].Cancel()
			}
			w.WriteHeader(499) // seen by the access log only
			return
		}
	} else {
		for i := range h.zones {
			if decisions[i].OK || entries[i] != nil {
				inc(h.zones[i].passed)
			}
		}
	}
	h.next.ServeHTTP(w, r)
}

func inc(c prometheus.Counter) {
	if c != nil {
		c.Inc()
	}
}

func giveBack(decisions []Decision, entries []*entry) {
	for i := range decisions {
		decisions[i].Cancel()
	}
	release(entries)
}

func release(entries []*entry) {
	for _, e := range entries {
		if e != nil {
			e.active.Add(-1)
		}
	}
}

var refusedBody = map[int]string{
	http.StatusTooManyRequests:    "429 Too Many Requests: slow down and retry later\n",
	http.StatusServiceUnavailable: "503 Service Unavailable: too many requests, retry later\n",
}

// refuse answers a request a zone refused, with Retry-After in whole
// seconds (at least 1).
func refuse(w http.ResponseWriter, status int, retryAfter time.Duration) {
	h := w.Header()
	secs := int64(math.Ceil(retryAfter.Seconds()))
	h["Retry-After"] = []string{strconv.FormatInt(max(secs, 1), 10)}
	h["Content-Type"] = []string{"text/plain; charset=utf-8"}
	h["X-Content-Type-Options"] = []string{"nosniff"}
	h["Cache-Control"] = []string{"no-store"}
	body, ok := refusedBody[status]
	if !ok {
		body = strconv.Itoa(status) + " " + http.StatusText(status) + "\n"
	}
	h["Content-Length"] = []string{strconv.Itoa(len(body))}
	w.WriteHeader(status)
	w.Write([]byte(body))
}

// noteRefusal logs refusals at most once per zone every 10 seconds, with
// how many were not logged, so an attack does not flood the journal.
func (z *Zone) noteRefusal(k Key, what string, dry bool) {
	now := time.Now().Unix()
	last := z.lastLog.Load()
	if now-last < 10 || !z.lastLog.CompareAndSwap(last, now) {
		z.sinceLast.Add(1)
		return
	}
	msg := "limit: refusing requests over the zone's " + what + "; more refusals are counted in edged_limit_requests_total"
	if dry {
		msg = "limit (dry run): would refuse requests over the zone's " + what
	}
	z.log.Warn(msg, "zone", z.cfg.Name, "key", keyString(k), "unlogged_before", z.sinceLast.Swap(0))
}

// Exhausted reports whether k has no allowance left now, and when it
// will have one; it spends nothing. With Spend it counts events other than
// requests, such as failed logins: check before, spend on each failure.
func (z *Zone) Exhausted(k Key, now time.Time) (retryAfter time.Duration, exhausted bool) {
	if z.p == nil {
		return 0, false
	}
	e := z.store.get(k, z.cfg.MaxKeys, z.p, now)
	if e.lim == nil {
		return 0, false
	}
	tokens := e.lim.TokensAt(now)
	if tokens >= 1 {
		return 0, false
	}
	return time.Duration((1 - tokens) / float64(z.p.limit) * float64(time.Second)), true
}

// Spend takes one from k's allowance, if any is left.
func (z *Zone) Spend(k Key, now time.Time) {
	if z.p == nil {
		return
	}
	if e := z.store.get(k, z.cfg.MaxKeys, z.p, now); e.lim != nil {
		e.lim.AllowN(now, 1)
	}
}

// KeyOf returns r's key in z.
func (z *Zone) KeyOf(r *http.Request) (Key, bool) { return z.key.Key(r) }

// UseRateLimiter makes rl decide z's rate in place of the local store
// (a cluster-wide limiter). Call it while preparing a configuration,
// before z serves a request; a zone is immutable once it serves.
func (z *Zone) UseRateLimiter(rl RateLimiter) {
	if z.p != nil && rl != nil {
		z.rate = rl
	}
}

// RateLimiter is what decides z's rate now: the local store's limiter, or
// the one UseRateLimiter put in its place; nil for a zone without a rate.
// A cluster-wide limiter wraps it.
func (z *Zone) RateLimiter() RateLimiter { return z.rate }

// Charge takes n requests from k's rate allowance without deciding
// anything: requests another node admitted, reported by a cluster-wide
// limiter. The bucket may go below empty; k's next requests then wait or
// are refused until the rate has paid it back, as if they had come here.
func (z *Zone) Charge(k Key, n int, now time.Time) {
	if z.p == nil || n <= 0 {
		return
	}
	e := z.store.get(k, z.cfg.MaxKeys, z.p, now)
	if e.lim == nil {
		return
	}
	for n > 0 {
		c := min(n, max(e.lim.Burst(), 1))
		e.lim.ReserveN(now, c) // never cancelled: the requests were served
		n -= c
	}
}

// Settings are z's settings, with defaults.
func (z *Zone) Settings() Config { return z.cfg }

// EncodeKey writes k as text that DecodeKey reads back, for sharing a
// key's count with other nodes.
func EncodeKey(k Key) string {
	if k.Addr.IsValid() {
		return "a" + k.Addr.String()
	}
	return "s" + k.Str
}

// DecodeKey reads what EncodeKey wrote.
func DecodeKey(s string) (Key, bool) {
	switch {
	case strings.HasPrefix(s, "a"):
		a, err := netip.ParseAddr(s[1:])
		return Key{Addr: a}, err == nil
	case strings.HasPrefix(s, "s") && len(s) > 1:
		return Key{Str: s[1:]}, true
	}
	return Key{}, false
}
