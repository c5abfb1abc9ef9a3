package h2

import (
	"context"
	"io"
	"net/http"
	"sync"
	"time"

	"golang.org/x/net/http2"

	"github.com/edgeapp/edgeapp/edged/reqinfo"
)

// stream is one request and its response. It is the handler's
// http.ResponseWriter (response.go), its request body (reqBody) and its
// context (streamCtx), so a request costs few allocations.
type stream struct {
	c  *conn
	id uint32

	// With c.mu held:
	sendWindow  int64 // what edged may send on it
	recvWindow  int64 // what the client may still send
	recvUnacked int64 // consumed, not yet given back
	in          []byte
	inOff       int
	declared    int64 // the request's Content-Length, or -1
	received    int64
	remoteDone  bool // the request is complete (END_STREAM) or the stream reset
	localDone   bool // END_STREAM sent or the stream reset
	bodyClosed  bool // the handler is done with the request body
	resetErr    error
	expect100   bool
	finalSent   bool // the response's final HEADERS are queued
	blocked     bool // listed in c.blocked
	rDeadline   time.Time
	wDeadline   time.Time
	trailer     http.Header // the request's declared trailers, filled at END_STREAM

	// The body's reader and the response's writer wait apart: a
	// full-duplex handler (gRPC's bidirectional streams) reads on one
	// goroutine while another waits for flow-control credit, and with one
	// wake-up between them either could take the other's and leave it
	// waiting until its timeout.
	waits [2]waiter // [reading], [writing]

	ctx     streamCtx
	info    reqinfo.Info
	handler http.Handler
	req     *http.Request

	// The handler's goroutine only (response.go).
	resp response
}

// waiter is how one side of a stream, its body's reader or its
// response's writer, waits: with c.mu held a waker sends on wake, which
// is made at the side's first wait (most streams never wait).
type waiter struct {
	wake  chan struct{}
	timer *time.Timer
}

// The sides of a stream that wait.
const (
	reading = 0 // a handler's Read of the request body: for DATA, END_STREAM
	writing = 1 // a handler's Write: for flow-control credit, room in the output
)

// wakeLocked wakes side if it waits; it checks again what it waits for.
func (st *stream) wakeLocked(side int) {
	if w := st.waits[side].wake; w != nil {
		select {
		case w <- struct{}{}:
		default:
		}
	}
}

// wakeBothLocked wakes both sides (the stream was reset, the connection
// is gone).
func (st *stream) wakeBothLocked() {
	st.wakeLocked(reading)
	st.wakeLocked(writing)
}

// waitLocked waits, with c.mu released, until side is woken (true) or the
// deadline passes (false). connLevel waits for a change on the connection
// (flow-control credit, room in the output buffer).
func (st *stream) waitLocked(side int, deadline time.Time, connLevel bool) bool {
	c := st.c
	w := &st.waits[side]
	if w.wake == nil {
		w.wake = make(chan struct{}, 1)
	}
	if connLevel && !st.blocked {
		st.blocked = true
		c.blocked = append(c.blocked, st)
	}
	var tc <-chan time.Time
	if !deadline.IsZero() {
		d := time.Until(deadline)
		if d <= 0 {
			return false
		}
		if w.timer == nil {
			w.timer = time.NewTimer(d)
		} else {
			w.timer.Reset(d)
		}
		tc = w.timer.C
	}
	c.mu.Unlock()
	ok := true
	select {
	case <-w.wake:
	case <-tc:
		ok = false
	}
	if tc != nil {
		w.timer.Stop()
	}
	c.mu.Lock()
	return ok
}

// deadline is the earlier of t and timeout after since.
func deadline(t, since time.Time, timeout time.Duration) time.Time {
	if timeout <= 0 {
		return t
	}
	d := since.Add(timeout)
	if t.IsZero() || d.Before(t) {
		return d
	}
	return t
}

// lingerStream is how long a stream whose response is complete stays
// open for the rest of its request before edged resets it.
const lingerStream = 250 * time.Millisecond

// reqBody is a stream seen as its request's body.
type reqBody stream

func (b *reqBody) Read(p []byte) (int, error) {
	st := (*stream)(b)
	c := st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	var since time.Time
	if st.expect100 {
		st.expect100 = false
		if !st.finalSent && st.resetErr == nil && !st.remoteDone {
			c.writeHeadersLocked(st, 100, nil, false)
		}
	}
	for {
		if st.resetErr != nil {
			return 0, st.resetErr
		}
		if st.bodyClosed {
			return 0, http.ErrBodyReadAfterClose
		}
		if st.inOff < len(st.in) {
			n := copy(p, st.in[st.inOff:])
			st.inOff += n
			if st.inOff == len(st.in) {
				st.in, st.inOff = st.in[:0], 0
			}
			c.creditLocked(st, int64(n))
			return n, nil
		}
		if st.remoteDone {
			return 0, io.EOF
		}
		if len(p) == 0 {
			return 0, nil
		}
		// client_body_timeout runs from when this Read began to wait:
		// a frame that brings no body bytes (an empty DATA frame) does
		// not start it again.
		if since.IsZero() {
			since = time.Now()
		}
		if !st.waitLocked(reading, deadline(st.rDeadline, since, c.s.o.ClientBodyTimeout), false) {
			return 0, errBodyTimeout
		}
	}
}

func (b *reqBody) Close() error {
	st := (*stream)(b)
	c := st.c
	c.mu.Lock()
	st.closeBodyLocked()
	c.mu.Unlock()
	return nil
}

// closeBodyLocked drops what was received and not read; the connection
// gets the credit back.
func (st *stream) closeBodyLocked() {
	if st.bodyClosed {
		return
	}
	st.bodyClosed = true
	if n := len(st.in) - st.inOff; n > 0 {
		st.c.creditLocked(nil, int64(n))
	}
	st.in, st.inOff = nil, 0
}

// appendBodyLocked keeps data received for the handler.
func (st *stream) appendBodyLocked(data []byte) {
	if st.inOff > 0 && st.inOff >= len(st.in)/2 {
		n := copy(st.in, st.in[st.inOff:])
		st.in, st.inOff = st.in[:n], 0
	}
	st.in = append(st.in, data...)
}

// streamCtx is a request's context: cancelled when the stream is reset,
// the connection ends or the handler returns. Its Done channel is made
// only when someone asks, and AfterFunc lets context.WithCancel children
// register without a goroutine each.
type streamCtx struct {
	st     *stream
	parent context.Context
	mu     sync.Mutex
	done   chan struct{}
	err    error
	afters []*afterFunc
}

type afterFunc struct{ f func() }

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// reqinfoKey is the key edged/reqinfo stores its record under, learned
// once by asking a probe context, so that a stream's context answers
// with the stream's own record and needs no context.WithValue.
var reqinfoKey = func() any {
	var k any
	reqinfo.From(keyProbe{&k})
	return k
}()

type keyProbe struct{ k *any }

func (p keyProbe) Deadline() (time.Time, bool) { return time.Time{}, false }
func (p keyProbe) Done() <-chan struct{}       { return nil }
func (p keyProbe) Err() error                  { return nil }
func (p keyProbe) Value(k any) any             { *p.k = k; return nil }

func (x *streamCtx) Deadline() (time.Time, bool) { return time.Time{}, false }

func (x *streamCtx) Value(k any) any {
	if k == reqinfoKey {
		return &x.st.info
	}
	return x.parent.Value(k)
}

func (x *streamCtx) Done() <-chan struct{} {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.done == nil {
		if x.err != nil {
			return closedChan
		}
		x.done = make(chan struct{})
	}
	return x.done
}

func (x *streamCtx) Err() error {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.err
}

// AfterFunc is the interface package context uses for parents it does not
// know (context.AfterFunc and the cancellation of children).
func (x *streamCtx) AfterFunc(f func()) func() bool {
	x.mu.Lock()
	if x.err != nil {
		x.mu.Unlock()
		go f()
		return func() bool { return false }
	}
	a := &afterFunc{f: f}
	x.afters = append(x.afters, a)
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

func (x *streamCtx) cancel(err error) {
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
	x.afters = nil
}

// run serves the stream's request; on a goroutine of its own.
func (st *stream) run() {
	h, r := st.handler, st.req
	st.handler, st.req = nil, nil
	defer st.end()
	defer func() {
		if p := recover(); p != nil {
			if p != http.ErrAbortHandler {
				st.c.s.o.Log.Error("handler panicked; resetting the stream", "client", st.c.remote, "url", r.URL.String(), "panic", p)
			}
			st.resp.aborted = true
		}
	}()
	h.ServeHTTP(st, r)
}

// end completes the response (or resets the stream) when the handler
// returns, and gives back what the stream held.
func (st *stream) end() {
	c := st.c
	if !st.resp.aborted {
		st.finish()
	}
	c.mu.Lock()
	st.closeBodyLocked()
	if st.resetErr == nil {
		switch {
		case !st.localDone:
			// Aborted, or the response could not be completed.
			c.resetLocked(st, http2.ErrCodeInternal, true, errConnClosed)
		case !st.remoteDone:
			// RFC 9113 8.1: the response is complete; the client need
			// not send the rest of the request. Frames it has already
			// sent are read first (they may be errors to answer), and the
			// stream's window is not replenished meanwhile.
			time.AfterFunc(lingerStream, func() {
				c.mu.Lock()
				if c.streams[st.id] == st && st.resetErr == nil {
					c.resetLocked(st, http2.ErrCodeNo, true, errConnClosed)
				}
				c.mu.Unlock()
			})
		}
	}
	c.handlers--
	if c.open == 0 {
		c.idleLocked()
	}
	c.mu.Unlock()
	st.ctx.cancel(context.Canceled)
	st.resp.release()
}
