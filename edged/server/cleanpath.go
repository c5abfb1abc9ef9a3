package server

import (
	"net/url"
	"strings"
)

// Request paths are normalised once, before routing, so that a route is
// chosen on the same path the upstream or the file system will act on:
// otherwise /app/x/../private/a, /app/./private/a, /app//private/a or
// /app/%2e%2e/app/private/a would reach the /app/ route and let the
// upstream resolve them into /app/private/a, past a stricter route for
// /app/private/.
//
//   - Percent-encoded unreserved characters are decoded (RFC 3986
//     6.2.2.2: %2e is "."), other escapes are kept with upper-case hex
//     (6.2.2.1), so %2F stays an encoded slash inside a segment.
//   - Runs of slashes become one, as nginx's merge_slashes.
//   - "." and ".." segments are removed (RFC 3986 5.2.4); a ".." above the
//     root is refused (400), as nginx does.
//   - What an upstream might still resolve differently is refused (400):
//     a dot-segment hidden behind an encoded slash or backslash (..%2F,
//     ..%5C, ..\), or behind a path parameter (..;x, which Java servers
//     strip), and NUL (%00).
//
// Case is kept: /app/Private is not /app/private, as in nginx (a route
// matches with its case, and so do file systems and most applications).
// The normalised path is what is routed, cached and forwarded; the access
// log keeps the request line as it came.

// cleanPath returns the normalised form of an escaped request path (as
// url.URL.EscapedPath gives it) and ok = false when it cannot be
// normalised safely. A path that is already normal is returned as is,
// without allocating.
func cleanPath(p string) (string, bool) {
	if p == "" || p[0] != '/' {
		return p, p == "" || p == "*" // OPTIONS *; anything else has no route
	}
	if isCleanPath(p) {
		return p, true
	}
	segs := make([]string, 0, strings.Count(p, "/")+1)
	rest := p[1:]
	trailing := false // the result ends in "/"
	for {
		seg, more := rest, false
		if i := strings.IndexByte(rest, '/'); i >= 0 {
			seg, rest, more = rest[:i], rest[i+1:], true
		}
		seg, ok := normalizeSegment(seg)
		if !ok {
			return "", false
		}
		switch seg {
		case "":
			trailing = !more // only a final empty segment means a trailing slash
		case ".":
			trailing = !more
		case "..":
			if len(segs) == 0 {
				return "", false
			}
			segs = segs[:len(segs)-1]
			trailing = !more
		default:
			if hidesDotSegment(seg) {
				return "", false
			}
			segs = append(segs, seg)
			trailing = false
		}
		if !more {
			break
		}
	}
	var b strings.Builder
	b.Grow(len(p))
	for _, s := range segs {
		b.WriteByte('/')
		b.WriteString(s)
	}
	if trailing || len(segs) == 0 {
		b.WriteByte('/')
	}
	return b.String(), true
}

// isCleanPath reports whether p needs no change: no empty, "." or ".."
// segment, no escape, no backslash, no ';' right after a dot.
func isCleanPath(p string) bool {
	start := 1
	for i := 1; i <= len(p); i++ {
		if i < len(p) {
			switch p[i] {
			case '%', '\\':
				return false
			case ';':
				if p[i-1] == '.' {
					return false
				}
				continue
			case '/':
			default:
				continue
			}
		}
		seg := p[start:i]
		if (seg == "" && i < len(p)) || seg == "." || seg == ".." {
			return false
		}
		start = i + 1
	}
	return true
}

// normalizeSegment decodes escaped unreserved characters in one segment
// and upper-cases the hex of the escapes it keeps; ok is false for a
// malformed escape or NUL.
func normalizeSegment(seg string) (string, bool) {
	if strings.IndexByte(seg, '%') < 0 {
		return seg, true
	}
	var b strings.Builder
	b.Grow(len(seg))
	for i := 0; i < len(seg); i++ {
		c := seg[i]
		if c != '%' {
			b.WriteByte(c)
			continue
		}
		if i+2 >= len(seg) {
			return "", false
		}
		hi, lo := unhex(seg[i+1]), unhex(seg[i+2])
		if hi < 0 || lo < 0 {
			return "", false
		}
		v := byte(hi<<4 | lo)
		switch {
		case v == 0:
			return "", false
		case isUnreserved(v):
			b.WriteByte(v)
		default:
			const hex = "0123456789ABCDEF"
			b.WriteByte('%')
			b.WriteByte(hex[v>>4])
			b.WriteByte(hex[v&15])
		}
		i += 2
	}
	return b.String(), true
}

// hidesDotSegment reports whether a segment would become or contain a
// "." or ".." segment for a server that decodes %2F or %5C into a
// separator, treats "\" as one, or strips ";parameters".
func hidesDotSegment(seg string) bool {
	if i := strings.IndexByte(seg, ';'); i >= 0 {
		if head := seg[:i]; head == "." || head == ".." {
			return true
		}
	}
	if !strings.Contains(seg, "%2F") && !strings.Contains(seg, "%5C") && strings.IndexByte(seg, '\\') < 0 {
		return false
	}
	r := strings.NewReplacer("%2F", "/", "%5C", "/", "\\", "/").Replace(seg)
	for _, part := range strings.Split(r, "/") {
		if i := strings.IndexByte(part, ';'); i >= 0 {
			part = part[:i]
		}
		if part == "." || part == ".." {
			return true
		}
	}
	return false
}

func isUnreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c - 'a' + 10)
	case 'A' <= c && c <= 'F':
		return int(c - 'A' + 10)
	}
	return -1
}

// normalizeURL rewrites u's path to its normalised form; ok is false when
// the request must be refused.
func normalizeURL(u *url.URL) bool {
	esc := u.EscapedPath()
	clean, ok := cleanPath(esc)
	if !ok {
		return false
	}
	if clean == esc {
		return true
	}
	dec, err := url.PathUnescape(clean)
	if err != nil {
		return false
	}
	u.Path, u.RawPath = dec, ""
	if u.EscapedPath() != clean {
		u.RawPath = clean
	}
	return true
}
