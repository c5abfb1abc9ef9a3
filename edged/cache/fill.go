package cache

import (
	"context"
	"errors"
	"hash/crc32"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgeapp/edgeapp/edged/reqinfo"
)

// A fill is one origin fetch that any number of requests for the same key
// wait on. It runs in its own goroutine with a context detached from the
// client that started it, so a client that goes away does not abort a
// response others are waiting for. Once the response header is in, the fill
// resolves to one of:
//
//   - stream: cacheable; the body goes into a growing buffer (memory, then a
//     file past MemoryObjectMax) that every waiting request reads behind the
//     writer, and is stored when complete;
//   - pass: not cacheable; the request that started it gets the response
//     written straight through, the others go to the origin themselves;
//   - object: a 304 refreshed the stale object being revalidated, or the
//     origin failed and the stale object may be served (stale-if-error);
//   - fail: the origin handler died before sending a header.

const (
	kindPending = iota
	kindStream
	kindPass
	kindObject
	kindFail
)

var (
	errOriginAborted = errors.New("origin response aborted")
	errShortBody     = errors.New("origin body shorter than its Content-Length")
)

type fill struct {
	c       *Cache
	key     string // primary key
	ck      string // coalescing key; "" when not registered (a solo fetch)
	req     *http.Request
	rcc     reqCC
	stale   *object // the stored response being revalidated, if any
	fwd     string  // Cache-Status fwd reason: uri-miss, vary-miss, stale, request
	ho      *HandlerOptions
	reqTime time.Time
	cancel  context.CancelFunc
	info    *reqinfo.Info // the fetch's own record (the proxy writes it); nil without one

	ready    chan struct{} // closed once kind and the fields below are set
	kind     int
	m        *meta       // stream: the response being stored
	vals     []string    // stream: the starting request's values for m.vary
	lhdr     http.Header // stream: the full header, for the request that started it
	cl       int64       // stream: the announced Content-Length, -1 if none
	trailers http.Header // stream: set before the body is finished
	obj      *object     // object: what to serve
	objM     *meta
	objCS    string // object: Cache-Status
	objStale bool   // object: served stale because the origin failed

	mu        sync.Mutex
	leaderW   http.ResponseWriter // nil once the leader left
	passing   bool                // the fetch writes straight to leaderW
	followers int

	body   growBuf
	done   chan struct{}
	purged atomic.Bool // its URL was purged or invalidated meanwhile: do not store
}

func (c *Cache) newFill(key, ck string, r *http.Request, rcc *reqCC, stale *object, fwd string, ho *HandlerOptions) *fill {
	f := &fill{c: c, key: key, ck: ck, req: r, rcc: *rcc, stale: stale, fwd: fwd, ho: ho,
		ready: make(chan struct{}), done: make(chan struct{})}
	f.body.refs = 1 // the fetch
	f.body.spillAt = c.o.MemoryObjectMax
	f.body.spill = c.spillFile
	return f
}

func (c *Cache) spillFile() (*os.File, string, error) {
	if c.disk != nil {
		f, err := c.disk.spillFile()
		if err != nil {
			return nil, "", err
		}
		return f, f.Name(), nil
	}
	// No disk tier: the body cannot be stored, but waiting requests still
	// stream it; keep it in an unlinked temp file rather than in memory.
	f, err := os.CreateTemp("", "edged-cache-")
	if err != nil {
		return nil, "", err
	}
	os.Remove(f.Name())
	return f, "", nil
}

// outgoing builds the origin request: detached from the client, without
// the client's conditionals and Range (the cache answers those itself from
// the full response), with the stale object's validators if revalidating.
func outgoing(r *http.Request, stale *object) (*http.Request, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(r.Context()))
	if info := reqinfo.From(ctx); info != nil {
		// The fetch may outlive the request: it gets its own copy, which
		// waiters read once it is ready (upstreamInfo).
		own := *info
		ctx = reqinfo.NewContext(ctx, &own)
	}
	out := r.Clone(ctx)
	out.Method = http.MethodGet
	out.Body = http.NoBody
	out.ContentLength = 0
	for _, h := range []string{"Range", "If-Range", "If-None-Match", "If-Modified-Since", "If-Match", "If-Unmodified-Since"} {
		delete(out.Header, h)
	}
	if stale != nil {
		m := stale.m.Load()
		if m.etag != "" {
			out.Header["If-None-Match"] = []string{m.etag}
		}
		if m.lastModified != "" {
			out.Header["If-Modified-Since"] = []string{m.lastModified}
		}
	}
	return out, cancel
}

// start runs the origin fetch in its own goroutine.
func (f *fill) start(origin http.Handler) {
	out, cancel := outgoing(f.req, f.stale)
	f.cancel = cancel
	f.info = reqinfo.From(out.Context())
	f.reqTime = f.c.o.Now()
	go f.run(origin, out)
}

func (f *fill) run(origin http.Handler, out *http.Request) {
	fw := &fetchWriter{f: f, h: make(http.Header), cl: -1}
	defer func() {
		p := recover()
		if p != nil && p != http.ErrAbortHandler {
			f.c.log.Error("origin handler panicked; the response is not stored", "key", f.key, "panic", p)
		}
		fw.finish(p != nil)
		f.cancel()
		f.body.release()
		close(f.done)
	}()
	origin.ServeHTTP(fw, out)
}

// resolve publishes the outcome to every waiting request. Anything but a
// stream leaves the coalescing map at once: later requests must not wait
// on a fetch that will not give them a body.
func (f *fill) resolve(kind int) {
	f.kind = kind
	if kind != kindStream && f.ck != "" {
		sh := f.c.shard(f.key)
		sh.mu.Lock()
		if sh.fills[f.ck] == f {
			delete(sh.fills, f.ck)
		}
		f.mu.Lock()
		waited := f.followers > 0
		f.mu.Unlock()
		if kind == kindPass && waited {
			// hit-for-miss: while this key keeps answering uncacheable,
			// requests go to the origin in parallel instead of queueing.
			n := sh.nodes[f.key]
			if n == nil {
				n = &node{}
				sh.nodes[f.key] = n
			}
			n.passUntil = f.c.o.Now().Add(hitForMissTTL)
		}
		sh.mu.Unlock()
	}
	close(f.ready)
}

func (c *Cache) unregister(f *fill) {
	if f.ck == "" {
		return
	}
	sh := c.shard(f.key)
	sh.mu.Lock()
	if sh.fills[f.ck] == f {
		delete(sh.fills, f.ck)
	}
	sh.mu.Unlock()
}

// detachLeader is called when the client that started the fill leaves
// before the outcome is known. It reports false if the fetch is already
// writing to that client, in which case the caller must wait for it.
func (f *fill) detachLeader() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.passing {
		return false
	}
	f.leaderW = nil
	return true
}

// fetchWriter is the ResponseWriter the origin handler writes to.
type fetchWriter struct {
	f      *fill
	h      http.Header
	wrote  bool
	mode   int
	client http.ResponseWriter
	cl     int64
	tooBig bool
}

const (
	modeDiscard = iota
	modeStream
	modePass
)

func (fw *fetchWriter) Header() http.Header { return fw.h }

func (fw *fetchWriter) Write(p []byte) (int, error) {
	if !fw.wrote {
		fw.WriteHeader(http.StatusOK)
	}
	switch fw.mode {
	case modeStream:
		fw.f.body.write(p, fw.f.c)
		if !fw.tooBig && fw.f.body.size() > fw.f.c.o.MaxObjectSize {
			fw.tooBig = true
			fw.f.outgrown()
		}
		return len(p), nil
	case modePass:
		return fw.client.Write(p)
	}
	return len(p), nil
}

// Flush lets a streaming origin (e.g. server-sent events) reach a client
// whose response passes through.
func (fw *fetchWriter) Flush() {
	if fw.mode == modePass {
		http.NewResponseController(fw.client).Flush()
	}
}

func (fw *fetchWriter) WriteHeader(code int) {
	if fw.wrote {
		return
	}
	if code < 200 {
		if code != http.StatusSwitchingProtocols { // upgrades bypass the cache
			fw.interim(code)
		}
		return
	}
	fw.wrote = true
	f, c := fw.f, fw.f.c
	now := c.o.Now()
	h := fw.h
	if f.stale != nil {
		switch {
		case code == http.StatusNotModified:
			c.met.reval304.Inc()
			f.refreshed(h, now)
			return
		case isServerError(code) && c.staleIfError(f.stale, now):
			c.met.revalErr.Inc()
			f.serveStale(code)
			return
		}
		c.met.revalFull.Inc()
	}
	var own []string
	if c.ownCC != "" {
		own = h[c.ownCC]
	}
	cc := c.policy(h, own)
	reason := c.mayStore(f.req, &f.rcc, code, h, &cc, f.ho.SetCookie)
	if v := h.Get("Content-Length"); v != "" {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil && n >= 0 {
			fw.cl = n
		}
	}
	if reason == "" && fw.cl > c.o.MaxObjectSize {
		reason = "too-large"
	}
	var m *meta
	if reason == "" {
		sh, own := c.storedHeader(h, &cc, now, f.ho)
		m = c.newMeta(code, sh, own, parseAge(h), f.reqTime, now, -1)
		if !m.worthStoring() {
			reason = "stale"
		}
	}
	if reason != "" {
		fw.pass(code, reason)
		return
	}
	f.m = m
	f.vals = make([]string, len(m.vary))
	for i, name := range m.vary {
		f.vals[i] = c.varyValue(f.req.Header, name)
	}
	f.lhdr = h.Clone()
	if c.ownCC != "" {
		delete(f.lhdr, c.ownCC)
	}
	f.cl = fw.cl
	if fw.cl > 0 && fw.cl <= f.body.spillAt {
		f.body.mem = make([]byte, 0, fw.cl)
	}
	fw.mode = modeStream
	f.resolve(kindStream)
}

// interim relays an informational response (103 Early Hints) to the
// client that started the fill, if it is still there; it is never stored
// (RFC 9111 3: only final responses are), and clients served by the
// same fill later or from the cache do not get it. The origin's current
// header goes with it, as net/http sends a 1xx.
func (fw *fetchWriter) interim(code int) {
	f := fw.f
	f.mu.Lock()
	defer f.mu.Unlock() // the leader cannot leave while it is written to
	w := f.leaderW
	if w == nil {
		return
	}
	dst := w.Header()
	var added []string
	for k, v := range fw.h {
		if _, ok := dst[k]; !ok {
			added = append(added, k)
		}
		dst[k] = v
	}
	w.WriteHeader(code)
	for _, k := range added {
		delete(dst, k)
	}
}

// pass writes an uncacheable response straight to the client that started
// the fill; waiting requests are released to fetch their own.
func (fw *fetchWriter) pass(code int, reason string) {
	f := fw.f
	f.mu.Lock()
	fw.client = f.leaderW
	f.passing = fw.client != nil
	f.mu.Unlock()
	if fw.client != nil {
		dst := fw.client.Header()
		for k, v := range fw.h {
			if k != f.c.ownCC {
				dst[k] = v
			}
		}
		dst.Add("Cache-Status", "edged; fwd="+f.fwd+"; detail="+reason)
		fw.client.WriteHeader(code)
		fw.mode = modePass
	} else {
		fw.mode = modeDiscard
		f.cancel() // nobody to deliver it to
	}
	f.resolve(kindPass)
}

// refreshed applies a 304 to the stale object (RFC 9111 4.3.4).
func (f *fill) refreshed(h304 http.Header, now time.Time) {
	c, o := f.c, f.stale
	old := o.m.Load()
	var own []string
	if c.ownCC != "" {
		own = h304[c.ownCC]
	}
	cc := c.policy(h304, own)
	nh := old.header.Clone()
	h304s, own304 := c.storedHeader(h304, &cc, now, f.ho)
	if f.ho.SetCookie != SetCookieStore {
		// The refreshed response is served to everyone waiting and stored:
		// a cookie on the 304 cannot go with it.
		delete(h304s, "Set-Cookie")
		delete(h304s, "Set-Cookie2")
	}
	for k, v := range h304s {
		switch k {
		case "Content-Length", "Content-Range":
			continue
		}
		nh[k] = v
	}
	if own304 == nil {
		own304 = old.own
	}
	m := c.newMeta(old.status, nh, own304, parseAge(h304), f.reqTime, now, o.size)
	m.trailers = old.trailers
	if cc.noStore || cc.private {
		c.drop(o)
	} else {
		o.m.Store(m)
		if c.disk != nil && o.disk.Load() != nil {
			c.disk.enqueue(diskJob{o: o, m: m})
		}
	}
	f.obj, f.objM = o, m
	f.objCS = "edged; fwd=" + f.fwd + "; fwd-status=304"
	f.resolve(kindObject)
}

func (f *fill) serveStale(code int) {
	f.obj, f.objStale = f.stale, true
	f.objM = f.stale.m.Load()
	f.objCS = "edged; fwd=" + f.fwd + "; fwd-status=" + strconv.Itoa(code) + "; detail=stale-if-error"
	f.resolve(kindObject)
}

func isServerError(code int) bool {
	switch code {
	case 500, 502, 503, 504:
		return true
	}
	return false
}

// staleIfError: may o be served because the origin failed (RFC 5861 4)?
func (c *Cache) staleIfError(o *object, now time.Time) bool {
	m := o.m.Load()
	age := m.age(now)
	return m.staleOK(age-m.lifetime, m.sie)
}

// parseAge reads the Age field (RFC 9111 5.1): of a list (several lines,
// or commas) the first member counts. It returns 0 without an Age field
// and -1 when the first member is not a non-negative integer (RFC 9111
// lets a cache ignore such a field; edged takes the safe side and treats
// the response as stale).
func parseAge(h http.Header) int64 {
	lines := h["Age"]
	if len(lines) == 0 {
		return 0
	}
	v := lines[0]
	if i := strings.IndexByte(v, ','); i >= 0 {
		v = v[:i]
	}
	n, ok := parseDelta(strings.Trim(v, " \t"))
	if !ok {
		return -1
	}
	return n
}

func (fw *fetchWriter) finish(aborted bool) {
	f := fw.f
	if !fw.wrote {
		if aborted {
			if f.stale != nil && f.c.staleIfError(f.stale, f.c.o.Now()) {
				f.serveStale(http.StatusBadGateway)
			} else {
				f.resolve(kindFail)
			}
			return
		}
		fw.WriteHeader(http.StatusOK)
	}
	if fw.mode != modeStream {
		return
	}
	var err error
	if aborted {
		err = errOriginAborted
	} else if n := f.body.size(); fw.cl >= 0 && n != fw.cl && bodyAllowed(f.m.status) {
		err = errShortBody
	}
	if err != nil {
		f.c.unregister(f) // first, so that nobody joins a broken body
		f.body.finish(err)
		return
	}
	f.trailers = trailers(fw.h)
	// Store before the readers see the end, so that a client that got the
	// whole body and asks again finds it stored, not this finished fill.
	f.c.commit(f)
	f.body.finish(nil)
}

// trailers collects the trailer fields an origin handler set after its
// body: those its Trailer field announced, and those under
// http.TrailerPrefix.
func trailers(h http.Header) http.Header {
	var out http.Header
	for k, v := range h {
		if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok {
			if out == nil {
				out = http.Header{}
			}
			out[http.CanonicalHeaderKey(name)] = v
		}
	}
	for _, decl := range h["Trailer"] {
		for _, name := range strings.Split(decl, ",") {
			name = http.CanonicalHeaderKey(strings.TrimSpace(name))
			if v := h[name]; name != "" && len(v) > 0 {
				if out == nil {
					out = http.Header{}
				}
				out[name] = v
			}
		}
	}
	return out
}

func bodyAllowed(status int) bool {
	return status != http.StatusNoContent && status != http.StatusNotModified
}

// commit stores a completely received stream.
func (c *Cache) commit(f *fill) {
	b := &f.body
	b.mu.Lock()
	size, file, tmpPath, spillFailed, crc, mem := b.n, b.file, b.tmpPath, b.spillFailed, b.crc, b.mem
	b.mu.Unlock()
	if size > c.o.MaxObjectSize || f.purged.Load() {
		c.unregister(f)
		return
	}
	m0 := f.m
	hdr := m0.header.Clone()
	if bodyAllowed(m0.status) {
		hdr["Content-Length"] = []string{strconv.FormatInt(size, 10)}
	}
	m := c.newMeta(m0.status, hdr, m0.own, m0.ageValue, m0.reqTime, m0.respTime, size)
	m.trailers = f.trailers
	o := &object{key: f.key, varyVals: f.vals, size: size, hash: c.objHash(f.key, f.vals)}
	o.m.Store(m)
	switch {
	case file == nil && size <= c.o.MemoryObjectMax:
		body := mem[:size:size]
		o.mem.Store(&body)
	case file != nil && !spillFailed && tmpPath != "" && c.disk != nil && !c.closed.Load() && size <= c.disk.max/4:
		df, err := c.disk.finishSpill(file, tmpPath, size, crc, o, m)
		b.mu.Lock()
		b.tmpPath = "" // placed, or removed by place
		b.mu.Unlock()
		if err != nil {
			c.met.diskErr.Inc()
			c.disk.fails.fail(c.log, "cannot write to the disk cache; serving without storing to disk", "dir", c.disk.dir, "err", err)
			c.unregister(f)
			return
		}
		c.disk.fails.ok(c.log, "disk cache writable again")
		o.disk.Store(df)
	default:
		c.unregister(f)
		return
	}
	c.insert(o, f.req.Header, f)
	if p := o.mem.Load(); p != nil {
		c.addToMemory(o)
		if c.disk != nil && !c.closed.Load() && size <= c.disk.max/4 {
			c.disk.enqueue(diskJob{o: o, m: m, body: *p})
		}
	} else {
		c.disk.add(o)
	}
}

// growBuf holds a body while it arrives: bytes [0,fileN) in a file (once
// the body outgrew spillAt), bytes [fileN,n) in mem. Readers follow the
// writer; bytes once written never change, so readers use them unlocked.
type growBuf struct {
	mu          sync.Mutex
	spillAt     int64
	spill       func() (*os.File, string, error)
	mem         []byte
	file        *os.File
	tmpPath     string // the spill file's name while it may still be placed
	fileN, n    int64
	crc         uint32 // of the file part
	spillFailed bool
	done        bool
	err         error
	wake        chan struct{}
	refs        int
	closed      bool
}

func (b *growBuf) size() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.n
}

// write is only called by the fetch goroutine.
func (b *growBuf) write(p []byte, c *Cache) {
	b.mu.Lock()
	if b.file == nil && !b.spillFailed && b.n+int64(len(p)) > b.spillAt {
		mem := b.mem
		b.mu.Unlock()
		f, path, err := b.spill()
		if err == nil {
			if _, err = f.Write(mem); err != nil {
				f.Close()
				if path != "" {
					os.Remove(path)
				}
			}
		}
		b.mu.Lock()
		if err != nil {
			b.spillFailed = true
			c.spillLog().fail(c.log, "cannot spill large responses to a file; serving them from memory without storing them", "err", err)
		} else {
			c.spillLog().ok(c.log, "large responses spill to files again")
			b.file, b.tmpPath, b.fileN = f, path, b.n
			b.crc = crc32.Update(0, crcTable, mem)
			b.mem = nil // readers may still hold the old array; never reuse it
		}
	}
	if b.file != nil && !b.spillFailed && b.fileN == b.n {
		f, off := b.file, b.fileN
		b.mu.Unlock()
		_, err := f.WriteAt(p, off)
		b.mu.Lock()
		if err == nil {
			b.fileN += int64(len(p))
			b.n += int64(len(p))
			b.crc = crc32.Update(b.crc, crcTable, p)
			b.signal()
			b.mu.Unlock()
			return
		}
		b.spillFailed = true
		c.met.diskErr.Inc()
		c.spillLog().fail(c.log, "cannot write large responses to their spill files; serving them from memory without storing them", "err", err)
	}
	b.mem = append(b.mem, p...)
	b.n += int64(len(p))
	b.signal()
	b.mu.Unlock()
}

func (b *growBuf) signal() {
	if b.wake != nil {
		close(b.wake)
		b.wake = nil
	}
}

func (b *growBuf) finish(err error) {
	b.mu.Lock()
	b.done, b.err = true, err
	b.signal()
	b.mu.Unlock()
}

// next returns the bytes from off on: a slice of the buffer itself, or
// bytes read from the file into buf. It waits for the writer when caught
// up, and returns io.EOF at the end of a complete body.
func (b *growBuf) next(ctx context.Context, off int64, buf []byte, beforeWait func()) ([]byte, error) {
	flushed := false
	for {
		b.mu.Lock()
		if off < b.fileN {
			f, end := b.file, b.fileN
			b.mu.Unlock()
			k := min(int64(len(buf)), end-off)
			n, err := f.ReadAt(buf[:k], off)
			if n > 0 {
				return buf[:n], nil
			}
			return nil, err
		}
		if off < b.n {
			p := b.mem[off-b.fileN : b.n-b.fileN]
			b.mu.Unlock()
			return p, nil
		}
		if b.done {
			err := b.err
			b.mu.Unlock()
			if err == nil {
				err = io.EOF
			}
			return nil, err
		}
		if !flushed && beforeWait != nil {
			// Caught up with the origin: push what was written so far
			// to the client before waiting for more.
			b.mu.Unlock()
			beforeWait()
			flushed = true
			continue
		}
		if b.wake == nil {
			b.wake = make(chan struct{})
		}
		w := b.wake
		b.mu.Unlock()
		select {
		case <-w:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// waitDone waits until the body is complete and returns its error.
func (b *growBuf) waitDone(ctx context.Context) error {
	for {
		b.mu.Lock()
		if b.done {
			err := b.err
			b.mu.Unlock()
			return err
		}
		if b.wake == nil {
			b.wake = make(chan struct{})
		}
		w := b.wake
		b.mu.Unlock()
		select {
		case <-w:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// acquire registers a reader; false once the buffer has been released.
func (b *growBuf) acquire() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return false
	}
	b.refs++
	return true
}

// release drops a reader (or the fetch); the last one closes the file and
// removes a spill file that was not placed.
func (b *growBuf) release() {
	b.mu.Lock()
	b.refs--
	if b.refs > 0 || b.closed {
		b.mu.Unlock()
		return
	}
	b.closed = true
	f, path := b.file, b.tmpPath
	b.mu.Unlock()
	if f != nil {
		f.Close()
	}
	if path != "" {
		os.Remove(path)
	}
}

// spillLog: with a disk tier, a spill failure is a disk failure, logged
// once together with the others.
func (c *Cache) spillLog() *failLog {
	if c.disk != nil {
		return &c.disk.fails
	}
	return &c.spillFails
}

// outgrown is called when a body without Content-Length passes
// MaxObjectSize: it will not be stored, so nobody else joins this fetch and
// for a while the key passes straight through instead of buffering again.
func (f *fill) outgrown() {
	c := f.c
	sh := c.shard(f.key)
	sh.mu.Lock()
	if f.ck != "" && sh.fills[f.ck] == f {
		delete(sh.fills, f.ck)
	}
	n := sh.nodes[f.key]
	if n == nil {
		n = &node{}
		sh.nodes[f.key] = n
	}
	n.passUntil, n.tooBig = c.o.Now().Add(hitForMissTTL), true
	sh.mu.Unlock()
}
