package cache

import (
	"hash/maphash"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
)

// varyValue is the normalised value of a request field named by Vary:
// field lines joined by ", ", each trimmed, compared byte for byte; and
// Accept-Encoding in a canonical form (see canonicalAE), so that clients
// that accept the same codings share one stored variant.
func (c *Cache) varyValue(h http.Header, name string) string {
	vs := h[name]
	var v string
	switch len(vs) {
	case 0:
		return ""
	case 1:
		v = strings.TrimSpace(vs[0])
	default:
		parts := make([]string, len(vs))
		for i, x := range vs {
			parts[i] = strings.TrimSpace(x)
		}
		v = strings.Join(parts, ", ")
	}
	if name == "Accept-Encoding" && v != "" {
		return c.ae.canonical(v)
	}
	return v
}

// aeTable remembers the canonical form of recent Accept-Encoding values,
// so the hit path computes it without allocating. Clients send a handful
// of distinct values; a value that collides with another simply replaces
// it.
type aeTable struct {
	seed  maphash.Seed
	slots [256]atomic.Pointer[aePair]
}

type aePair struct{ raw, canon string }

func (t *aeTable) canonical(v string) string {
	slot := &t.slots[maphash.String(t.seed, v)%uint64(len(t.slots))]
	if p := slot.Load(); p != nil && p.raw == v {
		return p.canon
	}
	canon := canonicalAE(v)
	slot.Store(&aePair{raw: strings.Clone(v), canon: canon})
	return canon
}

// canonicalAE rewrites an Accept-Encoding value without changing what it
// means (RFC 9110 12.5.3): codings lowercased, sorted, "q=1" dropped and
// other weights written without trailing zeros. The order of a list
// carries no preference, only the weights do, so two values with the same
// canonical form accept the same codings with the same preferences. A
// value that does not parse is returned as it is (it then only matches
// itself).
func canonicalAE(v string) string {
	var elems []string
	for _, part := range strings.Split(v, ",") {
		part = strings.Trim(part, " \t")
		if part == "" {
			continue
		}
		coding, params, _ := strings.Cut(part, ";")
		coding = strings.ToLower(strings.Trim(coding, " \t"))
		if coding == "" || strings.ContainsAny(coding, " \t\"=") {
			return v
		}
		q := "1"
		if params = strings.Trim(params, " \t"); params != "" {
			name, val, ok := strings.Cut(params, "=")
			if !ok || !strings.EqualFold(strings.Trim(name, " \t"), "q") {
				return v
			}
			f, err := strconv.ParseFloat(strings.Trim(val, " \t"), 64)
			if err != nil || f < 0 || f > 1 || len(strings.Trim(val, " \t")) > 5 {
				return v
			}
			q = strconv.FormatFloat(f, 'f', -1, 64)
		}
		if q == "1" {
			elems = append(elems, coding)
		} else {
			elems = append(elems, coding+";q="+q)
		}
	}
	slices.Sort(elems)
	return strings.Join(elems, ", ")
}
