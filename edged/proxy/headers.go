package proxy

import (
	"fmt"
	"net/http"
	"net/netip"
	"strings"

	"golang.org/x/net/http/httpguts"

	"github.com/edgeapp/edgeapp/edged/reqinfo"
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

// hopHeaderNames is hopHeaders as a list, for case-insensitive lookups.
var hopHeaderNames = func() []string {
	var out []string
	for k := range hopHeaders {
		out = append(out, k)
	}
	return out
}()

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

// StripConnectionListed removes from a client's request the headers its
// Connection header names (RFC 9110 7.6.1: they are hop-by-hop), and the
// names themselves from Connection, before anything of edged's own (the
// request ID, a route's request_headers) is set: otherwise a client could
// name those in Connection and have the proxy delete them after edged set
// them. The standard hop-by-hop fields (Upgrade, TE, Keep-Alive, ...) stay,
// since the proxy handles each of them itself. The top of the request path
// calls it once per request; it allocates only when there is something to
// remove.
func StripConnectionListed(h http.Header) {
	cv, ok := h["Connection"]
	if !ok {
		return
	}
	strip := false
	for _, v := range cv {
		forTokens(v, func(tok string) {
			if !isHopHeader(tok) {
				strip = true
			}
		})
	}
	if !strip {
		return
	}
	var kept []string
	for _, v := range cv {
		forTokens(v, func(tok string) {
			if isHopHeader(tok) {
				kept = append(kept, tok)
			} else {
				delete(h, http.CanonicalHeaderKey(tok))
			}
		})
	}
	if len(kept) == 0 {
		delete(h, "Connection")
		return
	}
	h["Connection"] = []string{strings.Join(kept, ", ")}
}

// forTokens calls f for each non-empty token of a comma-separated list.
func forTokens(v string, f func(string)) {
	for v != "" {
		var tok string
		tok, v, _ = strings.Cut(v, ",")
		if tok = trimOWS(tok); tok != "" {
			f(tok)
		}
	}
}

// isHopHeader reports whether a Connection token is one of the standard
// hop-by-hop fields or the "close" and "keep-alive" options, without
// allocating.
func isHopHeader(tok string) bool {
	if strings.EqualFold(tok, "close") {
		return true
	}
	for _, k := range hopHeaderNames {
		if strings.EqualFold(tok, k) {
			return true
		}
	}
	return false
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

// DefaultUpgrades are the protocols a request may upgrade to when a route
// lists none: WebSocket only. Others (h2c, a custom protocol) tunnel past
// whatever inspects HTTP, so a route has to name them.
var DefaultUpgrades = []string{"websocket"}

// upgradeType returns the protocol an HTTP/1.1 request asks to upgrade to,
// the first of its Upgrade list that allowed names (case-insensitive,
// without a version: "websocket" allows "WebSocket" and "websocket/13"), or
// "" when it asks for none or none is allowed; the request then goes
// upstream as an ordinary one, without Upgrade, as nginx forwards it.
func upgradeType(r *http.Request, allowed []string) string {
	if r.ProtoMajor != 1 || !httpguts.HeaderValuesContainsToken(r.Header["Connection"], "Upgrade") {
		return ""
	}
	for _, v := range r.Header["Upgrade"] {
		for v != "" {
			var tok string
			tok, v, _ = strings.Cut(v, ",")
			tok = trimOWS(tok)
			name, _, _ := strings.Cut(tok, "/")
			for _, a := range allowed {
				if strings.EqualFold(name, a) {
					return tok
				}
			}
		}
	}
	return ""
}

// CheckUpgrade reports whether name can be listed in a route's upgrades:
// a protocol name token, without a version.
func CheckUpgrade(name string) error {
	if name == "" || !httpguts.ValidHeaderFieldName(name) || strings.ContainsRune(name, '/') {
		return fmt.Errorf("%q is not a protocol name (such as \"websocket\")", name)
	}
	return nil
}

// setForwarded writes X-Forwarded-For/-Proto/-Host, Forwarded and
// X-Real-IP. Incoming X-Forwarded-* and Forwarded values are kept (and
// extended) only from a trusted proxy; from anyone else they are replaced,
// so a client cannot forge its address. X-Real-IP is always edged's: the
// client address after trusted_proxies, as nginx's
// `proxy_set_header X-Real-IP $remote_addr` with the realip module.
func setForwarded(out http.Header, r *http.Request, info *reqinfo.Info) {
	proto := "http"
	if r.TLS != nil {
		proto = "https"
	}
	if !info.Trusted {
		delete(out, "X-Forwarded-For")
		delete(out, "X-Forwarded-Proto")
		delete(out, "X-Forwarded-Host")
		delete(out, "Forwarded")
	}
	peerOK := info.Peer.IsValid()
	if peerOK {
		ip := info.Peer.String()
		if prior := out["X-Forwarded-For"]; len(prior) > 0 {
			out["X-Forwarded-For"] = []string{strings.Join(prior, ", ") + ", " + ip}
		} else {
			out["X-Forwarded-For"] = []string{ip}
		}
	}
	if info.Client.IsValid() {
		out["X-Real-Ip"] = []string{info.Client.String()}
	} else {
		delete(out, "X-Real-Ip")
	}
	if _, ok := out["X-Forwarded-Proto"]; !ok {
		out["X-Forwarded-Proto"] = protoValues[proto]
	}
	if _, ok := out["X-Forwarded-Host"]; !ok && r.Host != "" {
		out["X-Forwarded-Host"] = []string{r.Host}
	}
	el := forwardedElement(info.Peer, peerOK, r.Host, proto)
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
