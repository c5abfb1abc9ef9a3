package proxy

import (
	"bytes"
	"net/http"
	"strings"

	"github.com/edgeapp/edgeapp/edged/httpwire"
)

// respMeta is what the upstream's response head says besides its
// end-to-end fields: how long the server keeps the connection, the
// trailers it announced, and X-Accel-Buffering.
type respMeta struct {
	keepAlive    int64  // Keep-Alive: timeout=N, in seconds; 0 if none
	trailerNames string // the Trailer field, to announce to the client
	accel        int8   // X-Accel-Buffering: 1 yes, -1 no, 0 absent
	contentType  string // for text/event-stream
}

// isHopResponseField reports whether a response field is for one
// connection only (RFC 9110 7.6.1) and is not passed on.
func isHopResponseField(name []byte) bool {
	switch len(name) {
	case 2:
		return equalFoldB(name, "te")
	case 7:
		return equalFoldB(name, "upgrade") || equalFoldB(name, "trailer")
	case 10:
		return equalFoldB(name, "connection") || equalFoldB(name, "keep-alive")
	case 16:
		return equalFoldB(name, "proxy-connection")
	case 17:
		return equalFoldB(name, "transfer-encoding")
	case 18:
		return equalFoldB(name, "proxy-authenticate")
	case 19:
		return equalFoldB(name, "proxy-authorization")
	}
	return false
}

// equalFoldB compares b with the lower-case ASCII string s, ignoring case.
func equalFoldB(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range b {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

// copyResponseHeader puts the end-to-end fields of a parsed response head
// into h, replacing what h held under the same names (headers a handler
// before the proxy set, such as the request ID, stay unless the upstream
// sends its own), and returns what the hop-by-hop fields said. head is the
// buffer the fields point into; it is copied into one string, and every
// name and value is a substring of it, so a head costs three allocations
// (that string, the values' backing array, and names sent in lower case).
func copyResponseHeader(h http.Header, head []byte, fields []httpwire.Field, seen []string) (respMeta, []string) {
	var meta respMeta
	var conn []byte
	n := 0
	for i := range fields {
		f := &fields[i]
		if equalFoldB(f.Name, "connection") {
			if conn == nil {
				conn = f.Value
			} else {
				conn = append(append(append([]byte(nil), conn...), ','), f.Value...)
			}
		}
		n++
	}
	hs := string(head)
	base := cap(head)
	sub := func(b []byte) string {
		off := base - cap(b)
		return hs[off : off+len(b)]
	}
	vals := make([]string, 0, n)
	seen = seen[:0]
	for i := range fields {
		f := &fields[i]
		if isHopResponseField(f.Name) {
			switch {
			case equalFoldB(f.Name, "keep-alive"):
				meta.keepAlive = keepAliveTimeout(f.Value)
			case equalFoldB(f.Name, "trailer"):
				if meta.trailerNames == "" {
					meta.trailerNames = sub(f.Value)
				} else {
					meta.trailerNames += ", " + sub(f.Value)
				}
			}
			continue
		}
		if conn != nil && connNames(conn, f.Name) {
			continue
		}
		if len(f.Name) == 17 && equalFoldB(f.Name, "x-accel-buffering") {
			// nginx's convention: honoured here, never passed on.
			switch {
			case equalFoldB(f.Value, "no"):
				meta.accel = -1
			case equalFoldB(f.Value, "yes"):
				meta.accel = 1
			}
			continue
		}
		k := http.CanonicalHeaderKey(sub(f.Name))
		v := sub(f.Value)
		if k == "Content-Type" && meta.contentType == "" {
			meta.contentType = v
		}
		vals = append(vals, v)
		one := vals[len(vals)-1 : len(vals) : len(vals)]
		if notSeen(seen, k) {
			seen = append(seen, k)
			h[k] = one
		} else {
			h[k] = append(h[k], v)
		}
	}
	return meta, seen
}

func listedExact(names []string, k string) bool { return !notSeen(names, k) }

// notSeen reports whether k is not in seen.
func notSeen(seen []string, k string) bool {
	for _, s := range seen {
		if s == k {
			return false
		}
	}
	return true
}

// connNames reports whether the Connection value conn lists name.
func connNames(conn, name []byte) bool {
	for rest := conn; len(rest) > 0; {
		var tok []byte
		if i := bytes.IndexByte(rest, ','); i >= 0 {
			tok, rest = rest[:i], rest[i+1:]
		} else {
			tok, rest = rest, nil
		}
		tok = bytes.Trim(tok, " \t")
		if len(tok) == len(name) && bytes.EqualFold(tok, name) {
			return true
		}
	}
	return false
}

// keepAliveTimeout reads timeout=N from a Keep-Alive value, 0 if absent.
func keepAliveTimeout(v []byte) int64 {
	for rest := v; len(rest) > 0; {
		var p []byte
		if i := bytes.IndexByte(rest, ','); i >= 0 {
			p, rest = rest[:i], rest[i+1:]
		} else {
			p, rest = rest, nil
		}
		p = bytes.Trim(p, " \t")
		if len(p) > 8 && equalFoldB(p[:8], "timeout=") {
			var n int64
			for _, c := range p[8:] {
				if c < '0' || c > '9' || n > 1e6 {
					return 0
				}
				n = n*10 + int64(c-'0')
			}
			return n
		}
	}
	return 0
}

// isEventStream reports whether a Content-Type is text/event-stream.
func isEventStream(ct string) bool {
	return len(ct) >= 17 && strings.EqualFold(ct[:17], "text/event-stream")
}

// interimHeader copies a 1xx response's fields into h for WriteHeader(1xx)
// and returns the names set, so they can be removed afterwards.
func interimHeader(h http.Header, fields []httpwire.Field) []string {
	var names []string
	for i := range fields {
		f := &fields[i]
		if isHopResponseField(f.Name) {
			continue
		}
		k := http.CanonicalHeaderKey(string(f.Name))
		if _, ok := h[k]; !ok {
			names = append(names, k)
		} else if !listedExact(names, k) {
			continue // set before the proxy, for the final response
		}
		h[k] = append(h[k], string(f.Value))
	}
	return names
}
