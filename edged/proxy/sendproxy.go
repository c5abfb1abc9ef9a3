package proxy

import (
	"context"
	"net"
	"net/http"

	"github.com/edgeapp/edgeapp/edged/proxyproto"
	"github.com/edgeapp/edgeapp/edged/reqinfo"
)

// A server with SendProxy gets a PROXY protocol header naming the client
// (after trusted_proxies) at the start of every connection. Such a
// connection speaks for one client, so it carries one request and is
// never kept for another (HAProxy keeps them private the same way). The
// client's port is not in the request record and is sent as 0. Health
// checks, which have no client, send a LOCAL (v2) or UNKNOWN (v1) header.

// proxiedConn dials a new connection to s and sends the header.
func (s *server) proxiedConn(ctx context.Context) (*upConn, error) {
	c, err := s.cp.newConn(ctx)
	if err != nil {
		return nil, err
	}
	c.private = true
	var client, local net.Addr
	if info := reqinfo.From(ctx); info != nil && info.Client.IsValid() {
		client = &net.TCPAddr{IP: info.Client.AsSlice()}
	}
	if la, ok := ctx.Value(http.LocalAddrContextKey).(net.Addr); ok {
		local = la
	}
	if client != nil && local == nil {
		// The engine did not say where the client connected: an
		// unspecified destination of the client's family.
		if info := reqinfo.From(ctx); info.Client.Is4() {
			local = &net.TCPAddr{IP: net.IPv4zero}
		} else {
			local = &net.TCPAddr{IP: net.IPv6unspecified}
		}
	}
	if err := proxyproto.WriteHeader(c.nc, s.sendProxy, client, local); err != nil {
		c.close()
		return nil, &DialError{Addr: s.cfg.Addr, Err: err}
	}
	return c, nil
}
