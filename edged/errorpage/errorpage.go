// Package errorpage answers errors with the operator's own pages (nginx's
// error_page) and puts a site or a route in maintenance: 503 with a page
// and Retry-After, without asking the application.
//
// Pages replace the responses edged makes itself (403 from allow/deny,
// 401 and 429 from auth and limits, 413, 502/503/504 from the proxy, 404
// when no route matches). An upstream's own error responses pass as they
// are unless interception is on (nginx's proxy_intercept_errors), and a
// response served from the cache counts as the upstream's. A replaced
// response keeps its status and its headers other than the body's
// (WWW-Authenticate, Retry-After, Allow, Set-Cookie stay); the page's
// Content-Type follows its file name. Pages are read when the
// configuration is loaded, so a missing file fails the reload, not a
// request.
package errorpage

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"

	"github.com/edgeapp/edgeapp/edged/reqinfo"
)

// maxPage bounds a page file: pages are held in memory.
const maxPage = 1 << 20

// Page is one file's content, ready to send.
type Page struct {
	body   []byte
	ctype  []string
	length []string
}

// ReadPage reads a page file.
func ReadPage(path string) (*Page, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("error page: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("error page: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("error page %s: not a regular file", path)
	}
	if fi.Size() > maxPage {
		return nil, fmt.Errorf("error page %s: %d bytes, more than the 1MiB a page may have", path, fi.Size())
	}
	body := make([]byte, fi.Size())
	if _, err := f.ReadAt(body, 0); err != nil && fi.Size() > 0 {
		return nil, fmt.Errorf("error page %s: %w", path, err)
	}
	ct := mime.TypeByExtension(filepath.Ext(path))
	if ct == "" {
		ct = "text/html; charset=utf-8"
	}
	return &Page{body: body, ctype: []string{ct}, length: []string{strconv.Itoa(len(body))}}, nil
}

// write sends p with status, replacing the body headers of h.
func (p *Page) write(w http.ResponseWriter, r *http.Request, status int) {
	h := w.Header()
	for _, k := range bodyHeaders {
		delete(h, k)
	}
	h["Content-Type"] = p.ctype
	h["Content-Length"] = p.length
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		w.Write(p.body)
	}
}

// bodyHeaders describe a body that a page replaces.
var bodyHeaders = [...]string{
	"Content-Length", "Content-Type", "Content-Encoding", "Content-Range", "Content-Language",
	"Content-Disposition", "Etag", "Last-Modified", "Accept-Ranges", "Transfer-Encoding", "Trailer",
	"X-Content-Type-Options",
}

// Range maps statuses lo..hi to a page.
type Range struct {
	Lo, Hi int
	Page   *Page
}

// Pages is a compiled set of error pages.
type Pages struct {
	ranges    []Range // exact statuses before classes
	intercept bool
}

// New compiles ranges; intercept also replaces upstream errors.
func New(ranges []Range, intercept bool) *Pages {
	rs := append([]Range(nil), ranges...)
	sort.SliceStable(rs, func(i, j int) bool { return rs[i].Hi-rs[i].Lo < rs[j].Hi-rs[j].Lo })
	return &Pages{ranges: rs, intercept: intercept}
}

// Find returns the page for status, or nil.
func (p *Pages) Find(status int) *Page {
	if p == nil {
		return nil
	}
	for i := range p.ranges {
		if status >= p.ranges[i].Lo && status <= p.ranges[i].Hi {
			return p.ranges[i].Page
		}
	}
	return nil
}

// Error answers status with its page, or with text when there is none.
func (p *Pages) Error(w http.ResponseWriter, r *http.Request, status int, text string) {
	if pg := p.Find(status); pg != nil {
		pg.write(w, r, status)
		return
	}
	h := w.Header()
	h["Content-Type"] = []string{"text/plain; charset=utf-8"}
	h["X-Content-Type-Options"] = []string{"nosniff"}
	h["Content-Length"] = []string{strconv.Itoa(len(text))}
	w.WriteHeader(status)
	w.Write([]byte(text))
}

// Handler replaces next's error responses with pages.
func (p *Pages) Handler(next http.Handler) http.Handler {
	return &handler{p: p, next: next}
}

type handler struct {
	p    *Pages
	next http.Handler
}

var writers = sync.Pool{New: func() any { return new(pageWriter) }}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	pw := writers.Get().(*pageWriter)
	*pw = pageWriter{ResponseWriter: w, p: h.p, r: r}
	h.next.ServeHTTP(pw, r)
	*pw = pageWriter{}
	writers.Put(pw)
}

// pageWriter decides at WriteHeader whether the response is replaced; a
// replaced response's own body is dropped.
type pageWriter struct {
	http.ResponseWriter
	p        *Pages
	r        *http.Request
	decided  bool
	replaced bool
}

func (w *pageWriter) WriteHeader(code int) {
	if w.decided {
		w.ResponseWriter.WriteHeader(code)
		return
	}
	if code < 200 {
		w.ResponseWriter.WriteHeader(code) // 1xx and 101 pass
		return
	}
	w.decided = true
	if code >= 400 {
		if pg := w.p.Find(code); pg != nil && (w.p.intercept || !fromUpstream(w.r)) {
			w.replaced = true
			pg.write(w.ResponseWriter, w.r, code)
			return
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

// fromUpstream reports whether the response being written is the
// upstream's (through the proxy or from the cache).
func fromUpstream(r *http.Request) bool {
	info := reqinfo.From(r.Context())
	if info == nil {
		return false
	}
	switch info.CacheStatus {
	case "HIT", "STALE":
		return true
	}
	return info.UpstreamStatus != 0
}

func (w *pageWriter) Write(b []byte) (int, error) {
	if !w.decided {
		w.WriteHeader(http.StatusOK)
	}
	if w.replaced {
		return len(b), nil
	}
	return w.ResponseWriter.Write(b)
}

// ReadFrom keeps sendfile for static files.
func (w *pageWriter) ReadFrom(src io.Reader) (int64, error) {
	if !w.decided {
		w.WriteHeader(http.StatusOK)
	}
	if w.replaced {
		return io.Copy(io.Discard, src)
	}
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		return rf.ReadFrom(src)
	}
	return io.Copy(struct{ io.Writer }{w.ResponseWriter}, src)
}

func (w *pageWriter) Flush() {
	if !w.decided {
		w.WriteHeader(http.StatusOK)
	}
	if w.replaced {
		return
	}
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *pageWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if w.replaced {
		return nil, nil, errors.New("errorpage: response already replaced")
	}
	w.decided = true
	return http.NewResponseController(w.ResponseWriter).Hijack()
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (w *pageWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
