package compress

import "strings"

// Accept-Encoding negotiation, shared with the static handler (sidecar
// selection) so that both answer a client the same way.

// maxOffers bounds the stack array used while ranking; offers beyond it are
// ignored (a server offers at most a handful of codings).
const maxOffers = 8

// Rank appends to dst the indices of offers that the Accept-Encoding value ae
// accepts, best first: higher q-value first, ties in the server's order of
// offers. An offer is acceptable when it is listed with q>0, or when it is
// not listed and "*" is, with q>0. "x-gzip" counts as "gzip". It does not
// allocate when dst has room.
func Rank(ae string, offers []string, dst []int) []int {
	if ae == "" || len(offers) == 0 {
		return dst
	}
	if len(offers) > maxOffers {
		offers = offers[:maxOffers]
	}
	var q [maxOffers]int // thousandths; -1 = not listed
	for i := range offers {
		q[i] = -1
	}
	star := -1
	for len(ae) > 0 {
		var elem string
		if i := strings.IndexByte(ae, ','); i >= 0 {
			elem, ae = ae[:i], ae[i+1:]
		} else {
			elem, ae = ae, ""
		}
		tok, params := elem, ""
		if i := strings.IndexByte(elem, ';'); i >= 0 {
			tok, params = elem[:i], elem[i+1:]
		}
		tok = trimOWS(tok)
		if tok == "" {
			continue
		}
		qv := parseQ(params)
		if tok == "*" {
			star = qv
			continue
		}
		for i, o := range offers {
			if equalFold(tok, o) || (o == "gzip" && equalFold(tok, "x-gzip")) {
				// A coding listed twice keeps its best q.
				if qv > q[i] {
					q[i] = qv
				}
			}
		}
	}
	start := len(dst)
	for i := range offers {
		if q[i] < 0 {
			q[i] = star
		}
		if q[i] <= 0 {
			continue
		}
		// Insertion keeps ties in offer order (stable).
		dst = append(dst, i)
		for j := len(dst) - 1; j > start && q[dst[j]] > q[dst[j-1]]; j-- {
			dst[j], dst[j-1] = dst[j-1], dst[j]
		}
	}
	return dst
}

// Negotiate returns the best offer accepted by ae (see Rank), or "".
func Negotiate(ae string, offers []string) string {
	var buf [maxOffers]int
	r := Rank(ae, offers, buf[:0])
	if len(r) == 0 {
		return ""
	}
	return offers[r[0]]
}

// parseQ returns the q parameter of an Accept-Encoding element in
// thousandths: 1000 when absent, 0 when malformed (a malformed weight is
// safer read as "not acceptable" than as "preferred").
func parseQ(params string) int {
	for len(params) > 0 {
		var p string
		if i := strings.IndexByte(params, ';'); i >= 0 {
			p, params = params[:i], params[i+1:]
		} else {
			p, params = params, ""
		}
		p = trimOWS(p)
		if len(p) < 2 || (p[0] != 'q' && p[0] != 'Q') || p[1] != '=' {
			continue
		}
		v := trimOWS(p[2:])
		if v == "" {
			return 0
		}
		switch v[0] {
		case '1':
			// "1", "1.", "1.0", "1.000": anything else after 1 is invalid.
			for _, c := range v[1:] {
				if c != '.' && c != '0' {
					return 0
				}
			}
			return 1000
		case '0':
			if len(v) == 1 {
				return 0
			}
			if v[1] != '.' || len(v) > 5 {
				return 0
			}
			n, digits := 0, 0
			for _, c := range v[2:] {
				if c < '0' || c > '9' {
					return 0
				}
				n = n*10 + int(c-'0')
				digits++
			}
			for ; digits < 3; digits++ {
				n *= 10
			}
			return n
		default:
			return 0
		}
	}
	return 1000
}

func trimOWS(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

// equalFold is ASCII case-insensitive equality (header tokens are ASCII).
func equalFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		ca, cb := a[i], b[i]
		if 'A' <= ca && ca <= 'Z' {
			ca += 'a' - 'A'
		}
		if 'A' <= cb && cb <= 'Z' {
			cb += 'a' - 'A'
		}
		if ca != cb {
			return false
		}
	}
	return true
}
