package server

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
)

// respondHandler answers with a fixed status and body.
type respondHandler struct {
	status int
	body   []byte
	length string
}

func newRespond(status int, body string) *respondHandler {
	return &respondHandler{status: status, body: []byte(body), length: strconv.Itoa(len(body))}
}

func (h *respondHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	if _, ok := hd["Content-Type"]; !ok && len(h.body) > 0 {
		hd["Content-Type"] = plainText
	}
	hd["Content-Length"] = []string{h.length}
	w.WriteHeader(h.status)
	if r.Method != http.MethodHead {
		w.Write(h.body)
	}
}

var plainText = []string{"text/plain; charset=utf-8"}

// redirectHandler sends the client to a target built from a template in
// which {path}, {query}, {uri} (path and query) and {host} are replaced.
type redirectHandler struct {
	status int
	parts  []redirectPart
}

type redirectPart struct {
	literal string
	field   string // "", "path", "query", "uri", "host"
}

func newRedirect(status int, target string) *redirectHandler {
	h := &redirectHandler{status: status}
	for target != "" {
		i := strings.IndexByte(target, '{')
		j := strings.IndexByte(target[max(i, 0):], '}') + max(i, 0)
		if i < 0 || j < i {
			h.parts = append(h.parts, redirectPart{literal: target})
			break
		}
		field := target[i+1 : j]
		switch field {
		case "path", "query", "uri", "host":
			if i > 0 {
				h.parts = append(h.parts, redirectPart{literal: target[:i]})
			}
			h.parts = append(h.parts, redirectPart{field: field})
		default:
			h.parts = append(h.parts, redirectPart{literal: target[:j+1]})
		}
		target = target[j+1:]
	}
	return h
}

func (h *redirectHandler) target(r *http.Request) string {
	var b strings.Builder
	for _, p := range h.parts {
		switch p.field {
		case "":
			b.WriteString(p.literal)
		case "path":
			b.WriteString(r.URL.EscapedPath())
		case "query":
			b.WriteString(r.URL.RawQuery)
		case "uri":
			b.WriteString(r.URL.RequestURI())
		case "host":
			b.WriteString(hostOnly(r.Host))
		}
	}
	return b.String()
}

func (h *redirectHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header()["Location"] = []string{h.target(r)}
	w.Header()["Content-Length"] = []string{"0"}
	w.WriteHeader(h.status)
}

// limitBody refuses bodies over max: at once from Content-Length, or when
// a chunked body passes the limit while being read (the handler then sees
// an *http.MaxBytesError).
type limitBody struct {
	max  int64
	next http.Handler
}

func (h *limitBody) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.ContentLength > h.max {
		tooLarge(w, h.max)
		return
	}
	if r.Body != nil && r.Body != http.NoBody && r.ContentLength < 0 {
		r.Body = http.MaxBytesReader(w, r.Body, h.max)
	}
	h.next.ServeHTTP(w, r)
}

func tooLarge(w http.ResponseWriter, limit int64) {
	w.Header()["Connection"] = []string{"close"}
	plainError(w, http.StatusRequestEntityTooLarge, "request body larger than "+strconv.FormatInt(limit, 10)+" bytes\n")
}

// IsBodyTooLarge reports whether err came from a body over the limit.
func IsBodyTooLarge(err error) bool {
	var mbe *http.MaxBytesError
	return errors.As(err, &mbe)
}

// requestHeaders applies the route's request header edits.
type requestHeaders struct {
	ops  *headerOps
	next http.Handler
}

func (h *requestHeaders) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.ops.apply(r.Header)
	h.next.ServeHTTP(w, r)
}

func plainError(w http.ResponseWriter, status int, msg string) {
	h := w.Header()
	h["Content-Type"] = plainText
	h["X-Content-Type-Options"] = []string{"nosniff"}
	h["Content-Length"] = []string{strconv.Itoa(len(msg))}
	w.WriteHeader(status)
	w.Write([]byte(msg))
}

func hostOnly(host string) string {
	if i := strings.LastIndexByte(host, ':'); i >= 0 && !strings.HasSuffix(host, "]") {
		return host[:i]
	}
	return host
}
