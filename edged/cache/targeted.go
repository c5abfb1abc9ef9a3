package cache

import (
	"net/http"

	"github.com/dunglas/httpsfv"
)

// Targeted cache control (RFC 9213): response fields that carry cache
// directives for a class of caches only. edged's target list is its own
// field (Options.OwnCacheControl, "Edged-Cache-Control" by default), then
// CDN-Cache-Control. The first of them with a valid, non-empty value
// decides how edged's cache stores and reuses the response; Cache-Control
// and Expires are then ignored by this cache (they still reach the
// client, for the caches after edged). A field that is not a valid
// Structured Field Dictionary (RFC 8941) is ignored as a whole, as if
// absent. edged's own field is removed from the response before it
// leaves edged (it is meant for edged only); CDN-Cache-Control is passed
// on, since it targets every CDN on the way.

// DefaultOwnCacheControl is edged's own targeted field.
const DefaultOwnCacheControl = "Edged-Cache-Control"

// CDNCacheControl is RFC 9213's field for every CDN cache.
const CDNCacheControl = "Cdn-Cache-Control"

// policy is the cache policy of a response: from the first valid
// targeted field, else from Cache-Control. own holds the lines of edged's
// own field, which is kept out of the stored header.
func (c *Cache) policy(h http.Header, own []string) respCC {
	if len(own) > 0 {
		if cc, ok := parseTargeted(own); ok {
			return cc
		}
	}
	if c.cdnCC {
		if lines := h[CDNCacheControl]; len(lines) > 0 {
			if cc, ok := parseTargeted(lines); ok {
				return cc
			}
		}
	}
	return parseRespCC(h)
}

// parseTargeted reads a targeted field: a Dictionary whose members are
// cache directives with Cache-Control's meanings. Delta directives take
// an Integer; the others are true Booleans (a bare key), and no-cache and
// private may instead list field names as a String or an Inner List. A
// member with a value of another type is ignored, as are parameters and
// unknown directives. ok is false for an empty or invalid field.
func parseTargeted(lines []string) (respCC, bool) {
	cc := respCC{maxAge: -1, sMaxAge: -1, swr: -1, sie: -1, targeted: true}
	d, err := httpsfv.UnmarshalDictionary(lines)
	if err != nil || len(d.Names()) == 0 {
		return cc, false
	}
	for _, name := range d.Names() {
		m, _ := d.Get(name)
		var val any
		switch x := m.(type) {
		case httpsfv.Item:
			val = x.Value
		case httpsfv.InnerList:
			val = x
		}
		delta := func(dst *int64) {
			if n, ok := val.(int64); ok && n >= 0 {
				*dst = min(n, maxDelta)
			}
		}
		flag := func(dst *bool) {
			if b, ok := val.(bool); ok {
				*dst = b
			}
		}
		switch name {
		case "max-age":
			delta(&cc.maxAge)
		case "s-maxage":
			delta(&cc.sMaxAge)
		case "stale-while-revalidate":
			delta(&cc.swr)
		case "stale-if-error":
			delta(&cc.sie)
		case "no-store":
			flag(&cc.noStore)
		case "public":
			flag(&cc.public)
		case "must-revalidate":
			flag(&cc.mustRevalidate)
		case "proxy-revalidate":
			flag(&cc.proxyRevalidate)
		case "must-understand":
			flag(&cc.mustUnderstand)
		case "immutable":
			flag(&cc.immutable)
		case "no-cache":
			if fields, ok := sfFieldNames(val); ok {
				cc.noCacheFields = fields
			} else {
				flag(&cc.noCache)
			}
		case "private":
			if fields, ok := sfFieldNames(val); ok {
				cc.privateFields = fields
			} else {
				flag(&cc.private)
			}
		}
	}
	return cc, true
}

// sfFieldNames reads a field-name list given as a String ("a, b") or an
// Inner List of Strings or Tokens.
func sfFieldNames(v any) ([]string, bool) {
	switch x := v.(type) {
	case string:
		return fieldNames(x), true
	case httpsfv.InnerList:
		var out []string
		for _, it := range x.Items {
			switch n := it.Value.(type) {
			case string:
				out = append(out, http.CanonicalHeaderKey(n))
			case httpsfv.Token:
				out = append(out, http.CanonicalHeaderKey(string(n)))
			}
		}
		return out, true
	}
	return nil, false
}
