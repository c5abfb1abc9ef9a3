package tlsconf

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"golang.org/x/time/rate"
)

// maxRefused bounds the refuse cache; a flood of random names must not grow
// memory without limit.
const maxRefused = 10000

// Defaults of [tls.on_demand] ask_rate (ask calls per second, all names
// together) and ask_concurrency (ask calls in flight).
const (
	DefaultAskRate        = 20
	DefaultAskConcurrency = 4
)

// askErrorCacheFor is how long a name whose ask call failed (the hook is
// down, timed out, answered 5xx) is refused without asking again: long
// enough that a flood of handshakes does not hammer a hook in trouble,
// short enough that a name is retried soon after the hook is back.
const askErrorCacheFor = 5 * time.Second

// onDemandGate decides whether a certificate may be obtained for a name at
// handshake time. Cheapest first, and the ask hook only when it must: a
// name that is not a host name, or that a public CA cannot issue for, is
// refused outright; a name already in storage is allowed (a hook outage
// must not refuse names that have a certificate); a name refused or failed
// recently is refused again from memory; concurrent handshakes for one
// name share one ask call; ask calls are capped in rate and concurrency
// (past either, the handshake is refused and a later one asks); then the
// issuance budget, which is kept in the storage so that every edged
// sharing it (a cluster) shares one budget.
type onDemandGate struct {
	ask        *url.URL
	client     *http.Client
	refuseFor  time.Duration
	storage    certmagic.Storage
	issuerKeys func() []string
	metrics    *Metrics
	limit      *windowLimiter
	publicCA   bool          // the CA issues only for public names
	askRate    *rate.Limiter // ask calls per second
	askSlots   chan struct{} // ask calls in flight

	mu       sync.Mutex
	refused  map[string]time.Time // name -> until
	inflight map[string]*askCall  // name -> the ask call in progress
}

// askCall is one ask hook call that concurrent handshakes for the same
// name wait for.
type askCall struct {
	done    chan struct{}
	allowed bool
	err     error
}

func newOnDemandGate(o *OnDemand, st certmagic.Storage, issuerKeys func() []string, publicCA bool, met *Metrics) (*onDemandGate, error) {
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
		publicCA:   publicCA,
		refused:    map[string]time.Time{},
		inflight:   map[string]*askCall{},
	}
	ar, ac := o.AskRate, o.AskConcurrency
	if ar == 0 {
		ar = DefaultAskRate
	}
	if ac == 0 {
		ac = DefaultAskConcurrency
	}
	g.askRate = rate.NewLimiter(rate.Limit(ar), ar)
	g.askSlots = make(chan struct{}, ac)
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
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	if err := checkOnDemandName(name); err != nil {
		g.metrics.decision("invalid")
		return fmt.Errorf("%w: %w", errRefused, err)
	}
	if g.publicCA && !PublicName(name) {
		g.metrics.decision("not_public")
		return fmt.Errorf("%w: %s cannot get a certificate from a public CA; the ask hook is not asked", errRefused, name)
	}
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
		return fmt.Errorf("%w: %s was refused by the ask hook recently, or asking it failed", errRefused, name)
	}

	allowed, err := g.askOnce(ctx, name)
	if errors.Is(err, errAskBusy) || errors.Is(err, errAskRate) {
		g.metrics.decision("ask_limited")
		return fmt.Errorf("%w: %s: %w", errRefused, name, err)
	}
	if errors.Is(err, errBudget) {
		g.metrics.decision("rate_limited")
		return fmt.Errorf("%w: on-demand issuance budget (%d per %s) is used up or cannot be read (%w); %s will be tried at a later handshake", errRefused, g.limit.n, g.limit.per, err, name)
	}
	if err != nil {
		// Cached briefly: the hook may be back in a moment, but a flood
		// of handshakes must not hammer it meanwhile.
		g.rememberFor(name, now, askErrorCacheFor)
		g.metrics.decision("ask_error")
		return fmt.Errorf("%w: asking %s about %s: %w", errRefused, g.ask.Redacted(), name, err)
	}
	if !allowed {
		g.rememberFor(name, now, g.refuseFor)
		g.metrics.decision("refused")
		return fmt.Errorf("%w: the ask hook refused %s", errRefused, name)
	}
	g.metrics.decision("allowed")
	return nil
}

var (
	errAskBusy = errors.New("the ask hook has as many calls in flight as ask_concurrency allows; a later handshake asks")
	errAskRate = errors.New("ask calls are over ask_rate; a later handshake asks")
	errBudget  = errors.New("the issuance budget is used up")
)

// askOnce asks the hook about name, or waits for the call already asking
// about it, within the rate and concurrency caps. An allowed name takes
// one unit of the issuance budget per call, however many handshakes
// share it (certmagic obtains each name once).
func (g *onDemandGate) askOnce(ctx context.Context, name string) (bool, error) {
	g.mu.Lock()
	if c, ok := g.inflight[name]; ok {
		g.mu.Unlock()
		select {
		case <-c.done:
			return c.allowed, c.err
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
	select {
	case g.askSlots <- struct{}{}:
	default:
		g.mu.Unlock()
		return false, errAskBusy
	}
	if !g.askRate.Allow() {
		<-g.askSlots
		g.mu.Unlock()
		return false, errAskRate
	}
	c := &askCall{done: make(chan struct{})}
	g.inflight[name] = c
	g.mu.Unlock()

	c.allowed, c.err = g.askHook(ctx, name)
	if c.err == nil && c.allowed && !g.limit.allow(time.Now()) {
		c.allowed, c.err = false, errBudget
	}
	if c.err == nil && c.allowed {
		// The budget every edged sharing the storage (a cluster) shares.
		if err := g.spendShared(ctx, name, time.Now()); err != nil {
			c.allowed, c.err = false, fmt.Errorf("%w: %w", errBudget, err)
		}
	}
	g.mu.Lock()
	delete(g.inflight, name)
	g.mu.Unlock()
	<-g.askSlots
	close(c.done)
	return c.allowed, c.err
}

// budgetKey holds the on-demand issuances of the last interval, for every
// edged sharing the storage (a cluster has one budget, not one per node).
const (
	budgetKey  = "on-demand/issued.json"
	budgetLock = "on-demand-budget"
)

type issuedRecord struct {
	Name string    `json:"name"`
	At   time.Time `json:"at"`
}

// spendShared takes one issuance from the budget kept in the storage,
// under its lock; it refuses when the budget is spent or the storage
// cannot say (no issuance without the storage, which must hold the
// certificate anyway).
func (g *onDemandGate) spendShared(ctx context.Context, name string, now time.Time) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := g.storage.Lock(ctx, budgetLock); err != nil {
		return fmt.Errorf("locking the shared on-demand budget: %w", err)
	}
	defer g.storage.Unlock(context.WithoutCancel(ctx), budgetLock)
	var recs []issuedRecord
	data, err := g.storage.Load(ctx, budgetKey)
	switch {
	case err == nil:
		if json.Unmarshal(data, &recs) != nil {
			recs = nil // a damaged record only loses the window's history
		}
	case !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("reading the shared on-demand budget: %w", err)
	}
	kept := recs[:0]
	for _, r := range recs {
		if now.Sub(r.At) < g.limit.per {
			kept = append(kept, r)
		}
	}
	if len(kept) >= g.limit.n {
		return fmt.Errorf("the cluster's on-demand issuance budget (%d per %s) is used up; it will be tried at a later handshake", g.limit.n, g.limit.per)
	}
	kept = append(kept, issuedRecord{Name: name, At: now})
	data, _ = json.Marshal(kept)
	if err := g.storage.Store(ctx, budgetKey, data); err != nil {
		return fmt.Errorf("recording in the shared on-demand budget: %w", err)
	}
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

func (g *onDemandGate) rememberFor(name string, now time.Time, d time.Duration) {
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
	g.refused[name] = now.Add(d)
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

// checkOnDemandName refuses what is not a host name (a handshake's SNI is
// whatever the client sent).
func checkOnDemandName(name string) error {
	if name == "" || len(name) > 253 {
		return errors.New("no usable server name in the handshake")
	}
	if _, err := netip.ParseAddr(name); err == nil {
		return nil // judged by PublicName
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("%q is not a host name", name)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("%q is not a host name", name)
			}
		}
	}
	return nil
}

// PublicName reports whether a public CA could issue a certificate for
// name: not an IP literal, not localhost, not a single label, not under
// the special-use suffixes .local, .localhost, .internal, .test,
// .invalid, .example, .home.arpa. A private CA (step-ca, Pebble) may
// issue for any of them.
func PublicName(name string) bool {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	if _, err := netip.ParseAddr(strings.Trim(name, "[]")); err == nil {
		return false
	}
	if name == "localhost" || !strings.Contains(name, ".") {
		return false
	}
	for _, suffix := range []string{".localhost", ".local", ".internal", ".test", ".invalid", ".example", ".home.arpa"} {
		if strings.HasSuffix(name, suffix) {
			return false
		}
	}
	return true
}

// PublicCA reports whether an ACME directory URL belongs to a public CA,
// which validates only public names. A CA edged is told to trust through
// ca_root is private.
func PublicCA(directory, caRoot string) bool {
	if caRoot != "" {
		return false
	}
	u, err := url.Parse(directory)
	if err != nil {
		return false
	}
	host := strings.ToLower(u.Hostname())
	for _, public := range []string{"letsencrypt.org", "zerossl.com", "pki.goog", "ssl.com", "buypass.com", "buypass.no"} {
		if host == public || strings.HasSuffix(host, "."+public) {
			return true
		}
	}
	return false
}
