package static

import (
	"mime"
	"strings"
)

// builtinTypes maps extensions (lower case, with the dot) to the types web
// clients expect, so that serving does not depend on the machine's
// /etc/mime.types. Values are header slices, shared read-only.
var builtinTypes = func() map[string][]string {
	m := map[string][]string{}
	for ext, t := range map[string]string{
		".html":        "text/html; charset=utf-8",
		".htm":         "text/html; charset=utf-8",
		".css":         "text/css; charset=utf-8",
		".js":          "text/javascript; charset=utf-8",
		".mjs":         "text/javascript; charset=utf-8",
		".cjs":         "text/javascript; charset=utf-8",
		".json":        "application/json",
		".map":         "application/json",
		".webmanifest": "application/manifest+json",
		".jsonld":      "application/ld+json",
		".xml":         "application/xml",
		".rss":         "application/rss+xml",
		".atom":        "application/atom+xml",
		".xhtml":       "application/xhtml+xml",
		".txt":         "text/plain; charset=utf-8",
		".text":        "text/plain; charset=utf-8",
		".md":          "text/markdown; charset=utf-8",
		".csv":         "text/csv; charset=utf-8",
		".tsv":         "text/tab-separated-values; charset=utf-8",
		".ics":         "text/calendar; charset=utf-8",
		".vtt":         "text/vtt; charset=utf-8",
		".yaml":        "application/yaml",
		".yml":         "application/yaml",
		".toml":        "application/toml",
		".wasm":        "application/wasm",
		".pdf":         "application/pdf",
		".svg":         "image/svg+xml",
		".png":         "image/png",
		".apng":        "image/apng",
		".jpg":         "image/jpeg",
		".jpeg":        "image/jpeg",
		".gif":         "image/gif",
		".webp":        "image/webp",
		".avif":        "image/avif",
		".jxl":         "image/jxl",
		".ico":         "image/x-icon",
		".bmp":         "image/bmp",
		".tif":         "image/tiff",
		".tiff":        "image/tiff",
		".woff":        "font/woff",
		".woff2":       "font/woff2",
		".ttf":         "font/ttf",
		".otf":         "font/otf",
		".eot":         "application/vnd.ms-fontobject",
		".mp4":         "video/mp4",
		".m4v":         "video/mp4",
		".webm":        "video/webm",
		".ogv":         "video/ogg",
		".mov":         "video/quicktime",
		".mp3":         "audio/mpeg",
		".m4a":         "audio/mp4",
		".ogg":         "audio/ogg",
		".oga":         "audio/ogg",
		".opus":        "audio/ogg",
		".wav":         "audio/wav",
		".flac":        "audio/flac",
		".aac":         "audio/aac",
		".m3u8":        "application/vnd.apple.mpegurl",
		".ts":          "video/mp2t",
		".zip":         "application/zip",
		".gz":          "application/gzip",
		".tgz":         "application/gzip",
		".zst":         "application/zstd",
		".br":          "application/x-brotli",
		".xz":          "application/x-xz",
		".bz2":         "application/x-bzip2",
		".tar":         "application/x-tar",
		".7z":          "application/x-7z-compressed",
		".deb":         "application/vnd.debian.binary-package",
		".rpm":         "application/x-rpm",
		".iso":         "application/x-iso9660-image",
		".bin":         "application/octet-stream",
		".exe":         "application/octet-stream",
		".sh":          "application/x-sh",
		".asc":         "text/plain; charset=utf-8",
		".sig":         "application/pgp-signature",
		".pem":         "application/x-pem-file",
	} {
		m[ext] = []string{t}
	}
	return m
}()

var octetStream = []string{"application/octet-stream"}

// contentType returns the Content-Type header value for a file name: the
// built-in table first, then the mime package (which reads the system's
// tables), then application/octet-stream — never sniffed, so an uploaded
// file cannot turn itself into HTML.
func contentType(name string) []string {
	ext := ""
	for i := len(name) - 1; i >= 0 && name[i] != '/'; i-- {
		if name[i] == '.' {
			ext = name[i:]
			break
		}
	}
	if ext == "" {
		return octetStream
	}
	if t, ok := builtinTypes[ext]; ok {
		return t
	}
	lower := strings.ToLower(ext)
	if t, ok := builtinTypes[lower]; ok {
		return t
	}
	if t := mime.TypeByExtension(lower); t != "" {
		return []string{t}
	}
	return octetStream
}
