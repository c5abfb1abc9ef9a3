package cluster

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/edgeapp/edgeapp/internal/etcdtest"
)

// zone is a tiny authoritative DNS server on loopback whose records the
// test changes.
type zone struct {
	mu   sync.Mutex
	a    map[string][]string // name -> IPv4 addresses
	srv  map[string][]*dns.SRV
	srvr *dns.Server
}

func startZone(t *testing.T) (*zone, string) {
	z := &zone{a: map[string][]string{}, srv: map[string][]*dns.SRV{}}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	z.srvr = &dns.Server{PacketConn: pc, Handler: z}
	go z.srvr.ActivateAndServe()
	t.Cleanup(func() { z.srvr.Shutdown() })
	return z, pc.LocalAddr().String()
}

func (z *zone) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(r)
	q := r.Question[0]
	z.mu.Lock()
	switch q.Qtype {
	case dns.TypeA:
		for _, ip := range z.a[q.Name] {
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 1}, A: net.ParseIP(ip)})
		}
	case dns.TypeSRV:
		for _, s := range z.srv[q.Name] {
			c := *s
			c.Hdr = dns.RR_Header{Name: q.Name, Rrtype: dns.TypeSRV, Class: dns.ClassINET, Ttl: 1}
			m.Answer = append(m.Answer, &c)
		}
	}
	z.mu.Unlock()
	w.WriteMsg(m)
}

func (z *zone) setA(name string, ips ...string) {
	z.mu.Lock()
	z.a[dns.Fqdn(name)] = ips
	z.mu.Unlock()
}

// sinkLog collects what a discoverer sends.
type sinkLog struct{ ch chan []Server }

func (s *sinkLog) sink(list []Server) { s.ch <- list }

// waitFor waits (bounded) until the discoverer sends a set with want's
// addresses.
func (s *sinkLog) waitFor(t *testing.T, want ...string) []Server {
	t.Helper()
	deadline := time.After(60 * time.Second)
	for {
		select {
		case got := <-s.ch:
			if sameAddrs(got, want) {
				return got
			}
		case <-deadline:
			t.Fatalf("discovery did not reach %v within 60s", want)
		}
	}
}

func sameAddrs(got []Server, want []string) bool {
	if len(got) != len(want) {
		return false
	}
	m := map[string]bool{}
	for _, s := range got {
		m[s.Addr] = true
	}
	for _, w := range want {
		if !m[w] {
			return false
		}
	}
	return true
}

func TestDiscoverDNS(t *testing.T) {
	z, addr := startZone(t)
	z.setA("app.test", "127.0.0.10", "127.0.0.11")
	z.mu.Lock()
	z.srv["_http._tcp.app.test."] = []*dns.SRV{{Target: "b.app.test.", Port: 9000, Weight: 5}}
	z.mu.Unlock()
	z.setA("b.app.test", "127.0.0.20")
	d, err := NewDiscoverer(DiscoverSpec{Upstream: "app", Resolve: []string{"app.test:8000"}, SRV: []string{"_http._tcp.app.test"}, Resolvers: []string{addr}}, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Stop()
	s := &sinkLog{ch: make(chan []Server, 100)}
	d.Bind(s.sink)
	got := s.waitFor(t, "127.0.0.10:8000", "127.0.0.11:8000", "127.0.0.20:9000")
	for _, g := range got {
		if g.Addr == "127.0.0.20:9000" && g.Weight != 5 {
			t.Errorf("SRV weight %d, want 5", g.Weight)
		}
	}
	// Records change: the next lookup (TTL 1 s) follows.
	z.setA("app.test", "127.0.0.11", "127.0.0.12")
	s.waitFor(t, "127.0.0.11:8000", "127.0.0.12:8000", "127.0.0.20:9000")
	// The DNS server goes away: the last answer stays.
	z.srvr.Shutdown()
	select {
	case got := <-s.ch:
		t.Fatalf("servers changed to %v while DNS was down", got)
	case <-time.After(3 * time.Second): // several TTLs without an answer
	}
	if !sameAddrs(d.Servers(), []string{"127.0.0.11:8000", "127.0.0.12:8000", "127.0.0.20:9000"}) {
		t.Fatalf("servers while DNS is down: %v", d.Servers())
	}
}

func TestDiscoverRegistry(t *testing.T) {
	etcd := etcdtest.Start(t, 1)
	c := openTest(t, etcd.Endpoints(), "edge")
	d, err := NewDiscoverer(DiscoverSpec{Upstream: "app", Registry: "app"}, c, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Stop()
	s := &sinkLog{ch: make(chan []Server, 100)}
	d.Bind(s.sink)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Register(ctx, "app", Server{Addr: "127.0.0.1:8001", Weight: 2}, 3*time.Second) }()
	got := s.waitFor(t, "127.0.0.1:8001")
	if got[0].Weight != 2 {
		t.Errorf("weight %d, want 2", got[0].Weight)
	}
	// A node that dies: its lease is not kept alive, and it leaves.
	lease, err := c.cli.Grant(context.Background(), 2)
	must(t, err)
	_, err = c.cli.Put(context.Background(), c.RegistryKey("app", "127.0.0.1:8002"), "127.0.0.1:8002", clientv3.WithLease(lease.ID))
	must(t, err)
	s.waitFor(t, "127.0.0.1:8001", "127.0.0.1:8002")
	s.waitFor(t, "127.0.0.1:8001") // the lease ran out
	// A node that stops withdraws at once.
	cancel()
	must(t, <-done)
	s.waitFor(t)
}
