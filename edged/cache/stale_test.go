package cache

import (
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Many requests for a stale response under stale-while-revalidate: all are
// answered at once from the cache, and the origin sees one refresh.
func TestStaleWhileRevalidateRefreshesOnce(t *testing.T) {
	release := make(chan struct{})
	var n atomic.Int64
	e := newEnv(t, Options{}, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=10, stale-while-revalidate=60")
		if n.Add(1) > 1 {
			<-release
		}
		w.Write([]byte("body"))
	})
	e.get("/w")
	e.clock.Advance(20 * time.Second)
	for i, r := range parallelGets(e, 12, "/w") { // returns while the refresh is held
		if r.body != "body" || !strings.Contains(r.header.Get("Cache-Status"), "stale-while-revalidate") {
			t.Fatalf("request %d: %q %q", i, r.body, r.header.Get("Cache-Status"))
		}
	}
	// The refresh runs in the background: on a loaded machine it may reach
	// the origin after the stale answers have all returned.
	waitFor(t, "the background refresh reaches the origin", func() bool { return e.hits() >= 2 })
	if h := e.hits(); h != 2 {
		t.Fatalf("origin hits %d, want 2 (one refresh)", h)
	}
	close(release)
	waitFor(t, "refresh stored", func() bool {
		return strings.Contains(e.get("/w").header.Get("Cache-Status"), "ttl=10")
	})
	if h := e.hits(); h != 2 {
		t.Fatalf("origin hits %d, want 2", h)
	}
}

// The origin is gone (connection refused): stale-if-error serves stale.
func TestStaleIfErrorOriginDown(t *testing.T) {
	e := newEnv(t, Options{StaleIfError: time.Hour}, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=10")
		w.Write([]byte("kept"))
	})
	e.get("/o")
	e.clock.Advance(30 * time.Second)
	e.origin.srv.Close()
	r := e.get("/o")
	if r.status != 200 || r.body != "kept" || !strings.Contains(r.header.Get("Cache-Status"), "stale-if-error") {
		t.Fatalf("origin down: %d %q %q", r.status, r.body, r.header.Get("Cache-Status"))
	}
	e.clock.Advance(2 * time.Hour)
	if r := e.get("/o"); r.status != http.StatusBadGateway {
		t.Fatalf("past stale-if-error: %d", r.status)
	}
}

// The origin hangs past a deadline (the proxy's timeout answers 504):
// stale-if-error serves stale.
func TestStaleIfErrorTimeout(t *testing.T) {
	var n atomic.Int64
	block := make(chan struct{})
	defer close(block)
	e := newEnv(t, Options{StaleIfError: time.Hour}, func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) > 1 {
			<-block
			return
		}
		w.Header().Set("Cache-Control", "max-age=10")
		w.Write([]byte("kept"))
	})
	e.proxy.Transport = &http.Transport{ResponseHeaderTimeout: 100 * time.Millisecond}
	e.proxy.ErrorHandler = func(w http.ResponseWriter, r *http.Request, err error) { w.WriteHeader(http.StatusGatewayTimeout) }
	e.get("/o")
	e.clock.Advance(30 * time.Second)
	if r := e.get("/o"); r.body != "kept" || !strings.Contains(r.header.Get("Cache-Status"), "fwd-status=504") {
		t.Fatalf("origin timeout: %d %q %q", r.status, r.body, r.header.Get("Cache-Status"))
	}
}

// A purge while a response is being fetched: the waiting clients get it,
// but it is not stored.
func TestPurgeDuringFill(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	e := newEnv(t, Options{}, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		once.Do(func() { <-release })
		w.Write([]byte("x"))
	})
	done := make(chan []resp)
	go func() { done <- parallelGets(e, 1, "/p") }()
	waitFor(t, "the fetch", func() bool { return e.hits() == 1 })
	e.cache.PurgeAll()
	close(release)
	if r := (<-done)[0]; r.body != "x" {
		t.Fatalf("got %q", r.body)
	}
	e.get("/p")
	if e.hits() != 2 {
		t.Fatalf("origin hits %d: a response fetched before the purge was stored", e.hits())
	}
}

// Coalesced requests that turn out to want another variant fetch their own.
func TestCoalescingRespectsVary(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	e := newEnv(t, Options{}, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Vary", "Accept-Language")
		once.Do(func() { <-release })
		w.Write([]byte("lang=" + r.Header.Get("Accept-Language")))
	})
	get := func(lang string, out *resp, wg *sync.WaitGroup) {
		defer wg.Done()
		req, _ := http.NewRequest("GET", e.front.URL+"/v", nil)
		req.Header.Set("Accept-Language", lang)
		res, err := e.client.Do(req)
		if err != nil {
			t.Error(err)
			return
		}
		defer res.Body.Close()
		body, err := io.ReadAll(res.Body)
		if err != nil {
			t.Error(err)
		}
		*out = resp{res.StatusCode, res.Header, string(body)}
	}
	var wg sync.WaitGroup
	var a, b, c resp
	wg.Add(1)
	go get("en", &a, &wg)
	waitFor(t, "the first fetch", func() bool { return e.hits() == 1 })
	wg.Add(2)
	go get("fr", &b, &wg)
	go get("en", &c, &wg)
	waitFor(t, "waiters", func() bool { return e.followers("/v") == 2 })
	close(release)
	wg.Wait()
	if a.body != "lang=en" || b.body != "lang=fr" || c.body != "lang=en" {
		t.Fatalf("bodies %q %q %q", a.body, b.body, c.body)
	}
	if e.hits() != 2 {
		t.Fatalf("origin hits %d, want 2 (en shared, fr its own)", e.hits())
	}
}
