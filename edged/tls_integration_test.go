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
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
