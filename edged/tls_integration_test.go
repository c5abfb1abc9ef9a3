package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// selfSigned writes a certificate for names and returns its paths and pool.
func selfSigned(t *testing.T, dir string, names ...string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: names[0]},
		DNSNames: names, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kd, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile = filepath.Join(dir, names[0]+".crt"), filepath.Join(dir, names[0]+".key")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd}), 0o600)
	c, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(c)
	return certFile, keyFile, pool
}

// startEdgedTLS passes both an http and an https socket, as edged.socket
// and edged-https.socket do.
func startEdgedTLS(t *testing.T, config string) (e *edged, httpsAddr string) {
	t.Helper()
	e, addrs := startEdgedWith(t, config, "http", "https")
	return e, addrs[1]
}

func TestManualCertificateHTTP2AndRedirect(t *testing.T) {
	dir := t.TempDir()
	cert, key, pool := selfSigned(t, dir, "shop.test")
	e, httpsAddr := startEdgedTLS(t, fmt.Sprintf(`
[server]
admin = "{{ADMIN}}"
[tls]
hsts = "max-age=63072000"
storage = "{{DIR}}/state"
[[site]]
hosts = ["shop.test"]
tls = { cert = %q, key = %q }
  [[site.route]]
  path = "/"
  respond = "secure hello"
`, cert, key))
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: pool, ServerName: "shop.test"},
		ForceAttemptHTTP2: true,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return net.Dial(network, httpsAddr)
		},
	}
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	resp, err := c.Get("https://shop.test/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "secure hello" || resp.ProtoMajor != 2 || resp.Header.Get("Strict-Transport-Security") != "max-age=63072000" {
		t.Fatalf("HTTPS: %q proto %s hsts %q", body, resp.Proto, resp.Header.Get("Strict-Transport-Security"))
	}
	// Plain HTTP redirects to HTTPS with 308, keeping path and query.
	plain := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, _ := http.NewRequest("GET", e.httpURL+"/a/b?c=d", nil)
	req.Host = "shop.test"
	resp, err = plain.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	_, port, _ := net.SplitHostPort(httpsAddr)
	if resp.StatusCode != 308 || resp.Header.Get("Location") != "https://shop.test:"+port+"/a/b?c=d" {
		t.Fatalf("redirect: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	// A new certificate on disk is picked up by SIGHUP.
	cert2, key2, pool2 := selfSigned(t, t.TempDir(), "shop.test")
	for _, p := range [][2]string{{cert2, cert}, {key2, key}} {
		b, _ := os.ReadFile(p[0])
		os.WriteFile(p[1], b, 0o600)
	}
	e.reload("")
	tr.CloseIdleConnections()
	tr.TLSClientConfig.RootCAs = pool2
	resp, err = c.Get("https://shop.test/")
	if err != nil {
		t.Fatalf("after replacing the certificate and reloading: %v", err)
	}
	resp.Body.Close()
}

func TestInternalCA(t *testing.T) {
	e, httpsAddr := startEdgedTLS(t, `
[server]
admin = "{{ADMIN}}"
[tls]
storage = "{{DIR}}/state"
[[site]]
hosts = ["localhost"]
tls = "internal"
redirect_http = false
  [[site.route]]
  path = "/"
  respond = "internal hello"
`)
	_ = e
	// The root of the internal CA is exported under the storage directory.
	var rootPEM []byte
	filepath.Walk(filepath.Join(filepath.Dir(e.config), "state"), func(p string, info os.FileInfo, err error) error {
		if err == nil && strings.HasSuffix(p, "root.crt") {
			rootPEM, _ = os.ReadFile(p)
		}
		return nil
	})
	if rootPEM == nil {
		t.Fatal("no root.crt exported under the TLS storage directory")
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(rootPEM)
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	_, port, _ := net.SplitHostPort(httpsAddr)
	resp, err := c.Get("https://localhost:" + port + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "internal hello" {
		t.Fatalf("body %q", b)
	}
}

// TestConfigCheckDNS01: `edged -t` reads the TSIG key file of [tls.dns],
// accepts wildcard ACME sites with it, and names the line of a bad
// setting without ever printing the secret.
func TestConfigCheckDNS01(t *testing.T) {
	dir := t.TempDir()
	const secret = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlYw=="
	keyFile := filepath.Join(dir, "tsig.key")
	os.WriteFile(keyFile, []byte("key \"edged-acme\" {\n\talgorithm hmac-sha256;\n\tsecret \""+secret+"\";\n};\n"), 0o600)
	conf := func(keyFile, alg string) string {
		return fmt.Sprintf(`[server]
admin = ""
[tls]
storage = %q
[tls.dns]
server = "127.0.0.1:53"
zone = "example.com"
tsig_algorithm = %q
tsig_secret_file = %q
[[site]]
hosts = ["*.example.com", "example.com"]
[[site.route]]
path = "/"
respond = "hi"
`, dir, alg, keyFile)
	}
	good := filepath.Join(dir, "good.toml")
	os.WriteFile(good, []byte(conf(keyFile, "hmac-sha256")), 0o644)
	out, err := exec.Command(edgedBin, "-t", "-config", good).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "OK") {
		t.Fatalf("edged -t with [tls.dns] and a wildcard: %v\n%s", err, out)
	}
	// A partial [tls.dns] is an error, not ignored.
	partial := filepath.Join(dir, "partial.toml")
	os.WriteFile(partial, []byte(fmt.Sprintf("[server]\nadmin = \"\"\n[tls]\nstorage = %q\n[tls.dns]\nresolvers = [\"127.0.0.1:53\"]\n[[site]]\nhosts = [\"a.example.com\"]\n[[site.route]]\npath = \"/\"\nrespond = \"hi\"\n", dir)), 0o644)
	if out, err := exec.Command(edgedBin, "-t", "-config", partial).CombinedOutput(); err == nil || !strings.Contains(string(out), "tls.dns.server: no server") {
		t.Errorf("edged -t with [tls.dns] but no server: %v\n%s", err, out)
	}
	for _, c := range []struct{ keyFile, alg, want string }{
		{filepath.Join(dir, "missing.key"), "hmac-sha256", ":9: tls.dns.tsig_secret_file: reading TSIG key file"},
		{keyFile, "hmac-sha512", ":9: tls.dns.tsig_secret_file: TSIG key file " + keyFile + " has key edged-acme for algorithm hmac-sha256, not hmac-sha512"},
		{keyFile, "md5", ":8: tls.dns.tsig_algorithm"},
	} {
		bad := filepath.Join(dir, "bad.toml")
		os.WriteFile(bad, []byte(conf(c.keyFile, c.alg)), 0o644)
		out, err := exec.Command(edgedBin, "-t", "-config", bad).CombinedOutput()
		if err == nil || !strings.Contains(string(out), bad+c.want) {
			t.Errorf("edged -t: %v, want %q in:\n%s", err, bad+c.want, out)
		}
		if strings.Contains(string(out), secret) {
			t.Errorf("edged -t printed the TSIG secret:\n%s", out)
		}
	}
}

// TestHTTP2ReloadAndStopUnderLoad: browsers' HTTP/2 (TLS, many streams on
// one connection) through reloads and a stop. Reloads keep the
// connection and fail no stream; on SIGTERM, the streams in flight
// finish (GOAWAY, not a reset) and edged exits 0.
func TestHTTP2ReloadAndStopUnderLoad(t *testing.T) {
	dir := t.TempDir()
	cert, key, pool := selfSigned(t, dir, "shop.test")
	var arrived atomic.Int32
	release := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			arrived.Add(1)
			<-release
		}
		io.WriteString(w, "up "+r.URL.Path)
	}))
	defer up.Close()
	conf := func(i int) string {
		return fmt.Sprintf(`
[server]
admin = ""
[tls]
storage = "{{DIR}}/state"
[[site]]
hosts = ["shop.test"]
tls = { cert = %q, key = %q }
  [[site.route]]
  path = "/gen"
  respond = "generation %d"
  [[site.route]]
  path = "/"
  upstream = "app"
[upstream.app]
servers = [%q]
`, cert, key, i, strings.TrimPrefix(up.URL, "http://"))
	}
	e, httpsAddr := startEdgedTLS(t, conf(0))
	var dials atomic.Int32
	tr := &http2.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "shop.test"},
		DialTLSContext: func(ctx context.Context, network, _ string, cfg *tls.Config) (net.Conn, error) {
			dials.Add(1)
			d := tls.Dialer{Config: cfg}
			return d.DialContext(ctx, network, httpsAddr)
		},
	}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	fetch := func(path string) error {
		res, err := c.Get("https://shop.test" + path)
		if err != nil {
			return err
		}
		b, err := io.ReadAll(res.Body)
		res.Body.Close()
		if err == nil && (res.StatusCode != 200 || res.ProtoMajor != 2) {
			err = fmt.Errorf("%s %d %q", res.Proto, res.StatusCode, b)
		}
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for range 16 { // 16 concurrent streams on one connection
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				if err := fetch("/load"); err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
				} else {
					ok.Add(1)
				}
			}
		}()
	}
	for i := 1; i <= 10; i++ {
		e.reload(conf(i))
		before := ok.Load()
		for deadline := time.Now().Add(20 * time.Second); ok.Load() < before+50; {
			if time.Now().After(deadline) {
				t.Fatalf("generation %d served fewer than 50 requests in 20s", i)
			}
			time.Sleep(5 * time.Millisecond) // polling counters the clients advance
		}
	}
	cancel()
	wg.Wait()
	if failed.Load() != 0 || dials.Load() != 1 {
		t.Fatalf("%d of %d streams failed across 10 reloads (first: %v); %d connections", failed.Load(), ok.Load()+failed.Load(), firstErr.Load(), dials.Load())
	}
	t.Logf("%d streams on one connection, 10 reloads, 0 failed", ok.Load())

	// Stop with 20 streams in flight.
	errs := make(chan error, 20)
	for range 20 {
		go func() { errs <- fetch("/hold") }()
	}
	for deadline := time.Now().Add(20 * time.Second); arrived.Load() < 20; {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of 20 requests reached the upstream", arrived.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
	e.cmd.Process.Signal(syscall.SIGTERM)
	e.waitNotify("STOPPING=1", 10*time.Second)
	time.Sleep(100 * time.Millisecond) // the GOAWAYs are out while the streams are still open
	close(release)
	for range 20 {
		if err := <-errs; err != nil {
			t.Errorf("a stream in flight at SIGTERM: %v", err)
		}
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
