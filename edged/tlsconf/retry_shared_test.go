package tlsconf

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"
)

// TestFailedNodePicksUpSharedCertificate: an edged whose attempt failed
// serves the certificate another edged on the same storage obtained, at
// its next retry, without ordering again.
func TestFailedNodePicksUpSharedCertificate(t *testing.T) {
	port := freePort(t)
	p := startPebble(t, pebbleOpts{httpPort: port, tlsPort: freePort(t)})
	storage := t.TempDir()
	host := "shared.edged.test"
	o := acmeOptions(p, storage, ChallengeHTTP01, &edge{httpPort: port, tlsPort: 1})
	o.RetryMin = 2 * time.Second
	// The challenge port is held by something that hangs up at once, so
	// a's validation fails (and certmagic cannot serve it itself).
	blocker, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := blocker.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	a := newTestManager(t, o, nil)
	if err := a.Apply(context.Background(), []Site{{Hosts: []string{host}}}); err != nil {
		t.Fatal(err)
	}
	waitState(t, a, host, "failed", 60*time.Second) // nothing answers the challenge
	ordersBefore := p.orders()

	b := newTestManager(t, acmeOptions(p, storage, ChallengeHTTP01, &edge{httpPort: port, tlsPort: 1}), nil)
	blocker.Close()
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	startEdge(t, b, ln, listen(t))
	if err := b.Apply(context.Background(), []Site{{Hosts: []string{host}}}); err != nil {
		t.Fatal(err)
	}
	waitState(t, b, host, "valid", 60*time.Second)
	ea := startEdge(t, a, listen(t), listen(t))
	deadline := time.Now().Add(60 * time.Second)
	for {
		_, _, err := httpsGet(ea.tlsPort, host, p.roots)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a does not serve the certificate b obtained: %v", err)
		}
		time.Sleep(100 * time.Millisecond) // a's retry is in the background
	}
	waitState(t, a, host, "valid", 60*time.Second)
	if got := p.orders() - ordersBefore; got != 1 {
		t.Errorf("%d orders after the failed one, want 1 (b's)", got)
	}
}
