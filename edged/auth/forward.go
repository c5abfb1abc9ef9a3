package auth

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/edgeapp/edgeapp/edged/limit"
	"github.com/edgeapp/edgeapp/edged/reqinfo"
)

// DefaultForwardTimeout bounds one authentication subrequest.
const DefaultForwardTimeout = 5 * time.Second

// ForwardOptions configure forward authentication.
//
// For each request, edged asks URL with GET, sending the client's headers
// (its cookies and Authorization included, its body not) and where the
// request was going: X-Forwarded-Method, -Proto, -Host, -Uri and -For, and
// X-Original-Method and X-Original-URL (nginx's auth_request convention).
//   - 2xx: the request goes on, carrying the CopyHeaders the service
//     answered with. The client's own copies of those headers are always
//     removed first, so a client cannot pose as a user.
//   - 401, 403 and redirects (3xx, a login page): the service's answer
//     goes to the client, status, headers and body.
//   - Anything else, or no answer within Timeout: 502, and a log line.
type ForwardOptions struct {
	URL         string
	CopyHeaders []string
	Timeout     time.Duration
	Log         *slog.Logger
}

// Forward is a compiled forward-auth check.
type Forward struct {
	u       *url.URL
	copy    []string // canonical names
	timeout time.Duration
	client  *http.Client
	log     *slog.Logger
}

// NewForward checks o and prepares the client; nothing is dialled.
func NewForward(o ForwardOptions) (*Forward, error) {
	u, err := url.Parse(o.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("url %q: want an http(s) URL", o.URL)
	}
	f := &Forward{u: u, timeout: o.Timeout, log: o.Log}
	if f.timeout <= 0 {
		f.timeout = DefaultForwardTimeout
	}
	if f.log == nil {
		f.log = slog.Default()
	}
	for _, h := range o.CopyHeaders {
		f.copy = append(f.copy, http.CanonicalHeaderKey(h))
	}
	f.client = &http.Client{
		Transport: &http.Transport{
			Proxy:                 nil, // never through an environment proxy
			DialContext:           (&net.Dialer{Timeout: f.timeout}).DialContext,
			MaxIdleConnsPerHost:   64,
			IdleConnTimeout:       90 * time.Second,
			ResponseHeaderTimeout: f.timeout,
			ForceAttemptHTTP2:     true,
		},
		// The service's redirects go to the client, not followed here.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return f, nil
}

// Handler asks the service about each request before next sees it.
func (f *Forward) Handler(m *Metrics, site, route string, next http.Handler) http.Handler {
	return &forwardHandler{f: f, next: next, out: m.outcomes(site, route, "forward")}
}

type forwardHandler struct {
	f    *Forward
	next http.Handler
	out  outcomes
}

// requestHeadersNotSent are the client's headers a body-less GET to the
// service must not carry.
var requestHeadersNotSent = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Proxy-Connection": true, "Te": true, "Trailer": true,
	"Transfer-Encoding": true, "Upgrade": true, "Content-Length": true, "Expect": true,
	"Content-Type": true, "Content-Encoding": true, "Host": true,
}

// responseHeadersNotCopied are the service's headers not passed to the
// client with a 401/403/3xx (the body is re-framed here).
var responseHeadersNotCopied = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Transfer-Encoding": true, "Trailer": true,
	"Content-Length": true, "Upgrade": true,
}

// maxDenialBody bounds the service's body relayed to the client.
const maxDenialBody = 64 << 10

func (h *forwardHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f := h.f
	for _, name := range f.copy {
		delete(r.Header, name)
	}
	ctx, cancel := context.WithTimeout(r.Context(), f.timeout)
	defer cancel()
	res, err := f.client.Do(f.subrequest(ctx, r))
	if err != nil {
		if r.Context().Err() != nil {
			w.WriteHeader(499)
			return
		}
		inc(h.out.failed)
		f.log.Warn("forward auth: the authentication service did not answer; answering 502", "url", f.u.Redacted(),
			"cause", err.Error(), "method", r.Method, "path", r.URL.Path, "request_id", requestID(r))
		plain(w, http.StatusBadGateway, "502 Bad Gateway: the authentication service did not answer\n")
		return
	}
	defer res.Body.Close()
	switch {
	case res.StatusCode >= 200 && res.StatusCode < 300:
		for _, name := range f.copy {
			if v := res.Header[name]; len(v) > 0 {
				r.Header[name] = v
			}
		}
		io.Copy(io.Discard, io.LimitReader(res.Body, maxDenialBody)) // so the connection is reused
		inc(h.out.ok)
		h.next.ServeHTTP(w, r)
	case res.StatusCode == http.StatusUnauthorized || res.StatusCode == http.StatusForbidden ||
		res.StatusCode >= 300 && res.StatusCode < 400 && res.StatusCode != http.StatusNotModified:
		inc(h.out.denied)
		relay(w, r, res)
	default:
		inc(h.out.failed)
		f.log.Warn("forward auth: the authentication service answered neither 2xx nor 401/403; answering 502", "url", f.u.Redacted(),
			"status", res.StatusCode, "method", r.Method, "path", r.URL.Path, "request_id", requestID(r))
		plain(w, http.StatusBadGateway, "502 Bad Gateway: the authentication service failed\n")
	}
}

// subrequest is the GET sent to the service for r.
func (f *Forward) subrequest(ctx context.Context, r *http.Request) *http.Request {
	out := &http.Request{
		Method: http.MethodGet, URL: f.u, Host: f.u.Host, Header: make(http.Header, len(r.Header)+8),
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
	}
	out = out.WithContext(ctx)
	for k, v := range r.Header {
		if !requestHeadersNotSent[k] {
			out.Header[k] = v
		}
	}
	proto := "http"
	if r.TLS != nil {
		proto = "https"
	}
	uri := r.URL.RequestURI() // the normalised path the route matched
	client := limit.ClientAddr(r)
	out.Header["X-Forwarded-Method"] = []string{r.Method}
	out.Header["X-Forwarded-Proto"] = []string{proto}
	out.Header["X-Forwarded-Host"] = []string{r.Host}
	out.Header["X-Forwarded-Uri"] = []string{uri}
	out.Header["X-Original-Method"] = []string{r.Method}
	out.Header["X-Original-Url"] = []string{proto + "://" + r.Host + uri}
	if client.IsValid() {
		out.Header["X-Forwarded-For"] = []string{client.String()}
		out.Header["X-Real-Ip"] = []string{client.String()}
	} else {
		delete(out.Header, "X-Forwarded-For")
		delete(out.Header, "X-Real-Ip")
	}
	delete(out.Header, "Forwarded")
	return out
}

// relay passes the service's refusal (or redirect to a login page) on.
func relay(w http.ResponseWriter, r *http.Request, res *http.Response) {
	body, err := io.ReadAll(io.LimitReader(res.Body, maxDenialBody+1))
	if err != nil || len(body) > maxDenialBody {
		body = nil
	}
	h := w.Header()
	for k, v := range res.Header {
		if !responseHeadersNotCopied[k] {
			h[k] = v
		}
	}
	h["Content-Length"] = []string{strconv.Itoa(len(body))}
	w.WriteHeader(res.StatusCode)
	if r.Method != http.MethodHead {
		w.Write(body)
	}
}

func requestID(r *http.Request) string {
	if info := reqinfo.From(r.Context()); info != nil {
		return info.RequestID
	}
	return ""
}
