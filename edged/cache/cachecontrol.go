package cache

import (
	"net/http"
	"strconv"
	"strings"
)

// maxDelta is the cap RFC 9111 1.2.2 puts on delta-seconds values.
const maxDelta = 2147483648

// respCC holds the response Cache-Control directives a shared cache acts on.
// Durations are in seconds; -1 means absent.
type respCC struct {
	maxAge, sMaxAge  int64
	swr, sie         int64
	noStore          bool
	noCache          bool // unqualified no-cache
	private          bool // unqualified private
	public           bool
	mustRevalidate   bool
	proxyRevalidate  bool
	mustUnderstand   bool
	immutable        bool
	noCacheFields    []string // canonical header names from no-cache="..."
	privateFields    []string // canonical header names from private="..."
	conflictingDelta bool     // a delta directive appeared twice or was invalid
	targeted         bool     // from a targeted field (RFC 9213): Expires does not count
}

// reqCC holds the request Cache-Control directives. -1 means absent.
type reqCC struct {
	maxAge, maxStale, minFresh int64
	maxStaleAny                bool
	noCache, noStore           bool
	onlyIfCached               bool
	present                    bool
}

// forEachDirective calls fn for every directive in the Cache-Control field
// lines, with the name lowercased and a quoted value unquoted.
func forEachDirective(lines []string, fn func(name, value string, hasValue bool)) {
	for _, line := range lines {
		s := line
		for len(s) > 0 {
			// name
			s = strings.TrimLeft(s, " \t,")
			if s == "" {
				break
			}
			i := 0
			for i < len(s) && s[i] != '=' && s[i] != ',' {
				i++
			}
			name := strings.ToLower(strings.TrimSpace(s[:i]))
			s = s[i:]
			var value string
			hasValue := false
			if len(s) > 0 && s[0] == '=' {
				hasValue = true
				s = strings.TrimLeft(s[1:], " \t")
				if len(s) > 0 && s[0] == '"' {
					var b strings.Builder
					j := 1
					for ; j < len(s); j++ {
						if s[j] == '\\' && j+1 < len(s) {
							j++
							b.WriteByte(s[j])
							continue
						}
						if s[j] == '"' {
							break
						}
						b.WriteByte(s[j])
					}
					value = b.String()
					if j < len(s) {
						j++
					}
					s = s[j:]
					if k := strings.IndexByte(s, ','); k >= 0 {
						s = s[k:]
					} else {
						s = ""
					}
				} else {
					k := strings.IndexByte(s, ',')
					if k < 0 {
						k = len(s)
					}
					value = strings.TrimSpace(s[:k])
					s = s[k:]
				}
			}
			if name != "" {
				fn(name, value, hasValue)
			}
		}
	}
}

// parseDelta parses delta-seconds; ok is false for anything but digits.
func parseDelta(v string) (int64, bool) {
	if v == "" {
		return 0, false
	}
	for i := 0; i < len(v); i++ {
		if v[i] < '0' || v[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n > maxDelta {
		return maxDelta, true
	}
	return n, true
}

// fieldNames splits a qualified directive's value into canonical header names.
func fieldNames(v string) []string {
	var out []string
	for _, f := range strings.Split(v, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, http.CanonicalHeaderKey(f))
		}
	}
	return out
}

func parseRespCC(h http.Header) respCC {
	cc := respCC{maxAge: -1, sMaxAge: -1, swr: -1, sie: -1}
	lines := h.Values("Cache-Control")
	if len(lines) == 0 {
		return cc
	}
	// delta sets a delta directive; a repeated or invalid value makes the
	// response stale (RFC 9111 4.2.1 lets a cache treat it so).
	delta := func(dst *int64, v string) {
		n, ok := parseDelta(v)
		if !ok || *dst >= 0 {
			cc.conflictingDelta = true
			n = 0
		}
		*dst = n
	}
	forEachDirective(lines, func(name, v string, hasValue bool) {
		switch name {
		case "max-age":
			delta(&cc.maxAge, v)
		case "s-maxage":
			delta(&cc.sMaxAge, v)
		case "stale-while-revalidate":
			if n, ok := parseDelta(v); ok {
				cc.swr = n
			}
		case "stale-if-error":
			if n, ok := parseDelta(v); ok {
				cc.sie = n
			}
		case "no-store":
			cc.noStore = true
		case "no-cache":
			if hasValue && v != "" {
				cc.noCacheFields = append(cc.noCacheFields, fieldNames(v)...)
			} else {
				cc.noCache = true
			}
		case "private":
			if hasValue && v != "" {
				cc.privateFields = append(cc.privateFields, fieldNames(v)...)
			} else {
				cc.private = true
			}
		case "public":
			cc.public = true
		case "must-revalidate":
			cc.mustRevalidate = true
		case "proxy-revalidate":
			cc.proxyRevalidate = true
		case "must-understand":
			cc.mustUnderstand = true
		case "immutable":
			cc.immutable = true
		}
	})
	return cc
}

func parseReqCC(h http.Header) reqCC {
	cc := reqCC{maxAge: -1, maxStale: -1, minFresh: -1}
	lines := h["Cache-Control"]
	if len(lines) == 0 {
		return cc
	}
	cc.present = true
	forEachDirective(lines, func(name, v string, hasValue bool) {
		switch name {
		case "max-age":
			if n, ok := parseDelta(v); ok {
				cc.maxAge = n
			} else {
				cc.maxAge = 0
			}
		case "max-stale":
			if !hasValue {
				cc.maxStaleAny = true
			} else if n, ok := parseDelta(v); ok {
				cc.maxStale = n
			}
		case "min-fresh":
			if n, ok := parseDelta(v); ok {
				cc.minFresh = n
			}
		case "no-cache":
			cc.noCache = true
		case "no-store":
			cc.noStore = true
		case "only-if-cached":
			cc.onlyIfCached = true
		}
	})
	return cc
}
