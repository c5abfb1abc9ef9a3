package cache

import (
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// serveObject answers r from a stored response: 304 for a matching client
// conditional, 206 for a single satisfiable range, else the whole body.
// cs is the Cache-Status (a hit's is built here; extra parameters for a hit
// may be passed in cs). It returns false, having written nothing, when the
// body is no longer available or fails its checksum.
func (h *handler) serveObject(w http.ResponseWriter, r *http.Request, o *object, m *meta, age time.Duration, cs string, hit bool) bool {
	c := h.c
	var body []byte
	var file *os.File
	if p := o.mem.Load(); p != nil {
		body = *p
	} else if df := o.disk.Load(); df != nil {
		if o.size <= c.o.MemoryObjectMax {
			b, err := c.disk.readBody(o, df)
			if err != nil {
				c.discard(o, err)
				return false
			}
			body = b
			if !o.gone.Load() && o.mem.CompareAndSwap(nil, &b) {
				c.addToMemory(o)
			}
		} else {
			if err := c.disk.verify(o, df); err != nil {
				c.discard(o, err)
				return false
			}
			f, err := os.Open(df.path)
			if err != nil {
				return false // evicted meanwhile
			}
			defer f.Close()
			file = f
		}
	} else {
		return false
	}
	if hit {
		c.met.hits.Inc()
		c.mem.hit(o)
	}
	if !o.dref.Load() {
		o.dref.Store(true)
	}

	hdr := w.Header()
	for i := range m.fields {
		f := &m.fields[i]
		hdr[f.name] = f.values
	}
	hh := o.hitHeaders(m, age, cs, hit)
	hdr["Age"] = hh.age
	hdr["Cache-Status"] = hh.cs

	if notModified(r, m) {
		writeNotModified(w, m)
		return true
	}
	status, start, n := m.status, int64(0), o.size
	if m.status == http.StatusOK && len(r.Header["Range"]) > 0 && ifRangeOK(r, m) {
		if s, e, ok, unsat := parseRange(r.Header.Get("Range"), o.size); unsat {
			hdr["Content-Range"] = []string{"bytes */" + strconv.FormatInt(o.size, 10)}
			delete(hdr, "Content-Length")
			w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
			return true
		} else if ok {
			status, start, n = http.StatusPartialContent, s, e-s+1
			hdr["Content-Range"] = []string{"bytes " + strconv.FormatInt(s, 10) + "-" + strconv.FormatInt(e, 10) + "/" + strconv.FormatInt(o.size, 10)}
			hdr["Content-Length"] = []string{strconv.FormatInt(n, 10)}
		}
	}
	withTrailers := len(m.trailers) > 0 && status == http.StatusOK && r.Method != http.MethodHead
	if withTrailers {
		// Trailers follow a chunked body in HTTP/1.1: no Content-Length.
		delete(hdr, "Content-Length")
		hdr["Trailer"] = m.trailerNames()
	}
	w.WriteHeader(status)
	if r.Method == http.MethodHead || !bodyAllowed(m.status) {
		return true
	}
	if withTrailers {
		defer func() {
			for k, v := range m.trailers {
				hdr[k] = v
			}
		}()
	}
	if body != nil {
		w.Write(body[start : start+n])
		return true
	}
	if start > 0 {
		if _, err := file.Seek(start, io.SeekStart); err != nil {
			panic(http.ErrAbortHandler)
		}
	}
	// A LimitedReader over an *os.File lets net/http use sendfile.
	if k, err := io.Copy(w, &io.LimitedReader{R: file, N: n}); err != nil && k < n && r.Context().Err() == nil {
		panic(http.ErrAbortHandler)
	}
	return true
}

// trailerNames is the Trailer field announcing the stored trailers.
func (m *meta) trailerNames() []string {
	names := make([]string, 0, len(m.trailers))
	for k := range m.trailers {
		names = append(names, k)
	}
	slices.Sort(names)
	return []string{strings.Join(names, ", ")}
}

// discard drops an object whose disk entry failed its checksum.
func (c *Cache) discard(o *object, err error) {
	c.log.Warn("discarding a corrupt disk cache entry; fetching it again", "key", o.key, "err", err)
	c.drop(o)
}

// stream answers r from a fill's growing body.
func (h *handler) stream(w http.ResponseWriter, r *http.Request, f *fill, leader bool) {
	m := f.m
	src := m.header
	if leader {
		src = f.lhdr
	}
	hdr := w.Header()
	for k, v := range src {
		hdr[k] = v
	}
	cs := "edged; fwd=" + f.fwd
	if f.fwd == "stale" {
		cs += "; fwd-status=" + strconv.Itoa(m.status)
	}
	if leader {
		cs += "; stored"
	} else {
		cs += "; collapsed"
		hdr["Age"] = []string{strconv.FormatInt(int64(m.age(h.c.o.Now())/time.Second), 10)}
	}
	hdr["Cache-Status"] = append(slices.Clip(src["Cache-Status"]), cs)
	if notModified(r, m) {
		writeNotModified(w, m)
		return
	}
	// A single range is cut from the arriving body when its length is known.
	status, off, end := m.status, int64(0), int64(-1)
	if m.status == http.StatusOK && f.cl >= 0 && len(r.Header["Range"]) > 0 && ifRangeOK(r, m) {
		if s, e, ok, unsat := parseRange(r.Header.Get("Range"), f.cl); unsat {
			hdr["Content-Range"] = []string{"bytes */" + strconv.FormatInt(f.cl, 10)}
			delete(hdr, "Content-Length")
			w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
			return
		} else if ok {
			status, off, end = http.StatusPartialContent, s, e+1
			hdr["Content-Range"] = []string{"bytes " + strconv.FormatInt(s, 10) + "-" + strconv.FormatInt(e, 10) + "/" + strconv.FormatInt(f.cl, 10)}
			hdr["Content-Length"] = []string{strconv.FormatInt(end-off, 10)}
		}
	}
	w.WriteHeader(status)
	if r.Method == http.MethodHead || !bodyAllowed(m.status) {
		return
	}
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	rc := http.NewResponseController(w)
	flush := func() { rc.Flush() }
	for {
		p, err := f.body.next(r.Context(), off, *bp, flush)
		if end >= 0 && int64(len(p)) > end-off {
			p, err = p[:end-off], io.EOF
		}
		if end < 0 && f.cl >= 0 && off+int64(len(p)) >= f.cl && err == nil {
			// The last bytes wait until the response is stored: a client
			// that has the whole body and asks again finds it in the cache.
			err = f.body.waitDone(r.Context())
			if err == nil {
				err = io.EOF
			}
		}
		if len(p) > 0 {
			if _, werr := w.Write(p); werr != nil {
				return
			}
			off += int64(len(p))
		}
		if err == io.EOF && end < 0 {
			for k, v := range f.trailers {
				hdr[http.TrailerPrefix+k] = v
			}
		}
		if err == io.EOF || (end >= 0 && off >= end) {
			return
		}
		if err != nil {
			if r.Context().Err() != nil {
				return
			}
			// The origin failed mid-body: cut the connection so the
			// client cannot take a truncated body for a whole one.
			panic(http.ErrAbortHandler)
		}
	}
}

// notModifiedDrop is what a 304 made from a stored response leaves out:
// framing, and representation metadata other than what RFC 9110 15.4.5
// asks a 304 to repeat (Cache-Control, Content-Location, Date, ETag,
// Expires, Vary are kept, as is everything that is not representation
// metadata).
var notModifiedDrop = []string{"Content-Length", "Content-Range", "Transfer-Encoding", "Trailer",
	"Content-Type", "Content-Encoding", "Content-Language"}

func writeNotModified(w http.ResponseWriter, m *meta) {
	hdr := w.Header()
	for _, k := range notModifiedDrop {
		delete(hdr, k)
	}
	if m.etag != "" {
		// Last-Modified guides a cache update only without an ETag.
		delete(hdr, "Last-Modified")
	}
	w.WriteHeader(http.StatusNotModified)
}

// notModified evaluates If-None-Match, else If-Modified-Since, against a
// stored 2xx response (RFC 9110 13.2.2).
func notModified(r *http.Request, m *meta) bool {
	if m.status < 200 || m.status >= 300 {
		return false
	}
	if inm := r.Header["If-None-Match"]; len(inm) > 0 {
		return m.etag != "" && etagMatchWeak(inm, m.etag)
	}
	if ims := r.Header["If-Modified-Since"]; len(ims) > 0 && m.lastModified != "" {
		t, ok1 := parseHTTPDate(ims[0])
		lm, ok2 := parseHTTPDate(m.lastModified)
		return ok1 && ok2 && !lm.After(t)
	}
	return false
}

func opaque(tag string) string { return strings.TrimPrefix(tag, "W/") }

// etagMatchWeak: does any entity-tag in the If-None-Match lines match etag
// by weak comparison?
func etagMatchWeak(lines []string, etag string) bool {
	want := opaque(etag)
	for _, line := range lines {
		for _, t := range strings.Split(line, ",") {
			t = strings.TrimSpace(t)
			if t == "*" || (t != "" && opaque(t) == want) {
				return true
			}
		}
	}
	return false
}

// ifRangeOK: without If-Range, or when it matches by strong comparison,
// the range applies; otherwise the whole response is sent.
func ifRangeOK(r *http.Request, m *meta) bool {
	ir := r.Header.Get("If-Range")
	if ir == "" {
		return true
	}
	if strings.HasPrefix(ir, `"`) || strings.HasPrefix(ir, "W/") {
		return !strings.HasPrefix(ir, "W/") && !strings.HasPrefix(m.etag, "W/") && ir == m.etag
	}
	t, ok1 := parseHTTPDate(ir)
	lm, ok2 := parseHTTPDate(m.lastModified)
	return ok1 && ok2 && t.Equal(lm)
}

// parseRange parses a single byte range. ok is false for anything else
// (several ranges, other units, syntax errors), in which case the whole
// response is sent; unsat means no byte of it lies within the body.
func parseRange(v string, size int64) (start, end int64, ok, unsat bool) {
	spec, found := strings.CutPrefix(v, "bytes=")
	if !found || strings.Contains(spec, ",") {
		return 0, 0, false, false
	}
	a, b, found := strings.Cut(strings.TrimSpace(spec), "-")
	if !found {
		return 0, 0, false, false
	}
	if a == "" {
		n, err := strconv.ParseInt(b, 10, 64)
		if err != nil || n < 0 {
			return 0, 0, false, false
		}
		if n == 0 || size == 0 {
			return 0, 0, false, true
		}
		return max(size-n, 0), size - 1, true, false
	}
	s, err := strconv.ParseInt(a, 10, 64)
	if err != nil || s < 0 {
		return 0, 0, false, false
	}
	e := size - 1
	if b != "" {
		if e, err = strconv.ParseInt(b, 10, 64); err != nil || e < s {
			return 0, 0, false, false
		}
		e = min(e, size-1)
	}
	if s >= size {
		return 0, 0, false, true
	}
	return s, e, true, false
}

// hitHdr holds the Age and Cache-Status values of an object for one second
// of its age, so that hits within that second share them.
type hitHdr struct {
	m     *meta
	secs  int64
	extra string
	age   []string
	cs    []string
}

func (o *object) hitHeaders(m *meta, age time.Duration, cs string, hit bool) *hitHdr {
	secs := int64(age / time.Second)
	if hit {
		if p := o.hh.Load(); p != nil && p.m == m && p.secs == secs && p.extra == cs {
			return p
		}
	}
	ttl := int64((m.lifetime - age) / time.Second)
	var b strings.Builder
	b.Grow(48)
	if hit {
		b.WriteString("edged; hit; ttl=")
		b.WriteString(strconv.FormatInt(ttl, 10))
		if cs != "" {
			b.WriteString("; ")
			b.WriteString(cs)
		}
	} else {
		b.WriteString(cs)
		b.WriteString("; ttl=")
		b.WriteString(strconv.FormatInt(ttl, 10))
	}
	p := &hitHdr{m: m, secs: secs, extra: cs,
		age: []string{strconv.FormatInt(secs, 10)},
		cs:  slices.Clip(append(slices.Clip(m.header["Cache-Status"]), b.String()))}
	if hit {
		o.hh.Store(p)
	}
	return p
}
