package cache

import (
	"io"
	"net/http"
	"net/http/httptest"

	"github.com/edgeapp/edgeapp/edged/engine/enginetest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// clock is the injectable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Now().Truncate(time.Second)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// origin is a real HTTP server on 127.0.0.1 that counts its hits.
type origin struct {
	srv   *httptest.Server
	hits  atomic.Int64
	mu    sync.Mutex
	h     http.HandlerFunc
	clock *clock
}

func newOrigin(t *testing.T, clk *clock, h http.HandlerFunc) *origin {
	o := &origin{h: h, clock: clk}
	o.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.hits.Add(1)
		// The origin's Date follows the test clock unless the case sets one.
		w.Header().Set("Date", clk.Now().UTC().Format(http.TimeFormat))
		o.mu.Lock()
		h := o.h
		o.mu.Unlock()
		h(w, r)
	}))
	t.Cleanup(o.srv.Close)
	return o
}

func (o *origin) set(h http.HandlerFunc) {
	o.mu.Lock()
	o.h = h
	o.mu.Unlock()
}

// env is a cache in front of a reverse proxy to an origin, itself served
// by a real HTTP server on 127.0.0.1.
type env struct {
	t       *testing.T
	clock   *clock
	origin  *origin
	cache   *Cache
	front   *httptest.Server
	client  *http.Client
	proxy   *httputil.ReverseProxy
	handler atomic.Value
	ho      HandlerOptions // the route's cache settings
}

func newEnv(t *testing.T, o Options, h http.HandlerFunc) *env {
	t.Helper()
	e := &env{t: t, clock: newClock()}
	if o.Now == nil {
		o.Now = e.clock.Now
	}
	e.origin = newOrigin(t, e.clock, h)
	u, _ := url.Parse(e.origin.srv.URL)
	e.proxy = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			pr.Out.Host = pr.In.Host
		},
		FlushInterval: -1,
	}
	e.open(o)
	e.client = &http.Client{
		Transport:     &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	t.Cleanup(e.client.CloseIdleConnections)
	return e
}

// open (re)opens the cache and the front server.
func (e *env) open(o Options) {
	e.t.Helper()
	if o.Now == nil {
		o.Now = e.clock.Now
	}
	c, err := Open(o, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	e.cache = c
	e.t.Cleanup(func() { c.Close() })
	// The front server stays across reopens: its address is part of the keys.
	e.handler.Store(c.Handler(e.proxy, e.ho))
	if e.front == nil {
		e.front = enginetest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			e.handler.Load().(http.Handler).ServeHTTP(w, r)
		}))
		e.t.Cleanup(e.front.Close)
	}
}

type resp struct {
	status int
	header http.Header
	body   string
}

// do sends one request through the cache; hdr is "Name: value" lines.
func (e *env) do(method, path string, hdr ...string) resp {
	e.t.Helper()
	req, err := http.NewRequest(method, e.front.URL+path, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, h := range hdr {
		k, v, _ := strings.Cut(h, ":")
		req.Header.Add(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	res, err := e.client.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return resp{res.StatusCode, res.Header, string(b)}
}

// route changes the route's cache settings.
func (e *env) route(ho HandlerOptions) {
	e.ho = ho
	e.handler.Store(e.cache.Handler(e.proxy, ho))
}

func (e *env) get(path string, hdr ...string) resp { return e.do(http.MethodGet, path, hdr...) }

func (e *env) hits() int64 { return e.origin.hits.Load() }

// waitFor polls cond until it holds or the deadline passes (for work the
// cache does in the background, e.g. a stale-while-revalidate refresh).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func httpDate(t time.Time) string { return t.UTC().Format(http.TimeFormat) }
