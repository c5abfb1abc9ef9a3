package errorpage

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeapp/edgeapp/edged/reqinfo"
)

func page(t *testing.T, name, content string) *Page {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	os.WriteFile(p, []byte(content), 0o644)
	pg, err := ReadPage(p)
	if err != nil {
		t.Fatal(err)
	}
	return pg
}

func request(upstreamStatus int, cache string) *http.Request {
	r := httptest.NewRequest("GET", "/", nil)
	info := &reqinfo.Info{UpstreamStatus: upstreamStatus, CacheStatus: cache, Client: netip.MustParseAddr("192.0.2.1")}
	return r.WithContext(reqinfo.NewContext(r.Context(), info))
}

func TestPagesReplaceOwnErrors(t *testing.T) {
	p := New([]Range{
		{Lo: 500, Hi: 599, Page: page(t, "50x.html", "<h1>oops</h1>")},
		{Lo: 502, Hi: 502, Page: page(t, "502.json", `{"error":"bad gateway"}`)},
		{Lo: 401, Hi: 401, Page: page(t, "401.html", "who?")},
	}, false)
	respond := func(status int, body string, hdr map[string]string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			for k, v := range hdr {
				w.Header().Set(k, v)
			}
			w.Header().Set("Content-Type", "text/plain")
			w.WriteHeader(status)
			io.WriteString(w, body)
		})
	}
	for _, c := range []struct {
		name           string
		status         int
		upstreamStatus int
		cache          string
		wantBody       string
		wantType       string
	}{
		{"own 502 gets the exact page", 502, 0, "", `{"error":"bad gateway"}`, "application/json"},
		{"own 504 gets the class page", 504, 0, "", "<h1>oops</h1>", "text/html; charset=utf-8"},
		{"upstream 500 passes", 500, 500, "", "app says", "text/plain"},
		{"cached 503 passes", 503, 0, "HIT", "app says", "text/plain"},
		{"200 passes", 200, 0, "", "app says", "text/plain"},
		{"404 without a page passes", 404, 0, "", "app says", "text/plain"},
	} {
		w := httptest.NewRecorder()
		p.Handler(respond(c.status, "app says", nil)).ServeHTTP(w, request(c.upstreamStatus, c.cache))
		if w.Code != c.status || w.Body.String() != c.wantBody || w.Header().Get("Content-Type") != c.wantType {
			t.Errorf("%s: %d %q %q", c.name, w.Code, w.Body, w.Header().Get("Content-Type"))
		}
	}
	// The challenge survives the replaced body.
	w := httptest.NewRecorder()
	p.Handler(respond(401, "x", map[string]string{"WWW-Authenticate": `Basic realm="r"`})).ServeHTTP(w, request(0, ""))
	if w.Body.String() != "who?" || w.Header().Get("Www-Authenticate") == "" || w.Header().Get("Content-Length") != "4" {
		t.Errorf("401: %q %v", w.Body, w.Header())
	}
	// Interception replaces the upstream's errors too.
	pi := New([]Range{{Lo: 500, Hi: 599, Page: page(t, "50x.html", "<h1>oops</h1>")}}, true)
	w = httptest.NewRecorder()
	pi.Handler(respond(500, "stack trace", nil)).ServeHTTP(w, request(500, ""))
	if w.Code != 500 || w.Body.String() != "<h1>oops</h1>" {
		t.Errorf("intercepted: %d %q", w.Code, w.Body)
	}
}

func TestReadPageLimits(t *testing.T) {
	dir := t.TempDir()
	if _, err := ReadPage(filepath.Join(dir, "missing.html")); err == nil {
		t.Error("missing page accepted")
	}
	if _, err := ReadPage(dir); err == nil {
		t.Error("a directory accepted as a page")
	}
	big := filepath.Join(dir, "big.html")
	os.WriteFile(big, make([]byte, maxPage+1), 0o644)
	if _, err := ReadPage(big); err == nil || !strings.Contains(err.Error(), "1MiB") {
		t.Errorf("oversized page: %v", err)
	}
}

func TestMaintenance(t *testing.T) {
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "app") })
	m, err := NewMaintenance(page(t, "m.html", "<p>back at 5</p>"), 90*time.Second, []string{"10.0.0.0/8"})
	if err != nil {
		t.Fatal(err)
	}
	w := httptest.NewRecorder()
	m.Handler(app).ServeHTTP(w, request(0, ""))
	if w.Code != 503 || w.Header().Get("Retry-After") != "90" || w.Body.String() != "<p>back at 5</p>" {
		t.Fatalf("maintenance: %d %v %q", w.Code, w.Header(), w.Body)
	}
	r := httptest.NewRequest("GET", "/", nil)
	r = r.WithContext(reqinfo.NewContext(r.Context(), &reqinfo.Info{Client: netip.MustParseAddr("10.2.3.4")}))
	w = httptest.NewRecorder()
	m.Handler(app).ServeHTTP(w, r)
	if w.Code != 200 || w.Body.String() != "app" {
		t.Fatalf("allowed client: %d %q", w.Code, w.Body)
	}
	d, _ := NewMaintenance(nil, 0, nil)
	w = httptest.NewRecorder()
	d.Handler(app).ServeHTTP(w, request(0, ""))
	if w.Code != 503 || w.Header().Get("Retry-After") != "300" || !strings.Contains(w.Body.String(), "maintenance") || d.HasPage() {
		t.Fatalf("default maintenance: %d %v %q", w.Code, w.Header(), w.Body)
	}
}
