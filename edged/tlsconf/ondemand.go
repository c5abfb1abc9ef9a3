package tlsconf

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
)

// maxRefused bounds the refuse cache; a flood of random names must not grow
// memory without limit.
const maxRefused = 10000

// onDemandGate decides whether a certificate may be obtained for a name at
// handshake time: storage first (a hook outage must not refuse names that
// already have a certificate), then the refuse cache, then the ask hook,
// then the issuance budget.
type onDemandGate struct {
	ask        *url.URL
	client     *http.Client
	refuseFor  time.Duration
	storage    certmagic.Storage
	issuerKeys func() []string
	metrics    *Metrics
	limit      *windowLimiter

	mu      sync.Mutex
	refused map[string]time.Time // name -> until
}

func newOnDemandGate(o *OnDemand, st certmagic.Storage, issuerKeys func() []string, met *Metrics) (*onDemandGate, error) {
	u, err := url.Parse(o.Ask)
	if err != nil {
		return nil, fmt.Errorf("on-demand ask URL %q: %w", o.Ask, err)
	}
	g := &onDemandGate{
		ask:        u,
		client:     &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
		refuseFor:  o.RefuseCacheFor,
		storage:    st,
		issuerKeys: issuerKeys,
		metrics:    met,
		refused:    map[string]time.Time{},
	}
	if g.refuseFor == 0 {
		g.refuseFor = time.Minute
	}
	n, per := o.RateLimit, o.RateInterval
	if n == 0 {
		n = 10
	}
	if per == 0 {
		per = time.Minute
	}
	g.limit = newWindowLimiter(n, per)
	return g, nil
}

// errRefused is returned (wrapped) for names that must not get a certificate.
var errRefused = errors.New("refused")

// decide is certmagic's OnDemandConfig.DecisionFunc.
func (g *onDemandGate) decide(ctx context.Context, name string) error {
	for _, ik := range g.issuerKeys() {
		if g.storage.Exists(ctx, certmagic.StorageKeys.SiteCert(ik, name)) {
			g.metrics.decision("stored")
			return nil
		}
	}
	now := time.Now()
	g.mu.Lock()
	until, ok := g.refused[name]
	if ok && now.After(until) {
		delete(g.refused, name)
		ok = false
	}
	g.mu.Unlock()
	if ok {
		g.metrics.decision("refused_cached")
		return fmt.Errorf("%w: %s was refused by the ask hook recently", errRefused, name)
	}

	allowed, err := g.askHook(ctx, name)
	if err != nil {
		// Not cached: the hook may be back in a moment.
		g.metrics.decision("ask_error")
		return fmt.Errorf("%w: asking %s about %s: %w", errRefused, g.ask.Redacted(), name, err)
	}
	if !allowed {
		g.remember(name, now)
		g.metrics.decision("refused")
		return fmt.Errorf("%w: the ask hook refused %s", errRefused, name)
	}
	if !g.limit.allow(now) {
		g.metrics.decision("rate_limited")
		return fmt.Errorf("%w: on-demand issuance budget (%d per %s) is used up; %s will be tried at a later handshake", errRefused, g.limit.n, g.limit.per, name)
	}
	g.metrics.decision("allowed")
	return nil
}

func (g *onDemandGate) askHook(ctx context.Context, name string) (bool, error) {
	u := *g.ask
	q := u.Query()
	q.Set("domain", name)
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return false, err
	}
	resp, err := g.client.Do(req)
	if err != nil {
		return false, err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode >= 500 {
		return false, fmt.Errorf("ask hook answered %s", resp.Status)
	}
	return resp.StatusCode == http.StatusOK, nil
}

func (g *onDemandGate) remember(name string, now time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.refused) >= maxRefused {
		for k, until := range g.refused {
			if now.After(until) {
				delete(g.refused, k)
			}
		}
		if len(g.refused) >= maxRefused {
			return // still full of live entries: ask again rather than grow
		}
	}
	g.refused[name] = now.Add(g.refuseFor)
}

// windowLimiter allows n events in any window of length per.
type windowLimiter struct {
	n   int
	per time.Duration
	mu  sync.Mutex
	at  []time.Time // ring of the last n event times
	i   int
}

func newWindowLimiter(n int, per time.Duration) *windowLimiter {
	return &windowLimiter{n: n, per: per, at: make([]time.Time, n)}
}

func (l *windowLimiter) allow(now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	// at[i] is the oldest of the last n events.
	if !l.at[l.i].IsZero() && now.Sub(l.at[l.i]) < l.per {
		return false
	}
	l.at[l.i] = now
	l.i = (l.i + 1) % l.n
	return true
}
