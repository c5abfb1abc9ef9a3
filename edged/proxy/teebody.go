package proxy

import (
	"errors"
	"io"
	"sync"
)

// teeBody is a client's request body streamed to HTTP/2 upstreams (gRPC
// above all, whose bodies are never buffered), kept replayable while it is
// small: what has been read of it stays in memory up to max bytes, so that
// a request the server refused or never began (REFUSED_STREAM, GOAWAY)
// can be sent again from the start, to the same server or another.
//
// Each attempt reads through its own view. One goroutine (the pump) reads
// the client's body, and only when a view asks for more, so nothing is
// read ahead of the upstream; a view that x/net closes (its stream was
// aborted) returns at once, even while the pump waits for the client,
// which x/net needs before it can return and the request can go again.
// A newer view makes the older ones stale: they read nothing more, and
// what the pump read for them stays in memory for the newer one.
type teeBody struct {
	src io.ReadCloser // the client's body
	max int64
	// interrupt ends a read of src that waits for the client (a read
	// deadline in the past), so that the request can end while its
	// client still sends.
	interrupt func()

	mu      sync.Mutex
	cond    sync.Cond
	buf     []byte // bytes from base on, read from src and not yet dropped
	base    int64  // stream offset of buf[0]
	keeping bool   // buf holds everything from offset 0: views may start over
	err     error  // src's end: io.EOF or a *clientBodyError
	want    bool   // a view waits for the pump to read more
	stopped bool   // the request is over: the pump exits
	pumping bool   // the pump goroutine was started
	inRead  bool   // the pump waits in src.Read
	cur     *teeView
	exited  chan struct{}
}

// teeView is one attempt's reading of a teeBody.
type teeView struct {
	t      *teeBody
	off    int64 // stream offset of the next byte this view returns
	closed bool
}

// errStaleView ends the reading of an attempt that was given up.
var errStaleView = errors.New("request body: the attempt was given up")

func newTeeBody(src io.ReadCloser, max int64) *teeBody {
	t := &teeBody{src: src, max: max, keeping: true, exited: make(chan struct{})}
	t.cond.L = &t.mu
	return t
}

// view starts a new reading from the beginning, or returns nil when more
// than max bytes went by and the start is gone.
func (t *teeBody) view() *teeView {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.keeping || t.stopped {
		return nil
	}
	v := &teeView{t: t}
	t.cur = v
	t.cond.Broadcast() // stale views waiting for data give up
	return v
}

// replayable reports whether a new view can start from the beginning.
func (t *teeBody) replayable() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.keeping && !t.stopped
}

// clientErr is the client's failure to send its body, if any.
func (t *teeBody) clientErr() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if cb, ok := t.err.(*clientBodyError); ok {
		return cb
	}
	return nil
}

func (v *teeView) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	t := v.t
	t.mu.Lock()
	defer t.mu.Unlock()
	for {
		if v.closed || v != t.cur || t.stopped {
			return 0, errStaleView
		}
		if end := t.base + int64(len(t.buf)); v.off < end {
			n := copy(p, t.buf[v.off-t.base:])
			v.off += int64(n)
			t.trim()
			return n, nil
		}
		if t.err != nil {
			return 0, t.err
		}
		t.want = true
		if !t.pumping {
			t.pumping = true
			go t.pump()
		}
		t.cond.Broadcast()
		t.cond.Wait()
	}
}

// Close gives the view up; x/net calls it when it is done with a stream.
func (v *teeView) Close() error {
	t := v.t
	t.mu.Lock()
	v.closed = true
	t.cond.Broadcast()
	t.mu.Unlock()
	return nil
}

// trim drops what the current view has read once the body is too long to
// start over; t.mu is held.
func (t *teeBody) trim() {
	if t.keeping && t.base+int64(len(t.buf)) > t.max {
		t.keeping = false
	}
	if t.keeping || t.cur == nil {
		return
	}
	if done := t.cur.off - t.base; done > 0 {
		n := copy(t.buf, t.buf[done:])
		t.buf = t.buf[:n]
		t.base = t.cur.off
	}
}

// pump reads the client's body whenever a view wants more, until its end
// or the request's.
func (t *teeBody) pump() {
	defer close(t.exited)
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	chunk := (*bp)[:16<<10]
	t.mu.Lock()
	for {
		for !t.want && !t.stopped {
			t.cond.Wait()
		}
		if t.stopped {
			t.mu.Unlock()
			return
		}
		t.want = false
		t.inRead = true
		t.mu.Unlock()
		n, err := t.src.Read(chunk)
		t.mu.Lock()
		t.inRead = false
		t.buf = append(t.buf, chunk[:n]...)
		if err != nil {
			if err != io.EOF {
				err = &clientBodyError{err}
			}
			t.err = err
		}
		t.trim()
		t.cond.Broadcast()
		if err != nil {
			t.mu.Unlock()
			return
		}
	}
}

// stop ends the request's use of the body: views return, and the pump is
// stopped (closing the client's body ends a read it is waiting in) and
// waited for, so nothing reads the body after the handler returns.
func (t *teeBody) stop() {
	t.mu.Lock()
	t.stopped = true
	pumping, reading := t.pumping, t.inRead
	t.cond.Broadcast()
	t.mu.Unlock()
	if reading {
		// Only then: a past read deadline would also end an HTTP/1.1
		// client's kept-alive connection.
		if t.interrupt != nil {
			t.interrupt()
		}
		t.src.Close()
	}
	if pumping {
		<-t.exited
	}
}
