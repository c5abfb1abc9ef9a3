package server

import (
	"bytes"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/edgeapp/edgeapp/edged/proxy"
	"github.com/edgeapp/edgeapp/edged/reqinfo"
)

// A gRPC client understands an answer only as a gRPC status: an HTML page
// or a plain-text 429 reaches its application as "unexpected HTTP status
// code, content-type text/html". So an error edged answers a gRPC call
// with itself (no route, a limit, access control, auth, maintenance, a
// body too large, a redirect) is held when its header is written and,
// when the handler returns, sent as a gRPC status: HTTP 200,
// Content-Type application/grpc, grpc-status and grpc-message in the one
// header block that ends the stream (Trailers-Only). grpc-message says
// the HTTP status and the first line of a plain-text body. Headers such
// as Retry-After and WWW-Authenticate stay. The proxy answers gRPC calls
// with gRPC statuses itself (edged/proxy/grpc.go), and what an upstream
// or the cache answers passes as it is. The access log and the metrics
// keep the HTTP status edged decided on.

// grpcTextMax bounds the body text kept for grpc-message.
const grpcTextMax = 200

// holdForGRPC reports whether the final header about to be written with
// code is an error of edged's own for a gRPC call, and if so holds it.
func (w *respWriter) holdForGRPC(code int) bool {
	if !w.grpc || code == http.StatusOK || fromUpstream(w.info) {
		return false
	}
	w.grpcHeld = true
	ct := w.ResponseWriter.Header()["Content-Type"]
	w.grpcPlain = len(ct) > 0 && strings.HasPrefix(ct[0], "text/plain")
	return true
}

// keepGRPCText keeps the start of a held error's plain-text body.
func (w *respWriter) keepGRPCText(b []byte) {
	if w.grpcPlain && len(w.grpcText) < grpcTextMax {
		w.grpcText = append(w.grpcText, b[:min(len(b), grpcTextMax-len(w.grpcText))]...)
	}
}

// discardGRPCBody reads a held error's body from r (a file, say).
func (w *respWriter) discardGRPCBody(r io.Reader) (int64, error) {
	var b [grpcTextMax]byte
	n, err := io.ReadFull(r, b[:])
	w.keepGRPCText(b[:n])
	if err != nil {
		return int64(n), nil
	}
	m, err := io.Copy(io.Discard, r)
	return int64(n) + m, err
}

// sendGRPCStatus writes a held error as a gRPC status, once the handler
// has returned.
func (w *respWriter) sendGRPCStatus() {
	w.grpcHeld = false
	h := w.ResponseWriter.Header()
	for _, k := range [...]string{"Content-Length", "Content-Type", "Content-Encoding", "Content-Range",
		"Content-Language", "Content-Disposition", "Etag", "Last-Modified", "Accept-Ranges",
		"Transfer-Encoding", "Trailer", "Vary"} {
		delete(h, k)
	}
	text := w.grpcText
	if i := bytes.IndexByte(text, '\n'); i >= 0 {
		text = text[:i]
	}
	text = bytes.TrimSpace(text)
	msg := "edged: HTTP " + strconv.Itoa(w.status)
	if len(text) > 0 {
		msg += ": " + string(text)
	} else {
		msg += " " + http.StatusText(w.status)
	}
	if loc := h["Location"]; len(loc) > 0 {
		msg += " (to " + loc[0] + ")"
	}
	h["Content-Type"] = []string{"application/grpc"}
	h["Grpc-Status"] = []string{strconv.Itoa(proxy.GRPCCodeForHTTP(w.status))}
	h["Grpc-Message"] = []string{proxy.GRPCMessage(msg)}
	w.ResponseWriter.WriteHeader(http.StatusOK)
}

// fromUpstream reports whether the response is the upstream's (through
// the proxy or from the cache), not edged's own.
func fromUpstream(info *reqinfo.Info) bool {
	if info == nil {
		return false
	}
	return info.UpstreamStatus != 0 || info.CacheStatus == "HIT" || info.CacheStatus == "STALE"
}
