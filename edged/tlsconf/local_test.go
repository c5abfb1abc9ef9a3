package tlsconf

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TestInternalCA: the internal CA is created in storage, its root is
// exported, leaves verify through the intermediate, and a restart reuses
// both the CA and the stored leaf.
func TestInternalCA(t *testing.T) {
	storage := t.TempDir()
	m := newTestManager(t, Options{Storage: storage}, prometheus.NewRegistry())
	e := startEdge(t, m, listen(t), listen(t))
	sites := []Site{{Hosts: []string{"localhost", "app.lan", "*.dev.lan", "127.0.0.1"}, Mode: ModeInternal}}
	if err := m.Apply(context.Background(), sites); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(storage, "internal-ca", "root.crt")
	if m.InternalRoot() != root {
		t.Fatalf("InternalRoot %q, want %q", m.InternalRoot(), root)
	}
	if fi, err := os.Stat(filepath.Join(storage, "internal-ca", "root.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("root key: %v %v", fi, err)
	}
	roots := poolFromFile(t, root)
	for _, h := range []string{"localhost", "app.lan"} {
		waitState(t, m, h, "valid", 30*time.Second)
	}
	_, leaf, err := httpsGet(e.tlsPort, "app.lan", roots)
	if err != nil {
		t.Fatalf("internal site: %v", err)
	}
	if life := leaf.NotAfter.Sub(leaf.NotBefore); life > 8*24*time.Hour {
		t.Errorf("internal leaf lives %s, want about 7 days", life)
	}
	waitState(t, m, "*.dev.lan", "valid", 30*time.Second)
	if _, wl, err := httpsGet(e.tlsPort, "x.dev.lan", roots); err != nil {
		t.Errorf("wildcard internal site: %v", err)
	} else if wl.DNSNames[0] != "*.dev.lan" {
		t.Errorf("wildcard served %v", wl.DNSNames)
	}
	// No SNI (a client dialing the IP): the site listing that IP.
	waitState(t, m, "127.0.0.1", "valid", 30*time.Second)
	conn, err := tls.Dial("tcp", "127.0.0.1:"+itoa(e.tlsPort), &tls.Config{RootCAs: roots})
	if err != nil {
		t.Errorf("handshake without SNI: %v", err)
	} else {
		conn.Close()
	}
	// Unknown names fail.
	if _, _, err := httpsGet(e.tlsPort, "other.example", roots); err == nil {
		t.Error("a name no site lists got a certificate")
	}

	rootBefore, _ := os.ReadFile(root)
	m.Close()
	m2 := newTestManager(t, Options{Storage: storage}, nil)
	e2 := startEdge(t, m2, listen(t), listen(t))
	if err := m2.Apply(context.Background(), sites); err != nil {
		t.Fatal(err)
	}
	waitState(t, m2, "app.lan", "valid", 30*time.Second)
	_, leaf2, err := httpsGet(e2.tlsPort, "app.lan", roots)
	if err != nil {
		t.Fatalf("after restart: %v", err)
	}
	if leaf2.SerialNumber.Cmp(leaf.SerialNumber) != 0 {
		t.Error("restart issued a new internal leaf instead of reusing the stored one")
	}
	if rootAfter, _ := os.ReadFile(root); !bytes.Equal(rootBefore, rootAfter) {
		t.Error("restart replaced the internal root")
	}
}

// TestManualReload: manual files are re-read on every Apply; a broken file
// keeps the previous set.
func TestManualReload(t *testing.T) {
	dir := t.TempDir()
	m := newTestManager(t, Options{Storage: t.TempDir()}, prometheus.NewRegistry())
	e := startEdge(t, m, listen(t), listen(t))
	certFile, keyFile, rootsA := writeSelfSigned(t, dir, "files.edged.test")
	sites := []Site{{Hosts: []string{"files.edged.test"}, Mode: ModeManual, CertFile: certFile, KeyFile: keyFile}}
	if err := m.Apply(context.Background(), sites); err != nil {
		t.Fatal(err)
	}
	_, a, err := httpsGet(e.tlsPort, "files.edged.test", rootsA)
	if err != nil {
		t.Fatal(err)
	}
	_, _, rootsB := writeSelfSigned(t, dir, "files.edged.test") // same paths, new cert
	if err := m.Apply(context.Background(), sites); err != nil {
		t.Fatal(err)
	}
	_, b, err := httpsGet(e.tlsPort, "files.edged.test", rootsB)
	if err != nil {
		t.Fatalf("after reload: %v", err)
	}
	if a.SerialNumber.Cmp(b.SerialNumber) == 0 {
		t.Fatal("reload kept serving the old certificate")
	}
	st := m.Status()
	if len(st) != 1 || st[0].Mode != ModeManual || st[0].State != "valid" || !st[0].NotAfter.Equal(b.NotAfter) {
		t.Errorf("status %+v", st)
	}

	// A key that does not match: Apply fails and B stays.
	otherDir := t.TempDir()
	_, otherKey, _ := writeSelfSigned(t, otherDir, "x.test")
	keyPEM, _ := os.ReadFile(otherKey)
	os.WriteFile(keyFile, keyPEM, 0o600)
	err = m.Apply(context.Background(), sites)
	var se *SiteError
	if !errors.As(err, &se) || se.Index != 0 || se.Field != "cert" {
		t.Fatalf("mismatched key: err %v", err)
	}
	if _, c, err := httpsGet(e.tlsPort, "files.edged.test", rootsB); err != nil || c.SerialNumber.Cmp(b.SerialNumber) != 0 {
		t.Fatalf("after a failed reload the previous certificate must stay: %v", err)
	}
}

func TestValidateSites(t *testing.T) {
	dir := t.TempDir()
	cert, key, _ := writeSelfSigned(t, dir, "m.test")
	_, otherKey, _ := writeSelfSigned(t, t.TempDir(), "o.test")
	cases := []struct {
		name  string
		sites []Site
		want  string // "" = valid
	}{
		{"acme", []Site{{Hosts: []string{"a.test", "www.a.test"}}}, ""},
		{"off needs no hosts", []Site{{Mode: ModeOff}}, ""},
		{"internal wildcard", []Site{{Hosts: []string{"*.lan"}, Mode: ModeInternal}}, ""},
		{"manual", []Site{{Hosts: []string{"m.test"}, Mode: ModeManual, CertFile: cert, KeyFile: key}}, ""},
		{"on-demand any", []Site{{Hosts: []string{"*"}, OnDemand: true}}, ""},
		{"on-demand wildcard", []Site{{Hosts: []string{"*.saas.test"}, OnDemand: true}}, ""},
		{"acme wildcard", []Site{{Hosts: []string{"*.a.test"}}}, "[tls.dns]"},
		{"star without on-demand", []Site{{Hosts: []string{"*"}, Mode: ModeInternal}}, "on_demand"},
		{"manual default", []Site{{Mode: ModeManual, CertFile: cert, KeyFile: key}}, ""},
		{"manual star", []Site{{Hosts: []string{"*"}, Mode: ModeManual, CertFile: cert, KeyFile: key}}, ""},
		{"bad wildcard", []Site{{Hosts: []string{"a.*.test"}, Mode: ModeInternal}}, "leftmost label"},
		{"unknown mode", []Site{{Hosts: []string{"a.test"}, Mode: "auto"}}, "unknown tls mode"},
		{"no hosts", []Site{{Mode: ModeInternal}}, "at least one host"},
		{"port in host", []Site{{Hosts: []string{"a.test:443"}}}, "bare name"},
		{"duplicate", []Site{{Hosts: []string{"a.test"}}, {Hosts: []string{"A.test"}, Mode: ModeInternal}}, "already in site[0]"},
		{"on-demand internal", []Site{{Hosts: []string{"a.test"}, Mode: ModeInternal, OnDemand: true}}, "only with tls = \"acme\""},
		{"manual no key", []Site{{Hosts: []string{"m.test"}, Mode: ModeManual, CertFile: cert}}, "both cert and key"},
		{"manual missing file", []Site{{Hosts: []string{"m.test"}, Mode: ModeManual, CertFile: dir + "/nope.pem", KeyFile: key}}, "no such file"},
		{"manual wrong key", []Site{{Hosts: []string{"m.test"}, Mode: ModeManual, CertFile: cert, KeyFile: otherKey}}, "does not match"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := Validate(Options{OnDemand: &OnDemand{Ask: "http://127.0.0.1:1/ask"}}, c.sites)
			if c.want == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
			var se *SiteError
			if !errors.As(err, &se) {
				t.Errorf("error is not a *SiteError: %T", err)
			}
		})
	}

	// Validate adds the options: on-demand needs an ask URL.
	od := []Site{{Hosts: []string{"*"}, OnDemand: true}}
	if err := Validate(Options{}, od); err == nil || !strings.Contains(err.Error(), "ask") {
		t.Errorf("on-demand without ask: %v", err)
	}
	if err := Validate(Options{OnDemand: &OnDemand{Ask: "http://127.0.0.1:1/ask"}}, od); err != nil {
		t.Errorf("on-demand with ask: %v", err)
	}
	for _, o := range []Options{
		{KeyType: "dsa"}, {Challenges: []string{"dns-01"}}, {CA: "http://insecure/dir"},
		{CARoot: dir + "/missing.pem"}, {RenewalWindowRatio: 1.5},
	} {
		if err := Validate(o, nil); err == nil {
			t.Errorf("options %+v accepted", o)
		}
		if _, err := New(o, nil); err == nil {
			t.Errorf("New accepted options %+v", o)
		}
	}
	if err := Validate(Options{CA: CAStaging, KeyType: "p384", Challenges: []string{"http-01"}}, nil); err != nil {
		t.Errorf("good options: %v", err)
	}

	// DNS-01: the key file is read at validation; wildcards become valid.
	keyFile := filepath.Join(dir, "tsig.key")
	os.WriteFile(keyFile, []byte("key \"edged\" { algorithm hmac-sha256; secret \"c2VjcmV0LXNlY3JldC1zZWNyZXQ=\"; };\n"), 0o600)
	dnsOK := &DNS{Server: "127.0.0.1:53", SecretFile: keyFile}
	wild := []Site{{Hosts: []string{"*.a.test", "a.test"}}}
	if err := Validate(Options{DNS: dnsOK}, wild); err != nil {
		t.Errorf("wildcard with [tls.dns]: %v", err)
	}
	if err := Validate(Options{DNS: dnsOK, Challenges: []string{"dns-01"}}, wild); err != nil {
		t.Errorf("wildcard with dns-01 only: %v", err)
	}
	for _, c := range []struct {
		o     Options
		field string
		want  string
	}{
		{Options{Challenges: []string{"dns-01"}}, "challenges", "needs [tls.dns]"},
		{Options{DNS: dnsOK, Challenges: []string{"http-01"}}, "challenges", "does not list dns-01"},
		{Options{DNS: &DNS{Server: "127.0.0.1:53", SecretFile: dir + "/nope"}}, "dns.tsig_secret_file", "no such file"},
		{Options{DNS: &DNS{SecretFile: keyFile}}, "dns.server", "no server"},
		{Options{DNS: &DNS{Server: "ns:53", SecretFile: keyFile, KeyName: "other"}}, "dns.tsig_secret_file", `no key "other"`},
		{Options{DNS: &DNS{Server: "ns:53", SecretFile: keyFile, Algorithm: "md5"}}, "dns.tsig_algorithm", "want one of"},
		{Options{DNS: &DNS{Server: "ns:53", SecretFile: keyFile, Resolvers: []string{"a b"}}}, "dns.resolvers", "host or host:port"},
	} {
		err := Validate(c.o, nil)
		var oe *OptionError
		if !errors.As(err, &oe) || oe.Field != c.field || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: err = %v, want an OptionError for %s saying %q", c.o, err, c.field, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "c2VjcmV0") {
			t.Errorf("the error shows the secret: %v", err)
		}
	}

	// Apply refuses on-demand sites without the ask hook.
	m := newTestManager(t, Options{Storage: t.TempDir()}, nil)
	if err := m.Apply(context.Background(), od); err == nil {
		t.Error("Apply configured on-demand TLS without an ask URL")
	}
}

func TestTLSConfigDefaults(t *testing.T) {
	m := newTestManager(t, Options{Storage: t.TempDir()}, nil)
	c := m.TLSConfig()
	if c != m.TLSConfig() {
		t.Error("TLSConfig must return one stable object")
	}
	if c.MinVersion != tls.VersionTLS12 {
		t.Errorf("MinVersion %x", c.MinVersion)
	}
	want := []string{"h2", "http/1.1", "acme-tls/1"}
	if strings.Join(c.NextProtos, ",") != strings.Join(want, ",") {
		t.Errorf("NextProtos %v", c.NextProtos)
	}
	for _, id := range c.CipherSuites {
		name := tls.CipherSuiteName(id)
		if !strings.Contains(name, "ECDHE") || !(strings.Contains(name, "GCM") || strings.Contains(name, "CHACHA20")) {
			t.Errorf("weak cipher suite %s", name)
		}
	}
	// h2 is negotiated through the listener.
	if err := m.Apply(context.Background(), []Site{{Hosts: []string{"h2.lan"}, Mode: ModeInternal}}); err != nil {
		t.Fatal(err)
	}
	waitState(t, m, "h2.lan", "valid", 30*time.Second)
	ln := tls.NewListener(listen(t), c)
	defer ln.Close()
	go func() {
		conn, err := ln.Accept()
		if err == nil {
			conn.(*tls.Conn).Handshake()
			conn.Close()
		}
	}()
	conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{ServerName: "h2.lan", RootCAs: poolFromFile(t, m.InternalRoot()), NextProtos: []string{"h2", "http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if p := conn.ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Errorf("ALPN %q, want h2", p)
	}
	if v := conn.ConnectionState().Version; v != tls.VersionTLS13 {
		t.Errorf("version %x, want TLS 1.3", v)
	}
	// TLS 1.1 is refused.
	_, err = tls.Dial("tcp", ln.Addr().String(), &tls.Config{ServerName: "h2.lan", InsecureSkipVerify: true, MaxVersion: tls.VersionTLS11})
	if err == nil {
		t.Error("TLS 1.1 handshake succeeded")
	}
}

// TestManualDefault: a manual certificate without hosts answers every
// name no other site claims, and handshakes without SNI.
func TestManualDefault(t *testing.T) {
	m := newTestManager(t, Options{Storage: t.TempDir()}, nil)
	e := startEdge(t, m, listen(t), listen(t))
	certFile, keyFile, roots := writeSelfSigned(t, t.TempDir(), "fallback.test")
	if err := m.Apply(context.Background(), []Site{
		{Hosts: []string{"app.lan"}, Mode: ModeInternal},
		{Mode: ModeManual, CertFile: certFile, KeyFile: keyFile},
	}); err != nil {
		t.Fatal(err)
	}
	conn, err := tls.Dial("tcp", "127.0.0.1:"+itoa(e.tlsPort), &tls.Config{ServerName: "unknown.example", InsecureSkipVerify: true})
	if err != nil {
		t.Fatalf("unknown name with a default manual cert: %v", err)
	}
	if cn := conn.ConnectionState().PeerCertificates[0].Subject.CommonName; cn != "fallback.test" {
		t.Errorf("served %q", cn)
	}
	conn.Close()
	if _, _, err := httpsGet(e.tlsPort, "fallback.test", roots); err != nil {
		t.Errorf("fallback.test: %v", err)
	}
}

// TestSessionTickets: resumption works, also through a Clone of the
// config, survives one key rotation and not two.
func TestSessionTickets(t *testing.T) {
	m := newTestManager(t, Options{Storage: t.TempDir()}, nil)
	if err := m.Apply(context.Background(), []Site{{Hosts: []string{"resume.lan"}, Mode: ModeInternal}}); err != nil {
		t.Fatal(err)
	}
	waitState(t, m, "resume.lan", "valid", 30*time.Second)
	ln := tls.NewListener(listen(t), m.TLSConfig().Clone())
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				c.Write([]byte("x")) // the client reads it, and the TLS 1.3 ticket with it
				c.Close()
			}()
		}
	}()
	client := &tls.Config{ServerName: "resume.lan", RootCAs: poolFromFile(t, m.InternalRoot()), ClientSessionCache: tls.NewLRUClientSessionCache(4)}
	connect := func() bool {
		t.Helper()
		c, err := tls.Dial("tcp", ln.Addr().String(), client)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		b := make([]byte, 1)
		if _, err := c.Read(b); err != nil {
			t.Fatal(err)
		}
		return c.ConnectionState().DidResume
	}
	if connect() {
		t.Fatal("first connection resumed")
	}
	if !connect() {
		t.Fatal("second connection did not resume")
	}
	m.tickets.rotate()
	if !connect() {
		t.Fatal("a ticket from the previous key was refused")
	}
	m.tickets.rotate()
	m.tickets.rotate()
	if connect() {
		t.Fatal("a ticket two rotations old was accepted")
	}
}

// TestExpiryWarning: a certificate close to expiry and not renewed is
// warned about once, flagged in Status and on the overdue metric.
func TestExpiryWarning(t *testing.T) {
	logger, logs := testLog(t)
	reg := prometheus.NewRegistry()
	m := newTestManager(t, Options{Storage: t.TempDir(), InternalLifetime: time.Hour, Log: logger}, reg)
	certFile, keyFile, _ := writeCert(t, t.TempDir(), time.Now().Add(3*24*time.Hour), "soon.test")
	if err := m.Apply(context.Background(), []Site{
		{Hosts: []string{"short.lan"}, Mode: ModeInternal},
		{Hosts: []string{"soon.test"}, Mode: ModeManual, CertFile: certFile, KeyFile: keyFile},
	}); err != nil {
		t.Fatal(err)
	}
	waitState(t, m, "short.lan", "valid", 30*time.Second)

	m.status.check(time.Now())
	if v := value(m.met.overdue.WithLabelValues("short.lan", ModeInternal)); v != 0 {
		t.Errorf("fresh certificate flagged overdue (%v)", v)
	}
	later := time.Now().Add(55 * time.Minute) // ~5 of 61 minutes left
	m.status.check(later)
	m.status.check(later)
	if n := strings.Count(logs.String(), `certificate is close to expiry and has not been renewed; renewal keeps being retried" host=short.lan`); n != 1 {
		t.Errorf("overdue warning logged %d times, want once:\n%s", n, logs.String())
	}
	if v := value(m.met.overdue.WithLabelValues("short.lan", ModeInternal)); v != 1 {
		t.Errorf("overdue metric %v, want 1", v)
	}
	if !strings.Contains(logs.String(), `manual certificate expires soon; replace the file and reload" host=soon.test`) {
		t.Errorf("no warning for the manual certificate expiring in 3 days:\n%s", logs.String())
	}
	for _, s := range m.Status() {
		if s.Host == "soon.test" && !s.RenewalOverdue {
			t.Errorf("status of soon.test: %+v", s)
		}
	}
	if v := value(m.met.expiry.WithLabelValues("short.lan", ModeInternal)); v < float64(time.Now().Unix()) {
		t.Errorf("expiry metric %v", v)
	}
}

// TestApplyChanges: reloads add, remove and re-mode hosts while handshakes
// go on; removed hosts stop being served and leave Status.
func TestApplyChanges(t *testing.T) {
	m := newTestManager(t, Options{Storage: t.TempDir()}, prometheus.NewRegistry())
	e := startEdge(t, m, listen(t), listen(t))
	ctx := context.Background()
	if err := m.Apply(ctx, []Site{{Hosts: []string{"a.lan", "b.lan"}, Mode: ModeInternal}}); err != nil {
		t.Fatal(err)
	}
	waitState(t, m, "a.lan", "valid", 30*time.Second)
	waitState(t, m, "b.lan", "valid", 30*time.Second)
	roots := poolFromFile(t, m.InternalRoot())

	// Handshakes for b.lan keep going through every reload below.
	done := make(chan error, 1)
	stop := make(chan struct{})
	go func() {
		for i := 0; i < 2000; i++ {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			if _, _, err := httpsGet(e.tlsPort, "b.lan", roots); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()

	certFile, keyFile, manualRoots := writeSelfSigned(t, t.TempDir(), "a.lan")
	for i := 0; i < 5; i++ {
		if err := m.Apply(ctx, []Site{{Hosts: []string{"b.lan", "c.lan"}, Mode: ModeInternal}}); err != nil {
			t.Fatal(err)
		}
		if err := m.Apply(ctx, []Site{
			{Hosts: []string{"b.lan"}, Mode: ModeInternal},
			{Hosts: []string{"a.lan"}, Mode: ModeManual, CertFile: certFile, KeyFile: keyFile},
		}); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	if err := <-done; err != nil {
		t.Fatalf("b.lan failed during reloads: %v", err)
	}
	if _, _, err := httpsGet(e.tlsPort, "a.lan", manualRoots); err != nil {
		t.Errorf("a.lan after switching to a manual certificate: %v", err)
	}
	if _, _, err := httpsGet(e.tlsPort, "c.lan", roots); err == nil {
		t.Error("c.lan is still served after it left the config")
	}
	hosts := map[string]string{}
	for _, s := range m.Status() {
		hosts[s.Host] = s.Mode
	}
	if len(hosts) != 2 || hosts["a.lan"] != ModeManual || hosts["b.lan"] != ModeInternal {
		t.Errorf("status hosts %v", hosts)
	}
}

// TestInternalRenewal: certmagic's maintenance renews internal leaves like
// ACME ones, and handshakes go on meanwhile.
func TestInternalRenewal(t *testing.T) {
	reg := prometheus.NewRegistry()
	// A 5 s leaf (backdated 1 min) is always inside a 0.5 renewal window.
	m := newTestManager(t, Options{Storage: t.TempDir(), InternalLifetime: 5 * time.Second, RenewCheckInterval: 500 * time.Millisecond, RenewalWindowRatio: 0.5}, reg)
	e := startEdge(t, m, listen(t), listen(t))
	if err := m.Apply(context.Background(), []Site{{Hosts: []string{"renew.lan"}, Mode: ModeInternal}}); err != nil {
		t.Fatal(err)
	}
	waitState(t, m, "renew.lan", "valid", 30*time.Second)
	roots := poolFromFile(t, m.InternalRoot())
	seen := map[string]bool{}
	deadline := time.Now().Add(30 * time.Second)
	for len(seen) < 2 && time.Now().Before(deadline) {
		_, leaf, err := httpsGet(e.tlsPort, "renew.lan", roots)
		if err != nil {
			t.Fatalf("handshake during internal renewal: %v", err)
		}
		seen[leaf.SerialNumber.String()] = true
	}
	if len(seen) < 2 {
		t.Fatal("the internal certificate was not renewed")
	}
	if v := value(m.met.issuance.WithLabelValues("renew", "success")); v < 1 {
		t.Errorf("renew success metric %v", v)
	}
}

// TestInternalIntermediateRefresh: an intermediate near its end is
// replaced at the next issuance, under the same root.
func TestInternalIntermediateRefresh(t *testing.T) {
	storage := t.TempDir()
	m := newTestManager(t, Options{Storage: storage}, nil)
	if err := m.Apply(context.Background(), []Site{{Hosts: []string{"a.lan"}, Mode: ModeInternal}}); err != nil {
		t.Fatal(err)
	}
	waitState(t, m, "a.lan", "valid", 30*time.Second)
	ca := m.internalCA.Load().ca
	// Pretend a year went by: an intermediate with a week left.
	old, oldKey, err := newCACert(ca.root, ca.rootKey, "edged internal intermediate CA", 7*24*time.Hour, 0)
	if err != nil {
		t.Fatal(err)
	}
	ca.mu.Lock()
	ca.inter, ca.interKey = old, oldKey
	ca.mu.Unlock()
	if err := writePair(context.Background(), ca.st, "intermediate", old, oldKey); err != nil {
		t.Fatal(err)
	}
	csrKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csrDER, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: []string{"b.lan"}}, csrKey)
	csr, _ := x509.ParseCertificateRequest(csrDER)
	issued, err := ca.Issue(context.Background(), csr)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := tls.X509KeyPair(issued.Certificate, mustECKeyPEM(t, csrKey))
	if err != nil {
		t.Fatal(err)
	}
	inter, _ := x509.ParseCertificate(chain.Certificate[1])
	if time.Until(inter.NotAfter) < 300*24*time.Hour {
		t.Errorf("intermediate not replaced: ends %s", inter.NotAfter)
	}
	leaf, _ := x509.ParseCertificate(chain.Certificate[0])
	pool := poolFromFile(t, m.InternalRoot())
	inters := x509.NewCertPool()
	inters.AddCert(inter)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inters, DNSName: "b.lan"}); err != nil {
		t.Errorf("leaf from the new intermediate does not verify: %v", err)
	}
	onDisk, _, err := readPair(context.Background(), ca.st, "intermediate")
	if err != nil || !onDisk.Equal(inter) {
		t.Errorf("new intermediate not stored: %v", err)
	}
}

func mustECKeyPEM(t *testing.T, k *ecdsa.PrivateKey) []byte {
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
}

// TestStorageNotWritable: Apply says where certificates cannot be stored
// and what to do, before anything is ordered.
func TestStorageNotWritable(t *testing.T) {
	// A regular file where the directory should be stops root too.
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o600)
	m := newTestManager(t, Options{Storage: filepath.Join(file, "state")}, nil)
	err := m.Apply(context.Background(), []Site{{Hosts: []string{"a.lan"}, Mode: ModeInternal}})
	if err == nil || !strings.Contains(err.Error(), "[tls] storage") {
		t.Fatalf("Apply with unusable storage: %v", err)
	}
	// Manual certificates need no storage.
	cert, key, _ := writeSelfSigned(t, t.TempDir(), "m.test")
	if err := m.Apply(context.Background(), []Site{{Hosts: []string{"m.test"}, Mode: ModeManual, CertFile: cert, KeyFile: key}}); err != nil {
		t.Fatalf("manual site with unusable storage: %v", err)
	}
}
