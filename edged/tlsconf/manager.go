package tlsconf

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/mholt/acmez/v3"
)

// Manager owns every certificate edged serves. Create one per process with
// New, call Apply at start and on every reload, put TLSConfig on the https
// listener and HTTPChallenge around the http listener's handler.
type Manager struct {
	o       *normOptions
	log     *slog.Logger
	met     *Metrics
	storage certmagic.Storage
	cache   *certmagic.Cache

	acme       *certmagic.Config
	acmeObtain *certmagic.Config // acme, but never prompts on stdin
	acmeIssuer *certmagic.ACMEIssuer
	// acmeDNS and acmeDNSObtain validate wildcard names by DNS-01 when
	// other names use HTTP-01/TLS-ALPN-01; nil otherwise (without DNS-01,
	// or when acme itself uses only DNS-01).
	acmeDNS, acmeDNSObtain *certmagic.Config
	onDemand               *certmagic.Config // nil without Options.OnDemand
	gate                   *onDemandGate

	tlsConfig *tls.Config
	tickets   *ticketKeys
	table     atomic.Pointer[table]
	status    *statusTracker

	ctx    context.Context // lives until Close; cancels retries
	cancel context.CancelFunc
	wg     sync.WaitGroup

	internalCA atomic.Pointer[internalState] // set once, by the first Apply that needs it

	mu       sync.Mutex // serialises Apply; guards the fields below
	internal *certmagic.Config
	ca       *internalCA
	managed  map[string]*managedHost
	lastDone map[string]chan struct{} // host -> done of its latest manage goroutine
	closed   bool
}

type internalState struct {
	ca  *internalCA
	cfg *certmagic.Config
}

type managedHost struct {
	mode   string
	cancel context.CancelFunc // stops this host's obtain retries
}

// New makes the process's Manager. It does not touch the network or the
// storage until Apply asks for certificates.
func New(o Options, met *Metrics) (*Manager, error) {
	n, err := o.normalize()
	if err != nil {
		return nil, fmt.Errorf("tls options: %w", err)
	}
	mgr := &Manager{
		o:        n,
		log:      n.Log,
		met:      met,
		storage:  n.Backend,
		managed:  map[string]*managedHost{},
		lastDone: map[string]chan struct{}{},
	}
	if mgr.storage == nil {
		mgr.storage = &certmagic.FileStorage{Path: n.storageDir}
	}
	mgr.status = newStatusTracker(mgr)
	mgr.ctx, mgr.cancel = context.WithCancel(context.Background())
	zl := newZapLogger(n.Log)
	mgr.cache = certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert:   mgr.configForCert,
		RenewCheckInterval: n.RenewCheckInterval,
		Logger:             zl,
	})
	base := certmagic.Config{
		RenewalWindowRatio: n.RenewalWindowRatio,
		KeySource:          certmagic.StandardKeyGenerator{KeyType: n.keyType},
		Storage:            mgr.storage,
		Logger:             zl,
		OnEvent:            mgr.status.onEvent,
		// The per-handshake event is the only costly one; nothing here uses it.
		ShouldEmitFunc: func(ev string) bool { return ev != "tls_get_certificate" },
	}
	template := certmagic.ACMEIssuer{
		CA:                      n.caURL,
		Email:                   n.Email,
		Agreed:                  true,
		TrustedRoots:            n.roots,
		Profile:                 n.Profile,
		AltHTTPPort:             n.AltHTTPPort,
		AltTLSALPNPort:          n.AltTLSALPNPort,
		DisableHTTPChallenge:    !n.http01,
		DisableTLSALPNChallenge: !n.tlsalpn01,
		Logger:                  zl,
	}
	var dnsSolver *certmagic.DNS01Solver
	if n.dns01 {
		d := n.DNS
		dnsSolver = &certmagic.DNS01Solver{DNSManager: certmagic.DNSManager{
			DNSProvider:        d.provider(),
			TTL:                d.TTL,
			PropagationDelay:   d.PropagationDelay,
			PropagationTimeout: d.PropagationTimeout,
			Resolvers:          d.Resolvers,
			Logger:             zl,
		}}
		if !n.http01 && !n.tlsalpn01 {
			template.DNS01Solver = dnsSolver // every name by DNS-01
		}
	}
	mgr.acme, mgr.acmeObtain, mgr.acmeIssuer = newACMEConfigs(mgr.cache, base, template)
	if dnsSolver != nil && template.DNS01Solver == nil {
		// Wildcards can only be validated by DNS-01; certmagic uses a
		// DNS solver exclusively, so they get an issuer of their own (the
		// same CA and account, so the same storage).
		dnsTemplate := template
		dnsTemplate.DNS01Solver = dnsSolver
		mgr.acmeDNS, mgr.acmeDNSObtain, _ = newACMEConfigs(mgr.cache, base, dnsTemplate)
	}

	if n.OnDemand != nil && n.OnDemand.Ask != "" {
		issuerKey := mgr.acmeIssuer.IssuerKey()
		mgr.gate, err = newOnDemandGate(n.OnDemand, mgr.storage, func() []string { return []string{issuerKey} }, PublicCA(n.caURL, n.CARoot), met)
		if err != nil {
			return nil, err
		}
		od := base
		od.OnDemand = &certmagic.OnDemandConfig{DecisionFunc: mgr.gate.decide}
		mgr.onDemand = certmagic.New(mgr.cache, od)
		mgr.onDemand.Issuers = []certmagic.Issuer{certmagic.NewACMEIssuer(mgr.onDemand, template)}
	}

	mgr.table.Store(&table{})
	tickets, err := newTicketKeys()
	if err != nil {
		return nil, err
	}
	mgr.tickets = tickets
	mgr.tlsConfig = &tls.Config{
		MinVersion: tls.VersionTLS12,
		// TLS 1.2 only with forward secrecy and AEAD; TLS 1.3 suites are
		// fixed by Go and all modern.
		CipherSuites: []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
			tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
		},
		NextProtos:     []string{"h2", "http/1.1", acmez.ACMETLS1Protocol},
		GetCertificate: mgr.getCertificate,
		WrapSession:    tickets.wrap,
		UnwrapSession:  tickets.unwrap,
	}
	mgr.wg.Add(2)
	go mgr.status.watch(mgr.ctx, &mgr.wg)
	go mgr.rotateTickets(tickets)
	return mgr, nil
}

// newACMEConfigs makes a certmagic config with one ACME issuer, and its
// twin that never prompts on stdin (for our own obtain calls).
func newACMEConfigs(cache *certmagic.Cache, base certmagic.Config, template certmagic.ACMEIssuer) (cfg, obtain *certmagic.Config, iss *certmagic.ACMEIssuer) {
	cfg = certmagic.New(cache, base)
	iss = certmagic.NewACMEIssuer(cfg, template)
	cfg.Issuers = []certmagic.Issuer{iss}
	ob := base
	ob.Issuers = []certmagic.Issuer{promptless{iss}}
	return cfg, certmagic.New(cache, ob), iss
}

func (m *Manager) rotateTickets(k *ticketKeys) {
	defer m.wg.Done()
	t := time.NewTicker(ticketRotation)
	defer t.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-t.C:
			if err := k.rotate(); err != nil {
				m.log.Error("tls: rotating session ticket keys failed; keeping the current ones", "err", err)
			}
		}
	}
}

// TLSConfig is the one *tls.Config for the https listener; it stays the
// same object across Apply calls.
func (m *Manager) TLSConfig() *tls.Config { return m.tlsConfig }

// InternalRoot returns the path of the internal CA's root certificate, or
// "" if no site has used the internal CA yet.
func (m *Manager) InternalRoot() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ca == nil {
		return ""
	}
	return m.ca.RootFile()
}

// HTTPChallenge answers ACME HTTP-01 challenges (for this instance or any
// other sharing the storage) and passes every other request to next.
func (m *Manager) HTTPChallenge(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/.well-known/acme-challenge/") && m.acmeIssuer.HandleHTTPChallenge(w, r) {
			return
		}
		next.ServeHTTP(w, r)
	})
}

func issuerKeyFor(m *Manager, mode string) string {
	if mode == ModeInternal {
		return internalIssuerKey
	}
	return m.acmeIssuer.IssuerKey()
}

// Apply makes sites the served set. It checks everything first and changes
// nothing if anything is wrong (a reload keeps the previous set). Manual
// certificate files are read again every time. Certificates to obtain are
// obtained in the background; Apply never waits for a CA.
func (m *Manager) Apply(ctx context.Context, sites []Site) error {
	p, err := m.Prepare(ctx, sites)
	if err != nil {
		return err
	}
	m.Commit(ctx, p)
	return nil
}

// Plan is a set of sites that Prepare checked and loaded what they need
// for (manual certificates, the storage directory, the internal CA), for
// Commit to put in service.
type Plan struct {
	sites  []Site
	manual map[int]*manualCert
	ca     *internalCA // made for these sites; nil when the manager has one or none is needed
}

// Prepare does everything of Apply that can fail, and changes nothing
// that serves: a reload prepares the certificates' side with the rest of
// the configuration and commits only if all of it is good.
func (m *Manager) Prepare(ctx context.Context, sites []Site) (*Plan, error) {
	manual, err := checkSites(sites, m.o.dns01)
	errs := []error{err}
	errs = append(errs, checkOnDemandOptions(m.o.Options, sites)...)
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("tls: sites not applied, the previous ones stay: %w", err)
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, errors.New("tls: manager is closed")
	}
	p := &Plan{sites: sites, manual: manual}
	needInternal, needStorage := false, false
	for _, s := range sites {
		needInternal = needInternal || s.Mode == ModeInternal
		needStorage = needStorage || (s.Mode != ModeOff && s.Mode != ModeManual)
	}
	if needStorage {
		if err := checkStorageDir(m.o.storageDir); err != nil {
			return nil, fmt.Errorf("tls: sites not applied, the previous ones stay: %w", err)
		}
	}
	if needInternal && m.ca == nil {
		ca, err := loadOrCreateInternalCA(ctx, m.storage, m.o.storageDir, m.o.InternalLifetime)
		if err != nil {
			return nil, fmt.Errorf("tls: sites not applied, the previous ones stay: %w", err)
		}
		p.ca = ca
	}
	return p, nil
}

// Commit puts a prepared plan in service; it cannot fail.
func (m *Manager) Commit(ctx context.Context, p *Plan) {
	sites, manual := p.sites, p.manual
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	if p.ca != nil && m.ca == nil {
		ca := p.ca
		cfg := *m.acme // same storage, logger, events and key type
		cfg.Issuers = []certmagic.Issuer{ca}
		m.internal = certmagic.New(m.cache, cfg)
		m.ca = ca
		m.internalCA.Store(&internalState{ca: ca, cfg: m.internal})
		m.log.Info("tls: internal CA ready; trust its root to trust internal sites", "root", ca.RootFile())
	}

	t := &table{exact: map[string]*route{}, wild: map[string]*route{}}
	want := map[string]string{} // host -> mode, for certmagic-managed hosts
	var manualStatus []CertStatus
	for i, s := range sites {
		mode := s.Mode
		if mode == "" {
			mode = ModeACME
		}
		if mode == ModeOff {
			continue
		}
		r := &route{mode: mode, onDemand: s.OnDemand}
		switch {
		case mode == ModeManual:
			r.manual = manual[i].cert
			for _, w := range manualWarnings(s, r.manual) {
				m.log.Warn("tls: "+w+"; serving it anyway", "site", i)
			}
		case s.OnDemand:
			r.cfg = m.onDemand
		case mode == ModeInternal:
			r.cfg = m.internal
		default:
			r.cfg = m.acme
		}
		var dnsRoute *route // for this site's wildcards, validated by DNS-01
		if r.cfg == m.acme && m.acmeDNS != nil {
			dr := *r
			dr.cfg = m.acmeDNS
			dnsRoute = &dr
		}
		for _, h := range siteHosts(s, mode) {
			h = normHost(h)
			switch {
			case h == "*":
				t.any = r
			case strings.HasPrefix(h, "*.") && dnsRoute != nil:
				t.wild[h[2:]] = dnsRoute
			case strings.HasPrefix(h, "*."):
				t.wild[h[2:]] = r
			default:
				t.exact[h] = r
			}
			if t.def == nil && !s.OnDemand && (h != "*" || r.manual != nil) {
				t.def, t.defName = r, h
			}
			if mode == ModeManual {
				manualStatus = append(manualStatus, manualCertStatus(h, r.manual))
			} else if !s.OnDemand {
				want[h] = mode
			}
		}
	}
	m.table.Store(t)
	m.status.setManual(manualStatus)

	// Stop managing hosts that left the config or changed mode, so their
	// retries and renewals stop.
	for h, mh := range m.managed {
		if want[h] == mh.mode {
			continue
		}
		mh.cancel()
		m.cache.RemoveManaged([]certmagic.SubjectIssuer{{Subject: h, IssuerKey: issuerKeyFor(m, mh.mode)}})
		m.status.forget(h, mh.mode)
		delete(m.managed, h)
	}
	var started []string
	var internalDone []chan struct{}
	for h, mode := range want {
		if _, ok := m.managed[h]; ok {
			continue
		}
		hctx, cancel := context.WithCancel(m.ctx)
		m.managed[h] = &managedHost{mode: mode, cancel: cancel}
		m.status.track(h, mode)
		cfg, obtainCfg := m.acme, m.acmeObtain
		switch {
		case mode == ModeInternal:
			cfg, obtainCfg = m.internal, m.internal
		case strings.HasPrefix(h, "*.") && m.acmeDNS != nil:
			cfg, obtainCfg = m.acmeDNS, m.acmeDNSObtain
		}
		done := make(chan struct{})
		prev := m.lastDone[h]
		m.lastDone[h] = done
		m.wg.Add(1)
		go m.manage(hctx, cfg, obtainCfg, h, mode, prev, done)
		started = append(started, h)
		if mode == ModeInternal {
			internalDone = append(internalDone, done)
		}
	}
	// The internal CA signs locally in milliseconds: wait for it, so an
	// internal site answers its very first handshake. ACME orders stay in
	// the background.
	wait := time.NewTimer(10 * time.Second)
	defer wait.Stop()
	for _, done := range internalDone {
		select {
		case <-done:
		case <-wait.C:
			m.log.Warn("tls: internal certificates are taking long; continuing without waiting")
			internalDone = nil
		case <-ctx.Done():
		}
		if internalDone == nil || ctx.Err() != nil {
			break
		}
	}
	m.log.Info("tls: sites applied", "managed", len(m.managed), "new", len(started), "manual", len(manualStatus), "on_demand", m.onDemandPatterns(t))
}

// manage loads host's certificate from storage or obtains it, retrying
// with backoff until it succeeds or the host leaves the config; from then
// on certmagic's maintenance renews it. The goroutine is ours (not
// certmagic's ManageAsync) so Close can wait for it, and the backoff is
// Options.RetryMin doubling.
func (m *Manager) manage(ctx context.Context, cfg, obtainCfg *certmagic.Config, host, mode string, prev <-chan struct{}, done chan<- struct{}) {
	defer m.wg.Done()
	defer close(done)
	// A previous goroutine for this host (removed, then added back) must
	// finish its clean-up before this one caches anything.
	if prev != nil {
		select {
		case <-prev:
		case <-ctx.Done():
			return
		}
	}
	defer func() {
		if ctx.Err() != nil {
			// Removed while obtaining: what was cached meanwhile goes.
			m.cache.RemoveManaged([]certmagic.SubjectIssuer{{Subject: host, IssuerKey: issuerKeyFor(m, mode)}})
		}
	}()
	delay := m.o.RetryMin
	for {
		err := m.loadOrObtain(ctx, cfg, obtainCfg, host)
		if err == nil || ctx.Err() != nil {
			return
		}
		m.status.failed(host, err, delay)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		delay = min(delay*2, maxRetryDelay)
	}
}

func (m *Manager) loadOrObtain(ctx context.Context, cfg, obtainCfg *certmagic.Config, host string) error {
	cert, err := cfg.CacheManagedCertificate(ctx, host)
	switch {
	case err == nil && !cert.NeedsRenewal(cfg):
		return nil
	case err == nil:
		// Stored but due (edged was down a while): renew before serving
		// it for a whole maintenance interval.
		if err := obtainCfg.RenewCertSync(ctx, host, false); err != nil {
			return fmt.Errorf("renewing stored certificate for %s: %w", host, err)
		}
		if _, err := cfg.CacheManagedCertificate(ctx, host); err != nil {
			return fmt.Errorf("loading renewed certificate for %s: %w", host, err)
		}
		m.cache.Remove([]string{cert.Hash()})
		return nil
	case !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("loading certificate for %s from storage: %w", host, err)
	}
	if err := obtainCfg.ObtainCertSync(ctx, host); err != nil {
		return err
	}
	if _, err := cfg.CacheManagedCertificate(ctx, host); err != nil {
		return fmt.Errorf("loading new certificate for %s: %w", host, err)
	}
	return nil
}

// promptless keeps certmagic from asking for an email address on stdin
// when it obtains "interactively" (one attempt, our own retries).
type promptless struct{ *certmagic.ACMEIssuer }

func (p promptless) PreCheck(ctx context.Context, names []string, _ bool) error {
	return p.ACMEIssuer.PreCheck(ctx, names, false)
}

// maxRetryDelay caps the backoff between attempts to obtain a certificate.
const maxRetryDelay = 6 * time.Hour

// checkStorageDir makes sure certificates can be stored before any is
// ordered (an order whose certificate cannot be saved is wasted against
// the CA's rate limits).
func checkStorageDir(dir string) error {
	hint := "run edged under systemd (StateDirectory=edged) or set [tls] storage to a writable directory"
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("certificate storage %s: %w; %s", dir, err, hint)
	}
	f, err := os.CreateTemp(dir, ".probe-*")
	if err != nil {
		return fmt.Errorf("certificate storage %s is not writable: %w; %s", dir, err, hint)
	}
	f.Close()
	os.Remove(f.Name())
	return nil
}

func (m *Manager) onDemandPatterns(t *table) int {
	n := 0
	if t.any != nil {
		n++
	}
	for _, r := range t.wild {
		if r.onDemand {
			n++
		}
	}
	for _, r := range t.exact {
		if r.onDemand {
			n++
		}
	}
	return n
}

// Close stops renewals and retries. Certificates already handed to
// connections stay valid; call it at shutdown.
func (m *Manager) Close() {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return
	}
	m.closed = true
	m.mu.Unlock()
	m.cancel()
	m.wg.Wait()
	m.cache.Stop()
}
