// Package static serves files from a directory for a route prefix, the way
// nginx's `alias` does: with Prefix "/static/" and Root "/srv/s", GET
// /static/app.css is /srv/s/app.css.
//
// Behaviour an nginx user should know:
//   - GET and HEAD only; anything else is 405 with Allow.
//   - A directory requested without its trailing slash is redirected (308)
//     to the slash form. A directory with no index file is 403, as with
//     nginx's autoindex off, unless Browse lists it.
//   - Paths containing "..", encoded slashes (%2F) or NUL are 400 and never
//     reach the file system. Dotfiles and dot-directories (.git, .env) are
//     404 unless ServeHidden; /.well-known/ is always served.
//   - Symlinks resolving outside Root (absolute symlinks included) are 404
//     unless AllowSymlinksOutsideRoot. Root itself may be a symlink; it is
//     re-resolved every second, so a deploy that swaps it needs no reload.
//   - Unknown extensions are application/octet-stream (never sniffed).
//   - Precompressed sidecars (app.js.br, .zst, .gz) are chosen by
//     Accept-Encoding (q-values, then the Precompressed order); a sidecar is
//     used as is, its freshness is not checked against the original (as
//     nginx's gzip_static). Every response for a file of a compressible type
//     carries "Vary: Accept-Encoding" while sidecars are enabled. A sidecar
//     found missing is not looked for again for a second, so a sidecar
//     added later is used within a second.
//   - Range (single and multipart) and conditional requests (ETag from
//     mtime and size, distinct per sidecar encoding; Last-Modified) follow
//     RFC 9110. Bodies up to 8 KiB are read with pread and leave with the
//     headers in one write; larger ones use sendfile on plain connections.
package static

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Options configure a static handler.
type Options struct {
	// Root is the directory served.
	Root string
	// Prefix is the route's path prefix, stripped before mapping onto Root
	// ("/" for a whole site).
	Prefix string
	// Index files tried, in order, for a directory. Default ["index.html"].
	Index []string
	// Browse lists directories without an index file (403 when off).
	Browse bool
	// Fallback is a path under Root served with 200 when the requested file
	// does not exist (try_files $uri /index.html, for single-page apps).
	// "" means 404.
	Fallback string
	// Precompressed are the sidecar encodings looked for, in the server's
	// preference order: "br" (.br), "zstd" (.zst), "gzip" (.gz).
	// nil means the default, all three; an empty non-nil slice disables
	// sidecars.
	Precompressed []string
	// AllowSymlinksOutsideRoot serves symlinks that resolve outside Root.
	AllowSymlinksOutsideRoot bool
	// ServeHidden serves files and directories whose name starts with '.'.
	ServeHidden bool
	// CacheControl, when set, is sent with every file response (200, 206,
	// 304).
	CacheControl string
	// Log receives refusals worth an operator's attention and errors.
	// Default slog.Default().
	Log *slog.Logger
	// Next, when set, gets the requests no file answers (nginx's
	// try_files $uri $uri/ @app): methods other than GET and HEAD, paths
	// outside the prefix, hidden names, missing files, and directories
	// without the trailing slash or without an index file.
	Next http.Handler
}

// DefaultPrecompressed is the sidecar search order when
// Options.Precompressed is nil.
var DefaultPrecompressed = []string{"br", "zstd", "gzip"}

var sidecarExt = map[string]string{"br": ".br", "zstd": ".zst", "gzip": ".gz"}

type handler struct {
	fs       *opener
	prefix   string
	index    []string
	browse   bool
	fallback string // relative name, "" = none
	pcNames  []string
	pcExt    []string
	pcValue  [][]string // Content-Encoding header values
	hidden   bool
	cache    []string
	log      *slog.Logger
	next     http.Handler
}

// DefaultIndex is the index file list when Options.Index is nil.
var DefaultIndex = []string{"index.html"}

// Check reports each problem with o's settings through bad, with the
// setting's name ("index[0]", "fallback", "precompressed[1]"), without
// touching the file system: configuration validation calls it, New too.
func (o Options) Check(bad func(field string, err error)) {
	for i, name := range o.Index {
		if name == "" || strings.ContainsRune(name, '/') || name == "." || name == ".." {
			bad(fmt.Sprintf("index[%d]", i), fmt.Errorf("%q must be a plain file name", name))
		}
	}
	if o.Fallback != "" {
		name, code := cleanName(o.Fallback, true)
		if code != 0 || name == "." || !strings.HasPrefix(o.Fallback, "/") {
			bad("fallback", fmt.Errorf("%q must be an absolute path under the root, like /index.html", o.Fallback))
		}
	}
	for i, enc := range o.Precompressed {
		if _, ok := sidecarExt[enc]; !ok {
			bad(fmt.Sprintf("precompressed[%d]", i), fmt.Errorf("%q: known are br, zstd, gzip", enc))
		}
	}
}

// New validates o, opens Root and returns the handler.
func New(o Options) (http.Handler, error) {
	log := o.Log
	if log == nil {
		log = slog.Default()
	}
	if o.Root == "" {
		return nil, errors.New("static: root directory not set")
	}
	if o.Prefix == "" {
		o.Prefix = "/"
	}
	if o.Prefix[0] != '/' {
		return nil, fmt.Errorf("static: prefix %q must start with /", o.Prefix)
	}
	h := &handler{prefix: o.Prefix, browse: o.Browse, hidden: o.ServeHidden, log: log, next: o.Next}
	if o.Next != nil && o.Fallback != "" {
		return nil, errors.New("static: a fallback file and a next handler are exclusive")
	}
	var errs []error
	o.Check(func(field string, err error) { errs = append(errs, fmt.Errorf("static: %s: %w", field, err)) })
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	var err error
	if h.fs, err = newOpener(o.Root, o.AllowSymlinksOutsideRoot, log); err != nil {
		return nil, err
	}
	h.index = o.Index
	if h.index == nil {
		h.index = DefaultIndex
	}
	if o.Fallback != "" {
		h.fallback, _ = cleanName(o.Fallback, true)
	}
	pc := o.Precompressed
	if pc == nil {
		pc = DefaultPrecompressed
	}
	for _, enc := range pc {
		ext := sidecarExt[enc]
		h.pcNames = append(h.pcNames, enc)
		h.pcExt = append(h.pcExt, ext)
		h.pcValue = append(h.pcValue, []string{enc})
	}
	if o.CacheControl != "" {
		h.cache = []string{o.CacheControl}
	}
	return h, nil
}

var (
	allowGetHead = []string{"GET, HEAD"}
	textPlain    = []string{"text/plain; charset=utf-8"}
	nosniff      = []string{"nosniff"}
)

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.next != nil {
		if !h.serveIfFile(w, r) {
			h.next.ServeHTTP(w, r)
		}
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header()["Allow"] = allowGetHead
		h.error(w, http.StatusMethodNotAllowed)
		return
	}
	p := r.URL.Path
	if strings.IndexByte(p, 0) >= 0 || (r.URL.RawPath != "" && hasEncodedSlash(r.URL.RawPath)) {
		h.error(w, http.StatusBadRequest)
		return
	}
	if !strings.HasPrefix(p, h.prefix) {
		if p+"/" == h.prefix {
			h.redirect(w, r, h.prefix)
			return
		}
		h.error(w, http.StatusNotFound)
		return
	}
	rel := p[len(h.prefix):]
	if h.prefix[len(h.prefix)-1] != '/' && rel != "" && rel[0] != '/' {
		// Prefix "/static" must not serve "/staticfoo" (nginx's alias
		// without a slash is a known traversal: /static../etc).
		h.error(w, http.StatusNotFound)
		return
	}
	name, code := cleanName(rel, h.hidden)
	if code != 0 {
		h.error(w, code)
		return
	}
	dirSlash := p == "" || p[len(p)-1] == '/'

	f, err := h.fs.open(name)
	if err != nil {
		h.openFailed(w, r, name, err, true)
		return
	}
	if !f.dir {
		if dirSlash && name != "." {
			f.close()
			h.error(w, http.StatusNotFound) // "file.txt/"
			return
		}
		h.serveFile(w, r, &f, name)
		return
	}
	if !dirSlash {
		f.close()
		target := strings.TrimSuffix(h.prefix, "/") + "/"
		if name != "." {
			target += name + "/"
		}
		h.redirect(w, r, target)
		return
	}
	for _, idx := range h.index {
		iname := idx
		if name != "." {
			iname = name + "/" + idx
		}
		fi, err := h.fs.open(iname)
		if err != nil {
			if isNotFound(err) {
				continue
			}
			f.close()
			h.openFailed(w, r, iname, err, false)
			return
		}
		if fi.dir {
			fi.close()
			continue
		}
		f.close()
		h.serveFile(w, r, &fi, iname)
		return
	}
	if h.browse {
		h.serveListing(w, r, &f, name)
		f.close()
		return
	}
	f.close()
	h.error(w, http.StatusForbidden)
}

// openFailed answers a failed open: the SPA fallback or 404 for missing
// files, 403 for permission, 404 (logged) for refused symlinks.
func (h *handler) openFailed(w http.ResponseWriter, r *http.Request, name string, err error, mayFallback bool) {
	switch {
	case isNotFound(err):
		if mayFallback && h.fallback != "" {
			f, ferr := h.fs.open(h.fallback)
			if ferr == nil && !f.dir {
				h.serveFile(w, r, &f, h.fallback)
				return
			}
			if ferr == nil {
				f.close()
			}
			h.fs.warn("static: fallback file cannot be served; answering 404", "root", h.fs.path, "fallback", h.fallback, "error", ferr)
		}
		h.error(w, http.StatusNotFound)
	case errors.Is(err, errEscape):
		h.fs.warn("static: refused a symlink resolving outside the root; answering 404 (set allow_symlinks_outside_root to serve it)", "root", h.fs.path, "path", name)
		h.error(w, http.StatusNotFound)
	case errors.Is(err, errNotRegular):
		h.error(w, http.StatusNotFound)
	case errors.Is(err, fs.ErrPermission):
		h.error(w, http.StatusForbidden)
	default:
		if errors.Is(err, unix.ENAMETOOLONG) {
			h.error(w, http.StatusNotFound)
			return
		}
		h.log.Error("static: opening file failed; answering 500", "root", h.fs.path, "path", name, "error", err)
		h.error(w, http.StatusInternalServerError)
	}
}

func isNotFound(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ENOTDIR)
}

// cleanName turns the request path below the prefix into a name relative
// to the root: "." for the root itself, otherwise slash-separated with no
// empty, "." or ".." elements. code is 400 for "..", 404 for hidden names.
// It allocates only when the path needs cleaning.
func cleanName(rel string, serveHidden bool) (name string, code int) {
	clean := true
	start := 0
	for i := 0; i <= len(rel); i++ {
		if i < len(rel) && rel[i] != '/' {
			continue
		}
		seg := rel[start:i]
		start = i + 1
		switch {
		case seg == "":
			// Leading, trailing or doubled slash: only the doubled one
			// needs rewriting.
			if i != 0 && i != len(rel) {
				clean = false
			}
		case seg == "..":
			return "", http.StatusBadRequest
		case seg == ".":
			clean = false
		case seg[0] == '.' && !serveHidden && seg != ".well-known":
			return "", http.StatusNotFound
		}
	}
	if clean {
		name = strings.Trim(rel, "/")
	} else {
		var b strings.Builder
		for _, seg := range strings.Split(rel, "/") {
			if seg == "" || seg == "." {
				continue
			}
			if b.Len() > 0 {
				b.WriteByte('/')
			}
			b.WriteString(seg)
		}
		name = b.String()
	}
	if name == "" {
		name = "."
	}
	return name, 0
}

func hasEncodedSlash(raw string) bool {
	for i := 0; i+2 < len(raw); i++ {
		if raw[i] == '%' && raw[i+1] == '2' && (raw[i+2] == 'f' || raw[i+2] == 'F') {
			return true
		}
		if raw[i] == '%' && raw[i+1] == '5' && (raw[i+2] == 'c' || raw[i+2] == 'C') {
			return true // encoded backslash: no business in a file path
		}
	}
	return false
}

// redirect sends 308 to target (a clean path), keeping the query. The
// target is built from the cleaned name, so "//host" cannot appear.
func (h *handler) redirect(w http.ResponseWriter, r *http.Request, target string) {
	u := url.URL{Path: target, RawQuery: r.URL.RawQuery}
	loc := u.String()
	if strings.HasPrefix(loc, "//") {
		loc = "/" + strings.TrimLeft(loc, "/")
	}
	w.Header().Set("Location", loc)
	w.WriteHeader(http.StatusPermanentRedirect)
}

var errorBodies = map[int]string{
	http.StatusBadRequest:                   "400 bad request\n",
	http.StatusForbidden:                    "403 forbidden\n",
	http.StatusNotFound:                     "404 not found\n",
	http.StatusMethodNotAllowed:             "405 method not allowed\n",
	http.StatusPreconditionFailed:           "412 precondition failed\n",
	http.StatusInternalServerError:          "500 internal server error\n",
	http.StatusRequestedRangeNotSatisfiable: "416 range not satisfiable\n",
}

// error writes a short plain-text error. Headers meant for a file
// response must not have been set yet.
func (h *handler) error(w http.ResponseWriter, code int) {
	hd := w.Header()
	hd["Content-Type"] = textPlain
	hd["X-Content-Type-Options"] = nosniff
	body := errorBodies[code]
	hd["Content-Length"] = []string{strconv.Itoa(len(body))}
	w.WriteHeader(code)
	w.Write([]byte(body))
}

// serveIfFile serves r if a file answers it and reports whether it did;
// otherwise it has written nothing (try_files).
func (h *handler) serveIfFile(w http.ResponseWriter, r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	p := r.URL.Path
	if strings.IndexByte(p, 0) >= 0 || (r.URL.RawPath != "" && hasEncodedSlash(r.URL.RawPath)) || !strings.HasPrefix(p, h.prefix) {
		return false
	}
	rel := p[len(h.prefix):]
	if h.prefix[len(h.prefix)-1] != '/' && rel != "" && rel[0] != '/' {
		return false
	}
	name, code := cleanName(rel, h.hidden)
	if code != 0 {
		return false
	}
	f, err := h.fs.open(name)
	if err != nil {
		if !isNotFound(err) && !errors.Is(err, errNotRegular) {
			h.openFailed(w, r, name, err, false) // 403 for permissions, 404 for escaping symlinks
			return true
		}
		return false
	}
	if !f.dir {
		if p[len(p)-1] == '/' {
			f.close()
			return false
		}
		h.serveFile(w, r, &f, name)
		return true
	}
	f.close()
	if p[len(p)-1] != '/' {
		return false
	}
	for _, idx := range h.index {
		iname := idx
		if name != "." {
			iname = name + "/" + idx
		}
		fi, err := h.fs.open(iname)
		if err != nil {
			continue
		}
		if fi.dir {
			fi.close()
			continue
		}
		h.serveFile(w, r, &fi, iname)
		return true
	}
	return false
}
