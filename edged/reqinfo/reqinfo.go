// Package reqinfo carries what edged learns about one request across its
// handler chain: the client's address (after the PROXY protocol and
// trusted_proxies), the request ID, the route, and what the access log,
// metrics and limits need afterwards (upstream server and time, cache
// status, bytes). Every engine (edged's HTTP/1.1 engine, net/http, HTTP/2,
// HTTP/3) delivers requests whose context holds one *Info.
//
// An Info belongs to one request at a time: engines may reuse it for the
// next request on the same connection, so a handler must not keep it (or
// the request's context) after it returns. Work that outlives a request
// (a cache's background revalidation) copies what it needs.
package reqinfo

import (
	"context"
	"net/netip"
	"strings"
	"time"
)

// Info is one request's record. Fields are written by the goroutine serving
// the request only; nothing here is synchronised.
type Info struct {
	// Peer is the connection's other end: the TCP peer, or the address a
	// trusted PROXY protocol header gave. Invalid for unix-socket peers.
	Peer netip.Addr
	// Client is the address limits, allow/deny lists, logs and forwarded
	// headers use: Peer, or from a trusted proxy the right-most untrusted
	// X-Forwarded-For entry. Invalid when unknown.
	Client netip.Addr
	// Trusted reports that Peer is in trusted_proxies.
	Trusted bool

	RequestID string
	Site      string
	Route     string
	// User is the name basic auth accepted ("" when none).
	User string

	// Upstream is the address of the upstream server that answered (the
	// last one tried), UpstreamStatus its status, UpstreamTime from sending
	// the request to the end of its response head.
	Upstream       string
	UpstreamStatus int
	UpstreamTime   time.Duration
	// CacheStatus is "HIT", "MISS", "STALE", "REVALIDATED", "BYPASS" or "".
	CacheStatus string
	// BytesIn counts the request's body bytes read from the client.
	BytesIn int64
	// ClientWait and UpstreamWait split a buffered exchange's time: writing
	// to or reading from the client versus the upstream.
	ClientWait, UpstreamWait time.Duration
}

// Reset clears i for the next request on the same connection.
func (i *Info) Reset() { *i = Info{} }

type key struct{}

// NewContext returns a context holding info. Engines call it once per
// connection and reuse the context (and the Info, after Reset) for each
// request, so that carrying it costs no allocation per request.
func NewContext(parent context.Context, info *Info) context.Context {
	return context.WithValue(parent, key{}, info)
}

// From returns the Info in ctx, or nil.
func From(ctx context.Context) *Info {
	i, _ := ctx.Value(key{}).(*Info)
	return i
}

// SetClient fills Peer, Trusted and Client from the connection's remote
// address ("ip:port"; anything else, such as a unix socket's, leaves Peer
// invalid) and, when the peer is trusted, its X-Forwarded-For values. The
// client is the right-most X-Forwarded-For entry that is not itself a
// trusted proxy (the left-most if all are), as nginx's real_ip_recursive;
// an entry that is not an address makes it unknown (invalid), since a
// trusted proxy vouched for nothing usable.
func (i *Info) SetClient(remoteAddr string, xff []string, trusted []netip.Prefix) {
	i.Peer, i.Trusted, i.Client = netip.Addr{}, false, netip.Addr{}
	ap, err := netip.ParseAddrPort(remoteAddr)
	if err != nil {
		return
	}
	i.Peer = ap.Addr().Unmap()
	i.Client = i.Peer
	i.Trusted = inPrefixes(trusted, i.Peer)
	if !i.Trusted {
		return
	}
	for k := len(xff) - 1; k >= 0; k-- {
		v := xff[k]
		for v != "" {
			entry := v
			if j := strings.LastIndexByte(v, ','); j >= 0 {
				entry, v = v[j+1:], v[:j]
			} else {
				v = ""
			}
			entry = strings.Trim(entry, " \t")
			if entry == "" {
				continue
			}
			a, err := netip.ParseAddr(entry)
			if err != nil {
				i.Client = netip.Addr{}
				return
			}
			i.Client = a.Unmap()
			if !inPrefixes(trusted, i.Client) {
				return
			}
		}
	}
}

func inPrefixes(nets []netip.Prefix, a netip.Addr) bool {
	for _, n := range nets {
		if n.Contains(a) {
			return true
		}
	}
	return false
}
