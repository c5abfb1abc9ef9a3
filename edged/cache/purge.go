package cache

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
)

// PurgeURL removes every variant of one URL (scheme, host, path and
// query, normalised like request keys). It returns how many it removed.
func (c *Cache) PurgeURL(u *url.URL) int {
	key := c.urlKey(u)
	c.notePurge(key, false)
	return c.removeKey(key)
}

// PurgePrefix removes every URL of scheme and host whose path starts with
// pathPrefix, a decoded path as in url.URL.Path.
func (c *Cache) PurgePrefix(scheme, host, pathPrefix string) int {
	if pathPrefix == "" {
		pathPrefix = "/"
	}
	scheme = strings.ToLower(scheme)
	// Keys hold the path as sent (escaped).
	pathPrefix = (&url.URL{Path: pathPrefix}).EscapedPath()
	prefix := scheme + "://" + normHost(scheme, host) + pathPrefix
	c.notePurge(prefix, true)
	return c.removeKeys(func(k string) bool { return strings.HasPrefix(k, prefix) })
}

// PurgeAll empties the cache.
func (c *Cache) PurgeAll() int {
	c.notePurge("", true)
	return c.removeKeys(func(string) bool { return true })
}

// notePurge remembers a purge while the disk index is loading, so the
// loader does not bring back entries written before it.
func (c *Cache) notePurge(key string, prefix bool) {
	if c.disk == nil {
		return
	}
	select {
	case <-c.disk.loaded:
		return
	default:
	}
	c.loadMu.Lock()
	c.loadPurges = append(c.loadPurges, purgeRecord{key: key, prefix: prefix, at: c.o.Now()})
	c.loadMu.Unlock()
}

func (c *Cache) loadDone() {
	c.loadMu.Lock()
	c.loadPurges = nil
	c.loadMu.Unlock()
}

// Name is the cache's name.
func (c *Cache) Name() string { return c.o.Name }

// AdminHandler serves purges for the admin socket, over the caches that
// caches returns (evaluated per request, so it follows reloads):
//
//	POST /purge?url=https://example.com/a?b=c  one URL, all variants
//	POST /purge?prefix=https://example.com/img/ a path prefix
//	POST /purge?all=1                           everything
//
// An optional cache=NAME limits it to one cache. The answer is JSON:
// {"purged": N}. PURGE is accepted as the method too.
func AdminHandler(caches func() []*Cache) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost && r.Method != "PURGE" {
			w.Header().Set("Allow", "POST, PURGE")
			http.Error(w, "use POST", http.StatusMethodNotAllowed)
			return
		}
		q := r.URL.Query()
		name := q.Get("cache")
		var purge func(*Cache) int
		switch {
		case q.Get("url") != "":
			u, err := url.Parse(q.Get("url"))
			if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
				http.Error(w, "url must be an absolute http or https URL", http.StatusBadRequest)
				return
			}
			purge = func(c *Cache) int { return c.PurgeURL(u) }
		case q.Get("prefix") != "":
			u, err := url.Parse(q.Get("prefix"))
			if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
				http.Error(w, "prefix must be an absolute http or https URL", http.StatusBadRequest)
				return
			}
			purge = func(c *Cache) int { return c.PurgePrefix(u.Scheme, u.Host, u.Path) }
		case q.Get("all") != "":
			purge = (*Cache).PurgeAll
		default:
			http.Error(w, "give url=, prefix= or all=1", http.StatusBadRequest)
			return
		}
		n, found := 0, false
		for _, c := range caches() {
			if name != "" && c.o.Name != name {
				continue
			}
			found = true
			n += purge(c)
		}
		if name != "" && !found {
			http.Error(w, "no cache named "+name, http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]int{"purged": n})
	})
}
