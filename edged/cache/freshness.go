package cache

import (
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// meta is everything known about a stored response except its body. It is
// immutable: a 304 that refreshes a response stores a new meta.
type meta struct {
	status        int
	header        http.Header // as served: hop-by-hop, Age, private fields and edged's own fields removed
	own           []string    // edged's own targeted cache-control field (kept out of header)
	fields        []field     // header as a slice: a hit copies it without iterating a map
	trailers      http.Header // sent after the body
	vary          []string    // canonical names of the Vary fields
	reqTime       time.Time   // when the request that produced it was sent
	respTime      time.Time   // when its header arrived
	ageValue      int64       // the Age header it arrived with; -1 if invalid (the response is then stale)
	initialAge    time.Duration
	lifetime      time.Duration
	etag          string
	lastModified  string
	mustReval     bool // must-revalidate, proxy-revalidate or s-maxage: never served stale
	noCache       bool // revalidate before every use
	immutable     bool
	swr, sie      time.Duration
	contentLength string
}

// field is one header field of a stored response, values as stored.
type field struct {
	name   string
	values []string
}

// heuristicStatus: RFC 9110 15.1 heuristically cacheable status codes.
func heuristicStatus(code int) bool {
	switch code {
	case 200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501:
		return true
	}
	return false
}

// understoodStatus: the codes whose caching rules this cache implements
// (must-understand). 206 is understood but never stored: only complete
// responses are kept and ranges are cut from them.
func understoodStatus(code int) bool {
	switch code {
	case 200, 203, 204, 300, 301, 302, 303, 307, 308, 404, 405, 410, 414, 501:
		return true
	}
	return false
}

var hopHeaders = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

// parseVary returns the canonical Vary field names and whether "*" is among them.
func parseVary(h http.Header) (names []string, star bool) {
	for _, line := range h["Vary"] {
		for _, f := range strings.Split(line, ",") {
			f = strings.TrimSpace(f)
			switch f {
			case "":
			case "*":
				star = true
			default:
				names = append(names, http.CanonicalHeaderKey(f))
			}
		}
	}
	return names, star
}

// mayStore decides whether a response to req may be stored (RFC 9111 3).
// It returns "" when it may, else the reason, for Cache-Status detail.
func (c *Cache) mayStore(req *http.Request, rcc *reqCC, status int, h http.Header, cc *respCC, setCookie SetCookie) string {
	if req.Method != http.MethodGet {
		return "method"
	}
	understood := understoodStatus(status)
	if !understood {
		return "status"
	}
	if rcc.noStore {
		return "request-no-store"
	}
	// must-understand: a cache that understands the status code may ignore no-store.
	if cc.noStore && !(cc.mustUnderstand && understood) {
		return "no-store"
	}
	if cc.private {
		return "private"
	}
	if req.Header.Get("Authorization") != "" && !(cc.public || cc.sMaxAge >= 0 || cc.mustRevalidate) {
		return "authorization"
	}
	if len(h["Set-Cookie"]) > 0 && setCookie == SetCookiePass && !namesField(cc.noCacheFields, "Set-Cookie") && !namesField(cc.privateFields, "Set-Cookie") {
		return "set-cookie"
	}
	if _, star := parseVary(h); star {
		return "vary-star"
	}
	if h.Get("Content-Range") != "" {
		return "partial"
	}
	explicit := cc.maxAge >= 0 || cc.sMaxAge >= 0 || (len(h["Expires"]) > 0 && !cc.targeted)
	if !explicit && !heuristicStatus(status) && !cc.public {
		return "no-freshness"
	}
	return ""
}

func namesField(fields []string, name string) bool {
	for _, f := range fields {
		if f == name {
			return true
		}
	}
	return false
}

// storedHeader is the header kept with a stored response: every
// end-to-end field as received, except hop-by-hop fields, Age (computed
// anew), the fields named by private="..." and no-cache="..." (so they are
// never sent from the cache at all), edged's own request-ID field (each
// request has its own) and, with SetCookieStrip, Set-Cookie. edged's own
// targeted field is returned apart (own), so it never reaches a client.
// Date is added if the origin sent none.
func (c *Cache) storedHeader(h http.Header, cc *respCC, respTime time.Time, ho *HandlerOptions) (out http.Header, own []string) {
	out = h.Clone()
	for _, f := range out["Connection"] {
		for _, name := range strings.Split(f, ",") {
			if name = strings.TrimSpace(name); name != "" {
				delete(out, http.CanonicalHeaderKey(name))
			}
		}
	}
	for _, name := range hopHeaders {
		delete(out, name)
	}
	delete(out, "Age")
	if ho.SetCookie == SetCookieStrip {
		delete(out, "Set-Cookie")
		delete(out, "Set-Cookie2")
	}
	if ho.RequestIDHeader != "" {
		delete(out, ho.RequestIDHeader)
	}
	for _, name := range cc.privateFields {
		delete(out, name)
	}
	for _, name := range cc.noCacheFields {
		delete(out, name)
	}
	if c.ownCC != "" {
		own = out[c.ownCC]
		delete(out, c.ownCC)
	}
	if len(out["Date"]) == 0 {
		out["Date"] = []string{respTime.UTC().Format(http.TimeFormat)}
	}
	return out, own
}

// newMeta computes freshness and age bookkeeping (RFC 9111 4.2) for a
// stored header. bodyLen < 0 means not yet known.
func (c *Cache) newMeta(status int, h http.Header, own []string, ageValue int64, reqTime, respTime time.Time, bodyLen int64) *meta {
	cc := c.policy(h, own)
	// Stored values are handed to many responses; with cap == len an
	// Add on a response header can never write into them.
	for k, v := range h {
		h[k] = slices.Clip(v)
	}
	m := &meta{status: status, header: h, own: own, reqTime: reqTime, respTime: respTime, ageValue: ageValue}
	m.fields = make([]field, 0, len(h))
	for k, v := range h {
		m.fields = append(m.fields, field{k, v})
	}
	m.vary, _ = parseVary(h)
	m.etag = h.Get("Etag")
	m.lastModified = h.Get("Last-Modified")
	if bodyLen >= 0 {
		m.contentLength = strconv.FormatInt(bodyLen, 10)
	}

	// Age (4.2.3).
	date, ok := parseHTTPDate(h.Get("Date"))
	if !ok {
		date = respTime
	}
	apparent := max(respTime.Sub(date), 0)
	delay := max(respTime.Sub(reqTime), 0)
	corrected := time.Duration(max(ageValue, 0))*time.Second + delay
	m.initialAge = max(apparent, corrected)

	// Freshness lifetime (4.2.1): s-maxage, max-age, Expires, heuristic.
	switch {
	case cc.sMaxAge >= 0:
		m.lifetime = time.Duration(cc.sMaxAge) * time.Second
	case cc.maxAge >= 0:
		m.lifetime = time.Duration(cc.maxAge) * time.Second
	case len(h["Expires"]) > 0 && !cc.targeted:
		// An invalid Expires (e.g. "0") means already expired.
		if exp, ok := parseHTTPDate(h.Get("Expires")); ok && len(h["Expires"]) == 1 {
			m.lifetime = max(exp.Sub(date), 0)
		}
	case c.o.Heuristic && (heuristicStatus(status) || cc.public):
		if lm, ok := parseHTTPDate(m.lastModified); ok && lm.Before(date) {
			m.lifetime = min(date.Sub(lm)/10, heuristicCap)
		}
	}
	if cc.conflictingDelta || ageValue < 0 {
		// A delta directive repeated or invalid, or an Age that is not a
		// non-negative integer: how old the response is, or how long it
		// stays fresh, is unknown, so it is stale.
		m.lifetime = 0
	}

	m.mustReval = cc.mustRevalidate || cc.proxyRevalidate || cc.sMaxAge >= 0
	m.noCache = cc.noCache
	m.immutable = cc.immutable
	if !m.mustReval && !m.noCache {
		m.swr, m.sie = c.o.StaleWhileRevalidate, c.o.StaleIfError
		if cc.swr >= 0 {
			m.swr = time.Duration(cc.swr) * time.Second
		}
		if cc.sie >= 0 {
			m.sie = time.Duration(cc.sie) * time.Second
		}
	}
	return m
}

// age is the current_age of RFC 9111 4.2.3.
func (m *meta) age(now time.Time) time.Duration {
	// Never negative, even if the clock stepped back since it was stored.
	return max(m.initialAge+now.Sub(m.respTime), 0)
}

// worthStoring: a response that is stale on arrival and has no validator
// could never be reused, so it is not stored.
func (m *meta) worthStoring() bool {
	return (m.lifetime > 0 && !m.noCache) || m.etag != "" || m.lastModified != ""
}

// hasValidator reports whether a conditional request can revalidate it.
func (m *meta) hasValidator() bool { return m.etag != "" || m.lastModified != "" }

// staleOK reports whether the response, stale by `stale`, may be served
// within the given allowance (stale-while-revalidate / stale-if-error).
func (m *meta) staleOK(stale, allowance time.Duration) bool {
	return !m.mustReval && !m.noCache && allowance > 0 && stale <= allowance
}
