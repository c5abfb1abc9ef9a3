package proxy

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"

	"github.com/edgeapp/edgeapp/edged/reqinfo"
	"github.com/edgeapp/edgeapp/edged/spool"
)

// Proxying to HTTP/2 upstreams (protocol h2 and h2c). The request path
// is the HTTP/1.1 one's in its rules: a server is picked by the policy
// and counted against max_conns for the request's duration, failures
// count towards passive health and are classified alike, the same
// metrics and log lines, the same forwarded headers. What differs:
//
//   - Requests are streams on shared connections (h2conn.go); there is no
//     idle connection that may turn out closed, so no "stale" resend.
//   - A request that the server refused or never began (REFUSED_STREAM,
//     GOAWAY) is safe to send again, as one that failed to connect: it
//     goes again, to the same server once, then to another.
//   - Request bodies are buffered as the route says, except gRPC's, which
//     stream (their first retry_body_max bytes are kept, so such a resend
//     is possible). Responses are read ahead only as far as the stream's
//     flow-control window (4 MiB) lets the server send them; they are not
//     spooled to files.
//   - WebSocket and other upgrades need an HTTP/1.1 upstream: over HTTP/2
//     such a request goes as an ordinary one, without Upgrade.

// aLongTimeAgo is a read deadline in the past: it ends a read that waits.
var aLongTimeAgo = time.Unix(1, 0)

// errBodyGone: a retry needs the body from its start, which is gone.
var errBodyGone = errors.New("the request body was streamed past retry_body_max and cannot be sent again")

// serveH2 proxies r to the pool's HTTP/2 servers.
func (h *handler) serveH2(w http.ResponseWriter, r *http.Request, info *reqinfo.Info) {
	p := h.p
	grpc := isGRPC(r.Header)
	ctx := r.Context()
	hasDeadline := false
	if grpc {
		if d, ok := grpcTimeout(r.Header); ok {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, d)
			defer cancel()
			hasDeadline = true
		}
	}

	out := &http.Request{
		Method:     r.Method,
		Header:     forwardHeaders(r),
		Proto:      "HTTP/2.0",
		ProtoMajor: 2,
		Trailer:    r.Trailer,
	}
	delete(out.Header, "Expect") // the body is sent as the engine reads it
	setForwarded(out.Header, r, info)
	path, raw := r.URL.Path, r.URL.RawPath
	if h.strip != "" {
		path, raw = stripPrefix(h.strip, path, raw)
	}
	switch {
	case path == "":
		path, raw = "/", ""
	case path[0] != '/' && path != "*":
		path, raw = "/"+path, ""
	}
	scheme := "http"
	if p.cfg.TLS.Enabled {
		scheme = "https"
	}
	out.URL = &url.URL{Scheme: scheme, Path: path, RawPath: raw, RawQuery: r.URL.RawQuery}

	// The body: buffered whole before a server is chosen as the route
	// says (then any attempt may resend it), or streamed through a tee
	// that keeps its start for a resend.
	var (
		sp  *spool.Spool
		tee *teeBody
	)
	if r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 {
		if h.buf.Request && !grpc {
			var b outBody
			if err := h.bufferRequest(r, info, &b); err != nil {
				h.badBody(w, r, err)
				return
			}
			defer b.close()
			sp, out.ContentLength = b.sp, b.length
		} else {
			tee = newTeeBody(r.Body, h.p.cfg.RetryBodyMax)
			rc := http.NewResponseController(w)
			tee.interrupt = func() { _ = rc.SetReadDeadline(aLongTimeAgo) }
			defer tee.stop()
			out.ContentLength = r.ContentLength
			if out.ContentLength == 0 {
				out.ContentLength = -1
			}
		}
	}

	sel := selection{r: r, now: nanotime(), key: p.hashKey}
	if p.cfg.Policy == "hash" {
		if info.Client.IsValid() {
			sel.client = info.Client.String()
		} else {
			sel.client = r.RemoteAddr
		}
		sel.keyHash = sel.hashKey()
	}
	rht := p.cfg.ResponseHeaderTimeout
	var (
		lastErr    error
		lastServer *server
		lastCause  int
	)
	for attempt := 0; ; {
		s := p.pickAcquire(&sel)
		if s == nil {
			if lastErr != nil {
				h.fail(w, r, lastServer, lastCause, lastErr, attempt)
			} else {
				h.unavailable(w, r)
			}
			return
		}
		req, a, cancel := h.h2Request(ctx, out, r, s, sp, tee)
		if req == nil {
			s.release()
			h.fail(w, r, lastServer, lastCause, lastErr, attempt)
			return
		}
		// response_header_timeout, unless the gRPC call's own deadline
		// bounds the wait (a stream may rightly wait long for its first
		// message).
		var timer *time.Timer
		if !hasDeadline {
			timer = time.AfterFunc(rht, func() {
				if a.state.CompareAndSwap(0, 2) {
					cancel(errHeaderTimeout)
				}
			})
		}
		start := nanotime()
		resp, err := s.cp.h2.roundTrip(req)
		if timer != nil {
			timer.Stop()
		}
		if !a.state.CompareAndSwap(0, 1) {
			if resp != nil {
				resp.Body.Close()
			}
			resp, err = nil, &timeoutError{rht}
		}
		info.Upstream, info.UpstreamTime = s.cfg.Addr, time.Duration(nanotime()-start)
		if err == nil {
			info.UpstreamStatus = resp.StatusCode
			s.st.total.Add(1)
			s.st.metrics.latency.Observe(info.UpstreamTime.Seconds())
			h.serveH2Response(w, r, ctx, resp, s, grpc)
			cancel(nil)
			s.release()
			return
		}
		cancel(nil)
		attempt++
		lastErr, lastServer = err, s
		s.release()
		s.st.total.Add(1)
		s.st.metrics.requests[classError].Inc()

		if tee != nil {
			if cb := tee.clientErr(); cb != nil {
				h.badBody(w, r, cb.(*clientBodyError).err)
				return
			}
		}
		if r.Context().Err() != nil {
			h.clientGone(w, r, "waiting for the upstream response", lastErr)
			return
		}
		if hasDeadline && deadlinePassed(ctx) {
			// The gRPC call's deadline passed: the client's limit, not the
			// server's failure.
			h.log.Info("gRPC call's deadline passed before the upstream answered", "server", s.cfg.Addr,
				"grpc_timeout", r.Header.Get("Grpc-Timeout"), "path", r.URL.Path, "request_id", h.requestID(r))
			writeGRPCError(w, grpcDeadlineExceeded, "edged: deadline exceeded before the upstream server answered")
			return
		}
		lastCause = classifyH2(lastErr)
		p.recordFailure(s, lastCause, lastErr)
		var de *DialError
		beforeSend := errors.As(lastErr, &de) || isH2Refused(lastErr)
		replayable := tee == nil || tee.replayable()
		retry := attempt <= p.cfg.Retries && replayable &&
			(beforeSend || (p.cfg.RetryIdempotent && idempotent(r.Method)))
		if !retry {
			h.fail(w, r, s, lastCause, lastErr, attempt)
			return
		}
		p.m.retries.WithLabelValues(p.name).Inc()
		h.log.Info("upstream server failed, trying another", "server", s.cfg.Addr,
			"cause", lastErr.Error(), "method", r.Method, "path", r.URL.Path)
		sel.now = nanotime()
	}
}

// deadlinePassed reports whether ctx's deadline (a gRPC call's) has
// passed, even if the timer that cancels ctx has not run yet: the server,
// which learns the deadline from grpc-timeout, may end the stream first.
func deadlinePassed(ctx context.Context) bool {
	if ctx.Err() != nil {
		return true
	}
	d, ok := ctx.Deadline()
	return ok && !time.Now().Before(d)
}

// errHeaderTimeout cancels an attempt whose response header did not come
// within response_header_timeout.
var errHeaderTimeout = errors.New("response_header_timeout")

// h2Req is one attempt's request with what it needs besides.
type h2Req struct {
	h2Attempt
	state atomic.Int32 // 0 waiting for the response header, 1 got it, 2 timed out
}

// h2Request makes the request of one attempt on s: its own context (the
// attempt's, cancelled when the attempt ends) and its own reading of the
// body. It returns a nil request when the body cannot be sent again.
func (h *handler) h2Request(ctx context.Context, out, r *http.Request, s *server, sp *spool.Spool, tee *teeBody) (*http.Request, *h2Req, context.CancelCauseFunc) {
	a := &h2Req{}
	actx, cancel := context.WithCancelCause(context.WithValue(ctx, attemptKey{}, &a.h2Attempt))
	req := out.WithContext(actx)
	req.Host = h.hostFor(r, s)
	u := *out.URL
	u.Host = req.Host
	if u.Host == "" || strings.HasPrefix(s.cfg.Addr, "unix:") && req.Host == "localhost" {
		u.Host = "localhost"
	}
	req.URL = &u
	switch {
	case sp != nil:
		size := sp.Size()
		req.Body = io.NopCloser(io.NewSectionReader(sp, 0, size))
		req.GetBody = func() (io.ReadCloser, error) {
			return io.NopCloser(io.NewSectionReader(sp, 0, size)), nil
		}
	case tee != nil:
		v := tee.view()
		if v == nil {
			cancel(nil)
			return nil, nil, nil
		}
		req.Body = v
		req.GetBody = func() (io.ReadCloser, error) {
			if v := tee.view(); v != nil {
				return v, nil
			}
			return nil, errBodyGone
		}
	default:
		req.Body = http.NoBody
	}
	return req, a, cancel
}

// serveH2Response copies an HTTP/2 upstream's response to the client,
// streaming, trailers included. ctx is the request's (with a gRPC call's
// deadline).
func (h *handler) serveH2Response(w http.ResponseWriter, r *http.Request, ctx context.Context, resp *http.Response, s *server, grpc bool) {
	defer resp.Body.Close()
	st := s.st
	status := resp.StatusCode
	st.metrics.requests[statusClass(status)].Inc()
	h.p.recordSuccess(s)

	wh := w.Header()
	accel := 0
	for k, vv := range resp.Header {
		if k == "X-Accel-Buffering" {
			// nginx's convention: honoured (for flushing), never passed on
			if len(vv) > 0 && strings.EqualFold(vv[0], "no") {
				accel = -1
			}
			continue
		}
		if hopHeaders[k] {
			continue
		}
		wh[k] = vv
	}
	if len(resp.Trailer) > 0 {
		names := make([]string, 0, len(resp.Trailer))
		for k := range resp.Trailer {
			names = append(names, k)
		}
		wh["Trailer"] = []string{strings.Join(names, ", ")}
		// Trailers need a framing that can carry them (chunked, for an
		// HTTP/1.1 client), not a Content-Length.
		delete(wh, "Content-Length")
	}
	streaming := grpc || isGRPC(resp.Header) || strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream")
	w.WriteHeader(status)
	if resp.ContentLength == 0 && len(resp.Trailer) == 0 {
		// Nothing follows: the header ends the response (for gRPC, a
		// Trailers-Only status must stay one header block).
		return
	}
	mode := h.flush
	if mode == 0 && (streaming || accel < 0 || resp.ContentLength < 0) {
		mode = -1
	}
	if streaming {
		mode = -1 // every message as it comes
	}
	rc := http.NewResponseController(w)
	if mode < 0 {
		_ = rc.Flush() // the client sees the header before the first message
	}
	rerr, werr := copyBody(w, rc, resp.Body, mode)
	switch {
	case werr != nil || (rerr != nil && r.Context().Err() != nil):
		// The client left mid-response; closing the body resets the
		// upstream stream, which stops the server's work too.
		return
	case rerr != nil && grpc && deadlinePassed(ctx):
		setGRPCTrailer(w, grpcDeadlineExceeded, "edged: deadline exceeded while the upstream server was answering")
		return
	case rerr != nil:
		h.p.recordFailure(s, causeBody, rerr)
		if !grpc {
			h.bodyFailed(r, s, status, rerr) // does not return
		}
		h.log.Warn("upstream server failed mid-response; ending the gRPC call with a status",
			"server", s.cfg.Addr, "cause", rerr.Error(), "path", r.URL.Path, "request_id", h.requestID(r))
		setGRPCTrailer(w, grpcCodeForStreamError(rerr), "edged: the upstream server failed mid-response: "+rerr.Error())
		return
	}
	for k, vv := range resp.Trailer {
		if len(vv) > 0 {
			wh[http.TrailerPrefix+k] = vv
		}
	}
}

// classifyH2 names what went wrong with an attempt on an HTTP/2 server.
func classifyH2(err error) int {
	var de *DialError
	if errors.As(err, &de) {
		if de.Timeout() {
			return causeConnectTimeout
		}
		return causeConnect
	}
	if isTimeoutErr(err) {
		return causeTimeout
	}
	var se http2.StreamError
	if errors.As(err, &se) {
		switch se.Code {
		case http2.ErrCodeProtocol, http2.ErrCodeFrameSize, http2.ErrCodeCompression:
			return causeProtocol
		}
		return causeBroken
	}
	var ce http2.ConnectionError
	if errors.As(err, &ce) && http2.ErrCode(ce) != http2.ErrCodeNo {
		return causeProtocol
	}
	// The connection ended (EOF, reset, GOAWAY, closed), or x/net gave up
	// on a refused stream: the server went away, which is what most of
	// x/net's untyped errors say too.
	return causeBroken
}
