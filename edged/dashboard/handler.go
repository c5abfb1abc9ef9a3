package dashboard

import (
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"time"
)

//go:embed assets
var assets embed.FS

// Source makes the snapshot the page shows, as JSON.
type Source func(ctx context.Context) ([]byte, error)

// SnapshotSource turns a snapshot builder into a Source.
func SnapshotSource(build func(ctx context.Context) *Snapshot) Source {
	return func(ctx context.Context) ([]byte, error) {
		return json.Marshal(build(ctx))
	}
}

// Options configure a Handler.
type Options struct {
	// Prefix is the path the page lives under, ending in "/"
	// ("/dashboard/"): Prefix is the page, Prefix+"status.json" the
	// snapshot, Prefix+"events" the event stream.
	Prefix string
	Source Source
	// Interval between two events; default one second.
	Interval time.Duration
	// Stopping, when it turns true, ends the event streams (at the next
	// event), so that they do not hold a shutdown up.
	Stopping func() bool
}

// DefaultInterval is how often the page updates.
const DefaultInterval = time.Second

// streamLifetime ends an event stream now and then; the browser
// reconnects at once (EventSource), so nothing is seen of it but a
// connection never lives for ever.
const streamLifetime = 30 * time.Minute

type handler struct {
	o      Options
	source Source
}

// Handler serves the page, its assets, the snapshot and the event stream
// under o.Prefix; anything else under it is 404, and the prefix without
// its slash is redirected to it.
func Handler(o Options) http.Handler {
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	if !strings.HasSuffix(o.Prefix, "/") {
		o.Prefix += "/"
	}
	return &handler{o: o, source: Shared(o.Source, o.Interval/2)}
}

// Shared makes src answer every caller within fresh of each other with
// one snapshot: however many pages are open, about one snapshot is built
// per interval.
func Shared(src Source, fresh time.Duration) Source {
	f := &feed{source: src, fresh: fresh}
	return f.get
}

// The page's own files; nothing else is served.
var files = map[string]string{
	"":            "assets/index.html",
	"index.html":  "assets/index.html",
	"app.js":      "assets/app.js",
	"style.css":   "assets/style.css",
	"favicon.svg": "assets/favicon.svg",
}

var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
}

// The page runs its own script only, talks to its own origin only and
// cannot be framed.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("Cache-Control", "no-store")
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("Content-Security-Policy", contentSecurityPolicy)
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		hd.Set("Allow", "GET, HEAD")
		http.Error(w, "405 method not allowed: the status page is read-only", http.StatusMethodNotAllowed)
		return
	}
	p := r.URL.Path
	if p+"/" == h.o.Prefix {
		target := h.o.Prefix
		if r.URL.RawQuery != "" {
			target += "?" + r.URL.RawQuery
		}
		http.Redirect(w, r, target, http.StatusMovedPermanently)
		return
	}
	rest, ok := strings.CutPrefix(p, h.o.Prefix)
	if !ok {
		http.NotFound(w, r)
		return
	}
	switch rest {
	case "status.json":
		h.serveJSON(w, r)
		return
	case "events":
		h.serveEvents(w, r)
		return
	}
	name, ok := files[rest]
	if !ok {
		http.NotFound(w, r)
		return
	}
	b, err := assets.ReadFile(name)
	if err != nil {
		http.Error(w, "500 the page's files are missing from this binary", http.StatusInternalServerError)
		return
	}
	hd.Set("Content-Type", contentTypes[name[strings.LastIndexByte(name, '.'):]])
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(b))
}

func (h *handler) serveJSON(w http.ResponseWriter, r *http.Request) {
	body, err := h.source(r.Context())
	if err != nil {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadGateway)
		json.NewEncoder(w).Encode(map[string]string{"error": Redact(err.Error())})
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(body)
}

// serveEvents sends a snapshot at once, then one per interval, as
// server-sent events; a snapshot that fails is an "failure" event with
// the error, and the stream goes on.
func (h *handler) serveEvents(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	hd := w.Header()
	hd.Set("Content-Type", "text/event-stream")
	hd.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	// The browser waits this long before reconnecting a broken stream.
	if _, err := w.Write([]byte("retry: 1000\n\n")); err != nil {
		return
	}
	t := time.NewTicker(h.o.Interval)
	defer t.Stop()
	end := time.Now().Add(streamLifetime)
	var buf bytes.Buffer
	for {
		buf.Reset()
		body, err := h.source(r.Context())
		if err != nil {
			eb, _ := json.Marshal(map[string]string{"error": Redact(err.Error())})
			buf.WriteString("event: failure\ndata: ")
			buf.Write(eb)
		} else {
			buf.WriteString("data: ")
			buf.Write(body) // compact JSON: one line
		}
		buf.WriteString("\n\n")
		rc.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if _, err := w.Write(buf.Bytes()); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
		select {
		case <-r.Context().Done():
			return
		case now := <-t.C:
			if now.After(end) || (h.o.Stopping != nil && h.o.Stopping()) {
				return
			}
		}
	}
}

// sourceTimeout bounds the making of one snapshot.
const sourceTimeout = 5 * time.Second

// feed is Shared's cache.
type feed struct {
	source Source
	fresh  time.Duration

	mu   sync.Mutex
	at   time.Time
	body []byte
	err  error
}

func (f *feed) get(ctx context.Context) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.at.IsZero() && time.Since(f.at) < f.fresh {
		return f.body, f.err
	}
	// Shared with other viewers: one leaving must not fail theirs.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), sourceTimeout)
	defer cancel()
	f.body, f.err = f.source(ctx)
	f.at = time.Now()
	return f.body, f.err
}
