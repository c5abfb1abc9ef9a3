package proxy

import (
	"net/http"
	"net/netip"
	"strconv"
	"strings"

	"golang.org/x/net/http/httpguts"

	"github.com/edgeapp/edgeapp/edged/httpwire"
	"github.com/edgeapp/edgeapp/edged/reqinfo"
)

// The request head sent upstream is written straight from the client's
// request into a byte buffer: the client's end-to-end header fields, then
// edged's forwarded fields and the framing of the body. No header map is
// built for it.

// framing says how the request body is delimited upstream.
type framing uint8

const (
	frameNone    framing = iota // no body
	frameLength                 // Content-Length
	frameChunked                // Transfer-Encoding: chunked
)

// outHead is what the head of one request sent upstream depends on,
// besides the client's header fields.
type outHead struct {
	method      string
	path, query string // escaped path (after strip_prefix) and raw query
	host        string // Host sent upstream
	proto       string // scheme the client used: "http" or "https"
	upgrade     string // protocol asked for, "" for none
	frame       framing
	length      int64 // for frameLength
	expect100   bool
}

// skipOutgoing reports whether the client's header field name is not
// copied upstream as it is: hop-by-hop fields (RFC 9110 7.6.1), the
// framing and Host (edged writes its own), Expect (edged decides), and
// the forwarded fields (edged writes them, extending a trusted proxy's).
// Names are compared without regard to case, so a non-canonical key in
// the header map cannot slip a second Content-Length through.
func skipOutgoing(k string) bool {
	var ref string
	switch len(k) {
	case 2:
		ref = "Te"
	case 4:
		ref = "Host"
	case 6:
		ref = "Expect"
	case 7:
		if strings.EqualFold(k, "Upgrade") {
			return true
		}
		ref = "Trailer"
	case 9:
		if strings.EqualFold(k, "Forwarded") {
			return true
		}
		ref = "X-Real-Ip"
	case 10:
		if strings.EqualFold(k, "Connection") {
			return true
		}
		ref = "Keep-Alive"
	case 14:
		ref = "Content-Length"
	case 15:
		ref = "X-Forwarded-For"
	case 16:
		if strings.EqualFold(k, "Proxy-Connection") {
			return true
		}
		ref = "X-Forwarded-Host"
	case 17:
		if strings.EqualFold(k, "Transfer-Encoding") {
			return true
		}
		ref = "X-Forwarded-Proto"
	case 18:
		ref = "Proxy-Authenticate"
	case 19:
		ref = "Proxy-Authorization"
	default:
		return false
	}
	return k == ref || strings.EqualFold(k, ref)
}

// connListed collects the names a client's Connection field lists, other
// than the standard hop-by-hop ones and options, which skipOutgoing
// handles; the server has already removed them (StripConnectionListed),
// but a handler mounted elsewhere may not have.
func connListed(h http.Header, into []string) []string {
	for _, v := range h["Connection"] {
		forTokens(v, func(tok string) {
			if !isHopHeader(tok) {
				into = append(into, tok)
			}
		})
	}
	return into
}

func listed(names []string, k string) bool {
	for _, n := range names {
		if strings.EqualFold(n, k) {
			return true
		}
	}
	return false
}

// appendRequestHead writes the head of the request sent upstream. Incoming
// X-Forwarded-* and Forwarded values are kept (and extended) only from a
// trusted proxy; from anyone else they are replaced, so a client cannot
// forge its address. X-Real-IP is always edged's: the client address after
// trusted_proxies, as nginx's `proxy_set_header X-Real-IP $remote_addr`
// with the realip module.
func appendRequestHead(dst []byte, r *http.Request, info *reqinfo.Info, o *outHead, scratch []string) []byte {
	dst = append(dst, o.method...)
	dst = append(dst, ' ')
	dst = append(dst, o.path...)
	if o.query != "" {
		dst = append(dst, '?')
		dst = append(dst, o.query...)
	}
	dst = append(dst, " HTTP/1.1\r\n"...)
	dst = httpwire.AppendField(dst, "Host", o.host)

	names := connListed(r.Header, scratch[:0])
	for k, vv := range r.Header {
		if skipOutgoing(k) || (len(names) > 0 && listed(names, k)) {
			continue
		}
		for _, v := range vv {
			dst = httpwire.AppendField(dst, k, v)
		}
	}
	if httpguts.HeaderValuesContainsToken(r.Header["Te"], "trailers") {
		dst = append(dst, "Te: trailers\r\n"...)
	}

	trusted := info.Trusted
	var priorFor, priorProto, priorHost, priorFwd []string
	if trusted {
		priorFor, priorProto = r.Header["X-Forwarded-For"], r.Header["X-Forwarded-Proto"]
		priorHost, priorFwd = r.Header["X-Forwarded-Host"], r.Header["Forwarded"]
	}
	peerOK := info.Peer.IsValid()
	switch {
	case peerOK:
		start := len(dst)
		dst = append(dst, "X-Forwarded-For: "...)
		for _, v := range priorFor {
			dst = append(dst, v...)
			dst = append(dst, ", "...)
		}
		dst = info.Peer.AppendTo(dst)
		dst = endField(dst, start)
	default:
		for _, v := range priorFor {
			dst = httpwire.AppendField(dst, "X-Forwarded-For", v)
		}
	}
	if info.Client.IsValid() {
		dst = append(dst, "X-Real-Ip: "...)
		dst = info.Client.AppendTo(dst)
		dst = append(dst, '\r', '\n')
	}
	if len(priorProto) > 0 {
		for _, v := range priorProto {
			dst = httpwire.AppendField(dst, "X-Forwarded-Proto", v)
		}
	} else {
		dst = append(dst, "X-Forwarded-Proto: "...)
		dst = append(dst, o.proto...)
		dst = append(dst, '\r', '\n')
	}
	if len(priorHost) > 0 {
		for _, v := range priorHost {
			dst = httpwire.AppendField(dst, "X-Forwarded-Host", v)
		}
	} else if r.Host != "" {
		dst = httpwire.AppendField(dst, "X-Forwarded-Host", r.Host)
	}
	start := len(dst)
	dst = append(dst, "Forwarded: "...)
	for _, v := range priorFwd {
		dst = append(dst, v...)
		dst = append(dst, ", "...)
	}
	dst = appendForwardedElement(dst, info.Peer, peerOK, r.Host, o.proto)
	dst = endField(dst, start)

	if o.upgrade != "" {
		dst = append(dst, "Connection: Upgrade\r\n"...)
		dst = httpwire.AppendField(dst, "Upgrade", o.upgrade)
	}
	switch o.frame {
	case frameLength:
		if o.length > 0 || bodyMethod(o.method) {
			dst = append(dst, "Content-Length: "...)
			dst = strconv.AppendInt(dst, o.length, 10)
			dst = append(dst, '\r', '\n')
		}
	case frameChunked:
		dst = append(dst, "Transfer-Encoding: chunked\r\n"...)
	}
	if o.expect100 {
		dst = append(dst, "Expect: 100-continue\r\n"...)
	}
	return append(dst, '\r', '\n')
}

// bodyMethod: methods that announce an empty body with Content-Length: 0,
// as net/http's client does.
func bodyMethod(m string) bool { return m == "POST" || m == "PUT" || m == "PATCH" }

// endField ends a field line written from several pieces that began at
// start: control characters in the value become spaces (as AppendField
// does), then CRLF.
func endField(dst []byte, start int) []byte {
	for i := start; i < len(dst); i++ {
		if c := dst[i]; c < ' ' && c != '\t' {
			dst[i] = ' '
		}
	}
	return append(dst, '\r', '\n')
}

// appendForwardedElement writes one RFC 7239 element:
// for=...;host="...";proto=...
func appendForwardedElement(dst []byte, peer netip.Addr, peerOK bool, host, proto string) []byte {
	dst = append(dst, "for="...)
	switch {
	case !peerOK:
		dst = append(dst, "unknown"...)
	case peer.Is6():
		dst = append(dst, `"[`...)
		dst = peer.AppendTo(dst)
		dst = append(dst, `]"`...)
	default:
		dst = peer.AppendTo(dst)
	}
	if host != "" {
		dst = append(dst, `;host="`...)
		for i := 0; i < len(host); i++ {
			if c := host[i]; c == '"' || c == '\\' {
				dst = append(dst, '\\')
			}
			dst = append(dst, host[i])
		}
		dst = append(dst, '"')
	}
	dst = append(dst, ";proto="...)
	return append(dst, proto...)
}
