package proxy

import (
	"net/http"
	"net/netip"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// hopHeaders apply to one connection only and are never forwarded
// (RFC 9110 7.6.1), besides whatever Connection names.
var hopHeaders = map[string]bool{
	"Connection":          true,
	"Proxy-Connection":    true, // non-standard, still sent by old clients
	"Keep-Alive":          true,
	"Proxy-Authenticate":  true,
	"Proxy-Authorization": true,
	"Te":                  true, // "TE: trailers" is put back on requests
	"Trailer":             true,
	"Transfer-Encoding":   true,
	"Upgrade":             true,
}

// Shared header values; nothing on the way upstream modifies them.
var (
	emptyValue    = []string{""}
	trailersValue = []string{"trailers"}
	protoValues   = map[string][]string{"http": {"http"}, "https": {"https"}}
)

// connectionListed calls f for each header name the Connection header lists.
func connectionListed(h http.Header, f func(name string)) {
	for _, v := range h["Connection"] {
		for v != "" {
			var tok string
			tok, v, _ = strings.Cut(v, ",")
			if tok = trimOWS(tok); tok != "" {
				f(http.CanonicalHeaderKey(tok))
			}
		}
	}
}

func trimOWS(s string) string { return strings.Trim(s, " \t") }

// removeHopByHop deletes hop-by-hop headers from h in place.
func removeHopByHop(h http.Header) {
	connectionListed(h, func(n string) { delete(h, n) })
	for k := range hopHeaders {
		delete(h, k)
	}
}

// forwardHeaders makes the header map sent upstream: r's end-to-end headers
// (value slices shared with r, never appended to), with TE: trailers kept.
func forwardHeaders(r *http.Request) http.Header {
	h := make(http.Header, len(r.Header)+5)
	for k, vv := range r.Header {
		if !hopHeaders[k] {
			h[k] = vv
		}
	}
	if _, ok := r.Header["Connection"]; ok {
		connectionListed(r.Header, func(n string) { delete(h, n) })
	}
	if httpguts.HeaderValuesContainsToken(r.Header["Te"], "trailers") {
		h["Te"] = trailersValue
	}
	if _, ok := h["User-Agent"]; !ok {
		h["User-Agent"] = emptyValue // stop net/http adding its own
	}
	return h
}

// upgradeType returns the protocol an HTTP/1.1 request asks to upgrade to.
func upgradeType(r *http.Request) string {
	if r.ProtoMajor != 1 || !httpguts.HeaderValuesContainsToken(r.Header["Connection"], "Upgrade") {
		return ""
	}
	return r.Header.Get("Upgrade")
}

// peerAddr is the address of the connection's other end; ok is false for
// unix-socket peers.
func peerAddr(remote string) (netip.Addr, bool) {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		return netip.Addr{}, false
	}
	return ap.Addr().Unmap(), true
}

func (h *handler) isTrusted(a netip.Addr) bool {
	for _, p := range h.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// setForwarded writes X-Forwarded-For/-Proto/-Host and Forwarded. Incoming
// values are kept (and extended) only from a trusted proxy; from anyone else
// they are replaced, so a client cannot forge its address.
func (h *handler) setForwarded(out http.Header, r *http.Request, peer netip.Addr, peerOK, trusted bool) {
	proto := "http"
	if r.TLS != nil {
		proto = "https"
	}
	ip := ""
	if peerOK {
		ip = peer.String()
	}
	if !trusted {
		delete(out, "X-Forwarded-For")
		delete(out, "X-Forwarded-Proto")
		delete(out, "X-Forwarded-Host")
		delete(out, "Forwarded")
	}
	if ip != "" {
		if prior := out["X-Forwarded-For"]; len(prior) > 0 {
			out["X-Forwarded-For"] = []string{strings.Join(prior, ", ") + ", " + ip}
		} else {
			out["X-Forwarded-For"] = []string{ip}
		}
	}
	if _, ok := out["X-Forwarded-Proto"]; !ok {
		out["X-Forwarded-Proto"] = protoValues[proto]
	}
	if _, ok := out["X-Forwarded-Host"]; !ok && r.Host != "" {
		out["X-Forwarded-Host"] = []string{r.Host}
	}
	el := forwardedElement(peer, peerOK, r.Host, proto)
	if prior := out["Forwarded"]; len(prior) > 0 {
		out["Forwarded"] = []string{strings.Join(prior, ", ") + ", " + el}
	} else {
		out["Forwarded"] = []string{el}
	}
}

// forwardedElement is one RFC 7239 element: for=...;host=...;proto=...
func forwardedElement(peer netip.Addr, peerOK bool, host, proto string) string {
	var b strings.Builder
	b.Grow(48 + len(host))
	b.WriteString("for=")
	switch {
	case !peerOK:
		b.WriteString("unknown")
	case peer.Is6():
		b.WriteString(`"[`)
		b.WriteString(peer.String())
		b.WriteString(`]"`)
	default:
		b.WriteString(peer.String())
	}
	if host != "" {
		b.WriteString(`;host="`)
		for i := 0; i < len(host); i++ {
			if c := host[i]; c == '"' || c == '\\' {
				b.WriteByte('\\')
			}
			b.WriteByte(host[i])
		}
		b.WriteByte('"')
	}
	b.WriteString(";proto=")
	b.WriteString(proto)
	return b.String()
}

// clientAddr is the client's address for hashing: the socket peer, or, from
// a trusted proxy, the right-most untrusted X-Forwarded-For entry.
func (h *handler) clientAddr(r *http.Request, peer netip.Addr, peerOK, trusted bool) string {
	if trusted {
		xff := r.Header["X-Forwarded-For"]
		for i := len(xff) - 1; i >= 0; i-- {
			parts := strings.Split(xff[i], ",")
			for j := len(parts) - 1; j >= 0; j-- {
				a, err := netip.ParseAddr(strings.TrimSpace(parts[j]))
				if err != nil {
					return strings.TrimSpace(parts[j])
				}
				if !h.isTrusted(a.Unmap()) {
					return a.Unmap().String()
				}
			}
		}
	}
	if peerOK {
		return peer.String()
	}
	return r.RemoteAddr
}
