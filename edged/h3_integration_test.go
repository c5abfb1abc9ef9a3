package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// h3Client is an HTTP/3 client (quic-go) that counts the QUIC connections
// it opens.
type h3Client struct {
	*http.Client
	tr    *http3.Transport
	dials atomic.Int32
}

func newH3Client(t *testing.T, pool *x509.CertPool, cache tls.ClientSessionCache) *h3Client {
	t.Helper()
	c := &h3Client{}
	c.tr = &http3.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "shop.test", ClientSessionCache: cache},
		QUICConfig:      &quic.Config{},
		Dial: func(ctx context.Context, addr string, tc *tls.Config, qc *quic.Config) (*quic.Conn, error) {
			c.dials.Add(1)
			return quic.DialAddrEarly(ctx, addr, tc, qc)
		},
	}
	c.Client = &http.Client{Transport: c.tr, Timeout: 20 * time.Second}
	t.Cleanup(func() { c.tr.Close() })
	return c
}

func (c *h3Client) get(t *testing.T, method, url string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = "shop.test"
	res, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s over HTTP/3: %v", method, url, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s over HTTP/3: reading body: %v", method, url, err)
	}
	return res, string(b)
}

// h3Upstream says which protocol edged received, whether the request was
// marked as early data, and waits on /slow.
func h3Upstream(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			time.Sleep(1500 * time.Millisecond)
		}
		fmt.Fprintf(w, "%s early=%s xff=%s", r.URL.Path, r.Header.Get("Early-Data"), r.Header.Get("X-Forwarded-For"))
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

const h3Config = `
[server]
admin = "{{ADMIN}}"
[tls]
storage = "{{DIR}}/tls"
[[site]]
hosts = ["shop.test"]
tls = { cert = %q, key = %q }
  [[site.route]]
  path = "/early/"
  upstream = "app"
  early_data = true
  [[site.route]]
  path = "/"
  upstream = "app"
  %s
[upstream.app]
servers = [%q]
`

// TestHTTP3 serves a site over QUIC from a socket passed as systemd's
// edged-quic.socket does, with a quic-go client: the same route chain and
// certificate as HTTPS, Alt-Svc on the TLS listener, connections kept
// across a reload, 0-RTT only where a route allows it, and requests in
// flight finished on stop.
func TestHTTP3(t *testing.T) {
	dir := t.TempDir()
	cert, key, pool := selfSigned(t, dir, "shop.test")
	up := h3Upstream(t)
	e, addrs := startEdgedWith(t, fmt.Sprintf(h3Config, cert, key, "", up), "http", "https", "quic")
	httpsAddr, quicAddr := addrs[1], addrs[2]
	_, quicPort, _ := net.SplitHostPort(quicAddr)

	// Alt-Svc on HTTPS names the QUIC port.
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "shop.test"}}}
	res, err := hc.Get("https://" + httpsAddr + "/")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if got, want := res.Header.Get("Alt-Svc"), `h3=":`+quicPort+`"; ma=86400`; got != want {
		t.Fatalf("Alt-Svc %q, want %q", got, want)
	}

	c := newH3Client(t, pool, tls.NewLRUClientSessionCache(8))
	res, body := c.get(t, http.MethodGet, "https://"+quicAddr+"/who")
	if res.StatusCode != 200 || res.Proto != "HTTP/3.0" || !strings.HasPrefix(body, "/who early= xff=127.0.0.1") {
		t.Fatalf("HTTP/3: %d %s %q", res.StatusCode, res.Proto, body)
	}
	if res.Header.Get("Alt-Svc") != "" {
		t.Errorf("HTTP/3 response advertises Alt-Svc %q", res.Header.Get("Alt-Svc"))
	}
	if m := adminGet(t, e, "/metrics"); !strings.Contains(m, `edged_connections_active{listener="quic"} 1`) {
		t.Errorf("metrics do not count the one QUIC connection open")
	}

	// A reload that changes the route chain keeps the QUIC connection.
	e.reload(fmt.Sprintf(h3Config, cert, key, `response_headers = { set = { X-Gen = "2" } }`, up))
	res, _ = c.get(t, http.MethodGet, "https://"+quicAddr+"/who")
	if res.Header.Get("X-Gen") != "2" {
		t.Fatalf("after reload: X-Gen %q, want the new configuration's 2", res.Header.Get("X-Gen"))
	}
	if n := c.dials.Load(); n != 1 {
		t.Fatalf("%d QUIC connections for requests across a reload, want 1", n)
	}

	// 0-RTT: a resumed connection's early GET is served early only on the
	// route that allows it; elsewhere it waits for the handshake.
	cache := tls.NewLRUClientSessionCache(8)
	warm := newH3Client(t, pool, cache)
	warm.get(t, http.MethodGet, "https://"+quicAddr+"/early/x")
	warm.tr.Close()
	time.Sleep(100 * time.Millisecond) // let the session ticket arrive before the connection closed
	early := newH3Client(t, pool, cache)
	if _, body := early.get(t, http3.MethodGet0RTT, "https://"+quicAddr+"/early/x"); !strings.HasPrefix(body, "/early/x early=1 ") {
		t.Errorf("0-RTT GET on an early_data route: %q, want early=1", body)
	}
	early.tr.Close()
	late := newH3Client(t, pool, cache)
	if _, body := late.get(t, http3.MethodGet0RTT, "https://"+quicAddr+"/other"); !strings.HasPrefix(body, "/other early= ") {
		t.Errorf("0-RTT GET on a route without early_data: %q, want it served after the handshake (early=)", body)
	}

	// Stop: a request in flight on a QUIC connection is answered.
	done := make(chan string, 1)
	go func() {
		req, _ := http.NewRequest("GET", "https://"+quicAddr+"/slow", nil)
		req.Host = "shop.test"
		res, err := c.Do(req)
		if err != nil {
			done <- err.Error()
			return
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		done <- fmt.Sprintf("%d %s", res.StatusCode, b)
	}()
	time.Sleep(300 * time.Millisecond) // the request is at the upstream
	e.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case got := <-done:
		if !strings.HasPrefix(got, "200 /slow") {
			t.Fatalf("request in flight during stop: %s", got)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("request in flight during stop never finished")
	}
	select {
	case err := <-e.done:
		e.done <- err // for the cleanup
	case <-time.After(20 * time.Second):
		t.Fatal("edged did not stop")
	}
}
