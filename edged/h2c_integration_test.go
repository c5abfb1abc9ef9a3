package main

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"

	"golang.org/x/net/http2"
)

// With EDGED_TEST_H2C=1 the integration suite runs over HTTP/2: every
// edged it starts serves h2c (HTTP/2 with prior knowledge) on its http
// listener, and clients that use http.DefaultTransport speak HTTP/2 to
// those listeners (and HTTP/1.1 to anything else, such as the test's own
// upstream servers). Tests that are about HTTP/1.1 itself (raw
// connections, keep-alive and Connection headers, pipelining) speak it
// on their own sockets and are unaffected; the few that cannot mean the
// same over HTTP/2 call skipOnH2C.

var h2cAddrs sync.Map // "host:port" of edged http listeners

func h2cMode() bool { return os.Getenv("EDGED_TEST_H2C") != "" }

func init() {
	if !h2cMode() {
		return
	}
	h2c := &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}
	http.DefaultTransport = h2cRouter{h1: http.DefaultTransport, h2c: h2c}
}

type h2cRouter struct {
	h1  http.RoundTripper
	h2c *http2.Transport
}

func (r h2cRouter) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme == "http" {
		if _, ok := h2cAddrs.Load(req.URL.Host); ok {
			return r.h2c.RoundTrip(req)
		}
	}
	return r.h1.RoundTrip(req)
}

// registerH2C notes an edged http listener; with EDGED_TEST_H2C its
// configuration turns h2c on.
func registerH2C(addr string) {
	if h2cMode() {
		h2cAddrs.Store(addr, true)
	}
}

// h2cConfig adds h2c = true to an edged.toml's [server] table.
func h2cConfig(cfg string) string {
	if !h2cMode() || strings.Contains(cfg, "\nh2c = ") {
		return cfg
	}
	lines := strings.SplitAfter(cfg, "\n")
	for i, l := range lines {
		if strings.TrimSpace(l) == "[server]" {
			return strings.Join(lines[:i+1], "") + "h2c = true\n" + strings.Join(lines[i+1:], "")
		}
	}
	return "[server]\nh2c = true\n\n" + cfg
}

// skipOnH2C skips a test whose subject is HTTP/1.1 behaviour that
// HTTP/2 does not have.
func skipOnH2C(t *testing.T, why string) {
	t.Helper()
	if h2cMode() {
		t.Skip("HTTP/1.1 only: " + why)
	}
}

// TestH2CMode checks the switch itself: with EDGED_TEST_H2C the default
// client speaks HTTP/2 to edged.
func TestH2CMode(t *testing.T) {
	if !h2cMode() {
		t.Skip("EDGED_TEST_H2C is not set")
	}
	e := startEdged(t, `
[server]
admin = ""
[[site]]
hosts = ["*"]
  [[site.route]]
  path = "/"
  respond = "hi"
`)
	res, err := http.Get(e.httpURL + "/")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.ProtoMajor != 2 {
		t.Fatalf("the suite's client spoke %s to edged, not HTTP/2", res.Proto)
	}
}

// clientProto is the protocol the suite's default client speaks to edged,
// as the access log names it.
func clientProto() string {
	if h2cMode() {
		return "HTTP/2.0"
	}
	return "HTTP/1.1"
}
