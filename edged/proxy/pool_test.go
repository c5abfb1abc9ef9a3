package proxy

import (
	"io"
	"net"
	"net/http"

	"github.com/edgeapp/edgeapp/edged/engine/enginetest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

func TestValidate(t *testing.T) {
	good := UpstreamConfig{Name: "app", Servers: servers("127.0.0.1:8000", "unix:/run/app.sock")}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		mut  func(*UpstreamConfig)
		want string
	}{
		{func(c *UpstreamConfig) { c.Servers = nil }, "at least one server"},
		{func(c *UpstreamConfig) { c.Servers[0].Addr = "http://x:80" }, "without a scheme"},
		{func(c *UpstreamConfig) { c.Servers[0].Addr = "localhost" }, "want host:port"},
		{func(c *UpstreamConfig) { c.Servers[1].Addr = "unix:run/app.sock" }, "needs an absolute path"},
		{func(c *UpstreamConfig) { c.Servers[1].Addr = c.Servers[0].Addr }, "listed twice"},
		{func(c *UpstreamConfig) { c.Servers[0].Addr = "127.0.0.1:99999" }, "not a number from 0 to 65535"},
		{func(c *UpstreamConfig) { c.Servers[0].Addr = "127.0.0.1:0" }, "port 0 cannot be connected to"},
		{func(c *UpstreamConfig) { c.Servers[0].Addr = ":8000" }, "the host is missing"},
		{func(c *UpstreamConfig) { c.Servers[0].Weight = -1 }, "servers[0].weight"},
		{func(c *UpstreamConfig) { c.Servers[0].Backup, c.Servers[1].Backup = true, true }, "every server is a backup"},
		{func(c *UpstreamConfig) { c.Policy = "ip_hash" }, "not one of"},
		{func(c *UpstreamConfig) { c.HashKey = "uri" }, "policy is"},
		{func(c *UpstreamConfig) { c.Policy, c.HashKey = "hash", "query" }, "hash_key"},
		{func(c *UpstreamConfig) { c.MaxFails = -1 }, "max_fails"},
		{func(c *UpstreamConfig) { c.ConnectTimeout = -time.Second }, "connect_timeout"},
		{func(c *UpstreamConfig) { c.Health.Path = "healthz" }, "must start with /"},
		{func(c *UpstreamConfig) { c.Health.ExpectStatus = 42 }, "health.status"},
	} {
		cfg := good
		cfg.Servers = append([]ServerConfig{}, good.Servers...)
		c.mut(&cfg)
		err := cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("want an error with %q, got %v", c.want, err)
		}
	}
}

func TestStateCarriesOverReload(t *testing.T) {
	dead := refusedAddr(t)
	b := startTCP(t, named("b"))
	c := startTCP(t, named("c"))
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	cfg1 := UpstreamConfig{Name: "app", Servers: servers(dead, b.Addr), Policy: "first", MaxFails: 1, FailTimeout: time.Minute, Retries: 1}
	p1, err := NewPool(cfg1, nil, m, nil)
	if err != nil {
		t.Fatal(err)
	}
	p1.Start()
	h1 := enginetest.NewServer(NewHandler(p1, HandlerOptions{}))
	defer h1.Close()
	for i := 0; i < 3; i++ {
		if _, body := get(t, h1.URL+"/"); body != "b" {
			t.Fatalf("body %q", body)
		}
	}

	cfg2 := cfg1
	cfg2.Servers = []ServerConfig{{Addr: dead}, {Addr: b.Addr, Weight: 2}, {Addr: c.Addr}}
	p2, err := NewPool(cfg2, p1, m, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p2.Close()
	if s := statusOf(p2, dead); s.State != "down" || s.Fails != 1 || !strings.Contains(s.Reason, "connection refused") {
		t.Fatalf("dead server's state not carried over: %+v", s)
	}
	if s := statusOf(p2, b.Addr); s.Requests != 3 || s.Weight != 2 {
		t.Fatalf("b's counters not carried over: %+v", s)
	}
	if s := statusOf(p2, c.Addr); s.Requests != 0 || s.State != "up" {
		t.Fatalf("c: %+v", s)
	}
	if p2.servers()[1].cp != p1.servers()[1].cp {
		t.Fatal("b's connection pool was not kept though its settings did not change")
	}
	// Passive health turned off: a server it took out is back at once.
	cfg5 := cfg2
	cfg5.MaxFails = 0
	p5, err := NewPool(cfg5, p2, m, nil)
	if err != nil {
		t.Fatal(err)
	}
	p5.Start()
	if s := statusOf(p5, dead); s.State != "up" {
		t.Fatalf("max_fails 0, dead server still %+v", s)
	}
	p5.Close()

	p1.Close()
	h2 := enginetest.NewServer(NewHandler(p2, HandlerOptions{}))
	defer h2.Close()
	if _, body := get(t, h2.URL+"/"); body != "b" {
		t.Fatalf("after the old pool closed: %q", body)
	}

	// New timeouts: a new connection pool, the same health state.
	cfg3 := cfg2
	cfg3.ConnectTimeout = 2 * time.Second
	cfg3.Servers = cfg2.Servers[1:] // dead removed
	p3, err := NewPool(cfg3, p2, m, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p3.Close()
	p3.Start()
	if p3.servers()[0].cp == p2.servers()[1].cp || p3.servers()[0].st != p2.servers()[1].st {
		t.Fatal("want a new connection pool and the same state")
	}
	p2.Close()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		for _, mm := range f.Metric {
			if label(mm, "server") == dead {
				t.Fatalf("%s still reports the removed server", f.GetName())
			}
		}
	}
	// A renamed upstream starts fresh.
	cfg4 := cfg3
	cfg4.Name = "other"
	p4, err := NewPool(cfg4, p3, m, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p4.Close()
	if p4.servers()[0].st == p3.servers()[0].st {
		t.Fatal("state crossed upstreams")
	}
}

func TestCloseDoesNotBreakInFlight(t *testing.T) {
	for _, successor := range []bool{true, false} {
		name := "replaced"
		if !successor {
			name = "removed"
		}
		t.Run(name, func(t *testing.T) {
			entered := make(chan struct{})
			release := make(chan struct{})
			up := startTCP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				switch r.URL.Path {
				case "/ws":
					echoUpgrade(t).ServeHTTP(w, r)
					return
				case "/health":
					return
				}
				w.Header().Set("Content-Length", "10")
				io.WriteString(w, "12345")
				w.(http.Flusher).Flush()
				close(entered)
				<-release
				io.WriteString(w, "67890")
			}))
			cfg := UpstreamConfig{Name: "app", Servers: servers(up.Addr), Health: HealthConfig{Path: "/health", Interval: 10 * time.Millisecond}}
			p1, err := NewPool(cfg, nil, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			p1.Start()
			fr := enginetest.NewServer(NewHandler(p1, HandlerOptions{}))
			defer fr.Close()
			ws, wsr, res := dialUpgrade(t, fr.URL)
			defer ws.Close()
			if res.StatusCode != 101 {
				t.Fatalf("upgrade: %d", res.StatusCode)
			}
			done := make(chan string)
			go func() {
				res, err := http.Get(fr.URL + "/slow")
				if err != nil {
					done <- err.Error()
					return
				}
				b, err := io.ReadAll(res.Body)
				res.Body.Close()
				if err != nil {
					done <- err.Error()
					return
				}
				done <- string(b)
			}()
			<-entered
			if successor {
				p2, err := NewPool(cfg, p1, nil, nil)
				if err != nil {
					t.Fatal(err)
				}
				defer p2.Close()
			}
			p1.Close()
			close(release)
			if got := <-done; got != "1234567890" {
				t.Fatalf("in-flight request through the closed pool: %q", got)
			}
			io.WriteString(ws, "still here")
			buf := make([]byte, 10)
			if _, err := io.ReadFull(wsr, buf); err != nil || string(buf) != "still here" {
				t.Fatalf("WebSocket after Close: %q %v", buf, err)
			}
		})
	}
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.Label {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// metricValue finds a sample by name and label values (pairs).
func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels ...string) (float64, bool) {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	next:
		for _, m := range f.Metric {
			for i := 0; i+1 < len(labels); i += 2 {
				if label(m, labels[i]) != labels[i+1] {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue(), true
			case m.Gauge != nil:
				return m.Gauge.GetValue(), true
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount()), true
			}
		}
	}
	return 0, false
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	good := startTCP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/missing" {
			http.NotFound(w, r)
			return
		}
		io.WriteString(w, "ok")
	}))
	dead := refusedAddr(t)
	cfg := UpstreamConfig{Name: "app", Servers: servers(dead, good.Addr), Policy: "first", MaxFails: 1, Retries: 1}
	p, err := NewPool(cfg, nil, m, nil)
	if err != nil {
		t.Fatal(err)
	}
	p.Start()
	fr := enginetest.NewServer(NewHandler(p, HandlerOptions{}))
	defer fr.Close()
	for i := 0; i < 4; i++ {
		get(t, fr.URL+"/")
	}
	get(t, fr.URL+"/missing")
	want := []struct {
		name   string
		labels []string
		v      float64
	}{
		{"edged_upstream_requests_total", []string{"server", good.Addr, "code", "2xx"}, 4},
		{"edged_upstream_requests_total", []string{"server", good.Addr, "code", "4xx"}, 1},
		{"edged_upstream_requests_total", []string{"server", dead, "code", "error"}, 1},
		{"edged_upstream_failures_total", []string{"server", dead, "cause", "connect"}, 1},
		{"edged_upstream_retries_total", []string{"upstream", "app"}, 1},
		{"edged_upstream_response_header_seconds", []string{"server", good.Addr}, 5},
		{"edged_upstream_server_up", []string{"server", good.Addr, "backup", "false"}, 1},
		{"edged_upstream_server_up", []string{"server", dead}, 0},
		{"edged_upstream_in_flight", []string{"server", good.Addr}, 0},
	}
	for _, w := range want {
		if v, ok := metricValue(t, reg, w.name, w.labels...); !ok || v != w.v {
			t.Errorf("%s%v = %v (found %v), want %v", w.name, w.labels, v, ok, w.v)
		}
	}
	// A configuration that is built and then rejected changes nothing.
	rejected, err := NewPool(cfg, p, m, nil)
	if err != nil {
		t.Fatal(err)
	}
	rejected.Close()
	if v, ok := metricValue(t, reg, "edged_upstream_server_up", "server", good.Addr); !ok || v != 1 {
		t.Fatal("a rejected pool's Close removed the live pool's gauges")
	}
	// A reload shares the Metrics: no re-registration, no duplicate series.
	p2, err := NewPool(cfg, p, m, nil)
	if err != nil {
		t.Fatal(err)
	}
	p2.Start()
	if _, err := reg.Gather(); err != nil {
		t.Fatal(err)
	}
	p.Close()
	if v, ok := metricValue(t, reg, "edged_upstream_requests_total", "server", good.Addr, "code", "2xx"); !ok || v != 4 {
		t.Fatalf("counter after reload: %v %v", v, ok)
	}
	if _, ok := metricValue(t, reg, "edged_upstream_server_up", "server", good.Addr); !ok {
		t.Fatal("gauges gone after the old pool closed")
	}
	p2.Close() // no successor: the upstream left the config
	if _, ok := metricValue(t, reg, "edged_upstream_server_up", "server", good.Addr); ok {
		t.Fatal("gauges of a removed upstream still reported")
	}
}

// TestReloadUnderLoad swaps pools 20 times while clients send requests over
// kept-alive connections, as edged's reload does: no request may fail.
func TestReloadUnderLoad(t *testing.T) {
	a, b, c := startTCP(t, named("a")), startUnix(t, named("b")), startTCP(t, named("c"))
	m := NewMetrics(prometheus.NewRegistry())
	policies := []string{"round_robin", "least_conn", "random_two", "hash", "first"}
	cfgFor := func(i int) UpstreamConfig {
		cfg := UpstreamConfig{Name: "app", Policy: policies[i%len(policies)], MaxFails: 1, Retries: 2,
			Servers: []ServerConfig{{Addr: a.Addr, Weight: 1 + i%3}, {Addr: b.Addr}}}
		if i%2 == 1 {
			cfg.Servers = append(cfg.Servers, ServerConfig{Addr: c.Addr, Backup: i%4 == 1})
		}
		if i%3 == 0 {
			cfg.ConnectTimeout = time.Duration(1+i) * time.Second // a new connection pool
		}
		return cfg
	}
	var cur atomic.Pointer[http.Handler]
	p, err := NewPool(cfgFor(0), nil, m, nil)
	if err != nil {
		t.Fatal(err)
	}
	p.Start()
	h := NewHandler(p, HandlerOptions{})
	cur.Store(&h)
	fr := enginetest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { (*cur.Load()).ServeHTTP(w, r) }))
	defer fr.Close()

	stop := make(chan struct{})
	var failures, total atomic.Int64
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}, Timeout: 30 * time.Second}
			for n := 0; n < 5000; n++ {
				select {
				case <-stop:
					return
				default:
				}
				res, err := client.Get(fr.URL + "/")
				total.Add(1)
				if err != nil {
					failures.Add(1)
					t.Error(err)
					continue
				}
				body, err := io.ReadAll(res.Body)
				res.Body.Close()
				if err != nil || res.StatusCode != 200 || len(body) != 1 {
					failures.Add(1)
					t.Errorf("status %d body %q err %v", res.StatusCode, body, err)
				}
			}
		}()
	}
	for i := 1; i <= 20; i++ {
		waitFor(t, "some traffic", func() bool { return total.Load() >= int64(i*20) })
		np, err := NewPool(cfgFor(i), p, m, nil)
		if err != nil {
			t.Fatal(err)
		}
		np.Start()
		nh := NewHandler(np, HandlerOptions{})
		cur.Store(&nh)
		p.Close()
		p = np
	}
	close(stop)
	wg.Wait()
	p.Close()
	if failures.Load() != 0 || total.Load() < 400 {
		t.Fatalf("%d of %d requests failed", failures.Load(), total.Load())
	}
	for _, s := range p.Status() {
		if s.Active != 0 {
			t.Fatalf("%s still counts %d in flight", s.Addr, s.Active)
		}
	}
}

func TestCloseReleasesIdleConnections(t *testing.T) {
	var open atomic.Int32
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	up := serveOnState(t, ln, ln.Addr().String(), named("a"), func(c net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			open.Add(1)
		case http.StateClosed, http.StateHijacked:
			open.Add(-1)
		}
	})
	cfg := UpstreamConfig{Name: "app", Servers: servers(up.Addr)}
	p1, err := NewPool(cfg, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	p1.Start()
	fr := enginetest.NewServer(NewHandler(p1, HandlerOptions{}))
	defer fr.Close()
	get(t, fr.URL+"/")
	if open.Load() != 1 {
		t.Fatalf("%d upstream connections, want 1 kept alive", open.Load())
	}
	// Replaced by a pool with the same settings: the connection is kept.
	p2, err := NewPool(cfg, p1, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	p2.Start()
	p1.Close()
	fr2 := enginetest.NewServer(NewHandler(p2, HandlerOptions{}))
	defer fr2.Close()
	get(t, fr2.URL+"/")
	if open.Load() != 1 {
		t.Fatalf("%d upstream connections after the reload, want the same 1", open.Load())
	}
	// The upstream leaves the configuration: its idle connection goes.
	p2.Close()
	waitFor(t, "the idle connection to close", func() bool { return open.Load() == 0 })
}
