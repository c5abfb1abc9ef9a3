package cache

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// followers returns how many requests wait on the fill for the key of path.
func (e *env) followers(path string) int {
	key := e.cache.makeKey("http", strings.TrimPrefix(e.front.URL, "http://"), path, "")
	sh := e.cache.shard(key)
	sh.mu.RLock()
	f := sh.fills[key]
	sh.mu.RUnlock()
	if f == nil {
		return -1
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.followers
}

func parallelGets(e *env, n int, path string) []resp {
	out := make([]resp, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest("GET", e.front.URL+path, nil)
			res, err := e.client.Do(req)
			if err != nil {
				out[i] = resp{status: -1, body: err.Error()}
				return
			}
			b, err := io.ReadAll(res.Body)
			res.Body.Close()
			if err != nil {
				out[i] = resp{status: -2, body: err.Error()}
				return
			}
			out[i] = resp{res.StatusCode, res.Header, string(b)}
		}()
	}
	wg.Wait()
	return out
}

func TestCoalescingOneOriginRequest(t *testing.T) {
	const n = 24
	body := strings.Repeat("abcdefgh", 40000) // 320 KB: streamed in pieces
	release := make(chan struct{})
	e := newEnv(t, Options{}, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Write([]byte(body[:1000]))
		w.(http.Flusher).Flush()
		<-release
		w.Write([]byte(body[1000:]))
	})
	done := make(chan []resp)
	go func() { done <- parallelGets(e, n, "/c") }()
	waitFor(t, "all requests to wait on one fetch", func() bool { return e.followers("/c") == n-1 })
	close(release)
	res := <-done
	for i, r := range res {
		if r.status != 200 || r.body != body {
			t.Fatalf("request %d: status %d, %d bytes (%.40q)", i, r.status, len(r.body), r.body)
		}
	}
	if h := e.hits(); h != 1 {
		t.Fatalf("origin hits %d, want 1", h)
	}
	collapsed := 0
	for _, r := range res {
		if strings.Contains(r.header.Get("Cache-Status"), "collapsed") {
			collapsed++
		}
	}
	if collapsed != n-1 {
		t.Fatalf("%d responses say collapsed, want %d", collapsed, n-1)
	}
	if r := e.get("/c"); r.body != body || e.hits() != 1 {
		t.Fatalf("after the fill: origin hits %d", e.hits())
	}
}

// Waiters read the body as it arrives, before the origin has finished.
func TestCoalescedWaitersStreamWhileArriving(t *testing.T) {
	first := bytes.Repeat([]byte("x"), 100<<10)
	release := make(chan struct{})
	e := newEnv(t, Options{MemoryObjectMax: 64 << 10, DiskDir: t.TempDir()}, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Write(first)
		w.(http.Flusher).Flush()
		<-release
		w.Write([]byte("end"))
	})
	type got struct {
		prefix []byte
		rest   []byte
		err    error
	}
	const n = 4
	results := make(chan got, n)
	for range n {
		go func() {
			res, err := e.client.Get(e.front.URL + "/s")
			if err != nil {
				results <- got{err: err}
				return
			}
			defer res.Body.Close()
			p := make([]byte, len(first))
			if _, err := io.ReadFull(res.Body, p); err != nil {
				results <- got{err: err}
				return
			}
			results <- got{prefix: p} // before release
			rest, err := io.ReadAll(res.Body)
			results <- got{rest: rest, err: err}
		}()
	}
	for range n {
		if g := <-results; g.err != nil || !bytes.Equal(g.prefix, first) {
			t.Fatalf("prefix before the origin finished: err %v", g.err)
		}
	}
	close(release)
	for range n {
		if g := <-results; g.err != nil || string(g.rest) != "end" {
			t.Fatalf("rest: %q, %v", g.rest, g.err)
		}
	}
	if e.hits() != 1 {
		t.Fatalf("origin hits %d, want 1", e.hits())
	}
}

func TestCoalescingUncacheableReleasesWaiters(t *testing.T) {
	const n = 8
	release := make(chan struct{})
	var once sync.Once
	e := newEnv(t, Options{}, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "private")
		once.Do(func() { <-release })
		w.Write([]byte("mine"))
	})
	done := make(chan []resp)
	go func() { done <- parallelGets(e, n, "/p") }()
	waitFor(t, "waiters", func() bool { return e.followers("/p") == n-1 })
	close(release)
	for i, r := range <-done {
		if r.status != 200 || r.body != "mine" {
			t.Fatalf("request %d: %d %q", i, r.status, r.body)
		}
	}
	if h := e.hits(); h != n {
		t.Fatalf("origin hits %d, want %d (each waiter fetches its own)", h, n)
	}
	// hit-for-miss: the next burst does not queue behind one fetch.
	release2 := make(chan struct{})
	e.origin.set(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "private")
		<-release2
		w.Write([]byte("mine"))
	})
	go func() { done <- parallelGets(e, 4, "/p") }()
	waitFor(t, "parallel origin requests", func() bool { return e.hits() == n+4 })
	close(release2)
	<-done
}

func TestCoalescingLockTimeout(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	e := newEnv(t, Options{LockTimeout: 50 * time.Millisecond}, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		stalled := false
		once.Do(func() { stalled = true })
		if stalled {
			<-release
			w.Write([]byte("slow"))
			return
		}
		w.Write([]byte("fast"))
	})
	slow := make(chan resp)
	go func() { slow <- parallelGets(e, 1, "/t")[0] }()
	waitFor(t, "the first fetch", func() bool { return e.hits() == 1 })
	// This one waits LockTimeout, then goes to the origin itself.
	if r := e.get("/t"); r.body != "fast" {
		t.Fatalf("waiter after lock timeout got %q", r.body)
	}
	close(release)
	if r := <-slow; r.body != "slow" {
		t.Fatalf("first got %q", r.body)
	}
}

// The client that started a fetch goes away mid-body: the others still get
// the whole body and it is stored.
func TestCoalescingLeaderDisconnects(t *testing.T) {
	body := strings.Repeat("z", 200<<10)
	release := make(chan struct{})
	e := newEnv(t, Options{}, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Write([]byte(body[:10]))
		w.(http.Flusher).Flush()
		<-release
		w.Write([]byte(body[10:]))
	})
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", e.front.URL+"/d", nil)
	res, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 10)
	if _, err := io.ReadFull(res.Body, p); err != nil {
		t.Fatal(err)
	}
	done := make(chan []resp)
	go func() { done <- parallelGets(e, 3, "/d") }()
	waitFor(t, "waiters", func() bool { return e.followers("/d") == 3 })
	cancel() // the first client leaves
	res.Body.Close()
	close(release)
	for i, r := range <-done {
		if r.body != body {
			t.Fatalf("waiter %d got %d bytes", i, len(r.body))
		}
	}
	if r := e.get("/d"); r.body != body || e.hits() != 1 {
		t.Fatalf("not stored after the leader left: hits %d", e.hits())
	}
}

// The origin fails mid-body: waiters must see a broken response, not a
// short one that looks complete, and nothing is stored.
func TestOriginAbortMidBody(t *testing.T) {
	e := newEnv(t, Options{}, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Content-Length", "1000")
		w.Write([]byte("short"))
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	})
	res, err := e.client.Get(e.front.URL + "/a")
	if err == nil {
		_, err = io.ReadAll(res.Body)
		res.Body.Close()
	}
	if err == nil {
		t.Fatal("a truncated body was delivered as complete")
	}
	e.origin.set(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Write([]byte("whole"))
	})
	if r := e.get("/a"); r.body != "whole" {
		t.Fatalf("got %q", r.body)
	}
}

// A range asked for while the body is still arriving is cut from it.
func TestRangeWhileFilling(t *testing.T) {
	body := strings.Repeat("0123456789", 10000)
	release := make(chan struct{})
	e := newEnv(t, Options{}, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Content-Length", "100000")
		w.Write([]byte(body[:50000]))
		w.(http.Flusher).Flush()
		<-release
		w.Write([]byte(body[50000:]))
	})
	first := make(chan []resp)
	go func() { first <- parallelGets(e, 1, "/g") }()
	waitFor(t, "the fetch", func() bool { return e.hits() == 1 })
	ranged := make(chan resp)
	for _, rg := range []string{"bytes=10-19", "bytes=49990-50009"} {
		go func() {
			req, _ := http.NewRequest("GET", e.front.URL+"/g", nil)
			req.Header.Set("Range", rg)
			res, err := e.client.Do(req)
			if err != nil {
				ranged <- resp{status: -1}
				return
			}
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			ranged <- resp{res.StatusCode, res.Header, string(b)}
		}()
	}
	r1 := <-ranged // bytes 10-19 are there already: no need to wait for the rest
	if r1.status != 206 || r1.body != "0123456789" {
		t.Fatalf("range within the arrived part: %d %q", r1.status, r1.body)
	}
	close(release)
	r2 := <-ranged
	if r2.status != 206 || r2.body != body[49990:50010] || r2.header.Get("Content-Range") != "bytes 49990-50009/100000" {
		t.Fatalf("range across the arrival point: %d %q %q", r2.status, r2.body, r2.header.Get("Content-Range"))
	}
	if r := (<-first)[0]; r.body != body || e.hits() != 1 {
		t.Fatalf("first: %d bytes, origin hits %d", len(r.body), e.hits())
	}
}

// A body without Content-Length that outgrows MaxObjectSize is delivered
// whole, not stored, and the key then passes straight through for a while.
func TestChunkedBodyOutgrowsMaxObjectSize(t *testing.T) {
	chunk := strings.Repeat("c", 16<<10)
	e := newEnv(t, Options{MaxObjectSize: 64 << 10, MemoryObjectMax: 16 << 10}, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		for range 12 {
			w.Write([]byte(chunk))
			w.(http.Flusher).Flush()
		}
	})
	want := strings.Repeat(chunk, 12)
	if r := e.get("/big"); r.body != want {
		t.Fatalf("first: %d bytes", len(r.body))
	}
	r := e.get("/big")
	if r.body != want || !strings.Contains(r.header.Get("Cache-Status"), "too-large") {
		t.Fatalf("second: %d bytes, %q", len(r.body), r.header.Get("Cache-Status"))
	}
	if e.hits() != 2 {
		t.Fatalf("origin hits %d, want 2", e.hits())
	}
	e.clock.Advance(hitForMissTTL + time.Second)
	if r := e.get("/big"); r.body != want || e.hits() != 3 {
		t.Fatalf("after the pass period: %d bytes, hits %d", len(r.body), e.hits())
	}
}
