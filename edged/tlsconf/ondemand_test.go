package tlsconf

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
)

// askServer is a real ask hook: it counts calls, allows names starting with
// "ok", and can be made to hold calls or fail.
type askServer struct {
	*httptest.Server
	calls, inFlight, maxInFlight atomic.Int64
	hold                         chan struct{} // non-nil: calls wait for it
	fail                         atomic.Bool
}

func newAskServer(t *testing.T, hold bool) *askServer {
	a := &askServer{}
	if hold {
		a.hold = make(chan struct{})
	}
	a.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.calls.Add(1)
		n := a.inFlight.Add(1)
		defer a.inFlight.Add(-1)
		for {
			m := a.maxInFlight.Load()
			if n <= m || a.maxInFlight.CompareAndSwap(m, n) {
				break
			}
		}
		if a.hold != nil {
			<-a.hold
		}
		if a.fail.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		if strings.HasPrefix(r.URL.Query().Get("domain"), "ok") {
			return
		}
		http.Error(w, "no", http.StatusForbidden)
	}))
	t.Cleanup(a.Close)
	return a
}

func newGate(t *testing.T, a *askServer, public bool, o OnDemand) *onDemandGate {
	o.Ask = a.URL + "/ask"
	g, err := newOnDemandGate(&o, &certmagic.FileStorage{Path: t.TempDir()}, func() []string { return []string{"issuer"} }, public, nil)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// TestAskNeverForNamesAPublicCACannotIssue: with a public CA, IP
// literals, localhost, single labels and special-use names are refused
// without asking; with a private CA they are asked about.
func TestAskNeverForNamesAPublicCACannotIssue(t *testing.T) {
	a := newAskServer(t, false)
	names := []string{"127.0.0.1", "::1", "localhost", "intranet", "ok.local", "ok.internal", "ok.test", "ok.localhost", "ok.home.arpa", "bad name.example.com", "-x.example.com"}
	pub := newGate(t, a, true, OnDemand{})
	for _, n := range names {
		if err := pub.decide(context.Background(), n); err == nil {
			t.Errorf("%s allowed", n)
		}
	}
	if c := a.calls.Load(); c != 0 {
		t.Fatalf("the ask hook was called %d times for names a public CA cannot issue for", c)
	}
	if err := pub.decide(context.Background(), "ok.example.com"); err != nil {
		t.Fatalf("a public name: %v", err)
	}
	priv := newGate(t, a, false, OnDemand{})
	if err := priv.decide(context.Background(), "ok.internal"); err != nil || a.calls.Load() != 2 {
		t.Fatalf("a private CA's name: %v, %d calls", err, a.calls.Load())
	}
}

// TestAskCallsAreCapped: 300 handshakes with random names (the reviewer's
// probe) make at most ask_concurrency calls at once and about ask_rate a
// second; concurrent handshakes for one name share one call.
func TestAskCallsAreCapped(t *testing.T) {
	a := newAskServer(t, true)
	g := newGate(t, a, true, OnDemand{AskRate: 50, AskConcurrency: 4})
	var wg sync.WaitGroup
	var refused atomic.Int64
	for i := range 300 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if g.decide(context.Background(), fmt.Sprintf("n%d.example.com", i)) != nil {
				refused.Add(1)
			}
		}()
	}
	waitCond(t, "four calls held at the hook", func() bool { return a.inFlight.Load() == 4 })
	waitCond(t, "the other handshakes refused", func() bool { return refused.Load() == 296 })
	close(a.hold)
	wg.Wait()
	if c, m := a.calls.Load(), a.maxInFlight.Load(); c != 4 || m != 4 {
		t.Fatalf("%d calls, %d at most in flight; want 4 and 4", c, m)
	}

	// The rate: a burst of ask_rate calls, then about ask_rate a second.
	b := newAskServer(t, false)
	g = newGate(t, b, true, OnDemand{AskRate: 5, AskConcurrency: 100})
	start := time.Now()
	for i := range 40 {
		g.decide(context.Background(), fmt.Sprintf("r%d.example.com", i))
	}
	if c, max := b.calls.Load(), int64(5+5*time.Since(start).Seconds()+1); c > max {
		t.Fatalf("%d calls in %v at ask_rate 5", c, time.Since(start))
	}

	// One name, many handshakes at once: one call.
	h := newAskServer(t, true)
	g = newGate(t, h, true, OnDemand{})
	errs := make(chan error, 20)
	for range 20 {
		go func() { errs <- g.decide(context.Background(), "ok.same.example.com") }()
	}
	waitCond(t, "the call to reach the hook", func() bool { return h.calls.Load() == 1 })
	close(h.hold)
	for range 20 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if c := h.calls.Load(); c != 1 {
		t.Fatalf("%d calls for one name", c)
	}
}

// TestAskErrorsAreCachedBriefly: when the hook fails, the same name is
// refused from memory for a few seconds instead of asking again.
func TestAskErrorsAreCachedBriefly(t *testing.T) {
	a := newAskServer(t, false)
	a.fail.Store(true)
	g := newGate(t, a, true, OnDemand{})
	for range 10 {
		if err := g.decide(context.Background(), "ok.down.example.com"); err == nil {
			t.Fatal("allowed while the hook fails")
		}
	}
	if c := a.calls.Load(); c != 1 {
		t.Fatalf("%d calls to a failing hook for one name", c)
	}
	// After the error cache, the name is asked again.
	g.mu.Lock()
	for k := range g.refused {
		g.refused[k] = time.Now().Add(-time.Second)
	}
	g.mu.Unlock()
	a.fail.Store(false)
	if err := g.decide(context.Background(), "ok.down.example.com"); err != nil || a.calls.Load() != 2 {
		t.Fatalf("after the error cache: %v, %d calls", err, a.calls.Load())
	}
}

func TestPublicCA(t *testing.T) {
	for u, want := range map[string]bool{
		certmagic.LetsEncryptProductionCA: true, certmagic.LetsEncryptStagingCA: true,
		"https://acme.zerossl.com/v2/DV90": true, "https://localhost:14000/dir": false, "https://ca.internal/acme/acme/directory": false,
	} {
		if PublicCA(u, "") != want {
			t.Errorf("PublicCA(%s) != %v", u, want)
		}
	}
	if PublicCA(certmagic.LetsEncryptProductionCA, "/etc/ssl/my-root.pem") {
		t.Error("a CA trusted through ca_root is private")
	}
}

func waitCond(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
