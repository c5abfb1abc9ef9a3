package server

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestRedirectTemplate(t *testing.T) {
	cases := []struct{ target, url, host, want string }{
		{"https://new.example{uri}", "/a/b?x=1", "old.example", "https://new.example/a/b?x=1"},
		{"https://{host}{path}", "/a%20b?x=1", "old.example:8080", "https://old.example/a%20b"},
		{"/moved?from={path}&{query}", "/p?q=2", "h", "/moved?from=/p&q=2"},
		{"https://x/{unknown}/{path}", "/p", "h", "https://x/{unknown}//p"},
		{"https://plain.example/", "/ignored", "h", "https://plain.example/"},
	}
	for _, tc := range cases {
		h := newRedirect(301, tc.target)
		r := httptest.NewRequest("GET", tc.url, nil)
		r.Host = tc.host
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != 301 || w.Header().Get("Location") != tc.want {
			t.Errorf("%s with %s: %d %q, want %q", tc.target, tc.url, w.Code, w.Header().Get("Location"), tc.want)
		}
	}
}

func TestRespondAndHead(t *testing.T) {
	h := newRespond(418, "teapot\n")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/", nil))
	if w.Code != 418 || w.Body.String() != "teapot\n" || w.Header().Get("Content-Length") != "7" {
		t.Errorf("GET: %d %q %v", w.Code, w.Body.String(), w.Header())
	}
	w = httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("HEAD", "/", nil))
	if w.Body.Len() != 0 || w.Header().Get("Content-Length") != "7" {
		t.Errorf("HEAD wrote a body or lost Content-Length")
	}
}

func TestHeaderOpsAndWriter(t *testing.T) {
	ops := newHeaderOps(map[string]string{"x-frame-options": "DENY"}, map[string]string{"Vary": "Cookie"}, []string{"server"})
	inner := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Server", "upstream/1.0")
		w.Header().Set("Vary", "Accept-Encoding")
		w.Write([]byte("body"))
	})
	rec := httptest.NewRecorder()
	rw := getWriter(rec)
	rw.respOps = ops
	inner.ServeHTTP(rw, httptest.NewRequest("GET", "/", nil))
	if rw.status != 200 || rw.bytes != 4 {
		t.Errorf("recorded %d %d", rw.status, rw.bytes)
	}
	h := rec.Header()
	if h.Get("Server") != "" || h.Get("X-Frame-Options") != "DENY" || strings.Join(h.Values("Vary"), ",") != "Accept-Encoding,Cookie" {
		t.Errorf("headers %v", h)
	}
}

func TestLimitBody(t *testing.T) {
	called := false
	h := &limitBody{max: 10, next: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { called = true })}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("POST", "/", strings.NewReader(strings.Repeat("x", 11))))
	if w.Code != 413 || called {
		t.Errorf("oversized Content-Length: %d, handler called %v", w.Code, called)
	}
}
