package proxy

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// tlsUpstream is a real TLS server (httptest's certificate: example.com,
// 127.0.0.1) that reports what it saw of each request's TLS; its
// certificate is written to a PEM file for tls_ca. With close set it
// answers Connection: close, so every request is a new connection.
func tlsUpstream(t *testing.T, close bool, cfg func(*tls.Config)) (addr, caFile string, conns *atomic.Int32) {
	t.Helper()
	conns = new(atomic.Int32)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if close {
			w.Header().Set("Connection", "close")
		}
		b, _ := io.ReadAll(r.Body)
		cn := ""
		if len(r.TLS.PeerCertificates) > 0 {
			cn = r.TLS.PeerCertificates[0].Subject.CommonName
		}
		fmt.Fprintf(w, "sni=%s resumed=%v client=%s body=%d %x", r.TLS.ServerName, r.TLS.DidResume, cn, len(b), sha256.Sum256(b))
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are the point of some tests
	srv.Config.ConnState = func(c net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.StartTLS()
	if cfg != nil {
		cfg(srv.TLS)
	}
	t.Cleanup(srv.Close)
	caFile = filepath.Join(t.TempDir(), "ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(caFile, pemBytes, 0o644); err != nil {
		t.Fatal(err)
	}
	return strings.TrimPrefix(srv.URL, "https://"), caFile, conns
}

func TestTLSUpstream(t *testing.T) {
	addr, ca, conns := tlsUpstream(t, false, nil)
	f := newFront(t, UpstreamConfig{Servers: servers(addr), TLS: TLSConfig{Enabled: true, CAFile: ca}}, HandlerOptions{})
	for i := 0; i < 5; i++ {
		res, body := get(t, f.URL()+"/")
		if res.StatusCode != 200 || !strings.HasPrefix(body, "sni= resumed=false client= body=0") {
			t.Fatalf("request %d: %d %q", i, res.StatusCode, body)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("%d TLS connections for 5 requests, want 1 kept alive", n)
	}
	// A body larger than memory goes through the spool's file, over TLS.
	body := bytes.Repeat([]byte("over tls "), 100000)
	req, _ := http.NewRequest("POST", f.URL()+"/", bytes.NewReader(body))
	if res, got := do(t, req); res.StatusCode != 200 || !strings.HasSuffix(got, fmt.Sprintf("body=%d %x", len(body), sha256.Sum256(body))) {
		t.Fatalf("POST over TLS: %d %q", res.StatusCode, got)
	}
}

// TestTLSUpstreamVerified: a certificate the roots do not vouch for, or
// for another name, is refused: 502, and nothing of the request sent.
func TestTLSUpstreamVerified(t *testing.T) {
	addr, ca, _ := tlsUpstream(t, false, nil)
	for _, c := range []struct {
		name string
		tls  TLSConfig
		want string
	}{
		{"system roots", TLSConfig{Enabled: true}, "certificate signed by unknown authority"},
		{"wrong name", TLSConfig{Enabled: true, CAFile: ca, ServerName: "other.example"}, "other.example"},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFront(t, UpstreamConfig{Servers: servers(addr), TLS: c.tls}, HandlerOptions{})
			res, body := get(t, f.URL()+"/")
			if res.StatusCode != http.StatusBadGateway || !strings.Contains(body, "could not connect") {
				t.Fatalf("got %d %q", res.StatusCode, body)
			}
			if !strings.Contains(f.log.String(), c.want) {
				t.Fatalf("the log does not say why:\n%s", f.log)
			}
		})
	}
	f := newFront(t, UpstreamConfig{Servers: servers(addr), TLS: TLSConfig{Enabled: true, CAFile: ca, ServerName: "example.com"}}, HandlerOptions{})
	if res, body := get(t, f.URL()+"/"); res.StatusCode != 200 || !strings.HasPrefix(body, "sni=example.com ") {
		t.Fatalf("tls_name example.com: %d %q", res.StatusCode, body)
	}
}

// TestTLSSessionResumption: a new connection to the same server resumes
// the session (an abbreviated handshake), as gunicorn behind TLS closing
// each connection would need.
func TestTLSSessionResumption(t *testing.T) {
	addr, ca, conns := tlsUpstream(t, true, nil)
	f := newFront(t, UpstreamConfig{Servers: servers(addr), TLS: TLSConfig{Enabled: true, CAFile: ca}}, HandlerOptions{})
	resumed := 0
	for i := 0; i < 4; i++ {
		_, body := get(t, f.URL()+"/")
		if strings.Contains(body, "resumed=true") {
			resumed++
		}
	}
	if conns.Load() != 4 || resumed < 2 {
		t.Fatalf("%d connections, %d resumed; want 4 connections and the later ones resumed", conns.Load(), resumed)
	}
}

// TestTLSClientCertificate: a server that requires a client certificate
// gets edged's (mTLS), and refuses edged without one.
func TestTLSClientCertificate(t *testing.T) {
	dir := t.TempDir()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test client CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	cliKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	cliTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "edged"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	cliDER, err := x509.CreateCertificate(rand.Reader, cliTmpl, caCert, &cliKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(cliKey)
	certFile, keyFile := filepath.Join(dir, "client.pem"), filepath.Join(dir, "client.key")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cliDER}), 0o644)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600)

	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	addr, ca, _ := tlsUpstream(t, false, func(c *tls.Config) {
		c.ClientAuth, c.ClientCAs = tls.RequireAndVerifyClientCert, pool
	})
	without := newFront(t, UpstreamConfig{Servers: servers(addr), TLS: TLSConfig{Enabled: true, CAFile: ca}}, HandlerOptions{})
	if res, _ := get(t, without.URL()+"/"); res.StatusCode != http.StatusBadGateway {
		t.Fatalf("without a client certificate: %d, want 502", res.StatusCode)
	}
	with := newFront(t, UpstreamConfig{Servers: servers(addr), TLS: TLSConfig{Enabled: true, CAFile: ca, CertFile: certFile, KeyFile: keyFile}}, HandlerOptions{})
	if res, body := get(t, with.URL()+"/"); res.StatusCode != 200 || !strings.Contains(body, "client=edged") {
		t.Fatalf("with a client certificate: %d %q", res.StatusCode, body)
	}
}

func TestTLSConfigChecked(t *testing.T) {
	for _, c := range []struct {
		tls  TLSConfig
		want string
	}{
		{TLSConfig{CAFile: "/x.pem"}, "tls_ca: goes with tls = true"},
		{TLSConfig{Enabled: true, CAFile: "x.pem"}, "want an absolute path"},
		{TLSConfig{Enabled: true, CertFile: "/c.pem"}, "give both or neither"},
		{TLSConfig{Enabled: true, CAFile: "/nonexistent/ca.pem"}, "tls_ca"},
		{TLSConfig{Enabled: true, CAFile: "/dev/null"}, "holds no PEM certificate"},
	} {
		_, err := NewPool(UpstreamConfig{Name: "x", Servers: servers("127.0.0.1:1"), TLS: c.tls}, nil, nil, nil)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want an error saying %q", c.tls, err, c.want)
		}
	}
}
