package h2

import (
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// response is the state of a stream's response, touched by the handler's
// goroutine only.
type response struct {
	header      http.Header
	status      int
	wroteHeader bool  // the final status is set
	sentHeader  bool  // its HEADERS frame is queued
	isHead      bool  // a HEAD request: the body is counted, not sent
	clen        int64 // the Content-Length the handler set, or -1
	written     int64 // body bytes the handler wrote
	buf         *[]byte
	trailers    []string // trailer names declared in the header when it was sent
	aborted     bool
}

var respBufs = sync.Pool{New: func() any { b := make([]byte, 0, respBufSize); return &b }}

func (w *response) release() {
	if w.buf != nil {
		*w.buf = (*w.buf)[:0]
		respBufs.Put(w.buf)
		w.buf = nil
	}
}

// Header implements http.ResponseWriter.
func (st *stream) Header() http.Header { return st.resp.header }

// WriteHeader implements http.ResponseWriter; a 1xx status other than
// 101 is sent at once as an interim response.
func (st *stream) WriteHeader(code int) {
	w := &st.resp
	if w.wroteHeader {
		return
	}
	if code < 100 || code > 999 {
		panic("invalid WriteHeader code " + strconv.Itoa(code))
	}
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		c := st.c
		c.mu.Lock()
		if st.resetErr == nil {
			c.writeHeadersLocked(st, code, w.header, false)
		}
		c.mu.Unlock()
		return
	}
	w.wroteHeader = true
	w.status = code
	w.clen = -1
	if v := w.header["Content-Length"]; len(v) == 1 {
		if n, err := strconv.ParseInt(v[0], 10, 64); err == nil && n >= 0 {
			w.clen = n
		}
	}
}

func bodyAllowed(status int) bool {
	return status != http.StatusNoContent && status != http.StatusNotModified && (status < 100 || status > 199)
}

// Write implements http.ResponseWriter: the body is buffered up to one
// frame's worth before anything is sent.
func (st *stream) Write(p []byte) (int, error) {
	w := &st.resp
	if !w.wroteHeader {
		st.WriteHeader(http.StatusOK)
	}
	if !bodyAllowed(w.status) {
		return 0, http.ErrBodyNotAllowed
	}
	if w.clen >= 0 && w.written+int64(len(p)) > w.clen {
		return 0, http.ErrContentLength
	}
	w.written += int64(len(p))
	if w.isHead {
		return len(p), nil
	}
	if w.buf == nil {
		w.buf = respBufs.Get().(*[]byte)
	}
	if len(*w.buf)+len(p) <= respBufSize {
		*w.buf = append(*w.buf, p...)
		return len(p), nil
	}
	if err := st.flush(false); err != nil {
		return 0, err
	}
	if len(p) < respBufSize {
		*w.buf = append(*w.buf, p...)
		return len(p), nil
	}
	if err := st.sendData(p, false); err != nil {
		return 0, err
	}
	return len(p), nil
}

// WriteString implements io.StringWriter.
func (st *stream) WriteString(s string) (int, error) {
	return st.Write(unsafeBytes(s))
}

// Flush implements http.Flusher.
func (st *stream) Flush() { st.FlushError() }

// FlushError sends the header and what is buffered (http.ResponseController).
func (st *stream) FlushError() error {
	if !st.resp.wroteHeader {
		st.WriteHeader(http.StatusOK)
	}
	return st.flush(false)
}

// flush queues the HEADERS frame if not yet sent and the buffered body.
func (st *stream) flush(end bool) error {
	w := &st.resp
	if !w.sentHeader {
		st.prepareHeader(false)
		empty := w.buf == nil || len(*w.buf) == 0
		if err := st.sendHeaders(end && empty); err != nil {
			return err
		}
		if end && empty {
			return nil
		}
	}
	var b []byte
	if w.buf != nil {
		b = *w.buf
		*w.buf = b[:0]
	}
	if len(b) == 0 && !end {
		return nil
	}
	return st.sendData(b, end)
}

// prepareHeader adds what net/http adds to a response header: Date, a
// sniffed Content-Type, and, when the handler has returned and the whole
// body is known, Content-Length.
func (st *stream) prepareHeader(final bool) {
	w := &st.resp
	h := w.header
	if _, ok := h["Date"]; !ok {
		h["Date"] = st.c.s.date.get()
	}
	if !bodyAllowed(w.status) {
		return
	}
	if w.buf != nil && len(*w.buf) > 0 {
		if _, ok := h["Content-Type"]; !ok {
			if _, ok := h["Content-Encoding"]; !ok {
				b := *w.buf
				h["Content-Type"] = []string{http.DetectContentType(b[:min(len(b), 512)])}
			}
		}
	}
	if final && w.clen < 0 && !st.hasTrailers() {
		if _, ok := h["Content-Length"]; !ok && (!w.isHead || w.written > 0) {
			h["Content-Length"] = []string{strconv.FormatInt(w.written, 10)}
		}
	}
}

// hasTrailers says whether the handler declared or set trailers.
func (st *stream) hasTrailers() bool {
	h := st.resp.header
	if _, ok := h["Trailer"]; ok {
		return true
	}
	for k := range h {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			return true
		}
	}
	return false
}

// finish completes the response when the handler returns.
func (st *stream) finish() {
	w := &st.resp
	if !w.wroteHeader {
		st.WriteHeader(http.StatusOK)
	}
	if !w.sentHeader {
		st.prepareHeader(true)
	}
	trailers := st.trailerFields()
	if trailers == nil {
		st.flush(true)
		return
	}
	if st.flush(false) != nil {
		return
	}
	c := st.c
	c.mu.Lock()
	if st.resetErr == nil && c.broken == nil {
		c.writeHeadersLocked(st, 0, trailers, true)
	}
	c.mu.Unlock()
}

// trailerFields collects the trailers set after the header was sent:
// those declared in its Trailer field and any under http.TrailerPrefix.
func (st *stream) trailerFields() http.Header {
	w := &st.resp
	var t http.Header
	for _, k := range w.trailers {
		if vv := w.header[k]; len(vv) > 0 {
			if t == nil {
				t = http.Header{}
			}
			t[k] = vv
		}
	}
	for k, vv := range w.header {
		if strings.HasPrefix(k, http.TrailerPrefix) && len(vv) > 0 {
			if t == nil {
				t = http.Header{}
			}
			t[http.CanonicalHeaderKey(k[len(http.TrailerPrefix):])] = vv
		}
	}
	return t
}

// sendHeaders queues the response's HEADERS frame.
func (st *stream) sendHeaders(end bool) error {
	w := &st.resp
	w.sentHeader = true
	for _, v := range w.header["Trailer"] {
		for _, k := range strings.Split(v, ",") {
			if k = strings.TrimSpace(k); k != "" {
				w.trailers = append(w.trailers, http.CanonicalHeaderKey(k))
			}
		}
	}
	c := st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := st.writableLocked(); err != nil {
		return err
	}
	c.writeHeadersLocked(st, w.status, w.header, end)
	return nil
}

func (st *stream) writableLocked() error {
	if st.resetErr != nil {
		return st.resetErr
	}
	if st.c.broken != nil || st.c.closing {
		return errConnClosed
	}
	return nil
}

// sendData queues p as DATA frames as flow control allows, waiting for
// credit (and for room in the output buffer) up to send_timeout.
func (st *stream) sendData(p []byte, end bool) error {
	c := st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	var since time.Time // the stream's last progress, once it waits
	for {
		if err := st.writableLocked(); err != nil {
			return err
		}
		if len(p) == 0 {
			if end {
				c.writeDataLocked(st.id, true, nil)
				st.endLocalLocked()
			}
			return nil
		}
		n := min(int64(len(p)), st.sendWindow, c.sendWindow, int64(c.peerMaxFrame))
		if full := len(c.out) >= outBufferLimit; n <= 0 || full {
			// send_timeout runs from the stream's last progress: credit
			// it could send with, or, while the output buffer is full, a
			// write of it to the socket. Frames that bring neither (a
			// PING, whose answer is written too) do not start it again.
			if since.IsZero() || full {
				since = time.Now()
			}
			connLevel := full || c.sendWindow <= 0
			if !st.waitLocked(writing, deadline(st.wDeadline, since, c.s.o.SendTimeout), connLevel) {
				c.resetLocked(st, http2.ErrCodeCancel, true, errSendTimeout)
				return errSendTimeout
			}
			continue
		}
		last := end && n == int64(len(p))
		c.writeDataLocked(st.id, last, p[:n])
		st.sendWindow -= n
		c.sendWindow -= n
		p = p[n:]
		since = time.Time{}
		if last {
			st.endLocalLocked()
			return nil
		}
	}
}

// writeDataLocked queues a DATA frame. It is the one frame edged lays out
// itself: the Framer would copy the payload into a buffer of its own
// before the output queue copied it again, and a DATA frame is a 9-byte
// header (RFC 9113 4.1, 6.1) in front of the bytes.
func (c *conn) writeDataLocked(id uint32, end bool, p []byte) {
	var flags byte
	if end {
		flags = byte(http2.FlagDataEndStream)
	}
	n := len(p)
	outWriter{c}.Write([]byte{byte(n >> 16), byte(n >> 8), byte(n), byte(http2.FrameData), flags,
		byte(id >> 24 & 0x7f), byte(id >> 16), byte(id >> 8), byte(id)})
	c.out = append(c.out, p...)
}

// endLocalLocked notes END_STREAM sent.
func (st *stream) endLocalLocked() {
	st.localDone = true
	if st.remoteDone {
		st.c.closeStreamLocked(st)
	}
}

// writeHeadersLocked queues a HEADERS frame (and CONTINUATIONs) for a
// status (0: trailers) and header fields, with END_STREAM if end.
func (c *conn) writeHeadersLocked(st *stream, status int, h http.Header, end bool) {
	c.hbuf.Reset()
	if status != 0 {
		c.henc.WriteField(hpack.HeaderField{Name: ":status", Value: statusText(status)})
	}
	for k, vv := range h {
		if skipResponseField(k) {
			continue
		}
		name := lowerName(k)
		never := neverIndexed(k)
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				continue // net/http drops these too
			}
			c.henc.WriteField(hpack.HeaderField{Name: name, Value: v, Sensitive: never})
		}
	}
	if status >= 200 {
		st.finalSent = true
	}
	block := c.hbuf.Bytes()
	max := int(c.peerMaxFrame)
	first := block
	if len(first) > max {
		first = first[:max]
	}
	block = block[len(first):]
	c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: st.id, BlockFragment: first, EndStream: end, EndHeaders: len(block) == 0})
	for len(block) > 0 {
		frag := block[:min(len(block), max)]
		block = block[len(frag):]
		c.fr.WriteContinuation(st.id, len(block) == 0, frag)
	}
	if end {
		st.endLocalLocked()
	}
}

// skipResponseField drops what HTTP/2 forbids in a response (RFC 9113
// 8.2.2) and what only HTTP/1.1 or the handler's trailer convention use.
func skipResponseField(k string) bool {
	switch k {
	case "Connection", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding", "Upgrade":
		return true
	}
	return strings.HasPrefix(k, http.TrailerPrefix)
}

// neverIndexed names fields kept out of the HPACK dynamic table: a
// request ID is new on every response, and entering it would only evict
// entries that do repeat (Date, Content-Type, Alt-Svc, ...); a cookie is
// a secret (RFC 7541 7.1.3).
func neverIndexed(k string) bool {
	return k == "X-Request-Id" || k == "Set-Cookie"
}

var statusTexts = func() (t [600]string) {
	for i := 100; i < len(t); i++ {
		t[i] = strconv.Itoa(i)
	}
	return
}()

func statusText(code int) string {
	if code < len(statusTexts) {
		return statusTexts[code]
	}
	return strconv.Itoa(code)
}

// SetReadDeadline, SetWriteDeadline and EnableFullDuplex are what
// http.ResponseController uses; reads and writes wait until the earlier
// of these deadlines and the configured timeouts.
func (st *stream) SetReadDeadline(t time.Time) error {
	st.c.mu.Lock()
	st.rDeadline = t
	st.wakeLocked(reading)
	st.c.mu.Unlock()
	return nil
}

func (st *stream) SetWriteDeadline(t time.Time) error {
	st.c.mu.Lock()
	st.wDeadline = t
	st.wakeLocked(writing)
	st.c.mu.Unlock()
	return nil
}

// EnableFullDuplex: an HTTP/2 stream is always full duplex.
func (st *stream) EnableFullDuplex() error { return nil }

// NativeTimeouts tells edged/server that client_body_timeout and
// send_timeout are applied here.
func (st *stream) NativeTimeouts() {}
