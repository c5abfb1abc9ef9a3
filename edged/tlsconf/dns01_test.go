package tlsconf

import (
	"context"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgeapp/edgeapp/edged/tlsconf/rfc2136/knottest"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// DNS-01 end to end: a real Knot server on loopback accepts the TSIG-signed
// updates, Pebble's validation authority asks that same server for the
// TXT record, and certmagic's propagation check asks it too (Resolvers).

func dnsOptions(p *pebble, k *knottest.Server, e *edge) Options {
	o := acmeOptions(p, "", "", e)
	o.Challenges = nil // http-01, tls-alpn-01 and, with DNS, dns-01
	o.DNS = &DNS{Server: k.Addr, KeyName: k.KeyName, SecretFile: k.KeyFile, Resolvers: []string{k.Addr}, PropagationTimeout: 30 * time.Second}
	return o
}

func soaSerial(t *testing.T, k *knottest.Server) uint32 {
	t.Helper()
	r, err := k.Query(k.Zone, dns.TypeSOA)
	if err != nil || len(r.Answer) == 0 {
		t.Fatalf("SOA of %s: %v", k.Zone, err)
	}
	return r.Answer[0].(*dns.SOA).Serial
}

// TestDNS01Wildcard obtains *.example.test by DNS-01 and example.test by
// HTTP-01 in one site, serves any name under the wildcard, and leaves no
// challenge record behind.
func TestDNS01Wildcard(t *testing.T) {
	k := knottest.Start(t, "example.test", false)
	httpLn, tlsLn := listen(t), listen(t)
	e := &edge{httpPort: httpLn.Addr().(*net.TCPAddr).Port, tlsPort: tlsLn.Addr().(*net.TCPAddr).Port}
	p := startPebble(t, pebbleOpts{httpPort: e.httpPort, tlsPort: e.tlsPort, dnsServer: k.Addr})
	m := newTestManager(t, dnsOptions(p, k, e), nil)
	startEdge(t, m, httpLn, tlsLn)
	serial0 := soaSerial(t, k)

	if err := m.Apply(context.Background(), []Site{{Hosts: []string{"*.example.test", "example.test"}}}); err != nil {
		t.Fatal(err)
	}
	waitState(t, m, "*.example.test", "valid", 90*time.Second)
	waitState(t, m, "example.test", "valid", 90*time.Second)
	for _, name := range []string{"a.example.test", "www.example.test"} {
		body, leaf, err := httpsGet(e.tlsPort, name, p.roots)
		if err != nil {
			t.Fatalf("HTTPS to %s: %v", name, err)
		}
		if body != "hello "+name || !slices.Contains(leaf.DNSNames, "*.example.test") {
			t.Fatalf("%s: body %q, certificate for %v", name, body, leaf.DNSNames)
		}
	}
	_, apex, err := httpsGet(e.tlsPort, "example.test", p.roots)
	if err != nil || !slices.Contains(apex.DNSNames, "example.test") {
		t.Fatalf("HTTPS to the apex: %v", err)
	}
	// The record was added and removed: two updates, nothing left.
	if s := soaSerial(t, k); s < serial0+2 {
		t.Errorf("zone serial %d -> %d: want at least an add and a delete", serial0, s)
	}
	if txt := k.TXT("_acme-challenge.example.test"); len(txt) != 0 {
		t.Errorf("challenge record left in the zone: %q", txt)
	}
	if !strings.Contains(k.Log(), "DDNS, finished") {
		t.Errorf("knot applied no dynamic update:\n%s", k.Log())
	}
}

// TestDNS01Refused: while the DNS server refuses updates the status says
// so (with the server's reason) and edged retries with backoff; once the
// server accepts them the certificate arrives with no action on edged.
func TestDNS01Refused(t *testing.T) {
	k := knottest.Start(t, "example.test", true)
	httpLn, tlsLn := listen(t), listen(t)
	e := &edge{httpPort: httpLn.Addr().(*net.TCPAddr).Port, tlsPort: tlsLn.Addr().(*net.TCPAddr).Port}
	p := startPebble(t, pebbleOpts{httpPort: e.httpPort, tlsPort: e.tlsPort, dnsServer: k.Addr})
	o := dnsOptions(p, k, e)
	o.Challenges = []string{ChallengeDNS01} // every name by DNS-01
	o.RetryMin = 500 * time.Millisecond
	log, logBuf := testLog(t)
	o.Log = log
	m := newTestManager(t, o, prometheus.NewRegistry())
	startEdge(t, m, httpLn, tlsLn)

	host := "*.example.test"
	start := time.Now()
	if err := m.Apply(context.Background(), []Site{{Hosts: []string{host}}}); err != nil {
		t.Fatal(err)
	}
	st := waitState(t, m, host, "failed", 60*time.Second)
	if !strings.Contains(st.LastError, "refused the update") || !strings.Contains(st.LastError, k.Addr) {
		t.Fatalf("status error does not say the DNS server refused: %q", st.LastError)
	}
	if strings.Contains(logBuf.String(), k.Secret) || strings.Contains(st.LastError, k.Secret) {
		t.Fatal("the TSIG secret appears in the log or the status")
	}
	// Let it fail a few times (retries 0.5s, then 1s later), then accept
	// updates.
	failures := m.met.issuance.WithLabelValues("obtain", "failure")
	deadline := time.Now().Add(30 * time.Second)
	for value(failures) < 3 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond) // polling background retries
	}
	if n := value(failures); n < 3 {
		t.Fatalf("%v failed attempts in 30s, want retries", n)
	}
	if d := time.Since(start); d < 1500*time.Millisecond {
		t.Errorf("3 attempts within %s: no backoff (want 0.5s, then 1s between them)", d)
	}
	k.SetLocked(false)
	waitState(t, m, host, "valid", 90*time.Second)
	if _, leaf, err := httpsGet(e.tlsPort, "x.example.test", p.roots); err != nil || !slices.Contains(leaf.DNSNames, host) {
		t.Fatalf("HTTPS after the server accepted updates: %v", err)
	}
	if txt := k.TXT("_acme-challenge.example.test"); len(txt) != 0 {
		t.Errorf("challenge record left in the zone: %q", txt)
	}
}
