package static

import (
	"bufio"
	"errors"
	"html"
	"io"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"
)

// maxListing is the most entries a listing shows.
const maxListing = 10000

// serveListing writes an HTML index of the directory d. Names are
// HTML-escaped in text and percent-escaped in links; hidden entries are
// left out unless served.
func (h *handler) serveListing(w http.ResponseWriter, r *http.Request, d *file, name string) {
	// A listing costs an lstat per entry; cap it so that one request on a
	// huge directory cannot take the server's time.
	entries, err := d.osFile().ReadDir(maxListing + 1)
	truncated := len(entries) > maxListing
	if truncated {
		entries = entries[:maxListing]
	}
	if err != nil && !errors.Is(err, io.EOF) {
		h.log.Error("static: reading directory for a listing failed; answering 500", "root", h.fs.path, "path", name, "error", err)
		h.error(w, http.StatusInternalServerError)
		return
	}
	type row struct {
		name string
		dir  bool
		size int64
		mod  time.Time
	}
	rows := make([]row, 0, len(entries))
	for _, e := range entries {
		n := e.Name()
		if n[0] == '.' && !h.hidden {
			continue
		}
		rw := row{name: n, dir: e.IsDir()}
		if info, err := e.Info(); err == nil {
			rw.size, rw.mod = info.Size(), info.ModTime()
		}
		rows = append(rows, rw)
	}
	slices.SortFunc(rows, func(a, b row) int {
		if a.dir != b.dir {
			if a.dir {
				return -1
			}
			return 1
		}
		return strings.Compare(a.name, b.name)
	})

	hd := w.Header()
	hd["Content-Type"] = []string{"text/html; charset=utf-8"}
	hd["Cache-Control"] = []string{"no-cache"}
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	title := html.EscapeString(path.Join(h.prefix, name) + "/")
	if name == "." {
		title = html.EscapeString(strings.TrimSuffix(h.prefix, "/") + "/")
	}
	bw := bufio.NewWriterSize(w, 16<<10)
	bw.WriteString("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Index of ")
	bw.WriteString(title)
	bw.WriteString("</title></head><body>\n<h1>Index of ")
	bw.WriteString(title)
	bw.WriteString("</h1>\n<table>\n<tr><th>Name</th><th>Size</th><th>Modified</th></tr>\n")
	if name != "." {
		bw.WriteString("<tr><td><a href=\"../\">../</a></td><td></td><td></td></tr>\n")
	}
	for _, rw := range rows {
		display := rw.name
		size := strconv.FormatInt(rw.size, 10)
		if rw.dir {
			display += "/"
			size = "-"
		}
		// "./" keeps a name like "a:b" from reading as a URL scheme.
		href := "./" + (&url.URL{Path: display}).EscapedPath()
		bw.WriteString("<tr><td><a href=\"")
		bw.WriteString(html.EscapeString(href))
		bw.WriteString("\">")
		bw.WriteString(html.EscapeString(display))
		bw.WriteString("</a></td><td>")
		bw.WriteString(size)
		bw.WriteString("</td><td>")
		if !rw.mod.IsZero() {
			bw.WriteString(rw.mod.UTC().Format("2006-01-02 15:04:05"))
		}
		bw.WriteString("</td></tr>\n")
	}
	bw.WriteString("</table>\n")
	if truncated {
		bw.WriteString("<p>Listing truncated at " + strconv.Itoa(maxListing) + " entries.</p>\n")
	}
	bw.WriteString("</body></html>\n")
	bw.Flush()
}
