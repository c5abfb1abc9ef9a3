package tlsconf

import (
	"context"
	"encoding/json"
	"github.com/edgeapp/edgeapp/internal/syncbuf"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// testLog collects a Manager's log; it is printed when a test fails
// (logging to t after the test ends would panic, and certmagic's
// background work may outlive a test by a moment).
func testLog(t testing.TB) (*slog.Logger, *syncbuf.Buffer) {
	buf := &syncbuf.Buffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("manager log:\n%s", buf.String())
		}
	})
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelInfo})), buf
}

func newTestManager(t testing.TB, o Options, reg prometheus.Registerer) *Manager {
	t.Helper()
	if o.Log == nil {
		o.Log, _ = testLog(t)
	}
	if o.Storage == "" {
		o.Storage = t.TempDir()
	}
	m, err := New(o, NewMetrics(reg))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

func acmeOptions(p *pebble, storage string, challenge string, e *edge) Options {
	return Options{
		Email:          "ops@edged.test",
		CA:             p.dir,
		CARoot:         p.caRoot,
		Challenges:     []string{challenge},
		Storage:        storage,
		Profile:        "default",
		AltHTTPPort:    e.httpPort,
		AltTLSALPNPort: e.tlsPort,
	}
}

// obtain runs one Manager against pebble with one challenge type and
// checks that the site serves HTTPS verifying against pebble's root.
func testObtain(t *testing.T, challenge string) {
	httpLn, tlsLn := listen(t), listen(t)
	p := startPebble(t, pebbleOpts{
		httpPort: httpLn.Addr().(*net.TCPAddr).Port,
		tlsPort:  tlsLn.Addr().(*net.TCPAddr).Port,
	})
	storage := t.TempDir()
	reg := prometheus.NewRegistry()
	e := &edge{httpPort: httpLn.Addr().(*net.TCPAddr).Port, tlsPort: tlsLn.Addr().(*net.TCPAddr).Port}
	m := newTestManager(t, acmeOptions(p, storage, challenge, e), reg)
	startEdge(t, m, httpLn, tlsLn)

	host := "site." + strings.ReplaceAll(challenge, "-", "") + ".edged.test"
	start := time.Now()
	if err := m.Apply(context.Background(), []Site{{Hosts: []string{host}, Mode: ModeACME}}); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Apply took %s; it must not wait for issuance", d)
	}
	st := waitState(t, m, host, "valid", 60*time.Second)
	body, leaf, err := httpsGet(e.tlsPort, host, p.roots)
	if err != nil {
		t.Fatalf("HTTPS to %s after issuance: %v", host, err)
	}
	if body != "hello "+host {
		t.Errorf("body %q", body)
	}
	if !leaf.NotAfter.Equal(st.NotAfter) || st.Issuer == "" {
		t.Errorf("status %+v does not describe the served certificate (NotAfter %s)", st, leaf.NotAfter)
	}
	if got := p.orders(); got != 1 {
		t.Errorf("pebble saw %d orders, want 1", got)
	}
	if v := value(m.met.issuance.WithLabelValues("obtain", "success")); v != 1 {
		t.Errorf("issuance success metric = %v, want 1", v)
	}
	if v := value(m.met.expiry.WithLabelValues(host, ModeACME)); v != 0 && v != float64(leaf.NotAfter.Unix()) {
		t.Errorf("expiry metric %v, want %d", v, leaf.NotAfter.Unix())
	}

	// Plain HTTP still reaches the handler behind HTTPChallenge.
	resp, err := http.Get("http://127.0.0.1:" + itoa(e.httpPort) + "/x")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("plain HTTP status %d", resp.StatusCode)
	}

	// Restart: a new Manager on the same storage serves the stored
	// certificate and orders nothing.
	m.Close()
	m2 := newTestManager(t, acmeOptions(p, storage, challenge, e), nil)
	tlsLn2 := listen(t)
	e2 := startEdge(t, m2, listen(t), tlsLn2)
	if err := m2.Apply(context.Background(), []Site{{Hosts: []string{host}, Mode: ModeACME}}); err != nil {
		t.Fatal(err)
	}
	waitState(t, m2, host, "valid", 30*time.Second)
	_, leaf2, err := httpsGet(e2.tlsPort, host, p.roots)
	if err != nil {
		t.Fatalf("HTTPS after restart: %v", err)
	}
	if leaf2.SerialNumber.Cmp(leaf.SerialNumber) != 0 {
		t.Errorf("restart served a different certificate (serial %s, was %s)", leaf2.SerialNumber, leaf.SerialNumber)
	}
	if got := p.orders(); got != 1 {
		t.Errorf("after restart pebble saw %d orders, want still 1", got)
	}
}

func TestObtainHTTP01(t *testing.T)    { testObtain(t, ChallengeHTTP01) }
func TestObtainTLSALPN01(t *testing.T) { testObtain(t, ChallengeTLSALPN01) }

// TestRenewalShortLived serves HTTPS continuously while certmagic renews a
// 40-second certificate; every request must succeed and be served a
// certificate that has not expired.
func TestRenewalShortLived(t *testing.T) {
	if testing.Short() {
		t.Skip("renewal of a short-lived certificate takes about a minute")
	}
	httpLn, tlsLn := listen(t), listen(t)
	e := &edge{httpPort: httpLn.Addr().(*net.TCPAddr).Port, tlsPort: tlsLn.Addr().(*net.TCPAddr).Port}
	p := startPebble(t, pebbleOpts{httpPort: e.httpPort, tlsPort: e.tlsPort, shortlived: 40})
	o := acmeOptions(p, t.TempDir(), ChallengeTLSALPN01, e)
	o.Profile = "shortlived"
	o.RenewCheckInterval = time.Second
	o.RenewalWindowRatio = 0.5
	reg := prometheus.NewRegistry()
	m := newTestManager(t, o, reg)
	startEdge(t, m, httpLn, tlsLn)
	host := "renew.edged.test"
	if err := m.Apply(context.Background(), []Site{{Hosts: []string{host}}}); err != nil {
		t.Fatal(err)
	}
	waitState(t, m, host, "valid", 60*time.Second)

	serials := map[string]bool{}
	deadline := time.Now().Add(120 * time.Second)
	tick := time.NewTicker(50 * time.Millisecond) // pacing the load, bounded below
	defer tick.Stop()
	requests := 0
	for len(serials) < 2 && time.Now().Before(deadline) && requests < 5000 {
		<-tick.C
		_, leaf, err := httpsGet(e.tlsPort, host, p.roots)
		requests++
		if err != nil {
			t.Fatalf("request %d failed during renewal: %v", requests, err)
		}
		if time.Now().After(leaf.NotAfter) {
			t.Fatalf("request %d was served an expired certificate (NotAfter %s)", requests, leaf.NotAfter)
		}
		serials[leaf.SerialNumber.String()] = true
	}
	if len(serials) < 2 {
		t.Fatalf("saw %d certificates in %d requests, want the original and its renewal", len(serials), requests)
	}
	if v := value(m.met.issuance.WithLabelValues("renew", "success")); v < 1 {
		t.Errorf("renew success metric = %v, want >= 1", v)
	}
	t.Logf("%d requests, all succeeded, across %d certificates", requests, len(serials))
}

// TestOnDemand: names the ask hook allows get a certificate at their first
// handshake; refused names fail fast and are remembered; the issuance
// budget holds; a hook outage does not refuse stored names.
func TestOnDemand(t *testing.T) {
	httpLn, tlsLn := listen(t), listen(t)
	e := &edge{httpPort: httpLn.Addr().(*net.TCPAddr).Port, tlsPort: tlsLn.Addr().(*net.TCPAddr).Port}
	p := startPebble(t, pebbleOpts{httpPort: e.httpPort, tlsPort: e.tlsPort})

	var asked, askDown atomic.Int32
	ask := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		if askDown.Load() == 1 {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		if strings.HasPrefix(r.URL.Query().Get("domain"), "ok") {
			return // 200
		}
		http.Error(w, "no", http.StatusForbidden)
	}))
	defer ask.Close()

	storage := t.TempDir()
	o := acmeOptions(p, storage, ChallengeTLSALPN01, e)
	o.Challenges = nil // both
	o.OnDemand = &OnDemand{Ask: ask.URL + "/check", RateLimit: 1, RateInterval: time.Hour, RefuseCacheFor: time.Hour}
	m := newTestManager(t, o, nil)
	startEdge(t, m, httpLn, tlsLn)
	sites := []Site{{Hosts: []string{"*"}, OnDemand: true}}
	if err := m.Apply(context.Background(), sites); err != nil {
		t.Fatal(err)
	}

	// Allowed: the first handshake obtains the certificate.
	if _, leaf, err := httpsGet(e.tlsPort, "ok1.edged.test", p.roots); err != nil {
		t.Fatalf("allowed on-demand name: %v", err)
	} else if leaf.DNSNames[0] != "ok1.edged.test" {
		t.Errorf("served %v", leaf.DNSNames)
	}
	if n := asked.Load(); n != 1 {
		t.Errorf("ask hook called %d times, want 1", n)
	}

	// Refused: fails fast, and the refusal is remembered.
	start := time.Now()
	if _, _, err := httpsGet(e.tlsPort, "bad.edged.test", p.roots); err == nil {
		t.Fatal("refused name got a certificate")
	}
	if _, _, err := httpsGet(e.tlsPort, "bad.edged.test", p.roots); err == nil {
		t.Fatal("refused name got a certificate the second time")
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("two refused handshakes took %s", d)
	}
	if n := asked.Load(); n != 2 {
		t.Errorf("ask hook called %d times after two refusals of one name, want 2 (second from cache)", n)
	}

	// Budget: 1 per hour is used up, so a second allowed name is refused.
	if _, _, err := httpsGet(e.tlsPort, "ok2.edged.test", p.roots); err == nil {
		t.Error("second on-demand name was issued beyond the rate limit")
	}
	if got := p.orders(); got != 1 {
		t.Errorf("pebble saw %d orders, want 1", got)
	}

	// Hook outage, new process: the stored name is still served.
	m.Close()
	askDown.Store(1)
	m2 := newTestManager(t, o, nil)
	tlsLn2 := listen(t)
	e2 := startEdge(t, m2, listen(t), tlsLn2)
	if err := m2.Apply(context.Background(), sites); err != nil {
		t.Fatal(err)
	}
	before := asked.Load()
	if _, _, err := httpsGet(e2.tlsPort, "ok1.edged.test", p.roots); err != nil {
		t.Fatalf("stored on-demand name refused during a hook outage: %v", err)
	}
	if asked.Load() != before {
		t.Error("the ask hook was consulted for a name with a stored certificate")
	}
	if _, _, err := httpsGet(e2.tlsPort, "ok3.edged.test", p.roots); err == nil {
		t.Error("a new name got a certificate while the ask hook was down")
	}
	if got := p.orders(); got != 1 {
		t.Errorf("pebble saw %d orders, want 1", got)
	}
}

// TestCADownAtStart: with the CA unreachable, Apply still returns at once,
// internal and manual sites serve, the ACME site fails its handshake and
// shows the CA's error in Status.
func TestCADownAtStart(t *testing.T) {
	_, mod := pebbleBinaries(t)
	deadPort := freePort(t)
	storage := t.TempDir()
	certFile, keyFile, manualRoots := writeSelfSigned(t, t.TempDir(), "manual.edged.test")
	httpLn, tlsLn := listen(t), listen(t)
	o := Options{
		CA:       "https://127.0.0.1:" + itoa(deadPort) + "/dir",
		CARoot:   mod + "/test/certs/pebble.minica.pem",
		Storage:  storage,
		RetryMin: 500 * time.Millisecond,
	}
	reg := prometheus.NewRegistry()
	m := newTestManager(t, o, reg)
	e := startEdge(t, m, httpLn, tlsLn)
	start := time.Now()
	err := m.Apply(context.Background(), []Site{
		{Hosts: []string{"acme.edged.test"}, Mode: ModeACME},
		{Hosts: []string{"localhost", "127.0.0.1"}, Mode: ModeInternal},
		{Hosts: []string{"manual.edged.test"}, Mode: ModeManual, CertFile: certFile, KeyFile: keyFile},
	})
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Apply took %s with the CA down", d)
	}
	st := waitState(t, m, "acme.edged.test", "failed: ", 30*time.Second)
	if !strings.Contains(st.State, "connection refused") {
		t.Errorf("status does not carry the CA error: %q", st.State)
	}
	if v := value(m.met.failing.WithLabelValues("acme.edged.test", ModeACME)); v != 1 {
		t.Errorf("failing metric = %v", v)
	}
	waitState(t, m, "127.0.0.1", "valid", 30*time.Second)
	waitState(t, m, "localhost", "valid", 30*time.Second)
	if s := m.Summary(); s != "certificates: 3 valid, 1 failed (acme.edged.test)" {
		t.Errorf("summary %q", s)
	}
	waitState(t, m, "localhost", "valid", 30*time.Second)
	internalRoots := poolFromFile(t, m.InternalRoot())
	if _, _, err := httpsGet(e.tlsPort, "localhost", internalRoots); err != nil {
		t.Errorf("internal site with the CA down: %v", err)
	}
	if _, _, err := httpsGet(e.tlsPort, "manual.edged.test", manualRoots); err != nil {
		t.Errorf("manual site with the CA down: %v", err)
	}
	if _, _, err := httpsGet(e.tlsPort, "acme.edged.test", internalRoots); err == nil {
		t.Error("ACME site served something with no certificate obtained")
	}
	resp, err := http.Get("http://127.0.0.1:" + itoa(e.httpPort) + "/")
	if err != nil {
		t.Fatalf("plain HTTP with the CA down: %v", err)
	}
	resp.Body.Close()

	// The CA comes back: the retry with backoff gets the certificate.
	p := startPebble(t, pebbleOpts{httpPort: e.httpPort, tlsPort: e.tlsPort, listenPort: deadPort})
	waitState(t, m, "acme.edged.test", "valid", 60*time.Second)
	if _, _, err := httpsGet(e.tlsPort, "acme.edged.test", p.roots); err != nil {
		t.Errorf("ACME site after the CA returned: %v", err)
	}
	if v := value(m.met.failing.WithLabelValues("acme.edged.test", ModeACME)); v != 0 {
		t.Errorf("failing metric = %v after recovery", v)
	}
}

// TestSharedStorage: two edged on one storage order one certificate for a
// name between them (certmagic's lock), and the CA's HTTP-01 validation
// may reach either of them (challenges are written to the storage).
func TestSharedStorage(t *testing.T) {
	httpLn, tlsLn := listen(t), listen(t)
	e1 := &edge{httpPort: httpLn.Addr().(*net.TCPAddr).Port, tlsPort: tlsLn.Addr().(*net.TCPAddr).Port}
	p := startPebble(t, pebbleOpts{httpPort: e1.httpPort, tlsPort: e1.tlsPort})
	storage := t.TempDir()
	o := acmeOptions(p, storage, ChallengeHTTP01, e1)
	o.Log = nil // each manager its own test log
	m1 := newTestManager(t, o, nil)
	m2 := newTestManager(t, o, nil) // reachable by the CA only through m1's listener
	startEdge(t, m1, httpLn, tlsLn)
	e2 := startEdge(t, m2, listen(t), listen(t))

	// Another process on the same storage orders; the CA validates
	// through m1, which never saw the order: the challenge reaches m1
	// through the storage. m1 then serves the stored certificate.
	solo := "solo.edged.test"
	spec, _ := json.Marshal(peerConfig{Options: o, Host: solo})
	peer := exec.Command(os.Args[0], "-test.run=^$")
	peer.Env = append(os.Environ(), "TLSCONF_PEER="+string(spec))
	var peerErr strings.Builder
	peer.Stderr = &peerErr
	out, err := peer.Output()
	if err != nil {
		t.Fatalf("peer process: %v\n%s", err, peerErr.String())
	}
	if err := m1.Apply(context.Background(), []Site{{Hosts: []string{solo}}}); err != nil {
		t.Fatal(err)
	}
	st := waitState(t, m1, solo, "valid", 60*time.Second)
	if got := st.NotAfter.UTC().Format(time.RFC3339Nano); got != strings.TrimSpace(string(out)) {
		t.Errorf("m1 serves a certificate expiring %s, the peer obtained one expiring %s", got, out)
	}
	if n := p.orders(); n != 1 {
		t.Fatalf("pebble saw %d orders, want the peer's 1", n)
	}

	// Both apply the same name at once: one order between them.
	host := "shared.edged.test"
	sites := []Site{{Hosts: []string{solo, host}}}
	errs := make(chan error, 2)
	for _, m := range []*Manager{m2, m1} {
		go func() { errs <- m.Apply(context.Background(), sites) }()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	waitState(t, m1, host, "valid", 60*time.Second)
	waitState(t, m2, host, "valid", 60*time.Second)
	_, l1, err := httpsGet(e1.tlsPort, host, p.roots)
	if err != nil {
		t.Fatal(err)
	}
	_, l2, err := httpsGet(e2.tlsPort, host, p.roots)
	if err != nil {
		t.Fatal(err)
	}
	if l1.SerialNumber.Cmp(l2.SerialNumber) != 0 {
		t.Error("the two instances serve different certificates")
	}
	if _, _, err := httpsGet(e1.tlsPort, solo, p.roots); err != nil {
		t.Fatal(err)
	}
	if n := p.orders(); n != 2 {
		t.Errorf("pebble saw %d orders for two names from two instances on one storage, want 2", n)
	}
}
