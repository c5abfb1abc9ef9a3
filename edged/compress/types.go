package compress

import (
	"fmt"
	"strings"
)

// DefaultTypes are the media types compressed when Options.Types is empty:
// text and the structured text formats web apps send.
var DefaultTypes = []string{
	"text/*",
	"application/json",
	"application/*+json",
	"application/javascript",
	"application/x-javascript",
	"application/ecmascript",
	"application/xml",
	"application/*+xml",
	"application/wasm",
	"application/x-ndjson",
	"application/graphql-response+json",
	"application/manifest+json",
	"application/vnd.api+json",
	"application/x-yaml",
	"application/yaml",
	"application/toml",
	"application/x-sh",
	"application/vnd.ms-fontobject",
	"font/ttf",
	"font/otf",
	"image/svg+xml",
	"image/x-icon",
	"image/vnd.microsoft.icon",
	"image/bmp",
}

// typePattern is "type/subtype" (exact), or has one '*' standing for any
// run of characters ("text/*", "application/*+json").
type typePattern struct {
	prefix, suffix string
	exact          bool
}

type typeMatcher []typePattern

func compileTypes(types []string) (typeMatcher, error) {
	m := make(typeMatcher, 0, len(types))
	for _, t := range types {
		t = strings.ToLower(strings.TrimSpace(t))
		if t == "" || strings.Count(t, "/") != 1 || strings.Count(t, "*") > 1 || strings.ContainsAny(t, " ;,") {
			return nil, fmt.Errorf("compress: content type %q: want type/subtype, optionally with one '*' (text/*, application/*+json)", t)
		}
		if i := strings.IndexByte(t, '*'); i >= 0 {
			m = append(m, typePattern{prefix: t[:i], suffix: t[i+1:]})
		} else {
			m = append(m, typePattern{prefix: t, exact: true})
		}
	}
	return m, nil
}

// match reports whether the media type mt (lower case, no parameters)
// matches a pattern.
func (m typeMatcher) match(mt string) bool {
	for _, p := range m {
		if p.exact {
			if mt == p.prefix {
				return true
			}
			continue
		}
		if len(mt) >= len(p.prefix)+len(p.suffix) && strings.HasPrefix(mt, p.prefix) && strings.HasSuffix(mt, p.suffix) {
			return true
		}
	}
	return false
}

// mediaType returns the lower-case type/subtype of a Content-Type value
// without its parameters. It allocates only if ct has upper-case letters.
func mediaType(ct string) string {
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	ct = trimOWS(ct)
	for i := 0; i < len(ct); i++ {
		if 'A' <= ct[i] && ct[i] <= 'Z' {
			return strings.ToLower(ct)
		}
	}
	return ct
}

// Incompressible reports whether a Content-Type names data that is already
// compressed (raster images, audio, video, archives, WOFF fonts), where
// another pass only burns CPU. These are never compressed, whatever
// Options.Types says, and the static handler looks for no sidecars for them.
func Incompressible(contentType string) bool {
	mt := mediaType(contentType)
	switch {
	case strings.HasPrefix(mt, "image/"):
		switch mt {
		case "image/svg+xml", "image/x-icon", "image/vnd.microsoft.icon", "image/bmp", "image/x-ms-bmp":
			return false
		}
		return true
	case strings.HasPrefix(mt, "video/"), strings.HasPrefix(mt, "audio/"):
		return true
	}
	switch mt {
	case "application/zip", "application/gzip", "application/x-gzip", "application/zstd",
		"application/x-zstd", "application/x-brotli", "application/brotli", "application/x-bzip2",
		"application/x-xz", "application/x-7z-compressed", "application/x-rar-compressed",
		"application/vnd.rar", "application/x-compress", "application/x-lzip",
		"application/java-archive", "application/epub+zip", "application/x-apple-diskimage",
		"font/woff", "font/woff2", "application/font-woff", "application/font-woff2",
		"multipart/byteranges":
		return true
	}
	return false
}
