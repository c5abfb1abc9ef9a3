package proxy

import (
	"bytes"
	"errors"
	"github.com/edgeapp/edgeapp/edged/httpwire"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
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
	// Buffering: the zero value buffers nothing (bodies stream through);
	// edged's routes use DefaultBuffering unless they say otherwise.
	Buffering Buffering
	Log       *slog.Logger
}

type handler struct {
	p       *Pool
	ridKey  string
	trusted []netip.Prefix
	upgrade []string
	strip   string // without a trailing slash
	flush   time.Duration
	buf     Buffering
	log     *slog.Logger
}

// NewHandler returns the handler that proxies requests to p.
func NewHandler(p *Pool, o HandlerOptions) http.Handler {
	h := &handler{p: p, trusted: o.TrustedProxies, upgrade: o.Upgrades, flush: o.FlushInterval, buf: o.Buffering, log: o.Log}
	if h.buf.ResponseMemory == 0 {
		// X-Accel-Buffering: yes may still ask for it.
		h.buf.ResponseMemory = DefaultResponseMemory
	}
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
	if r.Method == http.MethodConnect {
		// A tunnel through the app is not something an app serves.
		w.Header()["Allow"] = []string{"GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"}
		writeError(w, http.StatusMethodNotAllowed, "405 Method Not Allowed: CONNECT is not proxied\n")
		return
	}

	info := reqinfo.From(r.Context())
	if info == nil {
		info = new(reqinfo.Info)
	}
	if !info.Peer.IsValid() && !info.Client.IsValid() {
		// Mounted outside edged's server (tests, embedders; an engine's
		// record not filled by server.serve): work the client out here,
		// from the same rule.
		info.SetClient(r.RemoteAddr, r.Header["X-Forwarded-For"], h.trusted)
	}
	if p.h2 {
		h.serveH2(w, r, info)
		return
	}
	ex := getExchange()
	defer putExchange(ex)
	ex.oh = outHead{method: r.Method, proto: "http", upgrade: upgradeType(r, h.upgrade)}
	if r.TLS != nil {
		ex.oh.proto = "https"
	}
	ex.oh.path, ex.oh.query = h.target(r)
	upgrade := ex.oh.upgrade

	ex.info = info
	// With request buffering the whole body is read before a server is
	// chosen (a client that never finishes its upload never reaches a
	// worker), and any attempt can resend it. Without, the body streams
	// through: an attempt that failed to connect has read none of it, so
	// it can go to the next server; other failures are retried only if the
	// user opted in and the body is small enough to have been kept.
	var body outBody
	defer body.close()
	replayAfterSend := p.cfg.RetryIdempotent && idempotent(r.Method)
	if r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 && upgrade == "" {
		if h.buf.Request && !isGRPC(r.Header) { // gRPC (-web) bodies are streams
			if err := h.bufferRequest(r, info, &body); err != nil {
				h.badBody(w, r, err)
				return
			}
		} else if replayAfterSend && r.ContentLength <= p.cfg.RetryBodyMax {
			b, whole, err := readUpTo(r.Body, p.cfg.RetryBodyMax)
			if err != nil {
				h.badBody(w, r, err)
				return
			}
			if whole && len(r.Trailer) == 0 {
				body.mem, body.frame, body.length = b, frameLength, int64(len(b))
			} else {
				replayAfterSend = false
				body.stream = io.MultiReader(bytes.NewReader(b), r.Body)
			}
		} else {
			replayAfterSend = false
			body.stream = r.Body
		}
		if body.stream != nil {
			if r.ContentLength > 0 {
				body.frame, body.length = frameLength, r.ContentLength
			} else {
				body.frame, body.trailer = frameChunked, r
			}
		}
	}
	// A connection the server closed while idle is seen only once the
	// request was written to it; such a request goes again on a new
	// connection if it can be sent twice (net/http's rule: GET, HEAD,
	// OPTIONS, TRACE or an Idempotency-Key, and a body kept or none). Idle
	// connections are looked at before a request that cannot.
	resendable := body.replayable() && safeToResend(r)

	sel := selection{r: r, now: nanotime(), key: p.hashKey}
	if p.cfg.Policy == "hash" {
		if info.Client.IsValid() {
			sel.client = info.Client.String()
		} else {
			sel.client = r.RemoteAddr
		}
		sel.keyHash = sel.hashKey()
	}
	ctx := r.Context()
	var (
		lastErr    error
		lastServer *server
		lastCause  int
		s          *server
		fresh      bool // the next try is on s again, on a new connection
		staleUsed  bool // s was tried again so once already
	)
	for attempt := 0; ; {
		if !fresh {
			staleUsed = false
			if s = p.pickAcquire(&sel); s == nil {
				if lastErr != nil {
					h.fail(w, r, lastServer, lastCause, lastErr, attempt)
				} else {
					h.unavailable(w, r)
				}
				return
			}
		}
		ex.oh.host = h.hostFor(r, s)
		var err error
		if upgrade != "" {
			var done bool
			done, err = h.serveUpgrade(w, r, ex, s, info)
			if done {
				s.release()
				return
			}
		} else {
			start := sel.now
			var c *upConn
			c, err = s.conn(ctx, start, fresh, !resendable)
			if err == nil {
				err = ex.roundTrip(ctx, start, c, w, r, info, &body, p.cfg.ResponseHeaderTimeout)
			}
			info.Upstream, info.UpstreamTime = s.cfg.Addr, time.Duration(nanotime()-start)
			if err == nil {
				info.UpstreamStatus = ex.resp.Status
				s.st.total.Add(1)
				s.st.metrics.latency.Observe(info.UpstreamTime.Seconds())
				h.serveResponse(w, r, ex, c, s)
				s.release()
				return
			}
		}
		fresh = false
		var se *staleError
		if errors.As(err, &se) && !staleUsed && (!se.sent || resendable) && body.n == 0 {
			// Not the server's failure: the same server, a new connection.
			staleUsed, fresh = true, true
			sel.now = nanotime()
			continue
		}
		attempt++
		lastErr, lastServer = err, s
		s.release()
		s.st.total.Add(1)
		s.st.metrics.requests[classError].Inc()

		var cb *clientBodyError
		if errors.As(err, &cb) {
			// Reading the client's body failed (over the route's limit,
			// cut short, bad chunking): the client's fault, not the
			// server's.
			h.badBody(w, r, cb.err)
			return
		}
		if err == errClientGone || ctx.Err() != nil {
			// The client left; that says nothing about the server.
			h.clientGone(w, r, "waiting for the upstream response", lastErr)
			return
		}
		lastCause = classify(lastErr)
		p.recordFailure(s, lastCause, lastErr)
		// Not sent: the connection failed, or a kept-alive connection
		// turned out closed by the server before anything was written.
		var de *DialError
		beforeSend := errors.As(lastErr, &de) || (se != nil && !se.sent)
		retry := attempt <= p.cfg.Retries &&
			((beforeSend && body.n == 0) || (replayAfterSend && body.replayable()))
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

// keepAliveExpiry is when to stop using a connection whose server said
// Keep-Alive: timeout=secs: a second before.
func keepAliveExpiry(secs int64) int64 {
	if secs <= 0 {
		return 0
	}
	return nanotime() + (secs-1)*int64(time.Second)
}

// safeToResend is net/http's rule for sending a request again after a
// kept-alive connection failed under it: a method without side effects, or
// a request that carries an idempotency key.
func safeToResend(r *http.Request) bool {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	_, k1 := r.Header["Idempotency-Key"]
	_, k2 := r.Header["X-Idempotency-Key"]
	return k1 || k2
}

// pickAcquire picks a server and counts the request against it, skipping
// servers that reached MaxConns between the pick and the count.
func (p *Pool) pickAcquire(sel *selection) *server {
	if sel.m == nil {
		sel.m = p.mem.Load()
	}
	for range len(sel.m.servers) + 1 {
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

// hostFor is the Host sent to s: host_header, else the client's, else the
// server's address (a request without Host, HTTP/1.0).
func (h *handler) hostFor(r *http.Request, s *server) string {
	if hh := h.p.cfg.HostHeader; hh != "" {
		return hh
	}
	if r.Host != "" {
		return r.Host
	}
	if strings.HasPrefix(s.cfg.Addr, "unix:") {
		return "localhost"
	}
	return s.cfg.Addr
}

// target is the escaped path (after strip_prefix) and query sent upstream.
func (h *handler) target(r *http.Request) (string, string) {
	path, raw := r.URL.Path, r.URL.RawPath
	if h.strip != "" {
		path, raw = stripPrefix(h.strip, path, raw)
	}
	u := url.URL{Path: path, RawPath: raw}
	ep := u.EscapedPath()
	if ep == "" {
		ep = "/"
	} else if ep[0] != '/' && ep != "*" {
		ep = "/" + ep
	}
	return ep, r.URL.RawQuery
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

// serveResponse copies the upstream response to the client, streaming. c
// holds the response head (ex.headLen bytes) and what followed it.
func (h *handler) serveResponse(w http.ResponseWriter, r *http.Request, ex *exchange, c *upConn, s *server) {
	st := s.st
	status := ex.resp.Status
	if status == http.StatusSwitchingProtocols {
		c.close()
		err := errors.New("answered 101 Switching Protocols to a request that asked for no upgrade")
		h.p.recordFailure(s, causeProtocol, err)
		st.metrics.requests[classError].Inc()
		h.fail(w, r, s, causeProtocol, err, 1)
		return
	}
	st.metrics.requests[statusClass(status)].Inc()
	h.p.recordSuccess(s)

	ex.snap.take(c.buffered()[:ex.headLen], ex.resp.Fields)
	fm := scanFields(ex.resp.Fields)
	c.consume(ex.headLen)
	if fm.keepAlive > 0 {
		c.expires = keepAliveExpiry(fm.keepAlive)
	}
	kind, length := ex.resp.BodyFor(r.Method)
	keep := !ex.resp.Close && !ex.unsent
	b := &ex.body
	buffered := kind != httpwire.BodyNone && h.buffers(fm)
	bw := waiter{ctx: r.Context(), poll: bodyPoll}
	if buffered {
		// A buffered body has no reason to pause (nginx
		// proxy_read_timeout); a stream may stay silent for long.
		rht := h.p.cfg.ResponseHeaderTimeout
		bw.poll, bw.idle, bw.kind, bw.limit = min(bodyPoll, rht), rht, waitBody, rht
	}
	b.reset(c, kind, length, keep, bw)
	if buffered && kind == httpwire.BodyLength && length <= h.buf.ResponseMemory {
		h.serveSmall(w, r, ex, s, length)
		return
	}
	wh := w.Header()
	var meta respMeta
	meta, ex.seen = copyResponseHeader(wh, &ex.snap, ex.seen)
	if meta.trailerNames != "" {
		wh["Trailer"] = []string{meta.trailerNames}
	}
	if kind == httpwire.BodyNone {
		w.WriteHeader(status)
		return
	}
	if buffered {
		w.WriteHeader(status)
		h.servePiped(w, r, ex, s, c)
		return
	}
	w.WriteHeader(status)

	mode := h.flush
	if mode == 0 && (kind != httpwire.BodyLength || fm.eventStream) {
		mode = -1
	}
	var rc *http.ResponseController
	if mode != 0 {
		rc = http.NewResponseController(w)
	}
	if mode < 0 {
		_ = rc.Flush() // the client sees the header before the first event
	}
	rerr, werr := copyBody(w, rc, b, mode)
	switch {
	case werr != nil || (rerr != nil && (rerr == errClientGone || r.Context().Err() != nil)):
		// The client left mid-response. Closing the body drops the upstream
		// connection, which stops the server's work too.
		b.Close()
		return
	case rerr != nil:
		b.Close()
		h.bodyFailed(r, s, status, rerr)
	}
	for k, vv := range b.trailer {
		wh[http.TrailerPrefix+k] = vv
	}
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
// naming the upstream, the server and the cause. A gRPC call gets the
// matching gRPC status instead (grpc.go).
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
	h.errorReply(w, r, code, cause, text)
}

// errorReply writes one of the proxy's own answers: text with its HTTP
// status, or for a gRPC call the gRPC status for it, with the text (less
// its status line) as grpc-message.
func (h *handler) errorReply(w http.ResponseWriter, r *http.Request, code, cause int, text string) {
	if isGRPC(r.Header) {
		_, msg, _ := strings.Cut(strings.TrimSpace(text), ": ")
		writeGRPCError(w, grpcCodeFor(code, cause), "edged: "+msg)
		return
	}
	writeError(w, code, text)
}

// unavailable answers 503 when no server can take the request.
func (h *handler) unavailable(w http.ResponseWriter, r *http.Request) {
	h.p.m.unavailable.WithLabelValues(h.p.name).Inc()
	h.log.Warn("no upstream server available, answered 503", "servers", h.p.summary(),
		"method", r.Method, "path", r.URL.Path, "request_id", h.requestID(r))
	h.errorReply(w, r, http.StatusServiceUnavailable, 0, "503 Service Unavailable: no upstream server is available\n")
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
		h.errorReply(w, r, http.StatusRequestTimeout, 0, "408 Request Timeout: the request body stopped arriving\n")
		return
	}
	if r.Context().Err() != nil {
		h.clientGone(w, r, "reading the request body", err)
		return
	}
	w.Header().Set("Connection", "close")
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		h.errorReply(w, r, http.StatusRequestEntityTooLarge, 0, "413 Content Too Large: the request body is larger than this route allows\n")
		return
	}
	h.log.Debug("could not read the request body", "cause", err.Error(), "path", r.URL.Path)
	h.errorReply(w, r, http.StatusBadRequest, 0, "400 Bad Request: the request body could not be read\n")
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

func (h *handler) requestID(r *http.Request) string {
	if v := r.Header[h.ridKey]; len(v) > 0 {
		return v[0]
	}
	return ""
}
