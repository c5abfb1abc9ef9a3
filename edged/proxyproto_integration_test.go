package main

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgeapp/edgeapp/internal/syncbuf"
)

// needPeer returns the path of a Debian package's program, or skips.
func needPeer(t *testing.T, prog, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(prog)
	if err != nil {
		t.Skipf("SKIPPED LOUDLY: %s is not installed (apt-get install -y %s; make deps installs it): %v", prog, pkg, err)
	}
	return p
}

// waitListening waits until addr accepts TCP connections.
func waitListening(t *testing.T, addr string, out *syncbuf.Buffer) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never listened: %v\n%s", addr, err, out.String())
		}
	}
}

// startHAProxy runs Debian's haproxy in the foreground with cfg until the
// test ends.
func startHAProxy(t *testing.T, cfg string, wait ...string) {
	t.Helper()
	bin := needPeer(t, "haproxy", "haproxy")
	path := filepath.Join(t.TempDir(), "haproxy.cfg")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	out := &syncbuf.Buffer{}
	cmd := exec.Command(bin, "-db", "-f", path)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("haproxy output:\n%s", out.String())
		}
	})
	for _, a := range wait {
		waitListening(t, a, out)
	}
}

// clientFrom is an HTTP client whose connections come from the loopback
// address src, so that a proxy's client differs from the proxy itself.
func clientFrom(src string, tlsConf *tls.Config) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: d.DialContext, TLSClientConfig: tlsConf, DisableKeepAlives: true, ForceAttemptHTTP2: tlsConf != nil,
	}}
}

// TestPROXYProtocolFromHAProxy puts Debian's HAProxy in front of edged with
// send-proxy-v2 (HTTP mode to edged's http listener, TCP mode to its TLS
// listener) and checks that the client's address, not HAProxy's, reaches
// the upstream, and that nobody else may talk to those listeners.
func TestPROXYProtocolFromHAProxy(t *testing.T) {
	needPeer(t, "haproxy", "haproxy")
	dir := t.TempDir()
	cert, key, pool := selfSigned(t, dir, "shop.test")
	up := upstream(t, "app")
	e, addrs := startEdgedWith(t, fmt.Sprintf(`
[server]
admin = "{{ADMIN}}"
[server.proxy_protocol]
from = ["127.0.0.1"]
[tls]
storage = "{{DIR}}/tls"
[access_log]
output = "{{DIR}}/access.log"
format = "$remote_addr $status"
[[site]]
hosts = ["shop.test"]
tls = { cert = %q, key = %q }
redirect_http = false
  [[site.route]]
  path = "/"
  upstream = "app"
[upstream.app]
servers = [%q]
`, cert, key, up), "http", "https")
	_ = e
	hp1, hp2 := freeAddr(t), freeAddr(t)
	startHAProxy(t, fmt.Sprintf(`
defaults
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend web
  mode http
  bind %s
  default_backend edged_http
backend edged_http
  mode http
  server edged %s send-proxy-v2
frontend tls
  mode tcp
  bind %s
  default_backend edged_tls
backend edged_tls
  mode tcp
  server edged %s send-proxy-v2
`, hp1, addrs[0], hp2, addrs[1]), hp1, hp2)

	// Through HAProxy, from 127.0.0.5: the upstream sees 127.0.0.5.
	code, body := getHost(t, clientFrom("127.0.0.5", nil), "http://"+hp1+"/who", "shop.test")
	if code != 200 || !strings.Contains(body, "xff=127.0.0.5") {
		t.Fatalf("through haproxy (http): %d %q, want xff=127.0.0.5", code, body)
	}
	tlsClient := clientFrom("127.0.0.6", &tls.Config{RootCAs: pool, ServerName: "shop.test"})
	code, body = getHost(t, tlsClient, "https://"+hp2+"/who", "shop.test")
	if code != 200 || !strings.Contains(body, "xff=127.0.0.6") {
		t.Fatalf("through haproxy (TLS passthrough): %d %q, want xff=127.0.0.6", code, body)
	}
	waitFileContains(t, filepath.Join(filepath.Dir(e.config), "access.log"), "127.0.0.6 200")

	// Directly, from an address that is not a trusted sender: refused
	// before a byte is read.
	if _, err := clientFrom("127.0.0.5", nil).Get("http://" + addrs[0] + "/who"); err == nil {
		t.Fatal("a direct connection from an untrusted address was served")
	}
	// From the trusted address but without a header: refused too, so a
	// request cannot pass itself off as coming through the balancer.
	c, err := net.Dial("tcp", addrs[0])
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "GET /who HTTP/1.1\r\nHost: shop.test\r\n\r\n")
	if b, _ := io.ReadAll(c); len(b) != 0 {
		t.Fatalf("a headerless connection from the trusted sender got %q", b)
	}
	c.Close()

	// The refusals are counted by reason.
	metrics := adminGet(t, e, "/metrics")
	for _, want := range []string{`edged_proxy_protocol_refused_total{listener="http",reason="untrusted"} 1`, `edged_proxy_protocol_refused_total{listener="http",reason="no_header"} 1`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

func getHost(t *testing.T, c *http.Client, url, host string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	resp, err := c.Do(req)
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

func freeAddr(t *testing.T) string {
	t.Helper()
	return closedPort(t)
}
