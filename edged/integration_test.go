package main

// Integration tests: the real edged binary, real upstream servers, sockets
// passed by the sd_listen_fds protocol as systemd passes them, and a real
// NOTIFY_SOCKET.

import (
	"bufio"
	"context"
	"fmt"
	"github.com/edgeapp/edgeapp/edged/engine"
	"github.com/edgeapp/edgeapp/edged/engine/enginetest"
	"github.com/edgeapp/edgeapp/edged/httpwire"
	"github.com/edgeapp/edgeapp/internal/syncbuf"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

var edgedBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "edged-test")
	if err != nil {
		panic(err)
	}
	edgedBin = filepath.Join(dir, "edged")
	build := exec.Command("go", "build", "-race", "-o", edgedBin, ".")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building edged:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// edged is one running edged process under test.
type edged struct {
	t       *testing.T
	cmd     *exec.Cmd
	config  string
	httpURL string
	notify  *net.UnixConn
	stderr  *syncbuf.Buffer
	done    chan error
}

// startEdged writes config (with {{ADMIN}} and {{DIR}} replaced), hands
// edged a listening socket named "http" the way systemd does, and waits
// for READY=1.
func startEdged(t *testing.T, config string) *edged {
	t.Helper()
	e, _ := startEdgedWith(t, config, "http")
	return e
}

// startEdgedWith passes one loopback socket per name (LISTEN_FDNAMES) and
// returns their addresses in that order.
func startEdgedWith(t *testing.T, config string, names ...string) (*edged, []string) {
	t.Helper()
	return startEdgedShell(t, config, "", names...)
}

// startEdgedShell is startEdgedWith with shell commands (such as a ulimit)
// run before edged is exec'd.
func startEdgedShell(t *testing.T, config, shell string, names ...string) (*edged, []string) {
	t.Helper()
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "edged.toml")
	writeConfig(t, cfgPath, config, dir)
	var files []*os.File
	var addrs []string
	for _, name := range names {
		if name == "quic" { // a datagram socket, as edged-quic.socket passes
			pc, err := net.ListenPacket("udp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			f, _ := pc.(*net.UDPConn).File()
			addrs = append(addrs, pc.LocalAddr().String())
			pc.Close()
			files = append(files, f)
			continue
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		f, _ := ln.(*net.TCPListener).File()
		addrs = append(addrs, ln.Addr().String())
		if name == "http" {
			registerH2C(ln.Addr().String())
		}
		ln.Close() // f keeps the socket listening
		files = append(files, f)
	}
	notifyPath := filepath.Join(dir, "notify.sock")
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notifyPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	// sh execs edged in place, so $$ is edged's pid: LISTEN_PID is right.
	cmd := exec.Command("/bin/sh", "-c", shell+`
LISTEN_PID=$$ exec "$0" -config "$1"`, edgedBin, cfgPath)
	cmd.ExtraFiles = files
	cmd.Env = append(os.Environ(), fmt.Sprintf("LISTEN_FDS=%d", len(names)), "LISTEN_FDNAMES="+strings.Join(names, ":"), "NOTIFY_SOCKET="+notifyPath)
	e := &edged{t: t, cmd: cmd, config: cfgPath, httpURL: "http://" + addrs[0], notify: notify, stderr: &syncbuf.Buffer{}, done: make(chan error, 1)}
	cmd.Stderr = e.stderr
	cmd.Stdout = e.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		f.Close()
	}
	go func() { e.done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGKILL)
		<-e.done
		notify.Close()
		if t.Failed() {
			t.Logf("edged output:\n%s", e.stderr.String())
		}
	})
	e.waitNotify("READY=1", 30*time.Second)
	return e, addrs
}

func writeConfig(t *testing.T, path, config, dir string) {
	t.Helper()
	config = strings.ReplaceAll(config, "{{ADMIN}}", "unix:"+filepath.Join(dir, "admin.sock"))
	config = strings.ReplaceAll(config, "{{DIR}}", dir)
	config = enginetest.Config(config)
	config = h2cConfig(config)
	if err := os.WriteFile(path, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
}

// waitNotify reads sd_notify datagrams until one contains want.
func (e *edged) waitNotify(want string, timeout time.Duration) string {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 4096)
	for {
		e.notify.SetReadDeadline(deadline)
		n, err := e.notify.Read(buf)
		if err != nil {
			e.t.Fatalf("waiting for %q from edged: %v\noutput:\n%s", want, err, e.stderr.String())
		}
		msg := string(buf[:n])
		if strings.Contains(msg, want) {
			return msg
		}
	}
}

func (e *edged) reload(newConfig string) string {
	e.t.Helper()
	if newConfig != "" {
		writeConfig(e.t, e.config, newConfig, filepath.Dir(e.config))
	}
	e.cmd.Process.Signal(syscall.SIGHUP)
	e.waitNotify("RELOADING=1", 30*time.Second)
	return e.waitNotify("READY=1", 30*time.Second)
}

func get(t *testing.T, c *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", url, err)
	}
	return resp.StatusCode, string(b)
}

// upstream is a real HTTP server on loopback that says who it is.
func upstream(t *testing.T, name string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/slow":
			select {
			case <-time.After(10 * time.Second):
			case <-r.Context().Done():
				return
			}
		case "/die":
			w.Header().Set("Content-Length", "1000")
			w.WriteHeader(200)
			w.Write([]byte("partial"))
			w.(http.Flusher).Flush()
			conn, _, _ := http.NewResponseController(w).Hijack()
			conn.Close()
			return
		case "/upload":
			n, _ := io.Copy(io.Discard, r.Body)
			fmt.Fprintf(w, "%d", n)
			return
		}
		fmt.Fprintf(w, "%s %s xff=%s rid=%s", name, r.URL.Path, r.Header.Get("X-Forwarded-For"), r.Header.Get("X-Request-ID"))
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func closedPort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestConfigCheck(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.toml")
	os.WriteFile(good, []byte("[server]\nadmin = \"\"\n[[site]]\n[[site.route]]\npath = \"/\"\nrespond = \"hi\"\n"), 0o644)
	out, err := exec.Command(edgedBin, "-t", "-config", good).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "OK") {
		t.Fatalf("edged -t on a good config: %v\n%s", err, out)
	}
	bad := filepath.Join(dir, "bad.toml")
	os.WriteFile(bad, []byte("[server]\nadmin = \"\"\n[[site]]\n[[site.route]]\npath = \"/\"\nupstream = \"missing\"\ncolour = \"blue\"\n"), 0o644)
	out, err = exec.Command(edgedBin, "-t", "-config", bad).CombinedOutput()
	if err == nil {
		t.Fatalf("edged -t accepted a bad config:\n%s", out)
	}
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("exit status %v, want 1", err)
	}
	if !strings.Contains(string(out), bad+":7: site[0].route[0].colour: unknown key") {
		t.Fatalf("error does not name file, line and key:\n%s", out)
	}
}

func TestProxyStaticAndErrors(t *testing.T) {
	a, b := upstream(t, "a"), upstream(t, "b")
	www := t.TempDir()
	os.WriteFile(filepath.Join(www, "hello.txt"), []byte("hello from disk\n"), 0o644)
	e := startEdged(t, fmt.Sprintf(`
[server]
admin = "{{ADMIN}}"
max_body = "1KiB"
[[site]]
  [[site.route]]
  path = "/"
  upstream = "ab"
  [[site.route]]
  path = "/files/"
  static = %q
  [[site.route]]
  path = "/dead/"
  upstream = "dead"
  [[site.route]]
  path = "/slow/"
  upstream = "slow"
  strip_prefix = true
  [[site.route]]
  path = "/die"
  upstream = "die"
  [[site.route]]
  path = "/old"
  redirect = "https://new.example{uri}"
  status = 301
[upstream.ab]
servers = [%q, %q]
[upstream.dead]
servers = [%q]
[upstream.slow]
servers = [%q]
response_header_timeout = "300ms"
[upstream.die]
servers = [%q]
`, www, a, b, closedPort(t), a, upstream(t, "c")))
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	seen := map[string]bool{}
	for i := 0; i < 4; i++ {
		code, body := get(t, c, e.httpURL+"/x")
		if code != 200 || !strings.Contains(body, " /x xff=127.0.0.1 rid=") {
			t.Fatalf("proxied GET: %d %q", code, body)
		}
		seen[body[:1]] = true
	}
	if !seen["a"] || !seen["b"] {
		t.Errorf("round robin did not reach both servers: %v", seen)
	}
	if code, body := get(t, c, e.httpURL+"/files/hello.txt"); code != 200 || body != "hello from disk\n" {
		t.Errorf("static: %d %q", code, body)
	}
	// The path is normalised to /integration_test.go, which is the
	// upstream's, not a file beside the static root.
	if _, body := get(t, c, e.httpURL+"/files/../integration_test.go"); strings.Contains(body, "package main") {
		t.Errorf("static escaped its root")
	}
	if code, _ := get(t, c, e.httpURL+"/files/../../integration_test.go"); code != 400 {
		t.Errorf("a path above the root: %d, want 400", code)
	}
	if code, body := get(t, c, e.httpURL+"/dead/x"); code != 502 || body == "" {
		t.Errorf("refused upstream: %d %q, want 502 with a body", code, body)
	}
	if code, _ := get(t, c, e.httpURL+"/slow/slow"); code != 504 {
		t.Errorf("slow upstream: %d, want 504", code)
	}
	resp, err := c.Get(e.httpURL + "/old/page?q=1")
	if err != nil || resp.StatusCode != 301 || resp.Header.Get("Location") != "https://new.example/old/page?q=1" {
		t.Errorf("redirect: %v %v", err, resp)
	}
	// An upstream that dies mid-body: the client must see a broken
	// connection (Go's client may then retry and get an error status),
	// never a complete-looking short 200.
	resp, err = c.Get(e.httpURL + "/die")
	if err == nil {
		var body []byte
		body, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil && resp.StatusCode == 200 {
			t.Errorf("upstream died mid-response but the client got a complete 200: %q", body)
		}
	}
	// Body limits: 413 from Content-Length and from a chunked body.
	resp, err = c.Post(e.httpURL+"/upload", "text/plain", strings.NewReader(strings.Repeat("x", 2048)))
	if err != nil || resp.StatusCode != 413 {
		t.Errorf("oversized body: %v %v, want 413", err, resp)
	}
	resp, err = c.Post(e.httpURL+"/upload", "text/plain", io.MultiReader(strings.NewReader(strings.Repeat("x", 2048))))
	if err != nil || resp.StatusCode != 413 {
		t.Errorf("oversized chunked body: %v %v, want 413", err, resp)
	}
	// Headers too large: 431.
	req, _ := http.NewRequest("GET", e.httpURL+"/x", nil)
	req.Header.Set("X-Big", strings.Repeat("y", 128<<10))
	resp, err = c.Do(req)
	if err != nil || resp.StatusCode != 431 {
		t.Errorf("huge headers: %v %v, want 431", err, resp)
	}
}

// TestReloadUnderLoad reloads edged 20 times with changing configurations
// while clients on kept-alive connections send requests: not one may fail
// and no connection may be reset.
func TestReloadUnderLoad(t *testing.T) {
	a, b := upstream(t, "a"), upstream(t, "b")
	conf := func(i int) string {
		servers := fmt.Sprintf("%q", a)
		if i%2 == 1 {
			servers = fmt.Sprintf("%q, %q", a, b)
		}
		return fmt.Sprintf(`
[server]
admin = "{{ADMIN}}"
[[site]]
  [[site.route]]
  path = "/"
  upstream = "app"
  [[site.route]]
  path = "/gen"
  respond = "generation %d"
[upstream.app]
servers = [%s]
policy = %q
`, i, servers, []string{"round_robin", "least_conn", "random_two"}[i%3])
	}
	e := startEdged(t, conf(0))
	const clients = 8
	var ok, failed, dials atomic.Int64
	var firstErr atomic.Value
	progress := make(chan struct{}, 1024) // one token per successful request
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// One kept-alive connection per client.
			// Dials are counted: Go's client silently retries an idempotent
			// request on a reset kept-alive connection, so a reset would
			// show only as an extra dial.
			tr := &http.Transport{MaxIdleConnsPerHost: 1, MaxConnsPerHost: 1,
				DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
					dials.Add(1)
					var d net.Dialer
					return d.DialContext(ctx, network, addr)
				}}
			defer tr.CloseIdleConnections()
			c := &http.Client{Transport: tr, Timeout: 30 * time.Second}
			for n := 0; n < 5000 && ctx.Err() == nil; n++ {
				resp, err := c.Get(e.httpURL + "/load")
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if err == nil && resp.StatusCode != 200 {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				ok.Add(1)
				select {
				case progress <- struct{}{}:
				default:
				}
			}
		}()
	}
	for i := 1; i <= 20; i++ {
		e.reload(conf(i))
		// Each generation must actually serve some of the load.
		for drained := len(progress); drained > 0; drained-- {
			<-progress
		}
		timeout := time.After(20 * time.Second)
		for n := 0; n < 50; n++ {
			select {
			case <-progress:
			case <-timeout:
				t.Fatalf("generation %d served fewer than 50 requests in 20s", i)
			}
		}
		c := &http.Client{Timeout: 10 * time.Second}
		if code, body := get(t, c, e.httpURL+"/gen"); code != 200 || body != fmt.Sprintf("generation %d", i) {
			t.Fatalf("after reload %d: %d %q", i, code, body)
		}
	}
	// Thousands of requests in all, not only the ones during reloads.
	for deadline := time.After(60 * time.Second); ok.Load() < 5000; {
		select {
		case <-progress:
		case <-deadline:
			t.Fatalf("only %d requests in 60s", ok.Load())
		}
	}
	cancel()
	wg.Wait()
	if dials.Load() != clients {
		t.Errorf("%d connections were opened for %d clients: kept-alive connections were closed or reset", dials.Load(), clients)
	}
	if failed.Load() != 0 {
		t.Fatalf("%d of %d requests failed across 20 reloads; first: %v", failed.Load(), ok.Load()+failed.Load(), firstErr.Load())
	}
	if ok.Load() < 20*50 {
		t.Fatalf("only %d requests completed", ok.Load())
	}
	t.Logf("%d requests over %d kept-alive connections, 20 reloads, 0 failed", ok.Load(), clients)
}

func TestBadReloadKeepsServing(t *testing.T) {
	good := "[server]\nadmin = \"{{ADMIN}}\"\n[[site]]\n[[site.route]]\npath = \"/\"\nrespond = \"v1\"\n"
	e := startEdged(t, good)
	c := &http.Client{Timeout: 10 * time.Second}
	status := e.reload("[server]\nadmin = \"{{ADMIN}}\"\n[[site]]\n[[site.route]]\npath = \"/\"\nrespond = \"v2\"\nbogus = 1\n")
	if !strings.Contains(status, "RELOAD FAILED") {
		t.Errorf("STATUS after a bad reload does not say so: %q", status)
	}
	if code, body := get(t, c, e.httpURL+"/"); code != 200 || body != "v1" {
		t.Fatalf("after a bad reload: %d %q, want the old config's v1", code, body)
	}
	written, _ := os.ReadFile(e.config)
	line := 1 + strings.Count(string(written[:strings.Index(string(written), "bogus")]), "\n") // 7, or 8 with an engine line added
	if !strings.Contains(e.stderr.String(), fmt.Sprintf("edged.toml:%d: site[0].route[0].bogus: unknown key", line)) {
		t.Errorf("log does not name the bad key:\n%s", e.stderr.String())
	}
	e.reload(strings.Replace(good, "v1", "v3", 1))
	if code, body := get(t, c, e.httpURL+"/"); code != 200 || body != "v3" {
		t.Fatalf("after a good reload: %d %q", code, body)
	}
}

// TestGracefulStop: SIGTERM lets a request in flight finish, then exits 0.
func TestGracefulStop(t *testing.T) {
	release := make(chan struct{})
	arrived := make(chan struct{}, 1)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-release
		io.WriteString(w, "finished")
	})}
	go srv.Serve(ln)
	defer srv.Close()
	e := startEdged(t, fmt.Sprintf("[server]\nadmin = \"{{ADMIN}}\"\n[[site]]\n[[site.route]]\npath = \"/\"\nupstream = \"u\"\n[upstream.u]\nservers = [%q]\n", ln.Addr().String()))
	result := make(chan string, 1)
	go func() {
		resp, err := http.Get(e.httpURL + "/")
		if err != nil {
			result <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		result <- string(b)
	}()
	<-arrived
	e.cmd.Process.Signal(syscall.SIGTERM)
	e.waitNotify("STOPPING=1", 10*time.Second)
	close(release)
	if got := <-result; got != "finished" {
		t.Fatalf("request in flight during SIGTERM: %q", got)
	}
	select {
	case err := <-e.done:
		if err != nil {
			t.Fatalf("edged exited with %v after SIGTERM", err)
		}
		e.done <- nil // for Cleanup
	case <-time.After(30 * time.Second):
		t.Fatal("edged did not exit after SIGTERM")
	}
}

// TestAdminStatusAndMetrics reads /status and /metrics over the admin socket.
func TestAdminStatusAndMetrics(t *testing.T) {
	a := upstream(t, "a")
	e := startEdged(t, fmt.Sprintf("[server]\nadmin = \"{{ADMIN}}\"\n[[site]]\nhosts = [\"example.test\"]\n[[site.route]]\npath = \"/\"\nupstream = \"u\"\n[upstream.u]\nservers = [%q]\n", a))
	c := &http.Client{Timeout: 10 * time.Second}
	req, _ := http.NewRequest("GET", e.httpURL+"/", nil)
	req.Host = "example.test"
	resp, err := c.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("request: %v %v", err, resp)
	}
	resp.Body.Close()
	out, err := exec.Command(edgedBin, "status", "-config", e.config).CombinedOutput()
	if err != nil || !strings.Contains(string(out), a) || !strings.Contains(string(out), `"generation": 1`) {
		t.Fatalf("edged status: %v\n%s", err, out)
	}
	admin := filepath.Join(filepath.Dir(e.config), "admin.sock")
	ac := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return net.Dial("unix", admin)
	}}}
	resp, err = ac.Get("http://edged/metrics")
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(resp.Body)
	found := false
	var reqLines []string
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "edged_requests_total") {
			reqLines = append(reqLines, sc.Text())
		}
		if sc.Text() == `edged_requests_total{code="2xx",route="/",site="example.test"} 1` {
			found = true
		}
	}
	resp.Body.Close()
	if !found {
		t.Fatalf("edged_requests_total for the request not in /metrics:\n%s", strings.Join(reqLines, "\n"))
	}
}

// TestAccessLogReopen: requests are logged in the combined format, and
// SIGUSR1 after a rotation makes edged write to a new file.
func TestAccessLogReopen(t *testing.T) {
	e := startEdged(t, "[server]\nadmin = \"{{ADMIN}}\"\n[access_log]\noutput = \"{{DIR}}/access.log\"\n[[site]]\n[[site.route]]\npath = \"/\"\nrespond = \"logged\"\n")
	dir := filepath.Dir(e.config)
	logPath := filepath.Join(dir, "access.log")
	c := &http.Client{Timeout: 10 * time.Second}
	get(t, c, e.httpURL+"/first")
	waitFileContains(t, logPath, `"GET /first `+clientProto()+`" 200 6`)
	if err := os.Rename(logPath, logPath+".1"); err != nil {
		t.Fatal(err)
	}
	e.cmd.Process.Signal(syscall.SIGUSR1)
	// The reopen is logged after it happened; wait for that line.
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(e.stderr.String(), "access log reopened"); {
		if time.Now().After(deadline) {
			t.Fatal("edged did not reopen the access log after SIGUSR1")
		}
		time.Sleep(10 * time.Millisecond)
	}
	get(t, c, e.httpURL+"/second")
	waitFileContains(t, logPath, `"GET /second `+clientProto()+`" 200 6`)
	if b, _ := os.ReadFile(logPath + ".1"); strings.Contains(string(b), "/second") {
		t.Error("a request after the reopen went to the rotated file")
	}
}

// waitFileContains polls a file edged flushes about once a second.
func waitFileContains(t *testing.T, path, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(path)
		if strings.Contains(string(b), want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not contain %q after 10s:\n%s", path, want, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestStopLosesNoRequestOnKeptAliveConnection: a request sent on a
// kept-alive connection just as SIGTERM arrives is answered (with
// "Connection: close" once the drain began), never dropped; then edged
// closes the connection and exits 0.
func TestStopLosesNoRequestOnKeptAliveConnection(t *testing.T) {
	e := startEdged(t, "[server]\nadmin = \"{{ADMIN}}\"\n[[site]]\n[[site.route]]\npath = \"/\"\nrespond = \"ok\"\n")
	conn, err := net.Dial("tcp", strings.TrimPrefix(e.httpURL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	roundTrip := func() *http.Response {
		t.Helper()
		conn.SetDeadline(time.Now().Add(20 * time.Second))
		if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatalf("writing request: %v", err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("request on a kept-alive connection during stop was dropped: %v", err)
		}
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(b) != "ok" {
			t.Fatalf("response %d %q", resp.StatusCode, b)
		}
		return resp
	}
	if resp := roundTrip(); resp.Close {
		t.Fatal("first response closed the connection")
	}
	e.cmd.Process.Signal(syscall.SIGTERM)
	resp := roundTrip()
	if !resp.Close {
		// The request beat the signal; the next one must see the drain.
		e.waitNotify("STOPPING=1", 10*time.Second)
		resp = roundTrip()
		if !resp.Close {
			t.Fatal("a response during the drain did not close the connection")
		}
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("connection not closed after a Connection: close response: %v", err)
	}
	select {
	case err := <-e.done:
		if err != nil {
			t.Fatalf("edged exited with %v", err)
		}
		e.done <- nil
	case <-time.After(30 * time.Second):
		t.Fatal("edged did not exit")
	}
}

// TestSmugglingCorpus sends every request of the request-smuggling corpus
// (edged/httpwire) to a running edged, each followed by a second request
// that a desynchronised parser would read as a new one: edged answers the
// first with its error status and closes the connection, so the second is
// never served.
func TestSmugglingCorpus(t *testing.T) {
	if enginetest.Name() == engine.NetHTTP {
		// Measured: net/http answers 22 of them (CL.TE, TE.CL, obs-fold,
		// most TE obfuscations, absolute-form host mismatches), and waits
		// out many for a body; the corpus is the edged engine's contract.
		t.Skip("the smuggling corpus is refused by the edged engine only")
	}
	e := startEdged(t, "[server]\nadmin = \"{{ADMIN}}\"\n[[site]]\n[[site.route]]\npath = \"/\"\nrespond = \"ok\"\n")
	addr := strings.TrimPrefix(e.httpURL, "http://")
	statusLine := regexp.MustCompile(`(?m)^HTTP/1\.1 (\d{3}) `)
	send := func(req string) []string {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, req+"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n")
		b, _ := io.ReadAll(c)
		var codes []string
		for _, m := range statusLine.FindAllStringSubmatch(string(b), -1) {
			codes = append(codes, m[1])
		}
		return codes
	}
	for _, tc := range httpwire.SmugglingCorpus {
		if codes := send(tc.Request); len(codes) != 1 || codes[0] != strconv.Itoa(tc.Status) {
			t.Errorf("%s: responses %v, want one %d", tc.Name, codes, tc.Status)
		}
	}
	for _, tc := range httpwire.ChunkedCorpus {
		if codes := send("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + tc.Body); len(codes) > 1 {
			t.Errorf("chunked %s: responses %v: the connection went on after a bad body", tc.Name, codes)
		}
	}
}
