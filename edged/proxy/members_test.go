package proxy

import (
	"net/http"
	"testing"
	"time"
)

// TestSetServers: a pool's servers change while it serves; those that stay
// keep their state, new ones are health-checked like the others, those
// that leave are no longer picked.
func TestSetServers(t *testing.T) {
	a, b := startTCP(t, named("a")), startTCP(t, named("b"))
	f := newFront(t, UpstreamConfig{Servers: servers(a.Addr), Dynamic: true,
		Health: HealthConfig{Path: "/", Interval: 50 * time.Millisecond, Timeout: time.Second, Rise: 1, Fall: 1}}, HandlerOptions{})
	for range 3 {
		get(t, f.URL()+"/")
	}
	if err := f.pool.SetServers(servers(a.Addr, b.Addr)); err != nil {
		t.Fatal(err)
	}
	if got := statusOf(f.pool, a.Addr).Requests; got != 3 {
		t.Fatalf("a's request count after the change is %d, want 3 (kept)", got)
	}
	waitFor(t, "b to be health-checked", func() bool { return !statusOf(f.pool, b.Addr).LastCheck.IsZero() })
	served := map[string]int{}
	for range 10 {
		_, body := get(t, f.URL()+"/")
		served[body]++
	}
	if served["a"] != 5 || served["b"] != 5 || statusOf(f.pool, a.Addr).Requests != 8 {
		t.Fatalf("after adding b: served %v, a's count %d; want 5 each and 8", served, statusOf(f.pool, a.Addr).Requests)
	}
	if err := f.pool.SetServers(servers(b.Addr)); err != nil {
		t.Fatal(err)
	}
	clear(served)
	for range 4 {
		_, body := get(t, f.URL()+"/")
		served[body]++
	}
	if served["b"] != 4 {
		t.Fatalf("after removing a: served %v, want b 4 times", served)
	}
	if len(f.pool.Status()) != 1 {
		t.Fatalf("status lists %d servers, want 1", len(f.pool.Status()))
	}
	// Every server gone: 503, and back when one comes.
	if err := f.pool.SetServers(nil); err != nil {
		t.Fatal(err)
	}
	if resp, _ := get(t, f.URL()+"/"); resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("no servers: status %d, want 503", resp.StatusCode)
	}
	if err := f.pool.SetServers(servers(a.Addr)); err != nil {
		t.Fatal(err)
	}
	if resp, body := get(t, f.URL()+"/"); resp.StatusCode != 200 || body != "a" {
		t.Fatalf("a back: %d %q", resp.StatusCode, body)
	}
	if err := f.pool.SetServers(servers(a.Addr, a.Addr)); err == nil {
		t.Fatal("a server listed twice was accepted")
	}
	if _, err := NewPool(UpstreamConfig{Name: "x"}, nil, nil, nil); err == nil {
		t.Fatal("a static upstream without servers was accepted")
	}
}
