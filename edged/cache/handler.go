package cache

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/edgeapp/edgeapp/edged/reqinfo"
)

// SetCookie says what a route's cache does with responses that carry
// Set-Cookie. RFC 9111 lets a cache store them, Set-Cookie included, and
// replay the cookie to every client; a session cookie replayed that way
// logs strangers in as the user it was meant for, so that is not the
// default.
type SetCookie int

const (
	// SetCookiePass (default): such a response is not stored (as nginx and
	// Varnish do), unless the origin names Set-Cookie in no-cache="..." or
	// private="..." (then it is stored without the field, as those
	// directives say).
	SetCookiePass SetCookie = iota
	// SetCookieStore: Set-Cookie does not affect storing; the field is
	// stored and sent with every hit (RFC 9111 to the letter).
	SetCookieStore
	// SetCookieStrip: stored as if it carried no Set-Cookie; the cookie
	// goes only to the client whose request fetched the response.
	SetCookieStrip
)

// SetCookieModes maps the config's names to modes.
var SetCookieModes = map[string]SetCookie{"pass": SetCookiePass, "store": SetCookieStore, "strip": SetCookieStrip}

// HandlerOptions are a route's settings for its cache.
type HandlerOptions struct {
	// RequestIDHeader is the field edged sets to each request's ID (and an
	// upstream may echo); it is never stored, so a hit carries the ID of
	// its own request. "" when edged sets none.
	RequestIDHeader string
	SetCookie       SetCookie
}

// Handler returns the route handler: it answers from the cache where RFC
// 9111 allows, and otherwise calls origin (the proxy handler) and stores
// what may be stored. Routes of a new configuration call it again on the
// same Cache.
func (c *Cache) Handler(origin http.Handler, o HandlerOptions) http.Handler {
	if o.RequestIDHeader != "" {
		o.RequestIDHeader = http.CanonicalHeaderKey(o.RequestIDHeader)
	}
	return &handler{c: c, origin: origin, ho: o}
}

var keyPool = sync.Pool{New: func() any { b := make([]byte, 0, 256); return &b }}

type handler struct {
	c      *Cache
	origin http.Handler
	ho     HandlerOptions
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		if len(r.Header["Upgrade"]) > 0 {
			h.bypass(w, r)
			return
		}
	case http.MethodOptions, http.MethodTrace, http.MethodConnect:
		h.bypass(w, r)
		return
	default:
		h.unsafe(w, r)
		return
	}
	c := h.c
	kb := keyPool.Get().(*[]byte)
	kbuf := c.appendRequestKey((*kb)[:0], r)
	defer func() {
		if cap(kbuf) <= 4096 {
			*kb = kbuf
			keyPool.Put(kb)
		}
	}()
	rcc := reqCC{maxAge: -1, maxStale: -1, minFresh: -1}
	if len(r.Header["Cache-Control"]) > 0 {
		rcc = parseReqCC(r.Header)
	}
	now := c.o.Now()
	o, hadVariants := c.lookupBytes(kbuf, r.Header)
	fwd := "uri-miss"
	if hadVariants {
		fwd = "vary-miss"
	}
	if o != nil {
		m := o.m.Load()
		age := m.age(now)
		switch {
		case m.lifetime > age:
			if !m.noCache && reqAccepts(&rcc, m, age) {
				setStatus(r, "HIT")
				if h.serveObject(w, r, o, m, age, "", true) {
					return
				}
				break // the body is gone (evicted or corrupt): fetch it
			}
			fwd = "request"
			if m.noCache {
				fwd = "stale"
			}
		default:
			stale := age - m.lifetime
			if !m.mustReval && !m.noCache && (rcc.maxStaleAny || (rcc.maxStale >= 0 && stale <= time.Duration(rcc.maxStale)*time.Second)) {
				setStatus(r, "STALE")
				if h.serveObject(w, r, o, m, age, "", true) {
					c.met.stale.Inc()
					return
				}
				break
			}
			if !rcc.noCache && m.staleOK(stale, m.swr) {
				setStatus(r, "STALE")
				if h.serveObject(w, r, o, m, age, "detail=stale-while-revalidate", true) {
					c.met.stale.Inc()
					h.revalidateInBackground(r, string(kbuf), &rcc, o)
					return
				}
				break
			}
			fwd = "stale"
		}
		if o.gone.Load() || (o.mem.Load() == nil && o.disk.Load() == nil) {
			o = nil
		}
	}
	if rcc.onlyIfCached {
		w.Header().Set("Cache-Status", "edged; fwd=miss; detail=only-if-cached")
		http.Error(w, "not in cache", http.StatusGatewayTimeout)
		return
	}
	c.met.misses.Inc()
	setStatus(r, "MISS")
	if r.Method == http.MethodHead {
		// A HEAD miss is forwarded as it is and not stored.
		w.Header().Set("Cache-Status", "edged; fwd="+fwd)
		h.origin.ServeHTTP(w, r)
		return
	}
	h.fetch(w, r, string(kbuf), &rcc, o, fwd)
}

// reqAccepts applies the request's max-age and min-fresh (RFC 9111
// 5.2.1) to a fresh response. no-cache and max-age=0 on an immutable
// response do not force revalidation: it does not change while fresh.
func reqAccepts(rcc *reqCC, m *meta, age time.Duration) bool {
	if !rcc.present {
		return true
	}
	if m.immutable && (rcc.noCache || rcc.maxAge >= 0) {
		return rcc.minFresh < 0 || m.lifetime-age >= time.Duration(rcc.minFresh)*time.Second
	}
	if rcc.noCache {
		return false
	}
	if rcc.maxAge >= 0 && int64(age/time.Second) > rcc.maxAge {
		return false
	}
	if rcc.minFresh >= 0 && m.lifetime-age < time.Duration(rcc.minFresh)*time.Second {
		return false
	}
	return true
}

// coalesceKey is the key fetches for one response share: the URL and,
// when its stored variants say which fields it varies on, their values.
func (c *Cache) coalesceKey(key string, n *node, r *http.Request) string {
	if n == nil || len(n.variants) == 0 {
		return key
	}
	names := n.variants[len(n.variants)-1].m.Load().vary
	if len(names) == 0 {
		return key
	}
	var b strings.Builder
	b.WriteString(key)
	for _, name := range names {
		b.WriteByte(0)
		b.WriteString(c.varyValue(r.Header, name))
	}
	return b.String()
}

// fetch goes to the origin for r: it joins a fetch in flight for the same
// key or starts one.
func (h *handler) fetch(w http.ResponseWriter, r *http.Request, key string, rcc *reqCC, stale *object, fwd string) {
	c := h.c
	sh := c.shard(key)
	now := c.o.Now()
	sh.mu.Lock()
	n := sh.nodes[key]
	if n != nil && len(n.variants) == 0 && !n.passUntil.IsZero() && !now.Before(n.passUntil) {
		delete(sh.nodes, key)
		n = nil
	}
	if n != nil && now.Before(n.passUntil) {
		tooBig := n.tooBig
		sh.mu.Unlock()
		if tooBig {
			// A body without Content-Length outgrew MaxObjectSize
			// recently: no buffering, no store.
			w.Header().Set("Cache-Status", "edged; fwd="+fwd+"; detail=too-large")
			h.origin.ServeHTTP(w, r)
			return
		}
		h.solo(w, r, key, rcc, stale, fwd)
		return
	}
	ck := c.coalesceKey(key, n, r)
	if f := sh.fills[ck]; f != nil && f.body.acquire() {
		f.mu.Lock()
		f.followers++
		f.mu.Unlock()
		sh.mu.Unlock()
		h.follow(w, r, key, rcc, stale, fwd, f)
		return
	}
	f := c.newFill(key, ck, r, rcc, stale, fwd, &h.ho)
	f.leaderW = w
	f.body.refs++ // the leader reads it too
	sh.fills[ck] = f
	sh.mu.Unlock()
	f.start(h.origin)
	h.lead(w, r, f)
}

// solo fetches without coalescing (after a lock timeout, for a Vary
// mismatch, or for a key that recently answered uncacheable); the response
// is still stored if it may be.
func (h *handler) solo(w http.ResponseWriter, r *http.Request, key string, rcc *reqCC, stale *object, fwd string) {
	f := h.c.newFill(key, "", r, rcc, stale, fwd, &h.ho)
	f.leaderW = w
	f.body.refs++
	f.start(h.origin)
	h.lead(w, r, f)
}

func (h *handler) lead(w http.ResponseWriter, r *http.Request, f *fill) {
	select {
	case <-f.ready:
	case <-r.Context().Done():
		if f.detachLeader() {
			f.body.release() // the fetch goes on for the others and for the store
			return
		}
		<-f.ready
	}
	h.deliver(w, r, f, true)
}

func (h *handler) follow(w http.ResponseWriter, r *http.Request, key string, rcc *reqCC, stale *object, fwd string, f *fill) {
	h.c.met.coalesced.Inc()
	t := time.NewTimer(h.c.o.LockTimeout)
	defer t.Stop()
	select {
	case <-f.ready:
		h.deliver(w, r, f, false)
	case <-t.C:
		f.body.release()
		h.solo(w, r, key, rcc, stale, fwd)
	case <-r.Context().Done():
		f.body.release()
	}
}

// deliver answers r from a resolved fill.
func (h *handler) deliver(w http.ResponseWriter, r *http.Request, f *fill, leader bool) {
	upstreamInfo(r, f)
	switch f.kind {
	case kindStream:
		defer f.body.release()
		if !leader && !sameVariant(f, r) {
			h.solo(w, r, f.key, &reqCC{maxAge: -1, maxStale: -1, minFresh: -1}, nil, f.fwd)
			return
		}
		h.stream(w, r, f, leader)
	case kindPass:
		f.body.release()
		if leader {
			f.mu.Lock()
			passing := f.passing
			f.mu.Unlock()
			if passing {
				// The fetch writes this response; a client that leaves
				// ends it, since nobody else wants it.
				stop := context.AfterFunc(r.Context(), f.cancel)
				<-f.done
				stop()
			}
			return
		}
		w.Header().Set("Cache-Status", "edged; fwd="+f.fwd+"; detail=uncacheable")
		h.origin.ServeHTTP(w, r)
	case kindObject:
		f.body.release()
		m := f.objM
		if h.serveObject(w, r, f.obj, m, m.age(h.c.o.Now()), f.objCS, false) {
			if f.objStale {
				h.c.met.stale.Inc()
			}
			return
		}
		h.solo(w, r, f.key, &reqCC{maxAge: -1, maxStale: -1, minFresh: -1}, nil, f.fwd)
	default: // kindFail
		f.body.release()
		if !leader {
			w.Header().Set("Cache-Status", "edged; fwd="+f.fwd)
			h.origin.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Cache-Status", "edged; fwd="+f.fwd+"; detail=origin-failed")
		http.Error(w, "origin failed", http.StatusBadGateway)
	}
}

// sameVariant: does r select the response the fill is storing?
func sameVariant(f *fill, r *http.Request) bool {
	for i, name := range f.m.vary {
		if f.c.varyValue(r.Header, name) != f.vals[i] {
			return false
		}
	}
	return true
}

// revalidateInBackground starts one refresh of a stale response served
// under stale-while-revalidate, unless one is already running.
func (h *handler) revalidateInBackground(r *http.Request, key string, rcc *reqCC, o *object) {
	c := h.c
	sh := c.shard(key)
	sh.mu.Lock()
	ck := c.coalesceKey(key, sh.nodes[key], r)
	if sh.fills[ck] != nil {
		sh.mu.Unlock()
		return
	}
	f := c.newFill(key, ck, r, rcc, o, "stale", &h.ho)
	sh.fills[ck] = f
	sh.mu.Unlock()
	f.start(h.origin)
}

// bypass passes a request the cache has no business with (OPTIONS,
// upgrades) to the origin.
func (h *handler) bypass(w http.ResponseWriter, r *http.Request) {
	h.c.met.bypass.Inc()
	setStatus(r, "BYPASS")
	h.origin.ServeHTTP(w, r)
}

// unsafe forwards an unsafe method and, if the origin answered without
// error, invalidates the target URI and the same-origin Location and
// Content-Location (RFC 9111 4.4).
func (h *handler) unsafe(w http.ResponseWriter, r *http.Request) {
	h.c.met.bypass.Inc()
	setStatus(r, "BYPASS")
	sw := &statusWriter{ResponseWriter: w}
	h.origin.ServeHTTP(sw, r)
	if sw.status == 0 {
		sw.status = http.StatusOK
	}
	if sw.status < 200 || sw.status >= 400 {
		return
	}
	c := h.c
	c.removeKey(c.requestKey(r))
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	base := &url.URL{Scheme: scheme, Host: r.Host, Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: r.URL.RawQuery}
	for _, loc := range []string{sw.location, sw.contentLocation} {
		if loc == "" {
			continue
		}
		u, err := base.Parse(loc)
		if err != nil || u.Scheme != scheme || normHost(scheme, u.Host) != normHost(scheme, r.Host) {
			continue
		}
		c.removeKey(c.urlKey(u))
	}
}

// statusWriter notes the status and location fields of a response.
type statusWriter struct {
	http.ResponseWriter
	status                    int
	location, contentLocation string
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 && code >= 200 {
		s.status = code
		s.location = s.Header().Get("Location")
		s.contentLocation = s.Header().Get("Content-Location")
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(p []byte) (int, error) {
	if s.status == 0 {
		s.WriteHeader(http.StatusOK)
	}
	return s.ResponseWriter.Write(p)
}

func (s *statusWriter) Flush() { http.NewResponseController(s.ResponseWriter).Flush() }

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// setStatus records the cache's answer for the access log.
func setStatus(r *http.Request, status string) {
	if info := reqinfo.From(r.Context()); info != nil {
		info.CacheStatus = status
	}
}

// upstreamInfo copies what the fetch learnt about the upstream into r's
// record. The fetch wrote those fields before its response head, which
// happened before f.ready closed.
func upstreamInfo(r *http.Request, f *fill) {
	info := reqinfo.From(r.Context())
	if info == nil || f.info == nil {
		return
	}
	info.Upstream, info.UpstreamStatus, info.UpstreamTime = f.info.Upstream, f.info.UpstreamStatus, f.info.UpstreamTime
}
