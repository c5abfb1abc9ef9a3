package engine

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edgeapp/edgeapp/edged/httpwire"
)

// response is the http.ResponseWriter of one request, reused for the next
// request on the connection (a handler must not use it after it returns,
// as with net/http). A body of unknown length is held back up to 4 KiB,
// so that a handler that writes little and returns is answered with
// Content-Length and its head and body in one write; beyond that, or on
// Flush, the body is chunked (HTTP/1.0: delimited by the close).
type response struct {
	c      *conn
	req    *http.Request
	header http.Header
	status int

	wroteHeader bool // a final status was set
	committed   bool // the head is in the write buffer
	bodyAllowed bool
	isHEAD      bool
	chunked     bool
	aborted     bool
	declared    int64 // the handler's Content-Length, -1 if none
	written     int64 // body bytes accepted from the handler

	stagep *[]byte // body held back before the head is written
}

func (w *response) reset(r *http.Request) {
	clear(w.header)
	*w = response{c: w.c, req: r, header: w.header, declared: -1, isHEAD: r.Method == http.MethodHead}
}

func (w *response) Header() http.Header { return w.header }

func (w *response) WriteHeader(code int) {
	if w.c.hijacked || w.wroteHeader {
		return
	}
	if code < 100 || code > 999 {
		panic("invalid WriteHeader code " + strconv.Itoa(code))
	}
	if code < 200 && code != http.StatusSwitchingProtocols {
		w.writeInterim(code)
		return
	}
	w.wroteHeader, w.status = true, code
	w.bodyAllowed = !w.isHEAD && code >= 200 && code != 204 && code != 304
	if cl, ok := w.header["Content-Length"]; ok {
		if n, valid := parseLength(cl); valid {
			w.declared = n
		} else {
			delete(w.header, "Content-Length")
		}
	}
}

func parseLength(v []string) (int64, bool) {
	if len(v) != 1 || v[0] == "" {
		return 0, false
	}
	n, err := strconv.ParseInt(strings.TrimSpace(v[0]), 10, 64)
	return n, err == nil && n >= 0
}

// writeInterim sends a 1xx response with the fields set so far (103 Early
// Hints), as net/http does.
func (w *response) writeInterim(code int) {
	c := w.c
	if w.committed {
		return
	}
	if code == http.StatusContinue {
		if !c.expect100 || c.continueSent {
			return
		}
		c.continueSent = true
	}
	b := httpwire.AppendStatusLine(c.bw.AvailableBuffer(), code)
	b = httpwire.AppendHeader(b, w.header)
	b = append(b, '\r', '\n')
	c.bw.Write(b)
	c.bw.Flush()
}

func (w *response) Write(p []byte) (int, error) {
	if w.c.hijacked {
		return 0, http.ErrHijacked
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if len(p) == 0 {
		return 0, nil
	}
	if !w.bodyAllowed {
		if w.isHEAD {
			w.written += int64(len(p))
			return len(p), nil
		}
		return 0, http.ErrBodyNotAllowed
	}
	var short bool
	if w.declared >= 0 && w.written+int64(len(p)) > w.declared {
		p = p[:w.declared-w.written]
		short = true
	}
	if !w.committed {
		if w.declared < 0 {
			if w.stagep == nil {
				w.stagep = w.c.s.bufs.getStage()
			}
			if s := *w.stagep; len(s)+len(p) <= cap(s) {
				*w.stagep = append(s, p...)
				w.written += int64(len(p))
				return len(p), nil
			}
		}
		if err := w.commit(false, p); err != nil {
			return 0, err
		}
	}
	n, err := w.writeBody(p)
	w.written += int64(n)
	if err == nil && short {
		err = http.ErrContentLength
	}
	return n, err
}

func (w *response) WriteString(s string) (int, error) {
	// Through Write: a handler's string is copied into the buffer anyway.
	return w.Write(unsafeBytes(s))
}

// writeBody writes body bytes after the head, framed as decided.
func (w *response) writeBody(p []byte) (int, error) {
	bw := w.c.bw
	if !w.chunked {
		return bw.Write(p)
	}
	bw.Write(httpwire.AppendChunkHeader(bw.AvailableBuffer(), len(p)))
	n, err := bw.Write(p)
	if err == nil {
		_, err = bw.Write(crlf)
	}
	return n, err
}

var crlf = []byte("\r\n")

// commit writes the head into the buffer, deciding the framing; final
// says the handler has returned, so a body held back is all there is.
// first is the start of the body, for Content-Type sniffing.
func (w *response) commit(final bool, first []byte) error {
	c, h := w.c, w.header
	var staged []byte
	if w.stagep != nil {
		staged = *w.stagep
		if len(staged) > 0 {
			first = staged
		}
	}
	if v, ok := h["Connection"]; ok {
		for _, s := range v {
			if hasToken(s, "close") {
				c.closeAfter = true
			}
		}
		delete(h, "Connection")
	}
	if c.s.closing.Load() {
		c.closeAfter = true
	}
	if b, ok := w.req.Body.(*body); ok && final {
		// Decide now whether the connection can serve another request,
		// so that the head says so (as net/http does).
		b.finish()
	} else if c.expect100 && !c.continueSent {
		c.closeAfter = true // the client may or may not send the body
	}
	teChunked := false
	if v, ok := h["Transfer-Encoding"]; ok {
		teChunked = len(v) > 0 && strings.EqualFold(v[0], "chunked")
		delete(h, "Transfer-Encoding")
	}
	trailers := len(h["Trailer"]) > 0 || final && hasTrailerKeys(h)
	var length int64 = -1
	switch {
	case !w.bodyAllowed:
		switch {
		case w.status < 200 || w.status == 204:
			delete(h, "Content-Length")
		case w.isHEAD && w.declared < 0 && final && w.written > 0:
			length = w.written
		}
	case w.declared >= 0 && !trailers && !teChunked:
		// The handler's Content-Length is in h.
	case final && !trailers && !teChunked:
		length = int64(len(staged))
	case w.req.ProtoMinor == 1:
		w.chunked = true
		delete(h, "Content-Length")
		w.declared = -1
	default:
		c.closeAfter = true // HTTP/1.0: the close ends the body
		delete(h, "Content-Length")
		w.declared = -1
	}
	if _, ok := h["Content-Type"]; !ok && w.bodyAllowed && !teChunked && len(first) > 0 {
		h["Content-Type"] = []string{http.DetectContentType(first)}
	}
	b := httpwire.AppendStatusLine(c.bw.AvailableBuffer(), w.status)
	if _, ok := h["Date"]; !ok {
		b = append(b, c.s.date.get(time.Now())...)
	}
	for name, values := range h {
		if strings.HasPrefix(name, http.TrailerPrefix) {
			continue
		}
		for _, v := range values {
			b = httpwire.AppendField(b, name, v)
		}
	}
	if length >= 0 {
		b = append(b, "Content-Length: "...)
		b = appendInt(b, length)
		b = append(b, '\r', '\n')
	}
	if w.chunked {
		b = append(b, "Transfer-Encoding: chunked\r\n"...)
	}
	switch {
	case c.closeAfter:
		b = append(b, "Connection: close\r\n"...)
	case w.req.ProtoMinor == 0:
		b = append(b, "Connection: keep-alive\r\n"...)
	}
	b = append(b, '\r', '\n')
	w.committed = true
	_, err := c.bw.Write(b)
	if err == nil && len(staged) > 0 {
		_, err = w.writeBody(staged)
	}
	if w.stagep != nil {
		c.s.bufs.putStage(w.stagep)
		w.stagep = nil
	}
	return err
}

func hasToken(v, token string) bool {
	for _, t := range strings.Split(v, ",") {
		if strings.EqualFold(strings.TrimSpace(t), token) {
			return true
		}
	}
	return false
}

func hasTrailerKeys(h http.Header) bool {
	for k := range h {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			return true
		}
	}
	return false
}

// finish completes the response after the handler returned.
func (w *response) finish() {
	c := w.c
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.committed {
		w.commit(true, nil)
	}
	if w.chunked {
		b := append(c.bw.AvailableBuffer(), "0\r\n"...)
		b = w.appendTrailers(b)
		b = append(b, '\r', '\n')
		c.bw.Write(b)
	}
	if w.bodyAllowed && w.declared >= 0 && w.written < w.declared {
		c.closeAfter = true // a short body: only the close tells the client
	}
}

// abort ends the response of a handler that panicked: a chunked body is
// left unterminated and the connection closes, so the client sees the
// response fail rather than end.
func (w *response) abort() {
	c := w.c
	c.closeAfter = true
	if !w.committed && !w.wroteHeader {
		w.header = http.Header{}
		w.WriteHeader(http.StatusInternalServerError)
		w.declared = 0
		w.commit(true, nil)
	}
	if w.stagep != nil {
		c.s.bufs.putStage(w.stagep)
		w.stagep = nil
	}
}

func (w *response) appendTrailers(b []byte) []byte {
	h := w.header
	for _, decl := range h["Trailer"] {
		for _, name := range strings.Split(decl, ",") {
			name = http.CanonicalHeaderKey(strings.TrimSpace(name))
			for _, v := range h[name] {
				b = httpwire.AppendField(b, name, v)
			}
		}
	}
	for k, vs := range h {
		if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok {
			for _, v := range vs {
				b = httpwire.AppendField(b, name, v)
			}
		}
	}
	return b
}

// Flush sends the head and what was written so far.
func (w *response) Flush() { w.FlushError() }

// FlushError is Flush for http.ResponseController, with the error.
func (w *response) FlushError() error {
	if w.c.hijacked {
		return http.ErrHijacked
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.committed {
		if err := w.commit(false, nil); err != nil {
			return err
		}
	}
	return w.c.bw.Flush()
}

// ReadFrom sends a file with sendfile(2) on a plain TCP connection when
// the length is known (static files); anything else is copied.
func (w *response) ReadFrom(src io.Reader) (int64, error) {
	if w.c.hijacked {
		return 0, http.ErrHijacked
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	f, limit := fileOf(src)
	if f == nil || w.c.tcp == nil || !w.bodyAllowed || w.declared < 0 || w.committed && w.chunked {
		return w.copyFrom(src)
	}
	if !w.committed {
		if err := w.commit(false, nil); err != nil {
			return 0, err
		}
	}
	// The head leaves with the file's first bytes (MSG_MORE), as nginx's
	// tcp_nopush does, not in a packet of its own.
	w.c.out.more = true
	err := w.c.bw.Flush()
	w.c.out.more = false
	if err != nil {
		return 0, err
	}
	limit = min(limit, w.declared-w.written)
	n, err := w.c.sendfile(f, limit)
	w.written += n
	if lr, ok := src.(*io.LimitedReader); ok {
		lr.N -= n
	}
	if err == nil && n < limit {
		return n, io.ErrUnexpectedEOF
	}
	return n, err
}

func fileOf(src io.Reader) (*os.File, int64) {
	switch v := src.(type) {
	case *os.File:
		return v, 1<<63 - 1
	case *io.LimitedReader:
		if f, ok := v.R.(*os.File); ok {
			return f, v.N
		}
	}
	return nil, 0
}

func (w *response) copyFrom(src io.Reader) (int64, error) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	return io.CopyBuffer(writerOnly{w}, src, *bp)
}

type writerOnly struct{ io.Writer }

// sendfile sends up to limit bytes of f from its current offset, with
// send_timeout between two writes that made progress.
func (c *conn) sendfile(f *os.File, limit int64) (int64, error) {
	off, err := f.Seek(0, io.SeekCurrent)
	if err != nil {
		return 0, err
	}
	fc, err := f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var sent int64
	var serr error
	ctlErr := fc.Control(func(ffd uintptr) {
		for sent < limit && serr == nil {
			c.setWriteDeadline(c.s.o.SendTimeout)
			progressed := false
			werr := c.raw.Write(func(sfd uintptr) bool {
				for sent < limit {
					n, err := unix.Sendfile(int(sfd), int(ffd), &off, int(min(limit-sent, 1<<30)))
					if n > 0 {
						sent += int64(n)
						progressed = true
					}
					switch {
					case err == unix.EAGAIN:
						return progressed // wait for room only if nothing went out
					case err == unix.EINTR:
						continue
					case err != nil:
						serr = err
						return true
					case n == 0:
						serr = io.ErrUnexpectedEOF // the file shrank
						return true
					}
				}
				return true
			})
			if werr != nil {
				serr = werr
			}
		}
	})
	if ctlErr != nil && serr == nil {
		serr = ctlErr
	}
	f.Seek(off, io.SeekStart)
	if serr != nil {
		c.closeAfter = true
		if serr == io.ErrUnexpectedEOF {
			return sent, nil
		}
	}
	return sent, serr
}

// Hijack hands the connection to the handler (Upgrade): what the client
// sent beyond the request is in the returned reader.
func (w *response) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c := w.c
	if c.hijacked {
		return nil, nil, http.ErrHijacked
	}
	if w.committed {
		if err := c.bw.Flush(); err != nil {
			return nil, nil, err
		}
	}
	c.rctx.Load().stopWatch()
	c.hijacked = true
	c.setState(http.StateHijacked)
	var rd io.Reader = c.rwc
	if left := c.unread(); len(left) > 0 {
		rd = io.MultiReader(&byteReader{b: left}, c.rwc)
	}
	c.r, c.w = 0, 0
	rw := bufio.NewReadWriter(bufio.NewReader(rd), bufio.NewWriter(c.rwc))
	return c.rwc, rw, nil
}

type byteReader struct{ b []byte }

func (r *byteReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}

// SetReadDeadline and SetWriteDeadline serve http.ResponseController: the
// handler's deadlines replace the engine's timeouts until the request ends.
func (w *response) SetReadDeadline(t time.Time) error {
	w.c.userDL = true
	w.c.readDL = t
	return w.c.rwc.SetReadDeadline(t)
}

func (w *response) SetWriteDeadline(t time.Time) error {
	w.c.userDL = true
	w.c.writeDL = t
	return w.c.rwc.SetWriteDeadline(t)
}

// NativeTimeouts tells edged's server layer that this engine applies
// client_body_timeout and send_timeout itself (between two reads, between
// two writes), so it arms no per-request deadlines of its own.
func (w *response) NativeTimeouts() {}

// EnableFullDuplex: the engine always lets a handler read the request
// body while it writes the response.
func (w *response) EnableFullDuplex() error { return nil }
