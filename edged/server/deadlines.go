package server

import (
	"io"
	"net/http"
	"time"
)

// client_body_timeout and send_timeout for engines that offer per-request
// deadlines through http.ResponseController (net/http's HTTP/1.1 and
// HTTP/2): a deadline is armed before reads of the body and writes of the
// response, so the time limit runs between two reads or two writes, as in
// nginx, not over the whole transfer. An engine that implements the two
// timeouts itself (edged/engine) skips this.
//
// Arming costs a timer update, so it is done lazily: again only when a
// quarter of the timeout has passed since the last arming. A read or write
// that starts then has at least three quarters of the timeout.

// deadliner is the part of an engine's ResponseWriter that
// http.ResponseController uses for deadlines.
type deadliner interface {
	SetReadDeadline(time.Time) error
	SetWriteDeadline(time.Time) error
}

// sendfileChunk is how much of a file one sendfile(2) call may send before
// the write deadline is armed again: a single call for a whole file would
// otherwise have to finish within send_timeout. A client slower than
// sendfileChunk per send_timeout (about 4 KB/s at the defaults) is cut off.
const sendfileChunk = 256 << 10

// armDeadlines sets up both timeouts for one request: the write deadline
// at once (net/http itself may write a 100 Continue), the read deadline at
// once when a body is expected, so that even a handler that never reads
// it (static files, respond) cannot leave the connection waiting for it:
// net/http reads and drops an unread body before it answers.
func (s *Server) armDeadlines(w http.ResponseWriter, rw *respWriter, body *countingBody, rt *runtime, now time.Time) {
	dl, ok := w.(deadliner)
	if _, native := w.(interface{ NativeTimeouts() }); !ok || native {
		return
	}
	if rt.sendTimeout > 0 {
		rw.wdl, rw.sendTimeout = dl, rt.sendTimeout
		rw.armWrite(now)
	}
	if body != nil && rt.bodyTimeout > 0 {
		body.dl, body.timeout = dl, rt.bodyTimeout
		body.armed = now
		_ = dl.SetReadDeadline(now.Add(rt.bodyTimeout))
	}
}

// armWrite moves the write deadline to send_timeout from now, unless it
// was moved less than a quarter of it ago.
func (w *respWriter) armWrite(now time.Time) {
	if w.wdl == nil || now.Sub(w.wArmed) < w.sendTimeout/4 {
		return
	}
	w.wArmed = now
	_ = w.wdl.SetWriteDeadline(now.Add(w.sendTimeout))
}

// finishDeadlines runs when the handler returns: net/http still writes
// what is buffered and, if the handler left the body unread, first reads
// and drops up to 256 KiB of it, so the write deadline must leave time
// for both.
func (w *respWriter) finishDeadlines(body *countingBody, now time.Time) {
	if w.wdl == nil {
		return
	}
	if body != nil && body.dl != nil && !body.done.Load() {
		w.wArmed = now
		_ = w.wdl.SetWriteDeadline(now.Add(body.timeout + w.sendTimeout))
		return
	}
	w.armWrite(now)
}

// armRead moves the read deadline before a read of the body.
func (b *countingBody) armRead() {
	now := time.Now()
	if now.Sub(b.armed) < b.timeout/4 {
		return
	}
	b.armed = now
	_ = b.dl.SetReadDeadline(now.Add(b.timeout))
}

// bodyDone lifts the read deadline once the body has been read: net/http
// then reads ahead on the connection to notice a client that leaves, and
// a deadline passing there would cancel the request's context.
func (b *countingBody) bodyDone(err error) {
	if err == io.EOF {
		b.done.Store(true)
		_ = b.dl.SetReadDeadline(time.Time{})
	}
}
