package cache

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strconv"
	"strings"
	"testing"
	"time"
)

// step is one request in a case, with what must come of it.
type step struct {
	advance time.Duration // move the clock first
	method  string        // default GET
	path    string        // default /r
	hdr     []string
	origin  int64  // origin hits this request must cause (0 or 1)
	status  int    // default 200
	body    string // "" = not checked; "-" = must be empty
	cs      string // substring of Cache-Status
	age     string // Age header
	hasHdr  []string
	noHdr   []string
	hdrIs   []string // "Name: value" that must be exactly so
	bgHits  int64    // wait until the origin has seen this many hits in total (background work)
}

type rfcCase struct {
	name   string
	opts   func(*Options)
	route  HandlerOptions
	origin func(n int64, w http.ResponseWriter, r *http.Request) // n: 1-based origin hit number
	steps  []step
}

// std writes body "v<n>" with the given header lines.
func std(hdr ...string) func(int64, http.ResponseWriter, *http.Request) {
	return func(n int64, w http.ResponseWriter, r *http.Request) {
		for _, h := range hdr {
			k, v, _ := strings.Cut(h, ":")
			w.Header().Add(strings.TrimSpace(k), strings.TrimSpace(v))
		}
		fmt.Fprintf(w, "v%d", n)
	}
}

// validating answers conditionals with 304 for ETag "e1" / its Last-Modified.
func validating(extra304 []string, hdr ...string) func(int64, http.ResponseWriter, *http.Request) {
	return func(n int64, w http.ResponseWriter, r *http.Request) {
		for _, h := range hdr {
			k, v, _ := strings.Cut(h, ":")
			w.Header().Add(strings.TrimSpace(k), strings.TrimSpace(v))
		}
		if r.Header.Get("If-None-Match") == `"e1"` || (r.Header.Get("If-Modified-Since") != "" && r.Header.Get("If-Modified-Since") == w.Header().Get("Last-Modified")) {
			for _, h := range extra304 {
				k, v, _ := strings.Cut(h, ":")
				w.Header().Set(strings.TrimSpace(k), strings.TrimSpace(v))
			}
			w.WriteHeader(http.StatusNotModified)
			return
		}
		fmt.Fprintf(w, "v%d", n)
	}
}

func status(code int, hdr ...string) func(int64, http.ResponseWriter, *http.Request) {
	return func(n int64, w http.ResponseWriter, r *http.Request) {
		for _, h := range hdr {
			k, v, _ := strings.Cut(h, ":")
			w.Header().Add(strings.TrimSpace(k), strings.TrimSpace(v))
		}
		w.WriteHeader(code)
		fmt.Fprintf(w, "v%d", n)
	}
}

var lastMod = httpDate(time.Now().Add(-10 * 24 * time.Hour))

var rfcCases = []rfcCase{
	// --- 3: storing responses ---
	{name: "3/max-age stored and reused", origin: std("Cache-Control: max-age=60"), steps: []step{
		{origin: 1, body: "v1", cs: "fwd=uri-miss; stored"},
		{origin: 0, body: "v1", cs: "hit; ttl=60", age: "0"},
	}},
	{name: "3/no-store not stored", origin: std("Cache-Control: no-store, max-age=60"), steps: []step{
		{origin: 1, body: "v1", cs: "detail=no-store"}, {origin: 1, body: "v2"},
	}},
	{name: "3/private not stored", origin: std("Cache-Control: private, max-age=60"), steps: []step{
		{origin: 1}, {origin: 1, body: "v2"},
	}},
	{name: "3/private=field stored without the field", origin: std(`Cache-Control: private="X-Secret", max-age=60`, "X-Secret: s", "X-Other: o"), steps: []step{
		{origin: 1, hasHdr: []string{"X-Secret"}}, {origin: 0, body: "v1", noHdr: []string{"X-Secret"}, hasHdr: []string{"X-Other"}},
	}},
	{name: "3/no freshness and no validator not stored", origin: std(), steps: []step{
		{origin: 1}, {origin: 1, body: "v2"},
	}},
	{name: "3/POST response not stored", origin: std("Cache-Control: max-age=60"), steps: []step{
		{method: "POST", origin: 1}, {origin: 1, body: "v2"}, {origin: 0, body: "v2"},
	}},
	{name: "3/500 with max-age not stored", origin: status(500, "Cache-Control: max-age=60"), steps: []step{
		{origin: 1, status: 500}, {origin: 1, status: 500},
	}},
	{name: "3/404 with max-age stored", origin: status(404, "Cache-Control: max-age=60"), steps: []step{
		{origin: 1, status: 404}, {origin: 0, status: 404, body: "v1", cs: "hit"},
	}},
	{name: "3/302 with explicit freshness stored", origin: status(302, "Cache-Control: max-age=60", "Location: /x"), steps: []step{
		{origin: 1, status: 302, path: "/r"}, {origin: 0, status: 302, cs: "hit"},
	}},
	{name: "3/302 without freshness not stored", origin: status(302, "Location: /x"), steps: []step{
		{origin: 1, status: 302}, {origin: 1, status: 302},
	}},
	{name: "3/must-understand with understood status ignores no-store", origin: std("Cache-Control: no-store, must-understand, max-age=60"), steps: []step{
		{origin: 1}, {origin: 0, body: "v1"},
	}},
	{name: "3/must-understand with unknown status not stored", origin: status(299, "Cache-Control: must-understand, max-age=60"), steps: []step{
		{origin: 1, status: 299}, {origin: 1, status: 299},
	}},
	{name: "3/request no-store: response not stored", origin: std("Cache-Control: max-age=60"), steps: []step{
		{origin: 1, hdr: []string{"Cache-Control: no-store"}}, {origin: 1, body: "v2"},
	}},
	{name: "3/Expires only", origin: nil, steps: []step{ // origin set in the test: needs the clock
		{origin: 1}, {advance: 30 * time.Second, origin: 0, body: "v1"}, {advance: 31 * time.Second, origin: 1, body: "v2"},
	}},
	// --- 3.5: Authorization ---
	{name: "3.5/Authorization without permission not stored", origin: std("Cache-Control: max-age=60"), steps: []step{
		{origin: 1, hdr: []string{"Authorization: Bearer x"}}, {origin: 1, hdr: []string{"Authorization: Bearer x"}, body: "v2"},
	}},
	{name: "3.5/Authorization with public stored", origin: std("Cache-Control: public, max-age=60"), steps: []step{
		{origin: 1, hdr: []string{"Authorization: Bearer x"}}, {origin: 0, body: "v1"},
	}},
	{name: "3.5/Authorization with s-maxage stored", origin: std("Cache-Control: s-maxage=60"), steps: []step{
		{origin: 1, hdr: []string{"Authorization: Bearer x"}}, {origin: 0, body: "v1"},
	}},
	{name: "3.5/Authorization with must-revalidate stored", origin: std("Cache-Control: must-revalidate, max-age=60"), steps: []step{
		{origin: 1, hdr: []string{"Authorization: Bearer x"}}, {origin: 0, body: "v1"},
	}},
	// --- Set-Cookie: the route's cache_set_cookie (pass by default) ---
	{name: "Set-Cookie/pass: not stored", origin: std("Cache-Control: max-age=60", "Set-Cookie: s=1"), steps: []step{
		{origin: 1, cs: "detail=set-cookie", hasHdr: []string{"Set-Cookie"}}, {origin: 1, body: "v2"},
	}},
	{name: "Set-Cookie/pass: not stored even when public", origin: std("Cache-Control: public, max-age=60", "Set-Cookie: s=1"), steps: []step{
		{origin: 1, hasHdr: []string{"Set-Cookie"}}, {origin: 1, body: "v2"},
	}},
	{name: "Set-Cookie/pass: no-cache=Set-Cookie stored without it", origin: std(`Cache-Control: max-age=60, no-cache="Set-Cookie"`, "Set-Cookie: s=1"), steps: []step{
		{origin: 1, hasHdr: []string{"Set-Cookie"}}, {origin: 0, body: "v1", noHdr: []string{"Set-Cookie"}},
	}},
	{name: "Set-Cookie/store: stored and replayed (RFC 9111)", route: HandlerOptions{SetCookie: SetCookieStore}, origin: std("Cache-Control: max-age=60", "Set-Cookie: s=1"), steps: []step{
		{origin: 1, hasHdr: []string{"Set-Cookie"}}, {origin: 0, body: "v1", cs: "hit", hasHdr: []string{"Set-Cookie"}},
	}},
	{name: "Set-Cookie/store: private=Set-Cookie still keeps it out", route: HandlerOptions{SetCookie: SetCookieStore}, origin: std(`Cache-Control: max-age=60, private="Set-Cookie"`, "Set-Cookie: s=1"), steps: []step{
		{origin: 1, hasHdr: []string{"Set-Cookie"}}, {origin: 0, body: "v1", noHdr: []string{"Set-Cookie"}},
	}},
	{name: "Set-Cookie/strip: stored without the cookie", route: HandlerOptions{SetCookie: SetCookieStrip}, origin: std("Cache-Control: max-age=60", "Set-Cookie: s=1", "X-Other: o"), steps: []step{
		{origin: 1, hasHdr: []string{"Set-Cookie"}}, {origin: 0, body: "v1", cs: "hit", noHdr: []string{"Set-Cookie"}, hasHdr: []string{"X-Other"}},
	}},
	// --- RFC 9213: targeted cache control ---
	{name: "RFC 9213/CDN-Cache-Control overrides Cache-Control", origin: std("Cache-Control: no-store", "CDN-Cache-Control: max-age=60"), steps: []step{
		{origin: 1}, {origin: 0, body: "v1", cs: "hit; ttl=60", hasHdr: []string{"CDN-Cache-Control", "Cache-Control"}},
	}},
	{name: "RFC 9213/CDN-Cache-Control no-store beats Cache-Control max-age", origin: std("Cache-Control: max-age=60", "CDN-Cache-Control: no-store"), steps: []step{
		{origin: 1, cs: "detail=no-store"}, {origin: 1, body: "v2"},
	}},
	{name: "RFC 9213/CDN-Cache-Control private", origin: std("Cache-Control: public, max-age=60", "CDN-Cache-Control: private"), steps: []step{
		{origin: 1}, {origin: 1, body: "v2"},
	}},
	{name: "RFC 9213/CDN-Cache-Control s-maxage", origin: std("Cache-Control: max-age=1000", "CDN-Cache-Control: s-maxage=30, max-age=10"), steps: []step{
		{origin: 1}, {advance: 20 * time.Second, origin: 0, body: "v1"}, {advance: 11 * time.Second, origin: 1},
	}},
	{name: "RFC 9213/CDN-Cache-Control no-cache revalidates", origin: validating(nil, "Cache-Control: max-age=60", "CDN-Cache-Control: no-cache", `ETag: "e1"`), steps: []step{
		{origin: 1}, {origin: 1, body: "v1", cs: "fwd-status=304"},
	}},
	{name: "RFC 9213/no-cache with field names as a String", origin: std("CDN-Cache-Control: max-age=60, no-cache=\"X-Foo\"", "X-Foo: f", "X-Bar: b"), steps: []step{
		{origin: 1, hasHdr: []string{"X-Foo"}}, {origin: 0, body: "v1", noHdr: []string{"X-Foo"}, hasHdr: []string{"X-Bar"}},
	}},
	{name: "RFC 9213/private with field names as an Inner List", origin: std("CDN-Cache-Control: max-age=60, private=(\"X-Foo\" x-bar)", "X-Foo: f", "X-Bar: b", "X-Baz: z"), steps: []step{
		{origin: 1}, {origin: 0, body: "v1", noHdr: []string{"X-Foo", "X-Bar"}, hasHdr: []string{"X-Baz"}},
	}},
	{name: "RFC 9213/targeted field ignores Expires", origin: std("CDN-Cache-Control: must-revalidate", "Expires: Thu, 01 Jan 2099 01:00:00 GMT", `ETag: "e1"`), steps: []step{
		{origin: 1}, {origin: 1},
	}},
	{name: "RFC 9213/a field that is not a Dictionary is ignored as a whole", origin: std("Cache-Control: max-age=60", "CDN-Cache-Control: MAX-AGE=0, no-store"), steps: []step{
		{origin: 1}, {origin: 0, body: "v1", cs: "hit; ttl=60"},
	}},
	{name: "RFC 9213/an unterminated string makes the field invalid", origin: std("Cache-Control: max-age=60", `CDN-Cache-Control: no-store, private="X`), steps: []step{
		{origin: 1}, {origin: 0, body: "v1"},
	}},
	{name: "RFC 9213/an empty field is ignored", origin: std("Cache-Control: max-age=60", "CDN-Cache-Control: "), steps: []step{
		{origin: 1}, {origin: 0, body: "v1"},
	}},
	{name: "RFC 9213/a member of the wrong type is ignored", origin: std("Cache-Control: max-age=60", `CDN-Cache-Control: max-age="60"`), steps: []step{
		{origin: 1}, {origin: 1}, // valid field, no usable max-age: no freshness
	}},
	{name: "RFC 9213/parameters are ignored", origin: std("Cache-Control: no-store", "CDN-Cache-Control: max-age=60;foo=bar"), steps: []step{
		{origin: 1}, {origin: 0, body: "v1", cs: "ttl=60"},
	}},
	{name: "RFC 9213/no-store=?0 is not no-store", origin: std("Cache-Control: no-store", "CDN-Cache-Control: max-age=60, no-store=?0"), steps: []step{
		{origin: 1}, {origin: 0, body: "v1"},
	}},
	{name: "RFC 9213/Edged-Cache-Control comes first and stays inside edged", origin: std("Cache-Control: max-age=1000", "CDN-Cache-Control: max-age=100", "Edged-Cache-Control: max-age=10"), steps: []step{
		{origin: 1, noHdr: []string{"Edged-Cache-Control"}, hasHdr: []string{"CDN-Cache-Control"}},
		{advance: 5 * time.Second, origin: 0, body: "v1", cs: "ttl=5", noHdr: []string{"Edged-Cache-Control"}},
		{advance: 6 * time.Second, origin: 1, body: "v2"},
	}},
	{name: "RFC 9213/an invalid Edged-Cache-Control falls back to CDN-Cache-Control", origin: std("Cache-Control: max-age=1000", "CDN-Cache-Control: max-age=100", "Edged-Cache-Control: max-age=1.5.5"), steps: []step{
		{origin: 1, noHdr: []string{"Edged-Cache-Control"}}, {origin: 0, cs: "ttl=100"},
	}},
	{name: "RFC 9213/own field configurable", opts: func(o *Options) { o.OwnCacheControl = "Acme-Cache-Control" }, origin: std("Cache-Control: no-store", "Acme-Cache-Control: max-age=60", "Edged-Cache-Control: no-store"), steps: []step{
		{origin: 1, noHdr: []string{"Acme-Cache-Control"}, hasHdr: []string{"Edged-Cache-Control"}}, {origin: 0, body: "v1", cs: "ttl=60"},
	}},
	{name: "RFC 9213/CDN-Cache-Control can be ignored", opts: func(o *Options) { o.IgnoreCDNCacheControl = true }, origin: std("Cache-Control: max-age=60", "CDN-Cache-Control: no-store"), steps: []step{
		{origin: 1}, {origin: 0, body: "v1"},
	}},
	{name: "RFC 9213/targeted no-store on a 304 drops the stored response", origin: func(n int64, w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=10")
		w.Header().Set("ETag", `"e1"`)
		if r.Header.Get("If-None-Match") == `"e1"` {
			w.Header().Set("CDN-Cache-Control", "no-store")
			w.WriteHeader(http.StatusNotModified)
			return
		}
		fmt.Fprintf(w, "v%d", n)
	}, steps: []step{
		// The 304's no-store drops what was stored; it is fetched again.
		{origin: 1}, {advance: 11 * time.Second, origin: 2, body: "v3"}, {origin: 0, body: "v3"},
	}},
	// --- the request ID is each request's own ---
	{name: "request ID echoed by the origin is not replayed", route: HandlerOptions{RequestIDHeader: "x-request-id"}, origin: func(n int64, w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Request-Id", r.Header.Get("X-Request-Id"))
		w.Header().Set("Cache-Control", "max-age=60")
		fmt.Fprintf(w, "v%d", n)
	}, steps: []step{
		{hdr: []string{"X-Request-Id: first"}, origin: 1, hasHdr: []string{"X-Request-Id"}},
		{hdr: []string{"X-Request-Id: second"}, origin: 0, body: "v1", noHdr: []string{"X-Request-Id"}},
	}},
	// --- 3.1: every end-to-end field is stored, never a hop-by-hop one ---
	{name: "3.1/end-to-end fields stored, hop-by-hop not", origin: func(n int64, w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("X-Custom", "c")
		w.Header().Add("X-Multi", "a")
		w.Header().Add("X-Multi", "b")
		w.Header().Set("Content-Language", "en")
		w.Header().Set("Link", "</a>; rel=preload")
		w.(http.Flusher).Flush() // chunked: Transfer-Encoding on the wire
		fmt.Fprintf(w, "v%d", n)
	}, steps: []step{
		{origin: 1},
		{origin: 0, body: "v1", cs: "hit", hasHdr: []string{"X-Custom", "X-Multi", "Content-Language", "Link", "Content-Length"}},
	}},
	// --- 4.1: Vary ---
	{name: "4.1/Vary selects among several variants", origin: std("Cache-Control: max-age=60", "Vary: Accept-Encoding"), steps: []step{
		{hdr: []string{"Accept-Encoding: gzip"}, origin: 1, body: "v1"},
		{hdr: []string{"Accept-Encoding: br"}, origin: 1, body: "v2", cs: "fwd=vary-miss"},
		{hdr: []string{"Accept-Encoding: gzip"}, origin: 0, body: "v1", cs: "hit"},
		{hdr: []string{"Accept-Encoding: br"}, origin: 0, body: "v2", cs: "hit"},
		{origin: 1, body: "v3"}, // absent is a value of its own
		{origin: 0, body: "v3"},
	}},
	{name: "4.1/Vary: Accept-Encoding values that accept the same codings share a variant", origin: std("Cache-Control: max-age=60", "Vary: Accept-Encoding"), steps: []step{
		{hdr: []string{"Accept-Encoding: gzip, deflate, br"}, origin: 1, body: "v1"},
		{hdr: []string{"Accept-Encoding: br,gzip,  deflate"}, origin: 0, body: "v1", cs: "hit"},
		{hdr: []string{"Accept-Encoding: GZIP;q=1.0, deflate, br"}, origin: 0, body: "v1", cs: "hit"},
		{hdr: []string{"Accept-Encoding: gzip, deflate"}, origin: 1, body: "v2", cs: "vary-miss"},
		{hdr: []string{"Accept-Encoding: gzip;q=0.5, deflate, br"}, origin: 1, body: "v3", cs: "vary-miss"},
	}},
	{name: "4.1/Vary on two fields", origin: std("Cache-Control: max-age=60", "Vary: Accept-Language, X-Dev"), steps: []step{
		{hdr: []string{"Accept-Language: en", "X-Dev: a"}, origin: 1, body: "v1"},
		{hdr: []string{"Accept-Language: en", "X-Dev: b"}, origin: 1, body: "v2"},
		{hdr: []string{"Accept-Language: en", "X-Dev: a"}, origin: 0, body: "v1"},
	}},
	{name: "4.1/Vary * never served from cache", origin: std("Cache-Control: max-age=60", "Vary: *"), steps: []step{
		{origin: 1}, {origin: 1, body: "v2"},
	}},
	// --- 4.2: freshness ---
	{name: "4.2/max-age expires", origin: std("Cache-Control: max-age=60"), steps: []step{
		{origin: 1}, {advance: 30 * time.Second, origin: 0, age: "30", cs: "ttl=30"},
		{advance: 31 * time.Second, origin: 1, body: "v2", cs: "fwd=stale"},
	}},
	{name: "4.2.1/s-maxage overrides max-age", origin: std("Cache-Control: max-age=10, s-maxage=100"), steps: []step{
		{origin: 1}, {advance: 50 * time.Second, origin: 0, body: "v1"}, {advance: 51 * time.Second, origin: 1},
	}},
	{name: "4.2.1/max-age overrides Expires", origin: std("Cache-Control: max-age=100", "Expires: Thu, 01 Jan 1970 00:00:00 GMT"), steps: []step{
		{origin: 1}, {advance: 50 * time.Second, origin: 0, body: "v1"},
	}},
	{name: "4.2.1/invalid Expires means stale", origin: std("Expires: 0", "ETag: \"e1\""), steps: []step{
		{origin: 1}, {origin: 1},
	}},
	{name: "4.2.1/Expires with a one-digit hour means stale", origin: std("Expires: Thu, 01 Jan 2099 1:00:00 GMT", "ETag: \"e1\""), steps: []step{
		{origin: 1}, {origin: 1},
	}},
	{name: "4.2.1/Expires with extra spaces means stale", origin: std("Expires: Thu,  01 Jan 2099 01:00:00 GMT", "ETag: \"e1\""), steps: []step{
		{origin: 1}, {origin: 1},
	}},
	{name: "4.2.1/Expires in rfc850 form is valid", origin: std("Expires: Friday, 01-Jan-99 01:00:00 GMT", "ETag: \"e1\""), steps: []step{
		{origin: 1}, {origin: 1}, // 2099 is more than 50 years ahead, so 1999: stale
	}},
	{name: "4.2.1/Expires in asctime form is valid", origin: std("Expires: Thu Jan  1 01:00:00 2099"), steps: []step{
		{origin: 1}, {origin: 0, body: "v1"},
	}},
	{name: "4.2.1/two Expires fields mean stale", origin: std("Expires: Thu, 01 Jan 2099 01:00:00 GMT", "Expires: Fri, 02 Jan 2099 01:00:00 GMT", "ETag: \"e1\""), steps: []step{
		{origin: 1}, {origin: 1},
	}},
	{name: "4.2.1/invalid max-age means stale", origin: std("Cache-Control: max-age=abc", "ETag: \"e1\""), steps: []step{
		{origin: 1}, {origin: 1},
	}},
	{name: "4.2.2/heuristic off by default", origin: validating(nil, "Last-Modified: "+lastMod), steps: []step{
		{origin: 1}, {advance: time.Hour, origin: 1, body: "v1", cs: "fwd-status=304"},
	}},
	{name: "4.2.2/heuristic when configured", opts: func(o *Options) { o.Heuristic = true }, origin: validating(nil, "Last-Modified: "+lastMod), steps: []step{
		{origin: 1}, {advance: time.Hour, origin: 0, body: "v1", cs: "hit"},
		{advance: 23 * time.Hour, origin: 1, body: "v1"}, // 10% of 10 days = 1 day
	}},
	{name: "4.2.2/heuristic not for non-heuristic status", opts: func(o *Options) { o.Heuristic = true }, origin: status(302, "Last-Modified: "+lastMod, "Location: /x"), steps: []step{
		{origin: 1, status: 302}, {origin: 1, status: 302},
	}},
	// --- 4.2.3: age ---
	{name: "4.2.3/Age from upstream counts", origin: std("Cache-Control: max-age=60", "Age: 20"), steps: []step{
		{origin: 1}, {advance: 10 * time.Second, origin: 0, age: "30"}, {advance: 31 * time.Second, origin: 1},
	}},
	{name: "5.1/Age list: the first member counts", origin: std("Cache-Control: max-age=60", "Age: 7200, 0", "ETag: \"e1\""), steps: []step{
		{origin: 1}, {origin: 1},
	}},
	{name: "5.1/Age on two lines: the first counts", origin: std("Cache-Control: max-age=60", "Age: 0", "Age: 7200"), steps: []step{
		{origin: 1}, {origin: 0, age: "0"},
	}},
	{name: "5.1/Age not an integer means stale", origin: std("Cache-Control: max-age=60", "Age: old, 0", "ETag: \"e1\""), steps: []step{
		{origin: 1}, {origin: 1},
	}},
	{name: "5.1/negative Age means stale", origin: std("Cache-Control: max-age=60", "Age: -10", "ETag: \"e1\""), steps: []step{
		{origin: 1}, {origin: 1},
	}},
	{name: "5.1/fractional Age means stale", origin: std("Cache-Control: max-age=60", "Age: 1.5", "ETag: \"e1\""), steps: []step{
		{origin: 1}, {origin: 1},
	}},
	{name: "5.1/Age beyond 2^31 means stale", origin: std("Cache-Control: max-age=2147483647", "Age: 2147483648", "ETag: \"e1\""), steps: []step{
		{origin: 1}, {origin: 1},
	}},
	{name: "4.2.3/apparent age from Date", origin: func(n int64, w http.ResponseWriter, r *http.Request) {
		d, _ := http.ParseTime(w.Header().Get("Date"))
		w.Header().Set("Date", httpDate(d.Add(-15*time.Second)))
		w.Header().Set("Cache-Control", "max-age=60")
		fmt.Fprintf(w, "v%d", n)
	}, steps: []step{
		{origin: 1}, {origin: 0, age: "15", cs: "ttl=45"},
	}},
	// --- 4.3: validation ---
	{name: "4.3.1/stale revalidated with If-None-Match, 304 refreshes", origin: validating([]string{"X-Version: 2"}, "Cache-Control: max-age=10", `ETag: "e1"`, "X-Version: 1"), steps: []step{
		{origin: 1, hasHdr: []string{"X-Version"}},
		{advance: 11 * time.Second, origin: 1, body: "v1", cs: "fwd=stale; fwd-status=304"},
		{advance: 5 * time.Second, origin: 0, body: "v1", cs: "hit"},
	}},
	{name: "4.3.1/stale revalidated with If-Modified-Since", origin: validating(nil, "Cache-Control: max-age=10", "Last-Modified: "+lastMod), steps: []step{
		{origin: 1}, {advance: 11 * time.Second, origin: 1, body: "v1", cs: "fwd-status=304"}, {origin: 0, body: "v1"},
	}},
	{name: "4.3.2/client If-None-Match answered 304 from cache", origin: std("Cache-Control: max-age=60", `ETag: "e1"`), steps: []step{
		{origin: 1},
		{hdr: []string{`If-None-Match: "zz", W/"e1"`}, origin: 0, status: 304, body: "-"},
		{hdr: []string{`If-None-Match: "zz"`}, origin: 0, status: 200, body: "v1"},
		{hdr: []string{`If-None-Match: *`}, origin: 0, status: 304},
	}},
	{name: "RFC 9110 15.4.5/a 304 from the cache repeats the fields a 200 would carry", origin: std("Cache-Control: max-age=60", `ETag: "e1"`, "Vary: X-V", "Content-Location: /r.en", "Expires: Thu, 01 Jan 2099 01:00:00 GMT", "Content-Type: text/plain", "Content-Language: en", "Last-Modified: "+lastMod, "X-App: a"), steps: []step{
		{origin: 1},
		{hdr: []string{`If-None-Match: "e1"`}, origin: 0, status: 304, body: "-",
			hasHdr: []string{"ETag", "Cache-Control", "Vary", "Content-Location", "Expires", "Date", "Age", "X-App"},
			noHdr:  []string{"Content-Type", "Content-Language", "Content-Length", "Last-Modified"}},
	}},
	{name: "RFC 9110 15.4.5/without an ETag a 304 from the cache carries Last-Modified", origin: std("Cache-Control: max-age=60", "Last-Modified: "+lastMod), steps: []step{
		{origin: 1},
		{hdr: []string{"If-Modified-Since: " + lastMod}, origin: 0, status: 304, hasHdr: []string{"Last-Modified", "Date", "Cache-Control"}},
	}},
	{name: "4.3.2/client If-Modified-Since answered 304 from cache", origin: std("Cache-Control: max-age=60", "Last-Modified: "+lastMod), steps: []step{
		{origin: 1},
		{hdr: []string{"If-Modified-Since: " + lastMod}, origin: 0, status: 304},
		{hdr: []string{"If-Modified-Since: " + httpDate(time.Now().Add(-20*24*time.Hour))}, origin: 0, status: 200},
	}},
	{name: "4.3.2/conditional on a miss answered from the filled response", origin: std("Cache-Control: max-age=60", `ETag: "e1"`), steps: []step{
		{hdr: []string{`If-None-Match: "e1"`}, origin: 1, status: 304},
		{origin: 0, body: "v1"},
	}},
	{name: "4.3.4/304 with changed validator still refreshes", origin: validating([]string{"Cache-Control: max-age=100"}, "Cache-Control: max-age=10", `ETag: "e1"`), steps: []step{
		{origin: 1}, {advance: 11 * time.Second, origin: 1, body: "v1"}, {advance: 50 * time.Second, origin: 0, body: "v1"},
	}},
	// --- ranges from a complete cached body ---
	{name: "ranges served from the cached body", origin: func(n int64, w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("ETag", `"e1"`)
		w.Write([]byte("0123456789"))
	}, steps: []step{
		{origin: 1, body: "0123456789"},
		{hdr: []string{"Range: bytes=2-5"}, origin: 0, status: 206, body: "2345", hdrIs: []string{"Content-Range: bytes 2-5/10", "Content-Length: 4"}},
		{hdr: []string{"Range: bytes=-3"}, origin: 0, status: 206, body: "789", hdrIs: []string{"Content-Range: bytes 7-9/10"}},
		{hdr: []string{"Range: bytes=7-"}, origin: 0, status: 206, body: "789"},
		{hdr: []string{"Range: bytes=20-"}, origin: 0, status: 416, hdrIs: []string{"Content-Range: bytes */10"}},
		{hdr: []string{"Range: bytes=0-1,4-5"}, origin: 0, status: 200, body: "0123456789"},
		{hdr: []string{"Range: bytes=2-5", `If-Range: "other"`}, origin: 0, status: 200, body: "0123456789"},
		{hdr: []string{"Range: bytes=2-5", `If-Range: "e1"`}, origin: 0, status: 206, body: "2345"},
	}},
	{name: "range on a miss fills the cache with the whole body", origin: func(n int64, w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		if r.Header.Get("Range") != "" {
			w.WriteHeader(500) // the cache must not forward Range
			return
		}
		w.Write([]byte("0123456789"))
	}, steps: []step{
		{hdr: []string{"Range: bytes=0-3"}, origin: 1, status: 206, body: "0123"},
		{hdr: []string{"Range: bytes=5-"}, origin: 0, status: 206, body: "56789"},
		{origin: 0, body: "0123456789"},
	}},
	{name: "a 206 from the origin passes through with its Content-Range and is not stored", origin: func(n int64, w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Content-Range", "bytes 0-3/10")
		w.WriteHeader(http.StatusPartialContent)
		w.Write([]byte("0123"))
	}, steps: []step{
		{origin: 1, status: 206, body: "0123", hdrIs: []string{"Content-Range: bytes 0-3/10"}},
		{origin: 1, status: 206, body: "0123"},
	}},
	// --- 4.4: invalidation ---
	{name: "4.4/POST invalidates the target", origin: std("Cache-Control: max-age=60"), steps: []step{
		{origin: 1}, {origin: 0}, {method: "POST", origin: 1}, {origin: 1, body: "v3"},
	}},
	{name: "4.4/DELETE invalidates the target", origin: std("Cache-Control: max-age=60"), steps: []step{
		{origin: 1}, {method: "DELETE", origin: 1}, {origin: 1, body: "v3"},
	}},
	{name: "4.4/error response does not invalidate", origin: func(n int64, w http.ResponseWriter, r *http.Request) {
		if r.Method == "POST" {
			w.WriteHeader(500)
			return
		}
		w.Header().Set("Cache-Control", "max-age=60")
		fmt.Fprintf(w, "v%d", n)
	}, steps: []step{
		{origin: 1}, {method: "POST", origin: 1, status: 500}, {origin: 0, body: "v1"},
	}},
	{name: "4.4/Location and Content-Location on the same origin invalidated", origin: func(n int64, w http.ResponseWriter, r *http.Request) {
		if r.Method == "POST" {
			w.Header().Set("Location", "/a")
			w.Header().Set("Content-Location", "http://"+r.Host+"/b")
			w.WriteHeader(201)
			return
		}
		w.Header().Set("Cache-Control", "max-age=60")
		fmt.Fprintf(w, "v%d", n)
	}, steps: []step{
		{path: "/a", origin: 1}, {path: "/b", origin: 1}, {path: "/c", origin: 1},
		{method: "POST", path: "/x", origin: 1, status: 201},
		{path: "/a", origin: 1}, {path: "/b", origin: 1}, {path: "/c", origin: 0},
	}},
	{name: "4.4/Location on another origin not invalidated", origin: func(n int64, w http.ResponseWriter, r *http.Request) {
		if r.Method == "PUT" {
			w.Header().Set("Location", "http://elsewhere.example/a")
			w.WriteHeader(200)
			return
		}
		w.Header().Set("Cache-Control", "max-age=60")
		fmt.Fprintf(w, "v%d", n)
	}, steps: []step{
		{path: "/a", origin: 1}, {method: "PUT", path: "/x", origin: 1}, {path: "/a", origin: 0},
	}},
	// --- 5.2.1: request directives ---
	{name: "5.2.1.1/request max-age", origin: std("Cache-Control: max-age=60"), steps: []step{
		{origin: 1}, {advance: 10 * time.Second, hdr: []string{"Cache-Control: max-age=5"}, origin: 1, cs: "fwd=request"},
		{advance: 3 * time.Second, hdr: []string{"Cache-Control: max-age=5"}, origin: 0},
	}},
	{name: "5.2.1.3/request min-fresh", origin: std("Cache-Control: max-age=60"), steps: []step{
		{origin: 1}, {advance: 20 * time.Second, hdr: []string{"Cache-Control: min-fresh=50"}, origin: 1},
		{advance: 5 * time.Second, hdr: []string{"Cache-Control: min-fresh=30"}, origin: 0},
	}},
	{name: "5.2.1.2/request max-stale serves stale", origin: std("Cache-Control: max-age=10"), steps: []step{
		{origin: 1}, {advance: 20 * time.Second, hdr: []string{"Cache-Control: max-stale=15"}, origin: 0, body: "v1", cs: "ttl=-10"},
		{hdr: []string{"Cache-Control: max-stale=5"}, origin: 1, body: "v2"},
	}},
	{name: "5.2.1.2/max-stale never overrides must-revalidate", origin: std("Cache-Control: max-age=10, must-revalidate"), steps: []step{
		{origin: 1}, {advance: 20 * time.Second, hdr: []string{"Cache-Control: max-stale"}, origin: 1},
	}},
	{name: "5.2.1.4/request no-cache revalidates", origin: validating(nil, "Cache-Control: max-age=60", `ETag: "e1"`), steps: []step{
		{origin: 1}, {hdr: []string{"Cache-Control: no-cache"}, origin: 1, body: "v1", cs: "fwd=request; fwd-status=304"}, {origin: 0},
	}},
	{name: "5.2.1.7/only-if-cached", origin: std("Cache-Control: max-age=60"), steps: []step{
		{hdr: []string{"Cache-Control: only-if-cached"}, origin: 0, status: 504},
		{origin: 1}, {hdr: []string{"Cache-Control: only-if-cached"}, origin: 0, status: 200, body: "v1"},
	}},
	// --- 5.2.2: response directives ---
	{name: "5.2.2.2/must-revalidate: stale never served on error", opts: func(o *Options) { o.StaleIfError = time.Hour }, origin: func(n int64, w http.ResponseWriter, r *http.Request) {
		if n > 1 {
			w.WriteHeader(503)
			return
		}
		w.Header().Set("Cache-Control", "max-age=10, must-revalidate")
		w.Header().Set("ETag", `"e1"`)
		fmt.Fprintf(w, "v%d", n)
	}, steps: []step{
		{origin: 1}, {advance: 20 * time.Second, origin: 1, status: 503},
	}},
	{name: "5.2.2.8/proxy-revalidate: stale never served on error", opts: func(o *Options) { o.StaleIfError = time.Hour }, origin: func(n int64, w http.ResponseWriter, r *http.Request) {
		if n > 1 {
			w.WriteHeader(503)
			return
		}
		w.Header().Set("Cache-Control", "max-age=10, proxy-revalidate")
		w.Header().Set("ETag", `"e1"`)
		fmt.Fprintf(w, "v%d", n)
	}, steps: []step{
		{origin: 1}, {advance: 20 * time.Second, origin: 1, status: 503},
	}},
	{name: "5.2.2.10/s-maxage: stale never served on error", opts: func(o *Options) { o.StaleIfError = time.Hour; o.StaleWhileRevalidate = time.Hour }, origin: func(n int64, w http.ResponseWriter, r *http.Request) {
		if n > 1 {
			w.WriteHeader(503)
			return
		}
		w.Header().Set("Cache-Control", "s-maxage=10")
		fmt.Fprintf(w, "v%d", n)
	}, steps: []step{
		{origin: 1}, {advance: 20 * time.Second, origin: 1, status: 503},
	}},
	{name: "5.2.2.4/no-cache stored but always revalidated", origin: validating(nil, "Cache-Control: no-cache", `ETag: "e1"`), steps: []step{
		{origin: 1}, {origin: 1, body: "v1", cs: "fwd-status=304"}, {origin: 1, body: "v1"},
	}},
	{name: "5.2.2.4/no-cache=field stored without the field", origin: std(`Cache-Control: max-age=60, no-cache="X-Foo"`, "X-Foo: f"), steps: []step{
		{origin: 1, hasHdr: []string{"X-Foo"}}, {origin: 0, noHdr: []string{"X-Foo"}},
	}},
	{name: "RFC 8246/immutable: request no-cache served from cache while fresh", origin: std("Cache-Control: max-age=60, immutable"), steps: []step{
		{origin: 1}, {hdr: []string{"Cache-Control: no-cache"}, origin: 0, body: "v1"}, {hdr: []string{"Cache-Control: max-age=0"}, origin: 0},
		{advance: 61 * time.Second, hdr: []string{"Cache-Control: no-cache"}, origin: 1},
	}},
	{name: "RFC 5861/stale-while-revalidate serves stale and refreshes once", origin: std("Cache-Control: max-age=10, stale-while-revalidate=30"), steps: []step{
		{origin: 1},
		{advance: 15 * time.Second, origin: 0, body: "v1", cs: "detail=stale-while-revalidate", bgHits: 2},
		{origin: 0, body: "v2", cs: "hit"},
		{advance: 50 * time.Second, origin: 1, body: "v3"}, // past the window: waits
	}},
	{name: "RFC 5861/stale-while-revalidate default from config", opts: func(o *Options) { o.StaleWhileRevalidate = time.Minute }, origin: std("Cache-Control: max-age=10"), steps: []step{
		{origin: 1}, {advance: 15 * time.Second, origin: 0, body: "v1", bgHits: 2}, {origin: 0, body: "v2"},
	}},
	{name: "RFC 5861/stale-if-error on 5xx", origin: func(n int64, w http.ResponseWriter, r *http.Request) {
		if n > 1 {
			w.WriteHeader(503)
			return
		}
		w.Header().Set("Cache-Control", "max-age=10, stale-if-error=60")
		fmt.Fprintf(w, "v%d", n)
	}, steps: []step{
		{origin: 1}, {advance: 20 * time.Second, origin: 1, body: "v1", cs: "detail=stale-if-error"},
		{advance: 60 * time.Second, origin: 1, status: 503},
	}},
	{name: "RFC 5861/stale-if-error not used without allowance", origin: func(n int64, w http.ResponseWriter, r *http.Request) {
		if n > 1 {
			w.WriteHeader(503)
			return
		}
		w.Header().Set("Cache-Control", "max-age=10")
		fmt.Fprintf(w, "v%d", n)
	}, steps: []step{
		{origin: 1}, {advance: 20 * time.Second, origin: 1, status: 503},
	}},
	// --- HEAD ---
	{name: "HEAD served from a stored GET", origin: std("Cache-Control: max-age=60"), steps: []step{
		{origin: 1}, {method: "HEAD", origin: 0, body: "-", hasHdr: []string{"Content-Length"}},
	}},
	{name: "HEAD miss not stored", origin: std("Cache-Control: max-age=60"), steps: []step{
		{method: "HEAD", origin: 1}, {origin: 1, body: "v2"}, {method: "HEAD", origin: 0},
	}},
	// --- keys ---
	{name: "key/query distinguishes", origin: std("Cache-Control: max-age=60"), steps: []step{
		{path: "/r?a=1", origin: 1}, {path: "/r?a=2", origin: 1}, {path: "/r?a=1", origin: 0, body: "v1"},
	}},
	{name: "key/sort query", opts: func(o *Options) { o.SortQuery = true }, origin: std("Cache-Control: max-age=60"), steps: []step{
		{path: "/r?b=1&a=2", origin: 1}, {path: "/r?a=2&b=1", origin: 0, body: "v1"},
	}},
	{name: "key/ignored query parameters", opts: func(o *Options) { o.IgnoreQuery = []string{"utm_source"} }, origin: std("Cache-Control: max-age=60"), steps: []step{
		{path: "/r?a=1&utm_source=x", origin: 1}, {path: "/r?a=1", origin: 0, body: "v1"}, {path: "/r?utm_source=y&a=1", origin: 0},
	}},
	{name: "key/path compared exactly", origin: std("Cache-Control: max-age=60"), steps: []step{
		{path: "/r/a%2Fb", origin: 1}, {path: "/r/a/b", origin: 1}, {path: "/R/a/b", origin: 1},
	}},
}

func TestRFC9111(t *testing.T) {
	for _, tc := range rfcCases {
		t.Run(tc.name, func(t *testing.T) {
			var o Options
			if tc.opts != nil {
				tc.opts(&o)
			}
			var e *env
			e = newEnv(t, o, func(w http.ResponseWriter, r *http.Request) {
				n := e.hits()
				if tc.origin == nil { // Expires relative to the test clock
					w.Header().Set("Expires", httpDate(e.clock.Now().Add(60*time.Second)))
					fmt.Fprintf(w, "v%d", n)
					return
				}
				tc.origin(n, w, r)
			})
			e.route(tc.route)
			for i, s := range tc.steps {
				e.clock.Advance(s.advance)
				method, path := s.method, s.path
				if method == "" {
					method = http.MethodGet
				}
				if path == "" {
					path = "/r"
				}
				before := e.hits()
				res := e.do(method, path, s.hdr...)
				where := fmt.Sprintf("step %d (%s %s %v)", i, method, path, s.hdr)
				if got := e.hits() - before; got != s.origin && s.bgHits == 0 {
					t.Errorf("%s: origin hits %d, want %d (Cache-Status %q)", where, got, s.origin, res.header.Get("Cache-Status"))
				}
				want := s.status
				if want == 0 {
					want = 200
				}
				if res.status != want {
					t.Errorf("%s: status %d, want %d", where, res.status, want)
				}
				switch {
				case s.body == "-" && res.body != "":
					t.Errorf("%s: body %q, want none", where, res.body)
				case s.body != "" && s.body != "-" && res.body != s.body:
					t.Errorf("%s: body %q, want %q (Cache-Status %q)", where, res.body, s.body, res.header.Get("Cache-Status"))
				}
				if cs := strings.Join(res.header.Values("Cache-Status"), ", "); s.cs != "" && !strings.Contains(cs, s.cs) {
					t.Errorf("%s: Cache-Status %q, want it to contain %q", where, cs, s.cs)
				}
				if s.age != "" && res.header.Get("Age") != s.age {
					t.Errorf("%s: Age %q, want %q", where, res.header.Get("Age"), s.age)
				}
				for _, h := range s.hasHdr {
					if res.header.Get(h) == "" {
						t.Errorf("%s: header %s missing", where, h)
					}
				}
				for _, h := range s.hdrIs {
					k, v, _ := strings.Cut(h, ": ")
					if got := res.header.Get(k); got != v {
						t.Errorf("%s: %s = %q, want %q", where, k, got, v)
					}
				}
				for _, h := range s.noHdr {
					if v := res.header.Get(h); v != "" {
						t.Errorf("%s: header %s = %q, want none", where, h, v)
					}
				}
				if s.bgHits > 0 {
					waitFor(t, "background refresh", func() bool { return e.hits() >= s.bgHits })
					// and for it to be stored: the next step expects a hit
					waitFor(t, "refreshed entry", func() bool {
						o, _ := e.cache.lookup(e.cache.makeKey("http", strings.TrimPrefix(e.front.URL, "http://"), "/r", ""), http.Header{})
						return o != nil && o.m.Load().age(e.clock.Now()) < o.m.Load().lifetime
					})
				}
			}
		})
	}
}

func TestAgeHeaderIsWholeSeconds(t *testing.T) {
	e := newEnv(t, Options{}, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=600")
		w.Write([]byte("x"))
	})
	e.get("/r")
	for _, d := range []time.Duration{1500 * time.Millisecond, 100 * time.Second} {
		e.clock.Advance(d)
		res := e.get("/r")
		if _, err := strconv.Atoi(res.header.Get("Age")); err != nil {
			t.Fatalf("Age %q is not an integer", res.header.Get("Age"))
		}
	}
	if got := e.get("/r").header.Get("Age"); got != "101" {
		t.Fatalf("Age = %s, want 101", got)
	}
}

// TestInterimNotStored: a 103 from the origin reaches the client whose
// request fetched the response, never a client served from the cache,
// and its fields are not stored.
func TestInterimNotStored(t *testing.T) {
	e := newEnv(t, Options{}, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</app.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		w.Header().Set("Cache-Control", "max-age=60")
		w.Write([]byte("body"))
	})
	get := func() (interim []string, res *http.Response) {
		trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
			interim = append(interim, fmt.Sprintf("%d %s", code, h.Get("Link")))
			return nil
		}}
		req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "GET", e.front.URL+"/r", nil)
		res, err := e.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return interim, res
	}
	interim, res := get()
	if len(interim) != 1 || interim[0] != "103 </app.css>; rel=preload" {
		t.Fatalf("first client: interim responses %q, want the 103", interim)
	}
	if res.Header.Get("Link") != "" {
		t.Fatalf("the 103's Link leaked into the final response")
	}
	interim, res = get()
	if !strings.Contains(res.Header.Get("Cache-Status"), "hit") {
		t.Fatalf("second request not a hit: %q", res.Header.Get("Cache-Status"))
	}
	if len(interim) != 0 || res.Header.Get("Link") != "" {
		t.Fatalf("a hit replayed the interim response: %q, Link %q", interim, res.Header.Get("Link"))
	}
}

// TestStoredHeader: RFC 9111 3.1: every end-to-end field is kept as
// received; hop-by-hop ones (and those Connection names), Age, the
// request ID and edged's own targeted field are not.
func TestStoredHeader(t *testing.T) {
	c, err := Open(Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	h := http.Header{
		"Connection":          {"X-Hop, close"},
		"X-Hop":               {"1"},
		"Keep-Alive":          {"timeout=5"},
		"Transfer-Encoding":   {"chunked"},
		"Te":                  {"trailers"},
		"Trailer":             {"X-Sum"},
		"Upgrade":             {"h2c"},
		"Proxy-Connection":    {"keep-alive"},
		"Age":                 {"5"},
		"X-Request-Id":        {"abc"},
		"Edged-Cache-Control": {"max-age=5"},
		"Set-Cookie":          {"a=1", "b=2"},
		"X-Multi":             {"a", "b"},
		"Content-Type":        {"text/plain"},
		"Cdn-Cache-Control":   {"max-age=5"},
		"Date":                {"Sun, 06 Nov 1994 08:49:37 GMT"},
	}
	cc := parseRespCC(h)
	out, own := c.storedHeader(h, &cc, time.Now(), &HandlerOptions{RequestIDHeader: "X-Request-Id", SetCookie: SetCookieStore})
	for _, k := range []string{"Connection", "X-Hop", "Keep-Alive", "Transfer-Encoding", "Te", "Trailer", "Upgrade", "Proxy-Connection", "Age", "X-Request-Id", "Edged-Cache-Control"} {
		if _, ok := out[k]; ok {
			t.Errorf("%s stored", k)
		}
	}
	for k, want := range map[string]int{"Set-Cookie": 2, "X-Multi": 2, "Content-Type": 1, "Cdn-Cache-Control": 1, "Date": 1} {
		if len(out[k]) != want {
			t.Errorf("%s stored as %q, want %d values", k, out[k], want)
		}
	}
	if len(own) != 1 || own[0] != "max-age=5" {
		t.Errorf("own targeted field %q", own)
	}
	if len(h["X-Hop"]) != 1 {
		t.Error("storedHeader changed the response's own header")
	}
}
