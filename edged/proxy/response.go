package proxy

import (
	"bytes"
	"net/http"
	"strings"
	"unsafe"

	"github.com/edgeapp/edgeapp/edged/httpwire"
)

// respMeta is what the hop-by-hop fields of a response head say that the
// client must hear in another way: the trailers announced.
type respMeta struct {
	trailerNames string // the Trailer field, to announce to the client
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

// fieldMeta is what the response head says about buffering and the
// connection, found in one pass over its fields.
type fieldMeta struct {
	accel       int8 // X-Accel-Buffering: 1 yes, -1 no, 0 absent
	eventStream bool // Content-Type: text/event-stream or application/grpc: a stream
	keepAlive   int64
}

func scanFields(fields []httpwire.Field) fieldMeta {
	var fm fieldMeta
	for i := range fields {
		f := &fields[i]
		switch len(f.Name) {
		case 10:
			if equalFoldB(f.Name, "keep-alive") {
				fm.keepAlive = keepAliveTimeout(f.Value)
			}
		case 12:
			if equalFoldB(f.Name, "content-type") {
				fm.eventStream = (len(f.Value) >= 17 && equalFoldB(f.Value[:17], "text/event-stream")) ||
					(len(f.Value) >= 16 && equalFoldB(f.Value[:16], "application/grpc"))
			}
		case 17:
			if equalFoldB(f.Name, "x-accel-buffering") {
				switch {
				case equalFoldB(f.Value, "no"):
					fm.accel = -1
				case equalFoldB(f.Value, "yes"):
					fm.accel = 1
				}
			}
		}
	}
	return fm
}

// span is a header field as offsets into the response head's string.
type span struct{ name, nameLen, value, valueLen int32 }

// headSnapshot is a response head copied out of the connection's buffer
// into one string, its fields as spans of it, so that the body can be read
// (and the buffer reused) before the fields go into a header map.
type headSnapshot struct {
	s     string
	spans []span
}

// take copies head, whose fields are fields (slices of head).
func (hs *headSnapshot) take(head []byte, fields []httpwire.Field) {
	hs.s = string(head)
	base := cap(head)
	hs.spans = hs.spans[:0]
	for i := range fields {
		f := &fields[i]
		hs.spans = append(hs.spans, span{
			name: int32(base - cap(f.Name)), nameLen: int32(len(f.Name)),
			value: int32(base - cap(f.Value)), valueLen: int32(len(f.Value)),
		})
	}
}

func (hs *headSnapshot) name(sp span) string  { return hs.s[sp.name : sp.name+sp.nameLen] }
func (hs *headSnapshot) value(sp span) string { return hs.s[sp.value : sp.value+sp.valueLen] }

// copyResponseHeader puts the end-to-end fields of a response head into h,
// replacing what h held under the same names (headers a handler before the
// proxy set, such as the request ID, stay unless the upstream sends its
// own), and returns the trailers the head announced. Every name and value
// is a substring of the head's one string, so a head costs two
// allocations besides that string (the values' backing array, and names
// sent in lower case).
func copyResponseHeader(h http.Header, hs *headSnapshot, seen []string) (respMeta, []string) {
	var meta respMeta
	// The names Connection lists, other than the hop-by-hop fields and
	// options every response may carry (keep-alive, close), which need no
	// look-up per field.
	var listedBuf [4]string
	listed := listedBuf[:0]
	for _, sp := range hs.spans {
		if n := hs.name(sp); len(n) == 10 && strings.EqualFold(n, "connection") {
			forTokens(hs.value(sp), func(tok string) {
				if !isHopHeader(tok) {
					listed = append(listed, tok)
				}
			})
		}
	}
	vals := make([]string, 0, len(hs.spans))
	seen = seen[:0]
	for _, sp := range hs.spans {
		name := hs.name(sp)
		nb := unsafeBytes(name)
		if isHopResponseField(nb) {
			switch {
			case equalFoldB(nb, "trailer"):
				if meta.trailerNames == "" {
					meta.trailerNames = hs.value(sp)
				} else {
					meta.trailerNames += ", " + hs.value(sp)
				}
			}
			continue
		}
		if len(listed) > 0 && listedName(listed, name) {
			continue
		}
		if len(name) == 17 && equalFoldB(nb, "x-accel-buffering") {
			continue // nginx's convention: honoured (scanFields), never passed on
		}
		v := hs.value(sp)
		k := http.CanonicalHeaderKey(name)
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

// unsafeBytes views s as bytes for the read-only helpers above.
func unsafeBytes(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

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

// listedName reports whether name is among the Connection-listed names.
func listedName(listed []string, name string) bool {
	for _, l := range listed {
		if strings.EqualFold(l, name) {
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
