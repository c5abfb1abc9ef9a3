package proxy

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// testPool is a pool over addresses nobody dials: selection only.
func testPool(t testing.TB, policy, key string, weights ...int) *Pool {
	t.Helper()
	var ss []ServerConfig
	for i, w := range weights {
		ss = append(ss, ServerConfig{Addr: fmt.Sprintf("10.0.0.%d:80", i+1), Weight: w})
	}
	p, err := NewPool(UpstreamConfig{Name: "t", Servers: ss, Policy: policy, HashKey: key, MaxFails: 1}, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

func pickFor(p *Pool, r *http.Request) *server {
	sel := selection{r: r, now: nanotime(), key: p.hashKey, client: "192.0.2.1"}
	sel.keyHash = sel.hashKey()
	return p.pick(&sel)
}

var plainReq, _ = http.NewRequest("GET", "http://x/", nil)

func TestSmoothWeightedRoundRobinIsNginxSequence(t *testing.T) {
	p := testPool(t, "round_robin", "", 5, 1, 1)
	names := map[string]string{"10.0.0.1:80": "a", "10.0.0.2:80": "b", "10.0.0.3:80": "c"}
	var seq []string
	for i := 0; i < 14; i++ {
		seq = append(seq, names[pickFor(p, plainReq).cfg.Addr])
	}
	if got, want := strings.Join(seq, ""), "aabacaaaabacaa"; got != want {
		t.Fatalf("sequence %s, want %s (nginx's smooth weighted round robin)", got, want)
	}
}

func TestRoundRobinWeightsThroughProxy(t *testing.T) {
	a, b := startTCP(t, named("a")), startTCP(t, named("b"))
	f := newFront(t, UpstreamConfig{Servers: []ServerConfig{{Addr: a.Addr, Weight: 3}, {Addr: b.Addr}}}, HandlerOptions{})
	for i := 0; i < 40; i++ {
		get(t, f.URL()+"/")
	}
	if a.Hits() != 30 || b.Hits() != 10 {
		t.Fatalf("weights 3:1 gave %d:%d", a.Hits(), b.Hits())
	}
}

func TestRoundRobinSkipsDownServer(t *testing.T) {
	p := testPool(t, "round_robin", "", 1, 1, 1)
	p.servers()[1].st.downEnd.Store(nanotime() + 1e12)
	for i := 0; i < 30; i++ {
		if s := pickFor(p, plainReq); s == p.servers()[1] {
			t.Fatal("picked a down server")
		}
	}
}

func hashReq(user string) *http.Request {
	r, _ := http.NewRequest("GET", "http://x/", nil)
	r.Header.Set("X-User", user)
	return r
}

func TestHashConsistentWithMinimalRemap(t *testing.T) {
	const keys = 3000
	p5 := testPool(t, "hash", "header:X-User", 1, 1, 1, 1, 1)
	before := map[string]string{}
	count := map[string]int{}
	for i := 0; i < keys; i++ {
		u := fmt.Sprintf("user-%d", i)
		a := pickFor(p5, hashReq(u)).cfg.Addr
		if again := pickFor(p5, hashReq(u)).cfg.Addr; again != a {
			t.Fatalf("%s mapped to %s then %s", u, a, again)
		}
		before[u] = a
		count[a]++
	}
	for a, n := range count {
		if n < keys/5*2/3 || n > keys/5*4/3 {
			t.Fatalf("uneven spread: %s has %d of %d keys: %v", a, n, keys, count)
		}
	}
	// Remove 10.0.0.3: only its keys move.
	cfg := p5.cfg
	cfg.Servers = append(append([]ServerConfig{}, cfg.Servers[:2]...), cfg.Servers[3:]...)
	p4, err := NewPool(cfg, p5, p5.m, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p4.Close()
	moved := 0
	for u, a := range before {
		b := pickFor(p4, hashReq(u)).cfg.Addr
		if a != "10.0.0.3:80" && b != a {
			t.Fatalf("%s moved from %s to %s though its server stayed", u, a, b)
		}
		if b != a {
			moved++
		}
	}
	if moved != count["10.0.0.3:80"] {
		t.Fatalf("moved %d keys, want exactly the %d of the removed server", moved, count["10.0.0.3:80"])
	}
	// A server that is down is skipped the same way, and its keys come back.
	s1 := p5.servers()[0]
	s1.st.downEnd.Store(nanotime() + 1e12)
	for u, a := range before {
		b := pickFor(p5, hashReq(u)).cfg.Addr
		if (a == s1.cfg.Addr) == (a == b) {
			t.Fatalf("%s: %s -> %s while %s is down", u, a, b, s1.cfg.Addr)
		}
	}
	s1.st.downEnd.Store(0)
	for u, a := range before {
		if b := pickFor(p5, hashReq(u)).cfg.Addr; a != b {
			t.Fatalf("%s did not come back: %s -> %s", u, a, b)
		}
	}
}

func TestHashWeightsAndKeys(t *testing.T) {
	p := testPool(t, "hash", "uri", 3, 1)
	n := map[string]int{}
	for i := 0; i < 4000; i++ {
		r, _ := http.NewRequest("GET", fmt.Sprintf("http://x/item/%d?v=1", i), nil)
		n[pickFor(p, r).cfg.Addr]++
	}
	if a := n["10.0.0.1:80"]; a < 2700 || a > 3300 {
		t.Fatalf("weight 3:1 gave %v", n)
	}
	// cookie keys, and a request without the cookie falls back to the client address.
	pc := testPool(t, "hash", "cookie:sid", 1, 1, 1)
	r1, _ := http.NewRequest("GET", "http://x/", nil)
	r1.AddCookie(&http.Cookie{Name: "sid", Value: "abc"})
	r2, _ := http.NewRequest("GET", "http://x/other", nil)
	r2.AddCookie(&http.Cookie{Name: "sid", Value: "abc"})
	if pickFor(pc, r1) != pickFor(pc, r2) {
		t.Fatal("same cookie, different servers")
	}
	if pickFor(pc, plainReq) != pickFor(pc, plainReq) {
		t.Fatal("no cookie: not stable")
	}
	// client_ip is the default key.
	pi := testPool(t, "hash", "", 1, 1, 1)
	if pi.hashKey.kind != hashClientIP {
		t.Fatal("default key is not client_ip")
	}
}

func TestLeastConnWeighted(t *testing.T) {
	p := testPool(t, "least_conn", "", 3, 1)
	p.servers()[0].st.active.Store(2) // 2/3 per weight
	p.servers()[1].st.active.Store(1) // 1/1
	for i := 0; i < 10; i++ {
		if s := pickFor(p, plainReq); s != p.servers()[0] {
			t.Fatalf("picked %s", s.cfg.Addr)
		}
	}
	// Ties rotate.
	p2 := testPool(t, "least_conn", "", 1, 1, 1)
	seen := map[*server]bool{}
	for i := 0; i < 9; i++ {
		seen[pickFor(p2, plainReq)] = true
	}
	if len(seen) != 3 {
		t.Fatalf("ties went to %d servers", len(seen))
	}
}

func TestRandomTwoAvoidsLoaded(t *testing.T) {
	p := testPool(t, "random_two", "", 1, 1, 1)
	p.servers()[0].st.active.Store(50)
	n := map[int]int{}
	for i := 0; i < 3000; i++ {
		n[pickFor(p, plainReq).idx]++
	}
	if n[0] != 0 || n[1] < 1200 || n[2] < 1200 {
		t.Fatalf("picks %v: the loaded server should lose every comparison", n)
	}
	p.servers()[1].st.sick.Store(true)
	p.servers()[2].st.sick.Store(true)
	if s := pickFor(p, plainReq); s != p.servers()[0] {
		t.Fatal("only the loaded server is available; want it")
	}
}

func TestFirstPolicy(t *testing.T) {
	p := testPool(t, "first", "", 1, 1)
	for i := 0; i < 5; i++ {
		if pickFor(p, plainReq) != p.servers()[0] {
			t.Fatal("first did not pick the first server")
		}
	}
	p.servers()[0].st.sick.Store(true)
	if pickFor(p, plainReq) != p.servers()[1] {
		t.Fatal("first did not fail over")
	}
}
