package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/edgeapp/edgeapp/internal/etcdtest"
	"github.com/edgeapp/edgeapp/internal/gotool"
	"github.com/edgeapp/edgeapp/internal/syncbuf"
)

// tcpFront is a layer-4 front on loopback: each connection goes to the
// next backend in turn (the balancer in front of a cluster), and Pause
// holds new connections and cuts the open ones (a CA that stops
// answering).
type tcpFront struct {
	ln       net.Listener
	mu       sync.Mutex
	backends []string
	next     int
	paused   chan struct{} // closed while not paused
	ready    chan struct{} // closed once there are backends
	conns    map[net.Conn]bool
}

func startFront(t *testing.T) *tcpFront {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &tcpFront{ln: ln, paused: make(chan struct{}), ready: make(chan struct{}), conns: map[net.Conn]bool{}}
	close(f.paused)
	t.Cleanup(func() { ln.Close(); f.cutAll() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go f.serve(c)
		}
	}()
	return f
}

func (f *tcpFront) Port() int { return f.ln.Addr().(*net.TCPAddr).Port }

// SetBackends sets where connections go; until the first call they wait.
func (f *tcpFront) SetBackends(b ...string) {
	f.mu.Lock()
	first := f.backends == nil
	f.backends = b
	f.mu.Unlock()
	if first {
		close(f.ready)
	}
}

func (f *tcpFront) Pause() {
	f.mu.Lock()
	f.paused = make(chan struct{})
	f.mu.Unlock()
	f.cutAll()
}

func (f *tcpFront) Resume() {
	f.mu.Lock()
	close(f.paused)
	f.mu.Unlock()
}

func (f *tcpFront) cutAll() {
	f.mu.Lock()
	for c := range f.conns {
		c.Close()
	}
	f.mu.Unlock()
}

func (f *tcpFront) serve(c net.Conn) {
	f.mu.Lock()
	f.conns[c] = true
	gate := f.paused
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		delete(f.conns, c)
		f.mu.Unlock()
		c.Close()
	}()
	<-gate
	select {
	case <-f.ready:
	case <-time.After(2 * time.Minute):
		return
	}
	f.mu.Lock()
	if len(f.backends) == 0 {
		f.mu.Unlock()
		return
	}
	addr := f.backends[f.next%len(f.backends)]
	f.next++
	f.mu.Unlock()
	b, err := net.Dial("tcp", addr)
	if err != nil {
		return
	}
	f.mu.Lock()
	f.conns[b] = true
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		delete(f.conns, b)
		f.mu.Unlock()
		b.Close()
	}()
	done := make(chan struct{}, 2)
	go func() { io.Copy(b, c); done <- struct{}{} }()
	go func() { io.Copy(c, b); done <- struct{}{} }()
	<-done
}

// testPebble is Pebble and pebble-challtestsrv (DNS: 127.0.0.1 for every
// name) on loopback, built from the module graph.
type testPebble struct {
	listen  string // host:port of pebble's ACME server
	caRoot  string // trusts pebble's own HTTPS
	roots   *x509.CertPool
	out     *syncbuf.Buffer
	orders  func() int
	workDir string
}

func startTestPebble(t *testing.T, httpPort int) *testPebble {
	t.Helper()
	modDir, err := gotool.ModuleDir("github.com/letsencrypt/pebble/v2")
	if err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	for _, cmd := range []string{"pebble", "pebble-challtestsrv"} {
		if _, err := gotool.Build(bin, "github.com/letsencrypt/pebble/v2/cmd/"+cmd); err != nil {
			t.Fatal(err)
		}
	}
	p := &testPebble{listen: freeAddr(t), caRoot: filepath.Join(modDir, "test/certs/pebble.minica.pem"), out: &syncbuf.Buffer{}}
	p.orders = func() int { return strings.Count(p.out.String(), "Added order") }
	mgmt, dnsAddr := freeAddr(t), freeAddr(t)
	cfg, _ := json.Marshal(map[string]any{"pebble": map[string]any{
		"listenAddress": p.listen, "managementListenAddress": mgmt,
		"certificate": filepath.Join(modDir, "test/certs/localhost/cert.pem"), "privateKey": filepath.Join(modDir, "test/certs/localhost/key.pem"),
		"httpPort": httpPort, "tlsPort": 1, "ocspResponderURL": "", "externalAccountBindingRequired": false,
		"retryAfter": map[string]int{"authz": 1, "order": 1}, "keyAlgorithm": "ecdsa",
		"profiles": map[string]any{"default": map[string]any{"description": "90 days", "validityPeriod": 7776000}},
	}})
	cfgFile := filepath.Join(t.TempDir(), "pebble.json")
	os.WriteFile(cfgFile, cfg, 0o600)
	chal := exec.Command(filepath.Join(bin, "pebble-challtestsrv"), "-dnsserver", dnsAddr, "-management", freeAddr(t),
		"-http01", "", "-https01", "", "-tlsalpn01", "", "-doh", "", "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "")
	peb := exec.Command(filepath.Join(bin, "pebble"), "-config", cfgFile, "-dnsserver", dnsAddr)
	peb.Env = append(os.Environ(), "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0")
	for _, c := range []*exec.Cmd{chal, peb} {
		c.Stdout, c.Stderr = p.out, p.out
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Process.Kill(); c.Wait() })
	}
	caPEM, _ := os.ReadFile(p.caRoot)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := hc.Get("https://" + mgmt + "/roots/0")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				p.roots = x509.NewCertPool()
				p.roots.AppendCertsFromPEM(body)
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("pebble did not come up: %v\n%s", err, p.out.String())
		}
		time.Sleep(50 * time.Millisecond) // polling an external process
	}
}

// httpsGetSNI fetches path from addr with SNI host, verifying against roots.
func httpsGetSNI(addr, host, path string, roots *x509.CertPool) (int, string, error) {
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: roots, ServerName: host},
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", addr)
		},
	}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 20 * time.Second}).Get("https://" + host + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

// eventually retries cond (bounded) until it holds; the states it waits
// on are in other processes, with no event to wait on from here.
func eventually(t *testing.T, what string, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// countingApp is an app server that counts the requests it serves.
func countingApp(t *testing.T, name string) (addr string, hits *atomic.Int64) {
	hits = new(atomic.Int64)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if strings.HasPrefix(r.URL.Path, "/item") {
			w.Header().Set("Cache-Control", "max-age=600")
		}
		fmt.Fprintf(w, "%s %s", name, r.URL.Path)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String(), hits
}

const clusterConfig = `
[server]
admin = "{{ADMIN}}"
[tls]
ca = "https://{{CA}}/dir"
ca_root = "{{CAROOT}}"
email = "ops@example.com"
storage = "etcd"
challenges = ["http-01"]
alt_http_port = {{ALTPORT}}
profile = "default"
[cluster]
etcd = [{{ETCD}}]
prefix = "/edged-test/"
node = "{{NODE}}"
lock_ttl = "5s"
sync_interval = "200ms"
local_dir = "{{DIR}}/state"
[[site]]
hosts = [{{HOSTS}}]
tls = "acme"
redirect_http = false
  [[site.route]]
  path = "/api/"
  upstream = "app"
  limit = ["api"]
  [[site.route]]
  path = "/reg/"
  upstream = "reg"
  [[site.route]]
  path = "/"
  upstream = "app"
  cache = "c"
[upstream.app]
servers = ["{{APP}}"]
[upstream.reg]
registry = "reg"
health = { path = "/", interval = "1s", timeout = "1s", rise = 1, fall = 1 }
[cache.c]
memory = "8MiB"
max_object = "1MiB"
[limit.api]
rate = "60r/m"
cluster = true
`

func TestClusterThreeNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd, Pebble and three edged")
	}
	etcd := etcdtest.Start(t, 3)
	ca := startFront(t)     // between the nodes and Pebble: paused to hold an issuance
	http01 := startFront(t) // the L4 balancer Pebble validates through
	peb := startTestPebble(t, http01.Port())
	ca.SetBackends(peb.listen)
	app, appHits := countingApp(t, "app")
	cli := etcd.Client()

	var eps []string
	for _, e := range etcd.Endpoints() {
		eps = append(eps, `"`+e+`"`)
	}
	config := func(node string, hosts ...string) string {
		r := strings.NewReplacer("{{CA}}", fmt.Sprintf("127.0.0.1:%d", ca.Port()), "{{CAROOT}}", peb.caRoot,
			"{{ALTPORT}}", fmt.Sprint(http01.Port()), "{{ETCD}}", strings.Join(eps, ", "), "{{NODE}}", node,
			"{{APP}}", app, "{{HOSTS}}", `"`+strings.Join(hosts, `", "`)+`"`)
		return r.Replace(clusterConfig)
	}

	// Three nodes start at once and all want shop.test's certificate.
	type node struct {
		e           *edged
		http, https string
	}
	nodes := make([]*node, 3)
	var wg sync.WaitGroup
	for i := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e, addrs := startEdgedWith(t, config(fmt.Sprintf("n%d", i+1), "shop.test"), "http", "https")
			nodes[i] = &node{e: e, http: addrs[0], https: addrs[1]}
		}()
	}
	wg.Wait()
	for _, n := range nodes {
		if n == nil {
			t.FailNow() // a node did not start; its error is above
		}
	}
	http01.SetBackends(nodes[0].http, nodes[1].http, nodes[2].http)

	t.Run("one order, the etcd leader killed during issuance", func(t *testing.T) {
		// Kill etcd's leader once a node holds the issuance lock.
		lockPfx := "/edged-test/certmagic/locks/issue_cert_shop.test"
		eventually(t, "a node to take the issuance lock", 2*time.Minute, func() error {
			r, err := cli.Get(context.Background(), lockPfx, clientv3.WithPrefix(), clientv3.WithCountOnly())
			if err != nil || r.Count == 0 {
				return fmt.Errorf("no lock yet (%v)", err)
			}
			return nil
		})
		leader, err := etcd.Leader(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		etcd.Kill(leader)
		t.Logf("killed etcd member %d, the leader, while a node held the lock", leader)
		for i, n := range nodes {
			eventually(t, fmt.Sprintf("node %d to serve shop.test's certificate", i+1), 3*time.Minute, func() error {
				_, _, err := httpsGetSNI(n.https, "shop.test", "/", peb.roots)
				return err
			})
		}
		t.Logf("Pebble received %d order(s)", peb.orders())
		if got := peb.orders(); got != 1 {
			t.Fatalf("Pebble received %d orders for three nodes, want 1", got)
		}
		if err := etcd.Restart(leader); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("a purge reaches every node within a second", func(t *testing.T) {
		c := &http.Client{Timeout: 10 * time.Second}
		for _, n := range nodes {
			for range 2 {
				getHost(t, c, "http://"+n.http+"/item", "shop.test")
			}
		}
		before := appHits.Load()
		for _, n := range nodes {
			getHost(t, c, "http://"+n.http+"/item", "shop.test")
		}
		if appHits.Load() != before {
			t.Fatal("the item was not cached on every node")
		}
		start := time.Now()
		if out := adminPost(t, nodes[0].e, "/purge?url="+"http://shop.test/item"); !strings.Contains(out, "sent to every node") {
			t.Fatalf("purge answered %s", out)
		}
		var seen [3]time.Duration
		for i := 1; i < 3; i++ {
			eventually(t, "the purge on node "+fmt.Sprint(i+1), 30*time.Second, func() error {
				if !strings.Contains(nodes[i].e.stderr.String(), "cache purged by another node") {
					return fmt.Errorf("not yet")
				}
				seen[i] = time.Since(start)
				return nil
			})
		}
		t.Logf("purge seen on node 2 after %v, node 3 after %v", seen[1], seen[2])
		for i := 1; i < 3; i++ {
			if seen[i] > time.Second {
				t.Errorf("node %d saw the purge after %v, more than a second", i+1, seen[i])
			}
		}
		for _, n := range nodes {
			before := appHits.Load()
			getHost(t, c, "http://"+n.http+"/item", "shop.test")
			if appHits.Load() != before+1 {
				t.Errorf("node %s served the purged item from its cache", n.http)
			}
		}
	})

	t.Run("a rate of 60 per minute holds across the nodes", func(t *testing.T) {
		var admitted, refused atomic.Int64
		stop := time.Now().Add(time.Minute)
		var lw sync.WaitGroup
		for _, n := range nodes {
			lw.Add(1)
			go func() {
				defer lw.Done()
				c := &http.Client{Timeout: 10 * time.Second}
				for i := 0; time.Now().Before(stop) && i < 3000; i++ {
					req, _ := http.NewRequest("GET", "http://"+n.http+"/api/x", nil)
					req.Host = "shop.test"
					resp, err := c.Do(req)
					if err != nil {
						continue
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode == 200 {
						admitted.Add(1)
					} else if resp.StatusCode == 429 {
						refused.Add(1)
					}
					time.Sleep(20 * time.Millisecond) // pacing the load, not synchronisation
				}
			}()
		}
		lw.Wait()
		// One minute at 60 per minute, plus the one request a full bucket
		// lets through at the start.
		want := 61.0
		got := float64(admitted.Load())
		t.Logf("admitted %v, refused %d in a minute across three nodes (want %v ±10%%)", got, refused.Load(), want)
		if got < want*0.9 || got > want*1.1 {
			t.Fatalf("admitted %v in a minute across three nodes; want %v within 10%%", got, want)
		}
	})

	t.Run("an app node registered with a lease joins and leaves the pools", func(t *testing.T) {
		regApp, _ := countingApp(t, "registered")
		dir := t.TempDir()
		cfgPath := filepath.Join(dir, "edged.toml")
		writeConfig(t, cfgPath, fmt.Sprintf("[cluster]\netcd = [%s]\nprefix = \"/edged-test/\"\nlocal_dir = \"{{DIR}}\"\n[[site]]\n  [[site.route]]\n  path = \"/\"\n  respond = \"x\"\n", strings.Join(eps, ", ")), dir)
		reg := exec.Command(edgedBin, "register", "-config", cfgPath, "-upstream", "reg", "-ttl", "3s", regApp)
		regOut := &syncbuf.Buffer{}
		reg.Stdout, reg.Stderr = regOut, regOut
		if err := reg.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { reg.Process.Kill(); reg.Wait() })
		c := &http.Client{Timeout: 10 * time.Second}
		for i, n := range nodes {
			eventually(t, fmt.Sprintf("node %d to proxy to the registered app", i+1), time.Minute, func() error {
				code, body := getNoFail(c, "http://"+n.http+"/reg/")
				if code != 200 || !strings.HasPrefix(body, "registered") {
					return fmt.Errorf("%d %q", code, body)
				}
				return nil
			})
		}
		// The app node dies without withdrawing: it leaves within its lease.
		reg.Process.Signal(syscall.SIGKILL)
		reg.Wait()
		killed := time.Now()
		for i, n := range nodes {
			eventually(t, fmt.Sprintf("node %d to drop the dead app node", i+1), time.Minute, func() error {
				if code, body := getNoFail(c, "http://"+n.http+"/reg/"); code != 503 {
					return fmt.Errorf("%d %q", code, body)
				}
				return nil
			})
		}
		t.Logf("the dead app node left every pool %v after it died (lease 3s)", time.Since(killed))
	})

	t.Run("a node killed holding the lock blocks the others no longer than the lease", func(t *testing.T) {
		// The CA stops answering, so the node that takes blog.test's lock
		// keeps it while it waits.
		ca.Pause()
		lockPfx := "/edged-test/certmagic/locks/issue_cert_blog.test"
		nodes[2].e.reload(config("n3", "shop.test", "blog.test"))
		var holder string
		eventually(t, "node 3 to take blog.test's lock", 2*time.Minute, func() error {
			r, err := cli.Get(context.Background(), lockPfx, clientv3.WithPrefix(), clientv3.WithKeysOnly())
			if err != nil || len(r.Kvs) == 0 {
				return fmt.Errorf("no lock yet (%v)", err)
			}
			holder = string(r.Kvs[0].Key)
			return nil
		})
		nodes[1].e.reload(config("n2", "shop.test", "blog.test"))
		eventually(t, "node 2 to wait for the lock", 2*time.Minute, func() error {
			r, err := cli.Get(context.Background(), lockPfx, clientv3.WithPrefix(), clientv3.WithCountOnly())
			if err != nil || r.Count < 2 {
				return fmt.Errorf("%d waiting (%v)", r.Count, err)
			}
			return nil
		})
		w := cli.Watch(context.Background(), holder)
		nodes[2].e.cmd.Process.Signal(syscall.SIGKILL)
		killed := time.Now()
		select {
		case <-w:
		case <-time.After(time.Minute):
			t.Fatal("the dead node's lock was not released within a minute")
		}
		held := time.Since(killed)
		t.Logf("the dead node's lock was released %v after it died (lease 5s)", held)
		if held > 5*time.Second+5*time.Second {
			t.Errorf("the dead node's lock blocked the others for %v, well beyond its 5s lease", held)
		}
		// The balancer's health checks would take the dead node out.
		http01.SetBackends(nodes[0].http, nodes[1].http)
		ca.Resume()
		eventually(t, "node 2 to serve blog.test", 3*time.Minute, func() error {
			_, _, err := httpsGetSNI(nodes[1].https, "blog.test", "/", peb.roots)
			return err
		})
	})

	t.Run("cut off from etcd, nodes serve on and recover by themselves", func(t *testing.T) {
		c := &http.Client{Timeout: 10 * time.Second}
		for _, n := range nodes[:2] {
			getHost(t, c, "http://"+n.http+"/item", "shop.test") // cached from here on
		}
		lost := func(n *node) int { return strings.Count(n.e.stderr.String(), "cluster: etcd unreachable") }
		lostBefore := []int{lost(nodes[0]), lost(nodes[1])}
		for i := range etcd.Members {
			etcd.Kill(i)
		}
		for i, n := range nodes[:2] {
			eventually(t, fmt.Sprintf("node %d to notice etcd is gone", i+1), time.Minute, func() error {
				if st := adminGet(t, n.e, "/status"); !strings.Contains(st, `"etcd_up": false`) {
					return fmt.Errorf("status says etcd is up")
				}
				return nil
			})
			if m := adminGet(t, n.e, "/metrics"); !strings.Contains(m, "edged_cluster_etcd_up 0") {
				t.Errorf("node %d's metrics do not show etcd down", i+1)
			}
			if got := lost(n) - lostBefore[i]; got != 1 {
				t.Errorf("node %d logged etcd's loss %d times, want once", i+1, got)
			}
			if _, _, err := httpsGetSNI(n.https, "shop.test", "/", peb.roots); err != nil {
				t.Errorf("node %d with etcd down: %v", i+1, err)
			}
			before := appHits.Load()
			getHost(t, c, "http://"+n.http+"/item", "shop.test")
			if appHits.Load() != before {
				t.Errorf("node %d's cache did not serve with etcd down", i+1)
			}
		}
		// Node 2 restarts while etcd is down: its certificate comes from
		// its local copy.
		dir2 := filepath.Dir(nodes[1].e.config)
		nodes[1].e.cmd.Process.Signal(syscall.SIGTERM)
		exit := <-nodes[1].e.done
		nodes[1].e.done <- exit // for the cleanup that waits for it too
		e, addrs := startEdgedWith(t, strings.ReplaceAll(config("n2", "shop.test"), "{{DIR}}/state", dir2+"/state"), "http", "https")
		nodes[1] = &node{e: e, http: addrs[0], https: addrs[1]}
		eventually(t, "node 2, restarted with etcd down, to serve from its local copy", time.Minute, func() error {
			_, _, err := httpsGetSNI(nodes[1].https, "shop.test", "/", peb.roots)
			return err
		})
		// A purge made meanwhile is queued, and sent when etcd is back.
		if out := adminPost(t, nodes[0].e, "/purge?url=http://shop.test/item"); !strings.Contains(out, "queued") {
			t.Fatalf("purge with etcd down answered %s", out)
		}
		var rw sync.WaitGroup
		errs := make([]error, len(etcd.Members))
		for i := range etcd.Members {
			rw.Add(1)
			go func() { defer rw.Done(); errs[i] = etcd.Restart(i) }()
		}
		rw.Wait()
		for _, err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		for i, n := range nodes[:2] {
			eventually(t, fmt.Sprintf("node %d to see etcd again", i+1), 2*time.Minute, func() error {
				if st := adminGet(t, n.e, "/status"); !strings.Contains(st, `"etcd_up": true`) {
					return fmt.Errorf("status says etcd is down")
				}
				return nil
			})
		}
		eventually(t, "the queued purge to reach node 2", 2*time.Minute, func() error {
			if !strings.Contains(nodes[1].e.stderr.String(), "cache purged by another node") {
				return fmt.Errorf("not yet")
			}
			return nil
		})
	})
}

func getNoFail(c *http.Client, url string) (int, string) {
	req, _ := http.NewRequest("GET", url, nil)
	req.Host = "shop.test"
	resp, err := c.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// adminPost sends a POST to e's admin socket.
func adminPost(t *testing.T, e *edged, path string) string {
	t.Helper()
	sock := filepath.Join(filepath.Dir(e.config), "admin.sock")
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}}
	resp, err := c.Post("http://edged"+path, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
