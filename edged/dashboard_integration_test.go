package main

// The status page's fixture: the real edged binary with two upstream
// servers (real processes, so that one can be killed), an appd with two
// workers behind it, a cache, a limit zone, a TLS site with a certificate
// from edged's internal CA, and the page on a route for loopback clients.
// The browser test (dashboard_browser_test.go) and the Grafana test
// (grafana_test.go) both run against it.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edgeapp/edgeapp/edged/dashboard"
	"github.com/edgeapp/edgeapp/internal/syncbuf"
)

var (
	appdBuild              sync.Once
	appdBin, workerBin     string
	appdBuildErr           error
	appdBuildDir           string
	dashboardStatusPageURL = "/_status/"
)

// buildAppd builds appd and its test worker once for the package's tests.
func buildAppd(t *testing.T) {
	t.Helper()
	appdBuild.Do(func() {
		appdBuildDir, appdBuildErr = os.MkdirTemp("", "edged-appd-test")
		if appdBuildErr != nil {
			return
		}
		appdBin = filepath.Join(appdBuildDir, "appd")
		workerBin = filepath.Join(appdBuildDir, "testworker")
		for out, pkg := range map[string]string{appdBin: "../appd", workerBin: "../appd/internal/testworker"} {
			if b, err := exec.Command("go", "build", "-o", out, pkg).CombinedOutput(); err != nil {
				appdBuildErr = fmt.Errorf("building %s: %v\n%s", pkg, err, b)
				return
			}
		}
	})
	if appdBuildErr != nil {
		t.Fatal(appdBuildErr)
	}
}

// process is a child process the test owns.
type process struct {
	cmd    *exec.Cmd
	out    *syncbuf.Buffer
	done   chan struct{}
	exited error
}

func startProcess(t *testing.T, cmd *exec.Cmd) *process {
	t.Helper()
	p := &process{cmd: cmd, out: &syncbuf.Buffer{}, done: make(chan struct{})}
	if cmd.Stdout == nil {
		cmd.Stdout = p.out
	}
	if cmd.Stderr == nil {
		cmd.Stderr = p.out
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.exited = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { p.kill() })
	return p
}

func (p *process) kill() {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// upstreamProcess runs the test worker as an upstream server on a
// loopback port it inherits (sd_listen_fds), as a separate process that
// the test can kill.
func upstreamProcess(t *testing.T) (*process, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f, _ := ln.(*net.TCPListener).File()
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.Command("/bin/sh", "-c", `LISTEN_PID=$$ exec "$0"`, workerBin)
	cmd.Env = append(os.Environ(), "LISTEN_FDS=1", "LISTEN_FDNAMES=app", "APPD_WORKER=0", "APPD_GENERATION=1")
	cmd.ExtraFiles = []*os.File{f}
	p := startProcess(t, cmd)
	f.Close()
	waitHTTP(t, "http://"+addr+"/", nil)
	return p, addr
}

// waitHTTP waits until url answers 200 (through c, or a plain client).
func waitHTTP(t *testing.T, url string, c *http.Client) {
	t.Helper()
	if c == nil {
		c = &http.Client{Timeout: 2 * time.Second}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := c.Get(url)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not answer 200 in 30s: %v", url, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func unixClient(path string) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", path)
	}}}
}

// dashFixture is the running appliance.
type dashFixture struct {
	e            *edged
	admin        *http.Client // the admin socket
	adminSock    string
	appdCtl      string
	up           [2]*process
	upAddr       [2]string
	appd         *process
	pageURL      string
	httpsAddr    string
	appdName     string
	upstreamPool string
}

const dashEdgedConfig = `
[server]
admin = "{{ADMIN}}"
https = []
[tls]
storage = "{{DIR}}/tls"
[dashboard]
appd = ["{{APPD}}/*.ctl"]
[access_log]
output = "off"

[[site]]
hosts = ["127.0.0.1", "localhost"]
tls = "off"
  [[site.route]]
  path = "/"
  upstream = "web"
  [[site.route]]
  path = "/shop/"
  upstream = "shop"
  strip_prefix = true
  cache = "main"
  limit = ["perip"]
  [[site.route]]
  path = "/_status/"
  status_page = true
  allow = ["127.0.0.1/32", "::1/128"]

[[site]]
hosts = ["secure.test"]
tls = "internal"
  [[site.route]]
  path = "/"
  respond = "secure"

[upstream.web]
servers = ["{{UP0}}", "{{UP1}}"]
policy = "least_conn"
health = { path = "/", interval = "250ms", timeout = "200ms", fall = 2, rise = 1 }

[upstream.shop]
servers = ["unix:{{APPD}}/shop.sock"]

[cache.main]
memory = "32MiB"

[limit.perip]
rate = "50r/s"
burst = 20
nodelay = true
`

// startDashFixture starts everything and sends some traffic, so that the
// page and the metrics have something to show.
func startDashFixture(t *testing.T) *dashFixture {
	t.Helper()
	buildAppd(t)
	f := &dashFixture{appdName: "shop", upstreamPool: "web"}
	for i := range f.up {
		f.up[i], f.upAddr[i] = upstreamProcess(t)
	}
	appdDir := t.TempDir()
	f.appdCtl = filepath.Join(appdDir, "shop.ctl")
	user := ""
	if os.Geteuid() == 0 {
		user = "user = \"root\"\n"
	}
	appdConf := filepath.Join(appdDir, "shop.toml")
	os.WriteFile(appdConf, []byte(fmt.Sprintf("[app]\n%scommand = [%q]\nlisten = [\"unix:%s/shop.sock\"]\ncontrol = %q\nenvironment = { TW_STATUS = \"serving orders\" }\n[workers]\ncount = 2\n[limits]\nmemory_max = \"256MiB\"\n",
		user, workerBin, appdDir, f.appdCtl)), 0o644)
	f.appd = startProcess(t, exec.Command(appdBin, "-name", "shop", "-config", appdConf))
	ctl := unixClient(f.appdCtl)
	deadline := time.Now().Add(60 * time.Second)
	for {
		var st struct{ Ready int }
		resp, err := ctl.Get("http://appd/status")
		if err == nil {
			json.NewDecoder(resp.Body).Decode(&st)
			resp.Body.Close()
		}
		if st.Ready == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("appd's two workers not ready in 60s: %v\n%s", err, f.appd.out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}

	cfg := strings.NewReplacer("{{APPD}}", appdDir, "{{UP0}}", f.upAddr[0], "{{UP1}}", f.upAddr[1]).Replace(dashEdgedConfig)
	f.e = startEdged(t, cfg)
	f.adminSock = filepath.Join(filepath.Dir(f.e.config), "admin.sock")
	f.admin = unixClient(f.adminSock)
	f.pageURL = f.e.httpURL + dashboardStatusPageURL
	c := &http.Client{Timeout: 10 * time.Second}
	for i := 0; i < 40; i++ {
		for _, p := range []string{"/", "/shop/", "/shop/slow?ms=30", "/missing-here"} {
			resp, err := c.Get(f.e.httpURL + p)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	// A burst over the limit zone, so that it refuses some.
	for i := 0; i < 60; i++ {
		resp, err := c.Get(f.e.httpURL + "/shop/")
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	return f
}

// snapshot reads the page's JSON through the admin socket.
func (f *dashFixture) snapshot(t *testing.T) (*dashboard.Snapshot, string) {
	t.Helper()
	resp, err := f.admin.Get("http://edged/dashboard/status.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var s dashboard.Snapshot
	if resp.StatusCode != 200 || json.Unmarshal(b, &s) != nil {
		t.Fatalf("admin /dashboard/status.json: %s\n%s", resp.Status, b)
	}
	return &s, string(b)
}

// TestDashboardSnapshotFromRunningAppliance: what the page will show,
// read as JSON from the admin socket of a running edged: both upstream
// servers, the appd's two workers, the certificate, the cache and zone.
func TestDashboardSnapshotFromRunningAppliance(t *testing.T) {
	f := startDashFixture(t)
	var s *dashboard.Snapshot
	var body string
	deadline := time.Now().Add(20 * time.Second)
	for {
		s, body = f.snapshot(t)
		ok := s.Edged != nil && len(s.Apps) == 1 && len(s.Apps[0].Workers) == 2 && len(s.Edged.Certificates) == 1 && s.Edged.Certificates[0].State == "valid"
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("snapshot incomplete after 20s:\n%s", body)
		}
		time.Sleep(200 * time.Millisecond)
	}
	app := s.Apps[0]
	if app.Name != "shop" || app.Error != "" || app.Ready != 2 || app.Generation != 1 || app.MemoryMax != 256<<20 {
		t.Errorf("app: %+v", app)
	}
	for i, w := range app.Workers {
		if w.Slot != i || w.PID == 0 || w.State != "ready" || w.Memory == 0 || w.Status != "serving orders" {
			t.Errorf("worker %d: %+v", i, w)
		}
	}
	c := s.Edged.Certificates[0]
	if c.Host != "secure.test" || c.Mode != "internal" || c.Issuer == "" || c.NotAfter.IsZero() || c.Alarm {
		t.Errorf("certificate: %+v", c)
	}
	var web *dashboard.Upstream
	for i := range s.Edged.Upstreams {
		if s.Edged.Upstreams[i].Name == "web" {
			web = &s.Edged.Upstreams[i]
		}
	}
	if web == nil || len(web.Servers) != 2 || web.Servers[0].State != "up" || web.Servers[1].State != "up" || web.Policy != "least_conn" {
		t.Errorf("upstream web: %+v", web)
	}
	if len(s.Edged.Caches) != 1 || s.Edged.Caches[0].Misses == 0 {
		t.Errorf("caches: %+v", s.Edged.Caches)
	}
	if len(s.Edged.Limits) != 1 || s.Edged.Limits[0].Refused == 0 {
		t.Errorf("limits: %+v", s.Edged.Limits)
	}
	if s.Edged.Connections["http"] < 0 || s.Edged.Started.IsZero() {
		t.Errorf("edged: %+v", s.Edged)
	}
}

// TestDashboardCommand: `edged dashboard` serves the page on a loopback
// port under a secret path, with the snapshots of the running edged; it
// refuses any address that is not loopback.
func TestDashboardCommand(t *testing.T) {
	f := startDashFixture(t)
	out, err := exec.Command(edgedBin, "dashboard", "-config", f.e.config, "-listen", "0.0.0.0:0").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "loopback address only") {
		t.Errorf("a public address: %v\n%s", err, out)
	}
	cmd := exec.Command(edgedBin, "dashboard", "-config", f.e.config, "-listen", "127.0.0.1:0")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := startProcess(t, cmd)
	urlRE := regexp.MustCompile(`http://127\.0\.0\.1:\d+/[0-9a-f]{32}/`)
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if u := urlRE.FindString(sc.Text()); u != "" {
				found <- u
				break
			}
		}
		io.Copy(io.Discard, stdout)
	}()
	var url string
	select {
	case url = <-found:
	case <-p.done:
		t.Fatalf("edged dashboard exited: %v\n%s", p.exited, p.out.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("edged dashboard printed no address in 30s\n%s", p.out.String())
	}
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url + "status.json")
	if err != nil {
		t.Fatal(err)
	}
	var s dashboard.Snapshot
	err = json.NewDecoder(resp.Body).Decode(&s)
	resp.Body.Close()
	if err != nil || s.Edged == nil || len(s.Edged.Upstreams) != 2 {
		t.Fatalf("status.json through edged dashboard: %v %+v", err, s.Edged)
	}
	resp, err = c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), "<title>edged status</title>") {
		t.Errorf("the page: %s %.200s", resp.Status, b)
	}
	root := strings.SplitN(url, "/", 4)[:3]
	resp, err = c.Get(strings.Join(root, "/") + "/status.json")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Errorf("without the secret path: %s", resp.Status)
	}
}
