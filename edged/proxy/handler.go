package proxy

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"net/url"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/edgeapp/edgeapp/edged/reqinfo"
)

// HandlerOptions are a route's settings for proxying to a pool.
type HandlerOptions struct {
	// TrustedProxies are the peers whose X-Forwarded-* and Forwarded
	// headers are kept and extended; from anyone else they are replaced.
	TrustedProxies []netip.Prefix
	// StripPrefix is removed from the path before forwarding ("" = none).
	StripPrefix string
	// FlushInterval: 0 = automatic (flush at once for text/event-stream and
	// responses of unknown length), negative = flush after every write,
	// positive = at most this long between a write and its flush.
	FlushInterval time.Duration
	// RequestIDHeader names the request ID put in failure log lines when
	// the request carries no reqinfo; default "X-Request-Id".
	RequestIDHeader string
	// Upgrades lists the protocols a request may upgrade to (Upgrade
	// header); nil means DefaultUpgrades, empty means none.
	Upgrades []string
	Log      *slog.Logger
}

type handler struct {
	p       *Pool
	ridKey  string
	trusted []netip.Prefix
	upgrade []string
	strip   string // without a trailing slash
	flush   time.Duration
	log     *slog.Logger
}

// NewHandler returns the handler that proxies requests to p.
func NewHandler(p *Pool, o HandlerOptions) http.Handler {
	h := &handler{p: p, trusted: o.TrustedProxies, upgrade: o.Upgrades, flush: o.FlushInterval, log: o.Log}
	if h.upgrade == nil {
		h.upgrade = DefaultUpgrades
	}
	if h.log == nil {
		h.log = p.log
	} else {
		h.log = h.log.With("upstream", p.name)
	}
	h.strip = strings.TrimSuffix(o.StripPrefix, "/")
	h.ridKey = http.CanonicalHeaderKey(o.RequestIDHeader)
	if h.ridKey == "" {
		h.ridKey = "X-Request-Id"
	}
	return h
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := h.p
	p.inflight.Add(1)
	defer p.done()

	info := reqinfo.From(r.Context())
	if info == nil {
		// Mounted outside edged's server (tests, embedders): work the
		// client out here, from the same rule.
		info = new(reqinfo.Info)
		info.SetClient(r.RemoteAddr, r.Header["X-Forwarded-For"], h.trusted)
	}
	upgrade := upgradeType(r, h.upgrade)

	out := h.outRequest(r)
	setForwarded(out.Header, r, info)
	if upgrade != "" {
		out.Header["Connection"] = []string{"Upgrade"}
		out.Header["Upgrade"] = []string{upgrade}
	}

	// The request body streams through. An attempt that failed to connect
	// has read none of it, so it can go to the next server; other failures
	// are retried only if the user opted in and the body is small enough to
	// have been kept.
	var body *countingBody
	var kept []byte // non-nil: the whole body, replayable
	replayAfterSend := p.cfg.RetryIdempotent && idempotent(r.Method)
	if r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 && upgrade == "" {
		if replayAfterSend && r.ContentLength <= p.cfg.RetryBodyMax {
			b, whole, err := readUpTo(r.Body, p.cfg.RetryBodyMax)
			if err != nil {
				h.badBody(w, r, err)
				return
			}
			if whole {
				kept = b
				out.ContentLength = int64(len(b))
				// Lets net/http itself resend on a stale kept-alive connection.
				out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(kept)), nil }
			} else {
				replayAfterSend = false
				body = &countingBody{r: io.MultiReader(bytes.NewReader(b), r.Body)}
			}
		} else {
			replayAfterSend = false
			body = &countingBody{r: r.Body}
		}
	} else {
		out.Body = nil
		out.ContentLength = 0
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
	var (
		lastErr    error
		lastServer *server
		lastCause  int
	)
	for attempt := 0; ; attempt++ {
		s := p.pickAcquire(&sel)
		if s == nil {
			if lastErr != nil {
				h.fail(w, r, lastServer, lastCause, lastErr, attempt)
			} else {
				h.unavailable(w, r)
			}
			return
		}
		req := out
		if attempt > 0 {
			req = new(http.Request)
			*req = *out
			u := *out.URL
			req.URL = &u
		}
		req.URL.Host = s.urlHost()
		var trace *attemptTrace
		switch {
		case kept != nil:
			req.Body = io.NopCloser(bytes.NewReader(kept))
		case body != nil:
			req.Body = body
			if upgrade == "" {
				trace = new(attemptTrace)
				req = req.WithContext(httptrace.WithClientTrace(req.Context(), trace.clientTrace()))
			}
		}

		if upgrade != "" {
			done, err := h.serveUpgrade(w, r, req, s, upgrade)
			if done {
				s.release()
				return
			}
			lastErr, lastServer = err, s
		} else {
			start := time.Now()
			res, err := s.tr.t.RoundTrip(req)
			if info := reqinfo.From(r.Context()); info != nil {
				info.Upstream, info.UpstreamTime = s.cfg.Addr, time.Since(start)
				if err == nil {
					info.UpstreamStatus = res.StatusCode
				}
			}
			if err == nil {
				s.st.total.Add(1)
				s.st.metrics.latency.Observe(time.Since(start).Seconds())
				h.serveResponse(w, r, res, s)
				s.release()
				return
			}
			lastErr, lastServer = err, s
		}
		s.release()
		s.st.total.Add(1)
		s.st.metrics.requests[classError].Inc()

		if body != nil {
			if cerr := body.clientErr(); cerr != nil {
				// Reading the client's body failed (over the route's limit,
				// cut short, bad chunking): the client's fault, not the
				// server's.
				h.badBody(w, r, cerr)
				return
			}
		}
		if r.Context().Err() != nil {
			// The client left; that says nothing about the server.
			h.clientGone(w, r, "waiting for the upstream response", lastErr)
			return
		}
		lastCause = classify(lastErr)
		if trace != nil && trace.sentNothing() {
			lastCause = causeBroken // the kept-alive connection was closed under it
		}
		p.recordFailure(s, lastCause, lastErr)
		// Not sent: the connection failed, or a kept-alive connection
		// turned out closed by the server before anything was written.
		var de *DialError
		beforeSend := errors.As(lastErr, &de) || (trace != nil && trace.sentNothing())
		retry := attempt < p.cfg.Retries &&
			((beforeSend && (body == nil || body.n.Load() == 0)) || (replayAfterSend && body == nil))
		if !retry {
			h.fail(w, r, s, lastCause, lastErr, attempt+1)
			return
		}
		p.m.retries.WithLabelValues(p.name).Inc()
		h.log.Info("upstream server failed, trying another", "server", s.cfg.Addr,
			"cause", lastErr.Error(), "method", r.Method, "path", r.URL.Path)
		sel.now = nanotime()
	}
}

// pickAcquire picks a server and counts the request against it, skipping
// servers that reached MaxConns between the pick and the count.
func (p *Pool) pickAcquire(sel *selection) *server {
	for range len(p.servers) + 1 {
		s := p.pick(sel)
		if s == nil {
			return nil
		}
		if s.idx < 64 {
			sel.tried |= 1 << uint(s.idx)
		}
		if s.acquire() {
			return s
		}
	}
	return nil
}

func (s *server) urlHost() string {
	if strings.HasPrefix(s.cfg.Addr, "unix:") {
		return "localhost"
	}
	return s.cfg.Addr
}

// outRequest is the request sent upstream, sharing what it safely can with r.
func (h *handler) outRequest(r *http.Request) *http.Request {
	out := new(http.Request)
	*out = *r
	out.RequestURI = ""
	out.Close = false // the client's Connection: close is not the upstream's
	out.TransferEncoding = nil
	out.Proto, out.ProtoMajor, out.ProtoMinor = "HTTP/1.1", 1, 1
	path, raw := r.URL.Path, r.URL.RawPath
	if h.strip != "" {
		path, raw = stripPrefix(h.strip, path, raw)
	}
	out.URL = &url.URL{Scheme: "http", Path: path, RawPath: raw, RawQuery: r.URL.RawQuery}
	out.Header = forwardHeaders(r)
	if hh := h.p.cfg.HostHeader; hh != "" {
		out.Host = hh
	}
	return out
}

// stripPrefix removes prefix (no trailing slash) from a path on a segment
// boundary; the result always starts with "/".
func stripPrefix(prefix, path, raw string) (string, string) {
	cut := func(p string) (string, bool) {
		rest, ok := strings.CutPrefix(p, prefix)
		if !ok {
			return p, false
		}
		if rest == "" {
			return "/", true
		}
		if rest[0] != '/' {
			return p, false
		}
		return rest, true
	}
	np, ok := cut(path)
	if !ok {
		return path, raw
	}
	if raw != "" {
		if nr, ok := cut(raw); ok {
			return np, nr
		}
		return np, ""
	}
	return np, raw
}

// serveResponse copies the upstream response to the client, streaming.
func (h *handler) serveResponse(w http.ResponseWriter, r *http.Request, res *http.Response, s *server) {
	st := s.st
	if res.StatusCode == http.StatusSwitchingProtocols {
		res.Body.Close()
		err := errors.New("answered 101 Switching Protocols to a request that asked for no upgrade")
		h.p.recordFailure(s, causeProtocol, err)
		st.metrics.requests[classError].Inc()
		h.fail(w, r, s, causeProtocol, err, 1)
		return
	}
	st.metrics.requests[statusClass(res.StatusCode)].Inc()
	h.p.recordSuccess(s)

	removeHopByHop(res.Header)
	wh := w.Header()
	for k, vv := range res.Header {
		wh[k] = vv
	}
	if len(res.Trailer) > 0 {
		names := make([]string, 0, len(res.Trailer))
		for k := range res.Trailer {
			names = append(names, k)
		}
		wh["Trailer"] = []string{strings.Join(names, ", ")}
	}
	w.WriteHeader(res.StatusCode)

	rc := http.NewResponseController(w)
	mode := h.flush
	if mode == 0 && (res.ContentLength == -1 || isEventStream(res.Header)) {
		mode = -1
	}
	if mode < 0 {
		_ = rc.Flush() // the client sees the header before the first event
	}
	rerr, werr := copyBody(w, rc, res.Body, mode)
	switch {
	case werr != nil || (rerr != nil && r.Context().Err() != nil):
		// The client left mid-response. Closing the body drops the upstream
		// connection, which stops the server's work too.
		res.Body.Close()
		return
	case rerr != nil:
		res.Body.Close()
		h.p.recordFailure(s, causeBody, rerr)
		h.log.Warn("upstream server died while sending the response body; aborting the client connection so it sees the truncation",
			"server", s.cfg.Addr, "cause", rerr.Error(), "status", res.StatusCode,
			"method", r.Method, "path", r.URL.Path, "request_id", h.requestID(r))
		s.release()
		panic(http.ErrAbortHandler)
	}
	res.Body.Close()
	for k, vv := range res.Trailer {
		wh[http.TrailerPrefix+k] = vv
	}
}

func isEventStream(h http.Header) bool {
	ct := h.Get("Content-Type")
	return len(ct) >= 17 && strings.EqualFold(ct[:17], "text/event-stream")
}

// classify names what went wrong with an attempt.
func classify(err error) int {
	var de *DialError
	if errors.As(err, &de) {
		if de.Timeout() {
			return causeConnectTimeout
		}
		return causeConnect
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return causeTimeout
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, net.ErrClosed) {
		return causeBroken
	}
	return causeProtocol
}

// fail answers 502 or 504 after the last attempt failed, with one log line
// naming the upstream, the server and the cause.
func (h *handler) fail(w http.ResponseWriter, r *http.Request, s *server, cause int, err error, attempts int) {
	code, text := http.StatusBadGateway, "502 Bad Gateway: the upstream server failed to answer\n"
	switch cause {
	case causeConnect:
		text = "502 Bad Gateway: could not connect to the upstream server\n"
	case causeConnectTimeout, causeTimeout:
		code, text = http.StatusGatewayTimeout, "504 Gateway Timeout: the upstream server did not answer in time\n"
	case causeProtocol:
		text = "502 Bad Gateway: the upstream server sent an invalid response\n"
	}
	addr := ""
	if s != nil {
		addr = s.cfg.Addr
	}
	h.log.Warn("upstream request failed", "status", code, "server", addr, "cause", err.Error(),
		"attempts", attempts, "method", r.Method, "path", r.URL.Path, "request_id", h.requestID(r))
	writeError(w, code, text)
}

// unavailable answers 503 when no server can take the request.
func (h *handler) unavailable(w http.ResponseWriter, r *http.Request) {
	h.p.m.unavailable.WithLabelValues(h.p.name).Inc()
	h.log.Warn("no upstream server available, answered 503", "servers", h.p.summary(),
		"method", r.Method, "path", r.URL.Path, "request_id", h.requestID(r))
	writeError(w, http.StatusServiceUnavailable, "503 Service Unavailable: no upstream server is available\n")
}

// summary says why each server is out, for the 503 log line.
func (p *Pool) summary() string {
	var b strings.Builder
	for i, ss := range p.Status() {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(ss.Addr)
		b.WriteString(" ")
		b.WriteString(ss.State)
		if ss.Reason != "" {
			b.WriteString(" (")
			b.WriteString(ss.Reason)
			b.WriteString(")")
		}
	}
	return b.String()
}

// writeError answers with a short text. Headers set before the proxy (the
// request ID, HSTS, the route's additions) stay.
func writeError(w http.ResponseWriter, code int, text string) {
	h := w.Header()
	for _, k := range [...]string{"Content-Length", "Content-Encoding", "Etag", "Last-Modified", "Content-Range"} {
		delete(h, k)
	}
	h["Content-Type"] = []string{"text/plain; charset=utf-8"}
	h["X-Content-Type-Options"] = []string{"nosniff"}
	h["Cache-Control"] = []string{"no-store"}
	w.WriteHeader(code)
	_, _ = io.WriteString(w, text)
}

// badBody answers a request whose body could not be read from the client:
// 413 over the route's limit, 400 otherwise (499 if the client is gone).
func (h *handler) badBody(w http.ResponseWriter, r *http.Request, err error) {
	if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
		// client_body_timeout: the client stopped sending (the failed read
		// also cancelled the request's context); nginx answers 408.
		w.Header().Set("Connection", "close")
		writeError(w, http.StatusRequestTimeout, "408 Request Timeout: the request body stopped arriving\n")
		return
	}
	if r.Context().Err() != nil {
		h.clientGone(w, r, "reading the request body", err)
		return
	}
	w.Header().Set("Connection", "close")
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		writeError(w, http.StatusRequestEntityTooLarge, "413 Content Too Large: the request body is larger than this route allows\n")
		return
	}
	h.log.Debug("could not read the request body", "cause", err.Error(), "path", r.URL.Path)
	writeError(w, http.StatusBadRequest, "400 Bad Request: the request body could not be read\n")
}

// clientGone records that the client left before the response began; 499 is
// nginx's status for it, seen only by the access log.
func (h *handler) clientGone(w http.ResponseWriter, r *http.Request, doing string, err error) {
	h.log.Debug("client went away", "while", doing, "cause", err, "path", r.URL.Path)
	w.WriteHeader(499)
}

func idempotent(m string) bool {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	return false
}

// readUpTo reads r to the end if it holds at most max bytes (whole = true),
// else returns the max+1 bytes read so far.
func readUpTo(r io.Reader, max int64) (b []byte, whole bool, err error) {
	b, err = io.ReadAll(io.LimitReader(r, max+1))
	if err != nil {
		return nil, false, err
	}
	return b, int64(len(b)) <= max, nil
}

// countingBody passes the client's body upstream, remembering whether any of
// it was read, and ignores Close so a failed attempt does not close the
// client's body under the next one.
type countingBody struct {
	r   io.Reader
	n   atomic.Int64
	err atomic.Pointer[error] // a failure reading the client's body
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.n.Add(int64(n))
	if err != nil && err != io.EOF {
		e := err // only this copy escapes, and only on failure
		b.err.CompareAndSwap(nil, &e)
	}
	return n, err
}

func (b *countingBody) clientErr() error {
	if e := b.err.Load(); e != nil {
		return *e
	}
	return nil
}

func (b *countingBody) Close() error { return nil }

func (h *handler) requestID(r *http.Request) string {
	if v := r.Header[h.ridKey]; len(v) > 0 {
		return v[0]
	}
	return ""
}
