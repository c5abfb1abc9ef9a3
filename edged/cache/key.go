package cache

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// requestKey is the primary cache key of a request:
// scheme://host/path?query, with the host lowercased and its default port
// dropped, and the query normalised as configured. Keys are compared whole;
// hashes only pick a shard.
func (c *Cache) requestKey(r *http.Request) string {
	return string(c.appendRequestKey(nil, r))
}

// appendRequestKey appends the request's key to dst (no allocation on the
// hit path when dst has room).
func (c *Cache) appendRequestKey(dst []byte, r *http.Request) []byte {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return c.appendKey(dst, scheme, r.Host, r.URL.EscapedPath(), r.URL.RawQuery)
}

// urlKey is the primary key for a URL given to a purge.
func (c *Cache) urlKey(u *url.URL) string {
	return c.makeKey(strings.ToLower(u.Scheme), u.Host, u.EscapedPath(), u.RawQuery)
}

func (c *Cache) makeKey(scheme, host, path, query string) string {
	return string(c.appendKey(nil, scheme, host, path, query))
}

func (c *Cache) appendKey(b []byte, scheme, host, path, query string) []byte {
	host = normHost(scheme, host)
	if path == "" {
		path = "/"
	}
	if query != "" && (c.o.SortQuery || len(c.o.IgnoreQuery) > 0) {
		query = c.normQuery(query)
	}
	b = append(b, scheme...)
	b = append(b, "://"...)
	b = append(b, host...)
	b = append(b, path...)
	if query != "" {
		b = append(b, '?')
		b = append(b, query...)
	}
	return b
}

func normHost(scheme, host string) string {
	for i := 0; i < len(host); i++ {
		if c := host[i]; c >= 'A' && c <= 'Z' {
			host = strings.ToLower(host)
			break
		}
	}
	switch {
	case scheme == "http" && strings.HasSuffix(host, ":80"):
		host = host[:len(host)-3]
	case scheme == "https" && strings.HasSuffix(host, ":443"):
		host = host[:len(host)-4]
	}
	return host
}

// normQuery drops ignored parameters (compared by their decoded name) and
// sorts the rest if configured; the pairs themselves stay as sent.
func (c *Cache) normQuery(q string) string {
	pairs := strings.Split(q, "&")
	out := pairs[:0]
	for _, p := range pairs {
		if p == "" {
			continue
		}
		name, _, _ := strings.Cut(p, "=")
		if n, err := url.QueryUnescape(name); err == nil {
			name = n
		}
		if slices.Contains(c.o.IgnoreQuery, name) {
			continue
		}
		out = append(out, p)
	}
	if c.o.SortQuery {
		slices.Sort(out)
	}
	return strings.Join(out, "&")
}
