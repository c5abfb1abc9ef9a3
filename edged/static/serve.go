package static

import (
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edgeapp/edgeapp/edged/compress"
)

var (
	acceptRanges = []string{"bytes"}
	varyAE       = []string{"Accept-Encoding"}
)

// maxRanges bounds a multi-range request; more is served whole (200), so a
// request cannot make the server seek thousands of times for one response.
const maxRanges = 32

// serveFile answers with the file f (whose relative name is name),
// or one of its precompressed sidecars, and closes what it opened.
func (h *handler) serveFile(w http.ResponseWriter, r *http.Request, f *file, name string) {
	hd := w.Header()
	ctype := contentType(name)
	var encoding []string
	if len(h.pcNames) > 0 && !compress.Incompressible(ctype[0]) {
		// Whether or not this client gets a sidecar, another may: caches
		// must key on Accept-Encoding.
		addVary(hd)
		if ae := r.Header["Accept-Encoding"]; len(ae) > 0 {
			v := ae[0]
			if len(ae) > 1 {
				v = strings.Join(ae, ",")
			}
			var buf [4]int
			now := time.Now().UnixNano()
			absent := h.fs.knownAbsent(name, now)
			missed := absent
			for _, i := range compress.Rank(v, h.pcNames, buf[:0]) {
				bit := uint8(1) << i
				if absent&bit != 0 {
					continue
				}
				sc, err := h.fs.open(name + h.pcExt[i])
				if err != nil {
					if isNotFound(err) {
						missed |= bit
					}
					continue
				}
				if sc.dir {
					sc.close()
					continue
				}
				f.close()
				*f, encoding = sc, h.pcValue[i]
				break
			}
			if missed != absent {
				h.fs.recordAbsent(name, missed, now)
			}
		}
	}
	defer f.close()

	mod := f.mtime
	if h.cache != nil {
		hd["Cache-Control"] = h.cache
	}
	var etag string
	if ce := f.ce; ce != nil && encoding == nil {
		etag = ce.etag[0]
		hd["Etag"], hd["Last-Modified"] = ce.etag, ce.lastModified
	} else {
		etag = makeETag(f, encoding)
		hd["Etag"] = []string{etag}
		hd["Last-Modified"] = []string{mod.UTC().Format(http.TimeFormat)}
	}

	switch checkPreconditions(r, etag, mod) {
	case http.StatusNotModified:
		// Representation headers (type, length, encoding) are not sent
		// with 304; validators, Vary and Cache-Control are.
		w.WriteHeader(http.StatusNotModified)
		return
	case http.StatusPreconditionFailed:
		delete(hd, "Etag")
		delete(hd, "Last-Modified")
		delete(hd, "Cache-Control")
		h.error(w, http.StatusPreconditionFailed)
		return
	}

	hd["Content-Type"] = ctype
	if encoding != nil {
		hd["Content-Encoding"] = encoding
	}
	hd["Accept-Ranges"] = acceptRanges

	size := f.size
	var ranges []byteRange
	if rh := r.Header.Get("Range"); rh != "" && size > 0 && ifRangeHolds(r, etag, mod) {
		var ok bool
		ranges, ok = parseRange(rh, size)
		switch {
		case !ok:
			ranges = nil // malformed or too many: ignore the header (RFC 9110 14.2)
		case len(ranges) > 1 && encoding != nil:
			// A multipart body cannot say its parts are slices of a
			// coded representation; send the whole sidecar instead.
			ranges = nil
		case len(ranges) == 0:
			for _, k := range []string{"Content-Type", "Content-Encoding", "Etag", "Last-Modified", "Cache-Control", "Accept-Ranges"} {
				delete(hd, k)
			}
			hd["Content-Range"] = []string{"bytes */" + strconv.FormatInt(size, 10)}
			h.error(w, http.StatusRequestedRangeNotSatisfiable)
			return
		}
	}

	switch len(ranges) {
	case 0:
		if f.ce != nil {
			hd["Content-Length"] = f.ce.length
		} else {
			hd["Content-Length"] = []string{strconv.FormatInt(size, 10)}
		}
		w.WriteHeader(http.StatusOK)
		if r.Method != http.MethodHead {
			copyFile(w, f, 0, size)
		}
	case 1:
		ra := ranges[0]
		hd["Content-Range"] = []string{ra.contentRange(size)}
		hd["Content-Length"] = []string{strconv.FormatInt(ra.length, 10)}
		w.WriteHeader(http.StatusPartialContent)
		if r.Method != http.MethodHead {
			copyFile(w, f, ra.start, ra.length)
		}
	default:
		h.serveMultipart(w, r, f, ranges, ctype[0], size)
	}
}

// smallBody is the size up to which a body is read with one pread(2) and
// written into net/http's buffer, so that headers and body leave in a
// single write(2). Larger bodies use sendfile, which costs a separate
// write for the headers but never copies the body through user space.
const smallBody = 8 << 10

var smallBufs = sync.Pool{New: func() any { return new([smallBody]byte) }}

// copyFile sends length bytes of f from offset.
//
// Large bodies go through io.Copy with an *io.LimitedReader over the
// *os.File and nothing else in between, because that is the shape
// net/http's response.ReadFrom hands to *net.TCPConn.ReadFrom, which uses
// sendfile(2) on plain connections (on TLS, or behind a ResponseWriter
// wrapper without ReadFrom, it falls back to a buffered copy; the compress
// middleware's writer forwards ReadFrom when it passes bytes through).
// Wrapping the file in anything else, or io.Copy(w, f) directly
// (os.File.WriteTo's generic path), loses sendfile.
func copyFile(w http.ResponseWriter, f *file, offset, length int64) error {
	if f.data != nil {
		_, err := w.Write(f.data[offset : offset+length])
		return err
	}
	if length <= smallBody {
		buf := smallBufs.Get().(*[smallBody]byte)
		defer smallBufs.Put(buf)
		n := 0
		for n < int(length) {
			k, err := unix.Pread(f.fd, buf[n:length], offset+int64(n))
			if err == unix.EINTR {
				continue
			}
			if err != nil || k == 0 {
				break // shrunk under us: net/http closes the connection on a short body
			}
			n += k
		}
		_, err := w.Write(buf[:n])
		return err
	}
	of := f.osFile()
	if _, err := of.Seek(offset, io.SeekStart); err != nil {
		return err
	}
	_, err := io.Copy(w, &io.LimitedReader{R: of, N: length})
	return err
}

// makeETag derives a strong validator from size and modification time,
// as nginx does, with the encoding appended for a sidecar so that each
// coding has its own.
func makeETag(f *file, encoding []string) string {
	var b [64]byte
	e := append(b[:0], '"')
	e = strconv.AppendInt(e, f.mtime.UnixNano(), 16)
	e = append(e, '-')
	e = strconv.AppendInt(e, f.size, 16)
	if encoding != nil {
		e = append(e, '-')
		e = append(e, encoding[0]...)
	}
	e = append(e, '"')
	return string(e)
}

func addVary(h http.Header) {
	vs := h["Vary"]
	for _, v := range vs {
		for _, t := range strings.Split(v, ",") {
			t = strings.TrimSpace(t)
			if strings.EqualFold(t, "Accept-Encoding") || t == "*" {
				return
			}
		}
	}
	if len(vs) == 0 {
		h["Vary"] = varyAE
		return
	}
	h["Vary"] = append(vs, "Accept-Encoding")
}

// checkPreconditions evaluates the conditional headers in RFC 9110
// section 13.2.2 order for a GET or HEAD; 0 means proceed.
func checkPreconditions(r *http.Request, etag string, mod time.Time) int {
	hd := r.Header
	mod = mod.Truncate(time.Second) // HTTP dates have second resolution
	if im := hd.Get("If-Match"); im != "" {
		if !etagListMatch(im, etag, true) {
			return http.StatusPreconditionFailed
		}
	} else if ius := hd.Get("If-Unmodified-Since"); ius != "" {
		if t, err := http.ParseTime(ius); err == nil && mod.After(t) {
			return http.StatusPreconditionFailed
		}
	}
	if inm := hd.Get("If-None-Match"); inm != "" {
		if etagListMatch(inm, etag, false) {
			return http.StatusNotModified
		}
	} else if ims := hd.Get("If-Modified-Since"); ims != "" {
		if t, err := http.ParseTime(ims); err == nil && !mod.After(t) {
			return http.StatusNotModified
		}
	}
	return 0
}

// ifRangeHolds reports whether a Range may be honoured given If-Range:
// an entity tag must match strongly, a date must equal Last-Modified.
func ifRangeHolds(r *http.Request, etag string, mod time.Time) bool {
	ir := r.Header.Get("If-Range")
	if ir == "" {
		return true
	}
	if strings.HasPrefix(ir, `"`) || strings.HasPrefix(ir, "W/") {
		return !strings.HasPrefix(ir, "W/") && ir == etag
	}
	t, err := http.ParseTime(ir)
	return err == nil && t.Equal(mod.Truncate(time.Second))
}

// etagListMatch reports whether the If-Match/If-None-Match list matches
// etag, with strong or weak comparison.
func etagListMatch(list, etag string, strong bool) bool {
	if strings.TrimSpace(list) == "*" {
		return true
	}
	for len(list) > 0 {
		list = strings.TrimLeft(list, " \t,")
		if list == "" {
			break
		}
		weak := false
		if strings.HasPrefix(list, "W/") {
			weak = true
			list = list[2:]
		}
		if list == "" || list[0] != '"' {
			return false // malformed
		}
		end := strings.IndexByte(list[1:], '"')
		if end < 0 {
			return false
		}
		tag := list[:end+2]
		list = list[end+2:]
		if tag == etag && !(strong && weak) {
			return true
		}
	}
	return false
}

type byteRange struct{ start, length int64 }

func (r byteRange) contentRange(size int64) string {
	return "bytes " + strconv.FormatInt(r.start, 10) + "-" + strconv.FormatInt(r.start+r.length-1, 10) + "/" + strconv.FormatInt(size, 10)
}

// parseRange parses a Range header for a body of size bytes (size > 0).
// ok=false means ignore the header: malformed, not bytes, too many ranges
// or more bytes than the file. An empty result with ok means no range was
// satisfiable (416).
func parseRange(s string, size int64) (ranges []byteRange, ok bool) {
	const unit = "bytes="
	if len(s) < len(unit) || !strings.EqualFold(s[:len(unit)], unit) {
		return nil, false
	}
	var total int64
	for _, spec := range strings.Split(s[len(unit):], ",") {
		spec = strings.TrimSpace(spec)
		if spec == "" {
			continue
		}
		dash := strings.IndexByte(spec, '-')
		if dash < 0 {
			return nil, false
		}
		first, last := strings.TrimSpace(spec[:dash]), strings.TrimSpace(spec[dash+1:])
		var ra byteRange
		if first == "" {
			// Suffix range: the last N bytes.
			n, err := strconv.ParseInt(last, 10, 64)
			if err != nil || n < 0 {
				return nil, false
			}
			if n == 0 {
				continue // unsatisfiable
			}
			n = min(n, size)
			ra = byteRange{size - n, n}
		} else {
			i, err := strconv.ParseInt(first, 10, 64)
			if err != nil || i < 0 {
				return nil, false
			}
			end := size - 1
			if last != "" {
				j, err := strconv.ParseInt(last, 10, 64)
				if err != nil || j < i {
					return nil, false
				}
				end = min(j, size-1)
			}
			if i >= size {
				continue // unsatisfiable
			}
			ra = byteRange{i, end - i + 1}
		}
		ranges = append(ranges, ra)
		total += ra.length
		if len(ranges) > maxRanges || total > size {
			return nil, false
		}
	}
	return ranges, true
}

// serveMultipart sends a multipart/byteranges 206. The length is computed
// up front so the response has a Content-Length, and each part is copied
// with copyFile (sendfile on plain connections).
func (h *handler) serveMultipart(w http.ResponseWriter, r *http.Request, f *file, ranges []byteRange, ctype string, size int64) {
	var bnd [24]byte
	const hexd = "0123456789abcdef"
	for i := range bnd {
		bnd[i] = hexd[rand.IntN(16)]
	}
	boundary := string(bnd[:])
	heads := make([]string, len(ranges))
	var total int64
	for i, ra := range ranges {
		sep := "\r\n--"
		if i == 0 {
			sep = "--"
		}
		heads[i] = sep + boundary + "\r\nContent-Type: " + ctype + "\r\nContent-Range: " + ra.contentRange(size) + "\r\n\r\n"
		total += int64(len(heads[i])) + ra.length
	}
	tail := "\r\n--" + boundary + "--\r\n"
	total += int64(len(tail))
	hd := w.Header()
	hd["Content-Type"] = []string{"multipart/byteranges; boundary=" + boundary}
	hd["Content-Length"] = []string{strconv.FormatInt(total, 10)}
	w.WriteHeader(http.StatusPartialContent)
	if r.Method == http.MethodHead {
		return
	}
	for i, ra := range ranges {
		if _, err := io.WriteString(w, heads[i]); err != nil {
			return
		}
		if err := copyFile(w, f, ra.start, ra.length); err != nil {
			return
		}
	}
	io.WriteString(w, tail)
}
