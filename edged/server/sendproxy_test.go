package server

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/edgeapp/edgeapp/edged/proxyproto"
)

// TestSendProxyProtocolToUpstream: with send_proxy_protocol an HTTP
// upstream that reads PROXY headers sees the client after trusted_proxies,
// and no connection carries two clients' requests.
func TestSendProxyProtocolToUpstream(t *testing.T) {
	for _, v := range []string{"v1", "v2"} {
		t.Run(v, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			pl := proxyproto.NewListener(ln, proxyproto.Options{Trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}})
			var conns atomic.Int32
			up := &http.Server{
				Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprintf(w, "peer=%s", r.RemoteAddr) }),
				ConnState: func(c net.Conn, st http.ConnState) {
					if st == http.StateNew {
						conns.Add(1)
					}
				},
			}
			go up.Serve(pl)
			t.Cleanup(func() { up.Close() })
			ts := startServer(t, `
[server]
http = ["127.0.0.1:0"]
https = []
admin = ""
trusted_proxies = ["127.0.0.1"]
[tls]
storage = "{{DIR}}/tls"
[[site]]
  [[site.route]]
  path = "/"
  upstream = "app"
[upstream.app]
servers = ["`+ln.Addr().String()+`"]
send_proxy_protocol = "`+v+`"
`)
			for i, client := range []string{"203.0.113.9", "198.51.100.4", "203.0.113.9"} {
				code, body, _ := ts.get("/", "X-Forwarded-For", client)
				if code != 200 || !strings.HasPrefix(body, "peer="+client+":") {
					t.Fatalf("request %d from %s: %d %q", i, client, code, body)
				}
			}
			if n := conns.Load(); n != 3 {
				t.Errorf("%d upstream connections for 3 clients' requests, want one each", n)
			}
		})
	}
}
