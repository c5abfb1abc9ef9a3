package compress

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
)

type state uint8

const (
	undecided   state = iota // buffering up to minSize
	passthrough              // identity: bytes go straight to rw
	compressing              // bytes go through enc
)

// responseWriter decides, from the response headers and the first minSize
// bytes, whether to compress, then either passes bytes through or encodes
// them. Pooled per middleware; reset by release.
type responseWriter struct {
	m        *middleware
	rw       http.ResponseWriter
	enc      int  // index into m.codings, -1 when the client accepts none
	head     bool // HEAD: decide headers as for GET, write no body
	state    state
	code     int // status held back while undecided; 0 = not yet set
	buf      []byte
	e        encoder
	pooled   any // what e came from, returned to the coding's pool
	hijacked bool
}

var (
	varyAE                = []string{"Accept-Encoding"}
	bufPool               = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}
	_       http.Flusher  = (*responseWriter)(nil)
	_       http.Hijacker = (*responseWriter)(nil)
	_       io.ReaderFrom = (*responseWriter)(nil)
)

func (w *responseWriter) Header() http.Header { return w.rw.Header() }

// Unwrap lets http.ResponseController reach the connection's writer for
// deadlines and full duplex.
func (w *responseWriter) Unwrap() http.ResponseWriter { return w.rw }

func (w *responseWriter) WriteHeader(code int) {
	if w.state != undecided {
		w.rw.WriteHeader(code) // net/http reports the superfluous call
		return
	}
	if code < 200 {
		// Informational (103 Early Hints): send now, decide on the final one.
		w.rw.WriteHeader(code)
		return
	}
	if w.code != 0 {
		return
	}
	w.code = code
	w.decideEarly()
}

// decideEarly decides from headers alone when it can, so that responses
// with a known length are never buffered.
func (w *responseWriter) decideEarly() {
	h := w.rw.Header()
	if !w.eligible(h) {
		w.startPassthrough(false)
		return
	}
	cl := h["Content-Length"]
	if len(cl) == 0 {
		return
	}
	n, err := strconv.ParseInt(cl[0], 10, 64)
	if err != nil || n < int64(w.m.minSize) {
		w.startPassthrough(false)
		return
	}
	if len(h["Content-Type"]) == 0 {
		return // needs the first bytes to sniff the type
	}
	w.start()
}

// eligible reports whether the response may be compressed for some client,
// from its status and headers; the content type is checked when known.
func (w *responseWriter) eligible(h http.Header) bool {
	switch w.code {
	case http.StatusNoContent, http.StatusPartialContent, http.StatusNotModified:
		return false
	}
	if ce := h["Content-Encoding"]; len(ce) > 0 && ce[0] != "" && !equalFold(ce[0], "identity") {
		return false
	}
	if len(h["Content-Range"]) > 0 {
		return false
	}
	for _, cc := range h["Cache-Control"] {
		if containsFold(cc, "no-transform") {
			return false
		}
	}
	if ct := h["Content-Type"]; len(ct) > 0 {
		mt := mediaType(ct[0])
		if !w.m.types.match(mt) || Incompressible(mt) {
			return false
		}
	}
	return true
}

// decide is called when the body reached minSize (final=false) or the
// handler finished or flushed (final=true, with small=true when the whole
// body stayed under minSize).
// next is the write that triggered the decision, not yet in buf.
func (w *responseWriter) decide(small bool, next []byte) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	h := w.rw.Header()
	if ct, ok := h["Content-Type"]; ok && len(ct) == 0 {
		// Explicitly typeless (net/http's "do not sniff"): leave it alone.
		w.startPassthrough(small)
		return
	}
	if len(h["Content-Type"]) == 0 && len(w.buf)+len(next) > 0 {
		// Sniff now: once compressed, net/http would sniff gzip bytes.
		sniff := w.buf
		if len(sniff) < 512 && len(next) > 0 {
			sniff = append(sniff[:len(sniff):len(sniff)], next[:min(len(next), 512-len(sniff))]...)
		}
		h["Content-Type"] = []string{http.DetectContentType(sniff)}
	}
	if !w.eligible(h) || len(h["Content-Type"]) == 0 {
		w.startPassthrough(small)
		return
	}
	if small {
		addVary(h) // a larger body of the same resource would be compressed
		w.startPassthrough(true)
		return
	}
	w.start()
}

// start switches to compressing (or, when the client accepts no coding,
// to identity with Vary) and sends the held status.
func (w *responseWriter) start() {
	h := w.rw.Header()
	addVary(h)
	if w.enc < 0 {
		w.startPassthrough(false)
		return
	}
	c := w.m.codings[w.enc]
	h["Content-Encoding"] = c.value
	delete(h, "Content-Length")
	delete(h, "Accept-Ranges") // ranges would address the identity bytes
	if et := h["Etag"]; len(et) > 0 && strings.HasPrefix(et[0], `"`) {
		// The coded bytes differ from the identity representation: a strong
		// validator would now be wrong. Weak still lets If-None-Match
		// (weak comparison) revalidate.
		h["Etag"] = []string{"W/" + et[0]}
	}
	w.state = compressing
	w.rw.WriteHeader(w.code)
	if !w.head {
		w.pooled = c.pool.Get()
		w.e = c.reset(w.pooled, w)
	}
	if len(w.buf) > 0 {
		b := w.buf
		w.buf = w.buf[:0]
		w.writeEncoded(b)
	}
}

// startPassthrough sends the held status and buffered bytes unchanged.
// With setLength, the whole body is in buf and gets a Content-Length.
func (w *responseWriter) startPassthrough(setLength bool) {
	w.state = passthrough
	h := w.rw.Header()
	if w.code == http.StatusNotModified && w.enc >= 0 {
		// Match the validator of the 200 this revalidates, which was
		// weakened if it was compressed; weak comparison makes it harmless
		// otherwise.
		if et := h["Etag"]; len(et) > 0 && strings.HasPrefix(et[0], `"`) {
			h["Etag"] = []string{"W/" + et[0]}
		}
		addVary(h)
	}
	if setLength && !w.head && len(h["Content-Length"]) == 0 && bodyAllowed(w.code) {
		h["Content-Length"] = []string{strconv.Itoa(len(w.buf))}
	}
	if w.code != 0 {
		w.rw.WriteHeader(w.code)
	}
	if len(w.buf) > 0 {
		b := w.buf
		w.buf = w.buf[:0]
		w.rw.Write(b)
	}
}

func bodyAllowed(code int) bool {
	return code >= 200 && code != http.StatusNoContent && code != http.StatusNotModified
}

func (w *responseWriter) writeEncoded(p []byte) (int, error) {
	if w.e == nil { // HEAD
		return len(p), nil
	}
	return w.e.Write(p)
}

func (w *responseWriter) Write(p []byte) (int, error) {
	switch w.state {
	case passthrough:
		return w.rw.Write(p)
	case compressing:
		return w.writeEncoded(p)
	}
	if w.code == 0 {
		w.code = http.StatusOK
		w.decideEarly()
		if w.state != undecided {
			return w.Write(p)
		}
	}
	if len(w.buf)+len(p) < w.m.minSize {
		if w.buf == nil {
			w.buf = make([]byte, 0, w.m.minSize)
		}
		w.buf = append(w.buf, p...)
		return len(p), nil
	}
	w.decide(false, p)
	return w.Write(p)
}

// ReadFrom keeps sendfile working for responses passed through unchanged
// (a static file that is an image, or a precompressed sidecar): io.Copy
// from an *os.File reaches the connection's ReadFrom.
func (w *responseWriter) ReadFrom(src io.Reader) (int64, error) {
	if w.state == undecided && w.code == 0 {
		w.code = http.StatusOK
		w.decideEarly()
	}
	var n int64
	for w.state == undecided {
		if w.buf == nil {
			w.buf = make([]byte, 0, w.m.minSize)
		}
		k, err := src.Read(w.buf[len(w.buf):cap(w.buf)])
		w.buf = w.buf[:len(w.buf)+k]
		n += int64(k)
		if len(w.buf) == cap(w.buf) {
			w.decide(false, nil)
		}
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
	if w.state == passthrough {
		if rf, ok := w.rw.(io.ReaderFrom); ok {
			k, err := rf.ReadFrom(src)
			return n + k, err
		}
	}
	bp := bufPool.Get().(*[]byte)
	// writerOnly hides ReadFrom so CopyBuffer does not recurse into it;
	// readerOnly hides *os.File's WriteTo, whose generic path allocates.
	k, err := io.CopyBuffer(writerOnly{w}, readerOnly{src}, *bp)
	bufPool.Put(bp)
	return n + k, err
}

type writerOnly struct{ w io.Writer }

func (w writerOnly) Write(p []byte) (int, error) { return w.w.Write(p) }

type readerOnly struct{ r io.Reader }

func (r readerOnly) Read(p []byte) (int, error) { return r.r.Read(p) }

// Flush sends what is buffered so far. An undecided response is decided as
// if it were large: a handler that flushes is streaming (SSE), and its
// total size is unknown.
func (w *responseWriter) Flush() {
	if w.hijacked {
		return
	}
	if w.state == undecided {
		w.decide(false, nil)
	}
	if w.e != nil {
		w.e.Flush()
	}
	http.NewResponseController(w.rw).Flush()
}

func (w *responseWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, rw, err := http.NewResponseController(w.rw).Hijack()
	if err == nil {
		w.hijacked = true
	}
	return c, rw, err
}

// finish completes the response after the handler returned.
func (w *responseWriter) finish() {
	if w.hijacked {
		return
	}
	if w.state == undecided && (w.code != 0 || len(w.buf) > 0) {
		w.decide(true, nil)
	}
	if w.e != nil {
		w.e.Close()
	}
}

// release drops per-request references before the writer is pooled.
func (w *responseWriter) release() {
	if w.e != nil {
		w.m.codings[w.enc].pool.Put(w.pooled)
	}
	buf := w.buf[:0]
	if cap(buf) > 64<<10 {
		buf = nil
	}
	*w = responseWriter{m: w.m, buf: buf}
}

func addVary(h http.Header) {
	vs := h["Vary"]
	for _, v := range vs {
		if containsToken(v, "accept-encoding") || strings.TrimSpace(v) == "*" {
			return
		}
	}
	if len(vs) == 0 {
		h["Vary"] = varyAE
		return
	}
	h["Vary"] = append(vs, "Accept-Encoding")
}

// containsToken reports whether the comma-separated list v holds tok
// (lower case), ignoring case.
func containsToken(v, tok string) bool {
	for len(v) > 0 {
		var e string
		if i := strings.IndexByte(v, ','); i >= 0 {
			e, v = v[:i], v[i+1:]
		} else {
			e, v = v, ""
		}
		if equalFold(trimOWS(e), tok) {
			return true
		}
	}
	return false
}

func containsFold(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if equalFold(s[i:i+len(sub)], sub) {
			return true
		}
	}
	return false
}
