package h2

import (
	"errors"
	"io"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/net/http2"
)

var errMalformed = errors.New("h2: malformed request")

// processHeaders starts a stream on a request's HEADERS (with its
// CONTINUATIONs), or ends one with trailers.
func (c *conn) processHeaders(f *http2.MetaHeadersFrame) error {
	id := f.StreamID
	if id%2 == 0 {
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	c.mu.Lock()
	if st := c.streams[id]; st != nil {
		defer c.mu.Unlock()
		return c.processTrailers(st, f)
	}
	if id <= c.maxID {
		// A stream that was closed, or a new stream whose ID is not larger
		// than an earlier one (RFC 9113 5.1, 5.1.1).
		reset := c.wasReset(id)
		c.mu.Unlock()
		if reset {
			return nil // trailers sent before the client saw edged's RST_STREAM
		}
		if id == c.maxID {
			return http2.ConnectionError(http2.ErrCodeStreamClosed)
		}
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	c.maxID = id
	switch {
	case c.goAway == 2 || c.closing || c.broken != nil:
		// After the final GOAWAY: the client retries it elsewhere.
		c.mu.Unlock()
		return http2.StreamError{StreamID: id, Code: http2.ErrCodeRefusedStream}
	case c.open >= int(c.s.o.MaxConcurrentStreams):
		c.mu.Unlock()
		return http2.StreamError{StreamID: id, Code: http2.ErrCodeRefusedStream}
	case c.handlers >= 4*int(c.s.o.MaxConcurrentStreams):
		// Streams reset faster than their handlers end (CVE-2023-44487).
		c.mu.Unlock()
		return http2.ConnectionError(http2.ErrCodeEnhanceYourCalm)
	}
	c.mu.Unlock()
	if f.HasPriority() && f.Priority.StreamDep == id {
		return http2.StreamError{StreamID: id, Code: http2.ErrCodeProtocol}
	}
	st := &stream{c: c, id: id, declared: -1}
	st.ctx.st, st.ctx.parent = st, c.ctx
	st.resp.header = make(http.Header, 8)
	var r *http.Request
	h := c.s.o.Handler
	if f.Truncated || headerListSize(f) > c.s.o.MaxHeaderBytes {
		h = http.HandlerFunc(headerTooLarge)
		r = &http.Request{Method: "GET", URL: &url.URL{Path: "/"}, Proto: "HTTP/2.0", ProtoMajor: 2, Header: http.Header{}, Body: http.NoBody, RemoteAddr: c.remote}
		r = r.WithContext(&st.ctx)
	} else {
		var err error
		if r, err = c.newRequest(st, f); err != nil {
			return http2.StreamError{StreamID: id, Code: http2.ErrCodeProtocol, Cause: err}
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.broken != nil || c.closing {
		return nil
	}
	if d := c.s.o.ReadTimeout; d > 0 {
		st.rDeadline = time.Now().Add(d)
	}
	if d := c.s.o.WriteTimeout; d > 0 {
		st.wDeadline = time.Now().Add(d)
	}
	st.sendWindow = c.peerInitWindow
	st.recvWindow = streamWindow
	st.remoteDone = f.StreamEnded()
	c.streams[id] = st
	c.open++
	c.handlers++
	st.handler, st.req = h, r
	c.s.start(st)
	return nil
}

// processTrailers ends a request body with its trailers.
func (c *conn) processTrailers(st *stream, f *http2.MetaHeadersFrame) error {
	if st.remoteDone {
		return http2.StreamError{StreamID: st.id, Code: http2.ErrCodeStreamClosed}
	}
	// RFC 9113 8.1: a trailer section ends the stream and has no
	// pseudo-header fields.
	if !f.StreamEnded() || len(f.PseudoFields()) > 0 || f.Truncated {
		return http2.StreamError{StreamID: st.id, Code: http2.ErrCodeProtocol}
	}
	if st.trailer != nil {
		for _, hf := range f.RegularFields() {
			k := canonicalName(hf.Name)
			if _, declared := st.trailer[k]; declared {
				st.trailer[k] = append(st.trailer[k], hf.Value)
			}
		}
	}
	return c.endRequestLocked(st)
}

// newRequest makes the http.Request of a new stream, refusing what RFC
// 9113 8.2 and 8.3 call malformed.
func (c *conn) newRequest(st *stream, f *http2.MetaHeadersFrame) (*http.Request, error) {
	var method, scheme, authority, path string
	for _, hf := range f.PseudoFields() {
		switch hf.Name {
		case ":method":
			method = hf.Value
		case ":scheme":
			scheme = hf.Value
		case ":authority":
			authority = hf.Value
		case ":path":
			path = hf.Value
		default: // :status, or :protocol (extended CONNECT is not offered)
			return nil, errMalformed
		}
	}
	if method == "" || !validMethod(method) {
		return nil, errMalformed
	}
	isConnect := method == http.MethodConnect
	if isConnect {
		if scheme != "" || path != "" || authority == "" {
			return nil, errMalformed
		}
	} else if scheme == "" || path == "" {
		return nil, errMalformed
	}
	fields := f.RegularFields()
	header := make(http.Header, len(fields))
	// One backing array for all the values: header[k] = vals[i:i+1:i+1].
	vals := make([]string, len(fields))
	var cookies []string
	host := ""
	for i, hf := range fields {
		switch hf.Name {
		case "connection", "proxy-connection", "keep-alive", "transfer-encoding", "upgrade":
			return nil, errMalformed // RFC 9113 8.2.2
		case "te":
			if hf.Value != "trailers" {
				return nil, errMalformed
			}
		case "cookie":
			// RFC 9113 8.2.3: split cookie fields are joined for HTTP/1.1.
			cookies = append(cookies, hf.Value)
			continue
		case "host":
			if host == "" {
				host = hf.Value
			}
			continue
		}
		k := canonicalName(hf.Name)
		if vv, ok := header[k]; ok {
			header[k] = append(vv, hf.Value)
		} else {
			vals[i] = hf.Value
			header[k] = vals[i : i+1 : i+1]
		}
	}
	if len(cookies) > 0 {
		header["Cookie"] = []string{strings.Join(cookies, "; ")}
	}
	if authority == "" {
		authority = host
	} else if host != "" && host != authority {
		// RFC 9113 8.3.1: a Host that names another authority than
		// :authority is malformed (which one would a proxy behind
		// believe?), as an absolute-form target that disagrees with
		// Host is in HTTP/1.1.
		return nil, errMalformed
	}
	st.declared = -1
	if cl := header["Content-Length"]; len(cl) > 0 {
		if len(cl) > 1 {
			return nil, errMalformed
		}
		n, err := strconv.ParseUint(cl[0], 10, 63)
		if err != nil {
			return nil, errMalformed
		}
		st.declared = int64(n)
		if f.StreamEnded() && n > 0 {
			return nil, errMalformed // RFC 9113 8.1.1: the DATA frames must add up
		}
	}
	r := (&zeroRequest).WithContext(&st.ctx) // the one allocation of the request itself
	r.Method = method
	r.Proto, r.ProtoMajor = "HTTP/2.0", 2
	r.Header = header
	r.Host = authority
	r.RemoteAddr = c.remote
	r.TLS = c.tlsState
	if isConnect {
		r.URL = &url.URL{Host: authority}
		r.RequestURI = authority
	} else if path == "*" && method == http.MethodOptions {
		r.URL = &url.URL{Path: "*"}
		r.RequestURI = path
	} else {
		if path[0] != '/' {
			return nil, errMalformed
		}
		u, err := url.ParseRequestURI(path)
		if err != nil {
			return nil, errMalformed
		}
		r.URL = u
		r.RequestURI = path
	}
	if f.StreamEnded() {
		r.Body = http.NoBody
	} else {
		r.Body = (*reqBody)(st)
		r.ContentLength = st.declared
	}
	if tv := header["Trailer"]; len(tv) > 0 {
		st.trailer = http.Header{}
		for _, v := range tv {
			for _, k := range strings.Split(v, ",") {
				if k = textproto.TrimString(k); k != "" {
					st.trailer[http.CanonicalHeaderKey(k)] = nil
				}
			}
		}
		r.Trailer = st.trailer
	}
	if ev := header["Expect"]; len(ev) == 1 && strings.EqualFold(ev[0], "100-continue") && !f.StreamEnded() {
		st.expect100 = true
	}
	st.resp.isHead = method == http.MethodHead
	return r, nil
}

var zeroRequest http.Request

// headerListSize is the size of a header list as RFC 9113 6.5.2 counts it.
func headerListSize(f *http2.MetaHeadersFrame) int {
	n := 0
	for _, hf := range f.Fields {
		n += int(hf.Size())
	}
	return n
}

func validMethod(m string) bool {
	for i := 0; i < len(m); i++ {
		if !isTokenChar(m[i]) {
			return false
		}
	}
	return true
}

func isTokenChar(b byte) bool {
	return b < 0x80 && tokenChars[b]
}

var tokenChars = func() (t [128]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return
}()

// headerTooLarge answers a request whose header list is over
// MaxHeaderBytes, as net/http does.
func headerTooLarge(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusRequestHeaderFieldsTooLarge)
	io.WriteString(w, "431 Request Header Fields Too Large\n")
}

// Common field names, lower case (as on the wire) and canonical (as in an
// http.Header), so that neither conversion allocates for them.
var (
	canonicalOf = map[string]string{}
	lowerOf     = map[string]string{}
)

func init() {
	for _, k := range []string{
		"Accept", "Accept-Charset", "Accept-Encoding", "Accept-Language", "Accept-Ranges",
		"Access-Control-Allow-Credentials", "Access-Control-Allow-Headers", "Access-Control-Allow-Methods",
		"Access-Control-Allow-Origin", "Access-Control-Expose-Headers", "Access-Control-Max-Age",
		"Access-Control-Request-Headers", "Access-Control-Request-Method", "Age", "Allow", "Alt-Svc",
		"Authorization", "Cache-Control", "Cache-Status", "Cdn-Cache-Control", "Content-Disposition",
		"Content-Encoding", "Content-Language", "Content-Length", "Content-Location", "Content-Range",
		"Content-Security-Policy", "Content-Type", "Cookie", "Date", "Dnt", "Early-Data", "Etag", "Expect",
		"Expires", "Forwarded", "From", "Host", "If-Match", "If-Modified-Since", "If-None-Match",
		"If-Range", "If-Unmodified-Since", "Last-Modified", "Link", "Location", "Max-Forwards", "Origin",
		"Pragma", "Priority", "Proxy-Authenticate", "Proxy-Authorization", "Purpose", "Range", "Referer",
		"Referrer-Policy", "Refresh", "Retry-After", "Sec-Ch-Ua", "Sec-Ch-Ua-Mobile", "Sec-Ch-Ua-Platform",
		"Sec-Fetch-Dest", "Sec-Fetch-Mode", "Sec-Fetch-Site", "Sec-Fetch-User", "Sec-Purpose", "Server",
		"Set-Cookie", "Strict-Transport-Security", "Te", "Trailer", "Upgrade-Insecure-Requests",
		"User-Agent", "Vary", "Via", "Www-Authenticate", "X-Content-Type-Options", "X-Forwarded-For",
		"X-Forwarded-Host", "X-Forwarded-Proto", "X-Frame-Options", "X-Real-Ip", "X-Request-Id",
		"X-Requested-With", "X-Xss-Protection", "X-Cache", "X-Accel-Buffering", "Traceparent",
	} {
		l := strings.ToLower(k)
		canonicalOf[l] = k
		lowerOf[k] = l
	}
}

// canonicalName is the http.Header key of a lower-case wire name.
func canonicalName(l string) string {
	if k, ok := canonicalOf[l]; ok {
		return k
	}
	return http.CanonicalHeaderKey(l)
}

// lowerName is the wire name of an http.Header key.
func lowerName(k string) string {
	if l, ok := lowerOf[k]; ok {
		return l
	}
	for i := 0; i < len(k); i++ {
		if 'A' <= k[i] && k[i] <= 'Z' {
			return strings.ToLower(k)
		}
	}
	return k
}

// unsafeBytes views s as bytes that nobody writes to.
func unsafeBytes(s string) []byte {
	return unsafe.Slice(unsafe.StringData(s), len(s))
}
