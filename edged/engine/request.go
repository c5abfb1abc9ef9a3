package engine

import (
	"context"
	"io"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/edgeapp/edgeapp/edged/httpwire"
)

// serveRequest turns the parsed head into an *http.Request, runs the
// handler and completes the response.
func (c *conn) serveRequest(now time.Time) {
	c.reqStart = now
	c.active.info.Reset()
	if c.active.wire.ExpectOther {
		c.refuse(errExpectation)
		return
	}
	r, err := c.newRequest()
	if err != nil {
		c.refuse(err)
		return
	}
	c.closeAfter = c.active.wire.Close
	c.active.resp.reset(r)
	rctx := c.rctx.Load()
	if r.Body == http.NoBody {
		rctx.allowWatch()
	}
	func() {
		defer func() {
			if p := recover(); p != nil {
				c.closeAfter = true
				if p != http.ErrAbortHandler {
					c.s.o.Log.Error("handler panicked; closing the connection", "client", c.remoteAddr, "method", r.Method, "uri", r.RequestURI, "panic", p, "stack", string(stack()))
				}
				c.active.resp.aborted = true
			}
		}()
		c.s.o.Handler.ServeHTTP(&c.active.resp, r)
	}()
	rctx.stopWatch()
	rctx.cancel(context.Canceled)
	if c.hijacked {
		return
	}
	if c.active.resp.aborted {
		c.active.resp.abort()
	} else {
		c.active.resp.finish()
	}
	if b, ok := r.Body.(*body); ok {
		b.finish()
	}
	if c.userDL {
		c.userDL = false
	}
	c.reqStart = time.Time{}
	if c.s.closing.Load() {
		c.closeAfter = true
	}
}

// newRequest builds the request from c.active.wire: one string holds the whole
// head, and the method, target, field names and values are substrings
// of it.
func (c *conn) newRequest() (*http.Request, error) {
	w := &c.active.wire
	raw := c.rbuf[c.headStart:c.w]
	head := string(c.rbuf[c.headStart:c.headEnd])
	sub := func(b []byte) string {
		off := cap(raw) - cap(b)
		return head[off : off+len(b)]
	}
	target := sub(w.Target)
	rctx := &reqCtx{parent: c.active.ctx, c: c} // with the URL and field values in it: one allocation
	c.rctx.Store(rctx)
	r := (&zeroRequest).WithContext(rctx) // the one allocation of the request itself
	r.Method = sub(w.Method)
	r.RequestURI = target
	r.RemoteAddr = c.remoteAddr
	r.TLS = c.tlsState
	r.ProtoMajor, r.ProtoMinor = 1, w.Minor
	r.Proto = "HTTP/1.1"
	if w.Minor == 0 {
		r.Proto = "HTTP/1.0"
	}
	r.Close = w.Close
	switch w.Form {
	case httpwire.AuthorityForm:
		r.URL = &url.URL{Host: target}
		r.Host = target
	case httpwire.AsteriskForm:
		r.URL = &url.URL{Path: "*"}
	default:
		if !parseOriginForm(target, &rctx.url) {
			u, err := url.ParseRequestURI(target)
			if err != nil {
				return nil, errBadURL
			}
			rctx.url = *u
		}
		r.URL = &rctx.url
	}
	if w.Form == httpwire.AbsoluteForm {
		r.Host = r.URL.Host
	} else if w.HasHost && r.Host == "" {
		r.Host = sub(w.Host)
	}
	h := make(http.Header, len(w.Fields))
	values := rctx.values[:]
	if len(w.Fields) > len(values) {
		values = make([]string, len(w.Fields))
	}
	var trailer http.Header
	for i, f := range w.Fields {
		name := textproto.CanonicalMIMEHeaderKey(sub(f.Name))
		switch name {
		case "Host":
			continue
		case "Transfer-Encoding":
			continue // in r.TransferEncoding
		case "Trailer":
			if w.Body == httpwire.BodyChunked {
				if trailer == nil {
					trailer = http.Header{}
				}
				for _, t := range strings.Split(sub(f.Value), ",") {
					if t = textproto.TrimString(t); t != "" {
						trailer[textproto.CanonicalMIMEHeaderKey(t)] = nil
					}
				}
				continue
			}
		}
		values[i] = sub(f.Value)
		if prev, ok := h[name]; ok {
			h[name] = append(prev, values[i])
		} else {
			h[name] = values[i : i+1 : i+1]
		}
	}
	// net/http's HTTP/1.0 compatibility: Pragma: no-cache means
	// Cache-Control: no-cache when the latter is absent.
	if p, ok := h["Pragma"]; ok && len(p) > 0 && p[0] == "no-cache" {
		if _, ok := h["Cache-Control"]; !ok {
			h["Cache-Control"] = []string{"no-cache"}
		}
	}
	r.Header = h
	r.Trailer = trailer
	c.expect100, c.continueSent = w.Expect100 && w.Minor == 1, false
	switch w.Body {
	case httpwire.BodyNone:
		r.Body = http.NoBody
	case httpwire.BodyLength:
		r.ContentLength = w.ContentLength
		if w.ContentLength == 0 {
			r.Body = http.NoBody
		} else {
			r.Body = &body{c: c, left: w.ContentLength}
		}
	case httpwire.BodyChunked:
		r.ContentLength = -1
		r.TransferEncoding = chunkedTE
		r.Body = &body{c: c, chunked: true, req: r}
	}
	if r.Body == http.NoBody {
		c.expect100 = false
	}
	return r, nil
}

var (
	chunkedTE   = []string{"chunked"}
	zeroRequest http.Request
)

// body reads a request body from the connection: Content-Length bytes or
// the chunked coding, with client_body_timeout between two reads, and
// 100 Continue sent before the first read when the client expects it.
type body struct {
	c       *conn
	req     *http.Request
	chunked bool
	left    int64
	dec     httpwire.ChunkedDecoder
	err     error // sticky; io.EOF at the end
	closed  bool
}

func (b *body) Read(p []byte) (int, error) {
	if b.closed {
		return 0, http.ErrBodyReadAfterClose
	}
	if b.err != nil {
		return 0, b.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	c := b.c
	if c.expect100 && !c.continueSent {
		c.sendContinue()
	}
	var n int
	var err error
	if b.chunked {
		n, err = b.readChunked(p)
	} else {
		n, err = b.readLength(p)
	}
	if err != nil {
		b.err = err
		if err != io.EOF {
			c.bodyBroken = true
			c.closeAfter = true
		} else if !b.closed {
			c.rctx.Load().allowWatch()
		}
	}
	c.active.info.BytesIn += int64(n)
	return n, err
}

func (b *body) readLength(p []byte) (int, error) {
	c := b.c
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	var n int
	if c.r < c.w {
		n = copy(p, c.rbuf[c.r:c.w])
		c.r += n
	} else {
		c.setReadDeadline(c.s.o.ClientBodyTimeout)
		var err error
		n, err = c.rwc.Read(p)
		if n == 0 && err != nil {
			return 0, bodyErr(err)
		}
	}
	b.left -= int64(n)
	if b.left == 0 {
		return n, io.EOF
	}
	return n, nil
}

func (b *body) readChunked(p []byte) (int, error) {
	c := b.c
	for {
		if left := b.dec.DataLeft(); left > 0 && c.r == c.w && len(p) >= 2048 {
			// Chunk data straight into p, not through the buffer.
			c.setReadDeadline(c.s.o.ClientBodyTimeout)
			n, err := c.rwc.Read(p[:min(uint64(len(p)), left)])
			b.dec.ConsumeData(n)
			if n == 0 && err != nil {
				return 0, bodyErr(err)
			}
			return n, nil
		}
		if c.r == c.w {
			c.r, c.w = 0, 0
			c.setReadDeadline(c.s.o.ClientBodyTimeout)
			k, err := c.rwc.Read(c.rbuf)
			c.w = k
			if k == 0 && err != nil {
				return 0, bodyErr(err)
			}
		}
		n, data, err := b.dec.Decode(c.rbuf[c.r:c.w], len(p))
		copy(p, data)
		c.r += n
		if err == io.EOF {
			b.mergeTrailers()
			return len(data), io.EOF
		}
		if err != nil {
			return len(data), err
		}
		if len(data) > 0 {
			return len(data), nil
		}
	}
}

func (b *body) mergeTrailers() {
	fields := b.dec.Trailers()
	if len(fields) == 0 {
		return
	}
	if b.req.Trailer == nil {
		b.req.Trailer = http.Header{}
	}
	for _, f := range fields {
		k := textproto.CanonicalMIMEHeaderKey(string(f.Name))
		b.req.Trailer[k] = append(b.req.Trailer[k], string(f.Value))
	}
}

func bodyErr(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

func (b *body) Close() error {
	b.closed = true
	return nil
}

// maxDrain is how much of an unread body the engine reads after the
// handler returns to keep the connection (net/http reads 256 KiB too).
const maxDrain = 256 << 10

// finish reads what the handler left of the body, so the connection can
// serve its next request; past maxDrain, or if the client was never told
// to send the body, the connection closes instead.
func (b *body) finish() {
	defer func() { b.closed = true }()
	if b.err != nil {
		return
	}
	c := b.c
	if c.closeAfter || c.expect100 && !c.continueSent {
		c.closeAfter = true
		return
	}
	b.closed = false
	var scratch [4096]byte
	for read := 0; read < maxDrain; {
		n, err := b.Read(scratch[:])
		read += n
		if err == io.EOF {
			return
		}
		if err != nil {
			break
		}
	}
	c.closeAfter = true
}

var continueLine = []byte("HTTP/1.1 100 Continue\r\n\r\n")

// sendContinue tells the client to send the body it is holding back, once,
// and only if no final response has begun.
func (c *conn) sendContinue() {
	c.continueSent = true
	if c.active.resp.committed {
		return
	}
	c.bw.Write(continueLine)
	c.bw.Flush()
}

// reqCtx is a request's context: cancelled when the handler returns or the
// connection ends. It is one small allocation per request (a context is
// shared with whatever goroutines the request started, so it cannot be
// reused); its Done channel is made only when someone asks for it, and
// AfterFunc lets context.WithCancel children register without a goroutine
// each.
type reqCtx struct {
	parent context.Context
	mu     sync.Mutex
	done   chan struct{}
	err    error
	afters []*afterFunc

	// Client-disconnect watching (see conn.watchGone): wanted once
	// someone waits on the context, possible once the request body is
	// read (nothing else reads the connection then).
	c                             *conn
	wantWatch, canWatch, watching bool

	// The request's URL and the values of its header fields (most
	// requests have no more than this many), allocated with the context.
	url    url.URL
	values [12]string
}

// parseOriginForm is url.ParseRequestURI for the usual target, an
// origin-form path of characters that need no escaping (and any query):
// what ParseRequestURI would return, without its allocation. Anything
// else (percent-escapes, characters the path would escape, control
// bytes) is false and goes to ParseRequestURI.
func parseOriginForm(target string, u *url.URL) bool {
	if len(target) == 0 || target[0] != '/' {
		return false
	}
	q := len(target)
	for i := 0; i < len(target); i++ {
		b := target[i]
		if b == '?' {
			q = i
			break
		}
		if !pathSafe[b] {
			return false
		}
	}
	for i := q; i < len(target); i++ {
		if b := target[i]; b < ' ' || b == 0x7f {
			return false
		}
	}
	*u = url.URL{Path: target[:q]}
	if q < len(target) {
		if q == len(target)-1 {
			u.ForceQuery = true
		} else {
			u.RawQuery = target[q+1:]
		}
	}
	return true
}

// pathSafe: the bytes url.URL's path encoding leaves alone (unreserved,
// and the reserved ones it allows in a path).
var pathSafe = func() (t [256]bool) {
	for b := 'a'; b <= 'z'; b++ {
		t[b] = true
	}
	for b := 'A'; b <= 'Z'; b++ {
		t[b] = true
	}
	for b := '0'; b <= '9'; b++ {
		t[b] = true
	}
	for _, b := range "-_.~$&+,/:;=@" {
		t[b] = true
	}
	return t
}()

type afterFunc struct{ f func() }

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

func (x *reqCtx) Deadline() (time.Time, bool) { return time.Time{}, false }
func (x *reqCtx) Value(k any) any             { return x.parent.Value(k) }

func (x *reqCtx) Done() <-chan struct{} {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.done == nil {
		if x.err != nil {
			return closedChan
		}
		x.done = make(chan struct{})
		x.want()
	}
	return x.done
}

// want notes that someone waits for cancellation; called with mu held.
func (x *reqCtx) want() {
	x.wantWatch = true
	if x.canWatch && !x.watching && x.err == nil {
		x.watching = x.c.watchGone()
	}
}

// allowWatch says the connection is free to be watched (the request body
// is done); called by the connection's goroutine.
func (x *reqCtx) allowWatch() {
	x.mu.Lock()
	x.canWatch = true
	if x.wantWatch {
		x.want()
	}
	x.mu.Unlock()
}

// stopWatch ends watching before the connection's goroutine reads again.
func (x *reqCtx) stopWatch() {
	x.mu.Lock()
	x.canWatch = false
	watching := x.watching
	x.watching = false
	x.mu.Unlock()
	if watching {
		x.c.unwatch()
	}
}

func (x *reqCtx) Err() error {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.err
}

// AfterFunc is the interface package context uses for parents it does not
// know (context.AfterFunc and the cancellation of children).
func (x *reqCtx) AfterFunc(f func()) func() bool {
	x.mu.Lock()
	if x.err != nil {
		x.mu.Unlock()
		go f()
		return func() bool { return false }
	}
	a := &afterFunc{f: f}
	x.afters = append(x.afters, a)
	x.want()
	x.mu.Unlock()
	return func() bool {
		x.mu.Lock()
		defer x.mu.Unlock()
		for i, b := range x.afters {
			if b == a {
				x.afters = append(x.afters[:i], x.afters[i+1:]...)
				return true
			}
		}
		return false
	}
}

func (x *reqCtx) cancel(err error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.err != nil {
		return
	}
	x.err = err
	if x.done != nil {
		close(x.done)
	}
	for _, a := range x.afters {
		go a.f()
	}
	clear(x.afters)
	x.afters = x.afters[:0]
}
