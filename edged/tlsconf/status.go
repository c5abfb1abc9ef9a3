package tlsconf

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"
)

// CertStatus is one host's certificate as `edged` STATUS and the admin
// endpoint show it.
type CertStatus struct {
	Host     string `json:"host"`
	Mode     string `json:"mode"` // acme, internal, manual
	OnDemand bool   `json:"on_demand,omitempty"`
	// State: "pending" (nothing tried yet), "obtaining", "valid",
	// "expired", or "failed: <the CA's error>" (the last attempt failed;
	// NotAfter non-zero means an older certificate is still served).
	State          string    `json:"state"`
	NotAfter       time.Time `json:"not_after,omitzero"`
	Issuer         string    `json:"issuer,omitempty"`
	LastError      string    `json:"last_error,omitempty"`
	Since          time.Time `json:"since,omitzero"`            // of the current state
	RenewalOverdue bool      `json:"renewal_overdue,omitempty"` // close to expiry and not renewed
}

// manualWarnLeft: a manual certificate closer than this to expiry is
// warned about (nobody renews it but the user).
const manualWarnLeft = 14 * 24 * time.Hour

type hostState struct {
	mode     string
	onDemand bool
	state    string // pending, obtaining, valid, failed
	lastErr  string
	since    time.Time
	warned   bool // the overdue warning was logged
}

// statusTracker follows certmagic's events per host, logs each state
// change once, and feeds Status and the metrics.
type statusTracker struct {
	m      *Manager
	mu     sync.Mutex
	hosts  map[string]*hostState
	manual []CertStatus
	mwarn  map[string]bool // manual host -> overdue warning logged
	// poke asks watch for a check now: a certificate was just cached, so
	// its expiry metric need not wait for the next tick.
	poke chan struct{}
}

func newStatusTracker(m *Manager) *statusTracker {
	return &statusTracker{m: m, hosts: map[string]*hostState{}, mwarn: map[string]bool{}, poke: make(chan struct{}, 1)}
}

func (s *statusTracker) track(host, mode string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.hosts[host]; st != nil && st.mode == mode {
		return
	}
	s.hosts[host] = &hostState{mode: mode, state: "pending", since: time.Now()}
}

func (s *statusTracker) forget(host, mode string) {
	s.mu.Lock()
	delete(s.hosts, host)
	s.mu.Unlock()
	s.m.met.forget(host, mode)
}

func (s *statusTracker) setManual(list []CertStatus) {
	s.mu.Lock()
	old := s.manual
	s.manual = list
	s.mu.Unlock()
	keep := map[string]bool{}
	for _, c := range list {
		keep[c.Host] = true
	}
	for _, c := range old {
		if !keep[c.Host] {
			s.m.met.forget(c.Host, ModeManual)
		}
	}
	for _, c := range list {
		s.m.met.setExpiry(c.Host, ModeManual, c.NotAfter, false)
	}
}

// get returns the state for host, creating one for names certmagic
// obtains on its own (on-demand); nil for hosts no longer configured
// (an obtain that was already running when they left).
func (s *statusTracker) get(host string) *hostState {
	st := s.hosts[host]
	if st == nil {
		if r := s.m.table.Load().lookup(host); r == nil || !r.onDemand {
			return nil
		}
		st = &hostState{mode: ModeACME, onDemand: true, state: "pending", since: time.Now()}
		s.hosts[host] = st
	}
	return st
}

// onEvent is certmagic's Config.OnEvent; it runs synchronously inside
// certmagic, so it only records and logs.
func (s *statusTracker) onEvent(_ context.Context, event string, data map[string]any) error {
	id, _ := data["identifier"].(string)
	renewal, _ := data["renewal"].(bool)
	what := "obtain"
	if renewal {
		what = "renew"
	}
	log := s.m.log
	switch event {
	case "cert_obtaining":
		s.mu.Lock()
		st := s.get(id)
		if st == nil {
			s.mu.Unlock()
			return nil
		}
		first := st.state == "pending"
		if st.state != "failed" {
			st.state, st.since = "obtaining", time.Now()
		}
		mode := st.mode
		s.mu.Unlock()
		if first {
			log.Info("tls: "+what+"ing certificate", "host", id, "mode", mode, "ca", s.issuerName(mode))
		}
	case "cert_obtained":
		s.mu.Lock()
		st := s.get(id)
		if st == nil {
			s.mu.Unlock()
			return nil
		}
		wasFailing := st.state == "failed"
		st.state, st.lastErr, st.since = "valid", "", time.Now()
		mode := st.mode
		s.mu.Unlock()
		s.m.met.issued(renewal, true)
		s.m.met.setFailing(id, mode, false)
		if wasFailing {
			log.Info("tls: certificate "+what+"ed after earlier failures", "host", id, "mode", mode)
		} else {
			log.Info("tls: certificate "+what+"ed", "host", id, "mode", mode)
		}
	case "cert_failed":
		msg := fmt.Sprint(data["error"])
		s.mu.Lock()
		st := s.get(id)
		if st == nil {
			s.mu.Unlock()
			return nil
		}
		changed := st.state != "failed"
		st.state, st.lastErr = "failed", msg
		if changed {
			st.since = time.Now()
		}
		mode := st.mode
		s.mu.Unlock()
		s.m.met.issued(renewal, false)
		s.m.met.setFailing(id, mode, true)
		serving := "nothing: handshakes for this host fail until it succeeds"
		if c := s.m.certFor(id); c != nil {
			serving = "the current certificate, valid until " + c.NotAfter.UTC().Format(time.RFC3339)
		}
		if changed {
			log.Error("tls: could not "+what+" certificate; retrying with backoff, serving "+serving, "host", id, "mode", mode, "ca", s.issuerName(mode), "err", msg)
		} else {
			log.Debug("tls: certificate "+what+" failed again", "host", id, "err", msg)
		}
	case "cached_managed_cert":
		// Loaded from storage: at start, after an obtain or renewal, or
		// after a failed attempt when another edged sharing the storage
		// obtained it meanwhile. It is in the cache now (certmagic says
		// so after caching): the expiry metric can be set.
		select {
		case s.poke <- struct{}{}:
		default:
		}
		sans, _ := data["sans"].([]string)
		var recovered []*hostState
		var names []string
		s.mu.Lock()
		for _, h := range sans {
			st := s.hosts[h]
			if st == nil || (st.state != "pending" && st.state != "failed") {
				continue
			}
			if st.state == "failed" {
				recovered = append(recovered, st)
				names = append(names, h)
			}
			st.state, st.lastErr, st.since = "valid", "", time.Now()
		}
		s.mu.Unlock()
		for i, st := range recovered {
			s.m.met.setFailing(names[i], st.mode, false)
			log.Info("tls: certificate loaded from the storage after earlier failures (another edged sharing it obtained it)", "host", names[i], "mode", st.mode)
		}
	}
	return nil
}

// failed records an attempt that failed, also before any order was placed
// (storage, account, CA unreachable); the state change is logged once.
func (s *statusTracker) failed(host string, err error, retryIn time.Duration) {
	msg := err.Error()
	s.mu.Lock()
	st := s.hosts[host]
	if st == nil {
		s.mu.Unlock()
		return
	}
	changed := st.state != "failed"
	st.state, st.lastErr = "failed", msg
	if changed {
		st.since = time.Now()
	}
	mode := st.mode
	s.mu.Unlock()
	s.m.met.setFailing(host, mode, true)
	if changed {
		s.m.log.Error("tls: could not get a certificate; retrying", "host", host, "mode", mode, "ca", s.issuerName(mode), "retry_in", retryIn, "err", msg)
	} else {
		s.m.log.Debug("tls: certificate attempt failed again", "host", host, "retry_in", retryIn, "err", msg)
	}
}

func (s *statusTracker) issuerName(mode string) string {
	if mode == ModeInternal {
		return "internal CA"
	}
	return s.m.o.caURL
}

// certFor returns the newest certificate in the cache that serves host.
func (m *Manager) certFor(host string) *x509.Certificate {
	var best *x509.Certificate
	for _, c := range m.cache.AllMatchingCertificates(host) {
		if c.Leaf != nil && (best == nil || c.Leaf.NotAfter.After(best.NotAfter)) {
			best = c.Leaf
		}
	}
	return best
}

func (m *Manager) overdue(c *x509.Certificate, now time.Time) bool {
	ratio := m.o.RenewalWindowRatio
	if ratio == 0 {
		ratio = 1.0 / 3
	}
	life := c.NotAfter.Sub(c.NotBefore)
	return c.NotAfter.Sub(now) < time.Duration(float64(life)*ratio/2)
}

func manualCertStatus(host string, c *tls.Certificate) CertStatus {
	st := CertStatus{Host: host, Mode: ModeManual, State: "valid", NotAfter: c.Leaf.NotAfter, Issuer: c.Leaf.Issuer.String()}
	if time.Now().After(c.Leaf.NotAfter) {
		st.State = "expired"
	}
	return st
}

// Status reports every configured host and every on-demand name, sorted
// by host.
func (m *Manager) Status() []CertStatus {
	s := m.status
	s.mu.Lock()
	out := make([]CertStatus, 0, len(s.hosts)+len(s.manual))
	for h, st := range s.hosts {
		out = append(out, CertStatus{Host: h, Mode: st.mode, OnDemand: st.onDemand, State: st.state, LastError: st.lastErr, Since: st.since})
	}
	n := len(out)
	out = append(out, s.manual...)
	s.mu.Unlock()
	now := time.Now()
	for i := range out[:n] {
		cs := &out[i]
		c := m.certFor(cs.Host)
		if c != nil {
			cs.NotAfter, cs.Issuer = c.NotAfter, c.Issuer.String()
			cs.RenewalOverdue = m.overdue(c, now)
		}
		switch {
		case cs.State == "failed":
			cs.State = "failed: " + cs.LastError
		case c != nil && now.After(c.NotAfter):
			cs.State = "expired"
		case c != nil && cs.State == "pending":
			cs.State = "valid"
		case c == nil && cs.State == "valid":
			// obtained and stored, not yet loaded for serving
			cs.State = "obtaining"
		}
	}
	for i := range out[n:] {
		cs := &out[n+i]
		cs.RenewalOverdue = cs.NotAfter.Sub(now) < manualWarnLeft
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Host < out[j].Host })
	return out
}

// watch refreshes the expiry metrics and warns once when a certificate is
// close to expiry without having been renewed.
func (s *statusTracker) watch(ctx context.Context, wg *sync.WaitGroup) {
	defer wg.Done()
	every := min(s.m.o.RenewCheckInterval, time.Minute)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.check(time.Now())
		case <-s.poke:
			s.check(time.Now())
		}
	}
}

func (s *statusTracker) check(now time.Time) {
	type item struct{ host, mode, lastErr string }
	s.mu.Lock()
	items := make([]item, 0, len(s.hosts))
	for h, st := range s.hosts {
		items = append(items, item{h, st.mode, st.lastErr})
	}
	manual := s.manual
	s.mu.Unlock()
	for _, it := range items {
		c := s.m.certFor(it.host)
		if c == nil {
			continue
		}
		over := s.m.overdue(c, now)
		s.m.met.setExpiry(it.host, it.mode, c.NotAfter, over)
		s.mu.Lock()
		st := s.hosts[it.host]
		warn := st != nil && over && !st.warned
		if st != nil {
			st.warned = over
		}
		s.mu.Unlock()
		if warn {
			s.m.log.Warn("tls: certificate is close to expiry and has not been renewed; renewal keeps being retried", "host", it.host, "mode", it.mode, "not_after", c.NotAfter.UTC().Format(time.RFC3339), "last_err", it.lastErr)
		}
	}
	for _, c := range manual {
		left := c.NotAfter.Sub(now)
		over := left < manualWarnLeft
		s.m.met.setExpiry(c.Host, ModeManual, c.NotAfter, over)
		s.mu.Lock()
		warn := over && !s.mwarn[c.Host]
		s.mwarn[c.Host] = over
		s.mu.Unlock()
		if warn {
			s.m.log.Warn("tls: manual certificate expires soon; replace the file and reload", "host", c.Host, "not_after", c.NotAfter.UTC().Format(time.RFC3339))
		}
	}
}

// Summary is a short line for systemd's STATUS=, e.g. "certificates: 3
// valid, 1 failed (acme.example.com)".
func (m *Manager) Summary() string {
	var valid, pending, failed, expired int
	var firstFailed string
	for _, s := range m.Status() {
		switch {
		case s.State == "valid":
			valid++
		case s.State == "expired":
			expired++
		case strings.HasPrefix(s.State, "failed"):
			if failed == 0 {
				firstFailed = s.Host
			}
			failed++
		default:
			pending++
		}
	}
	out := fmt.Sprintf("certificates: %d valid", valid)
	if pending > 0 {
		out += fmt.Sprintf(", %d obtaining", pending)
	}
	if expired > 0 {
		out += fmt.Sprintf(", %d expired", expired)
	}
	if failed > 0 {
		out += fmt.Sprintf(", %d failed (%s)", failed, firstFailed)
	}
	return out
}
