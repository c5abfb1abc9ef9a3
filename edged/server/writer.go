package server

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/edgeapp/edgeapp/edged/reqinfo"
)

// respWriter records status and size for logs and metrics and applies the
// route's response header edits at the moment headers are written. It keeps
// the optional interfaces of the writer it wraps: Flush for streaming,
// Hijack for Upgrade, ReadFrom so a static file still reaches sendfile(2).
type respWriter struct {
	http.ResponseWriter
	status      int
	bytes       int64
	wroteHeader bool
	respOps     *headerOps

	// send_timeout (see deadlines.go); wdl nil: none.
	wdl         deadliner
	sendTimeout time.Duration
	wArmed      time.Time

	// gRPC calls: an error of edged's own is held and sent as a gRPC
	// status when the handler returns (grpcstatus.go).
	grpc      bool
	info      *reqinfo.Info
	grpcHeld  bool
	grpcPlain bool
	grpcText  []byte
}

var writerPool = sync.Pool{New: func() any { return new(respWriter) }}

func getWriter(w http.ResponseWriter) *respWriter {
	rw := writerPool.Get().(*respWriter)
	*rw = respWriter{ResponseWriter: w}
	return rw
}

func putWriter(rw *respWriter) {
	rw.ResponseWriter = nil
	rw.respOps = nil
	rw.wdl = nil
	rw.info = nil
	rw.grpcText = nil
	writerPool.Put(rw)
}

func (w *respWriter) WriteHeader(code int) {
	if w.wroteHeader {
		return
	}
	if code < 200 && code != http.StatusSwitchingProtocols {
		// 1xx informational responses (103 Early Hints) may repeat, and
		// are written at once.
		if w.wdl != nil {
			w.armWrite(time.Now())
		}
		w.ResponseWriter.WriteHeader(code)
		return
	}
	w.wroteHeader = true
	w.status = code
	if w.respOps != nil {
		w.respOps.apply(w.ResponseWriter.Header())
	}
	if w.grpc && w.holdForGRPC(code) {
		return
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *respWriter) Write(b []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.grpcHeld {
		w.keepGRPCText(b)
		return len(b), nil
	}
	if w.wdl != nil {
		w.armWrite(time.Now())
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

// ReadFrom lets io.Copy from an *os.File reach the connection's ReadFrom,
// which uses sendfile on plain TCP.
func (w *respWriter) ReadFrom(r io.Reader) (int64, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.grpcHeld {
		return w.discardGRPCBody(r)
	}
	rf, ok := w.ResponseWriter.(io.ReaderFrom)
	if !ok {
		n, err := io.Copy(struct{ io.Writer }{w}, r)
		return n, err
	}
	if w.wdl == nil {
		n, err := rf.ReadFrom(r)
		w.bytes += n
		return n, err
	}
	// With send_timeout, sendfile goes a chunk at a time, each with the
	// deadline moved on.
	var total int64
	lr := &io.LimitedReader{R: r}
	for {
		w.wArmed = time.Time{}
		w.armWrite(time.Now())
		lr.N = sendfileChunk
		n, err := rf.ReadFrom(lr)
		total += n
		w.bytes += n
		if err != nil || n < sendfileChunk {
			return total, err
		}
	}
}

func (w *respWriter) Flush() {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.grpcHeld {
		return // the header must end the stream
	}
	if w.wdl != nil {
		w.armWrite(time.Now())
	}
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *respWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if !w.wroteHeader {
		w.wroteHeader = true
		w.status = http.StatusSwitchingProtocols
	}
	return http.NewResponseController(w.ResponseWriter).Hijack()
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (w *respWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// headerOps is a compiled set of header edits.
type headerOps struct {
	set    [][2]string // canonical name, value
	add    [][2]string
	remove []string
}

func newHeaderOps(set, add map[string]string, remove []string) *headerOps {
	if len(set)+len(add)+len(remove) == 0 {
		return nil
	}
	ops := &headerOps{}
	for k, v := range set {
		ops.set = append(ops.set, [2]string{http.CanonicalHeaderKey(k), v})
	}
	for k, v := range add {
		ops.add = append(ops.add, [2]string{http.CanonicalHeaderKey(k), v})
	}
	for _, k := range remove {
		ops.remove = append(ops.remove, http.CanonicalHeaderKey(k))
	}
	return ops
}

func (o *headerOps) apply(h http.Header) {
	for _, k := range o.remove {
		delete(h, k)
	}
	for _, kv := range o.set {
		h[kv[0]] = []string{kv[1]}
	}
	for _, kv := range o.add {
		h[kv[0]] = append(h[kv[0]], kv[1])
	}
}
