package auth

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/edgeapp/edgeapp/edged/reqinfo"
)

// htpasswd makes a real htpasswd file with Apache's tool.
func htpasswd(t *testing.T, users map[string]string) string {
	t.Helper()
	bin, err := exec.LookPath("htpasswd")
	if err != nil {
		t.Skip("htpasswd not installed (Debian package apache2-utils)")
	}
	path := filepath.Join(t.TempDir(), "htpasswd")
	first := true
	for u, p := range users {
		args := []string{"-bB", "-C", "5", path, u, p}
		if first {
			args = []string{"-cbB", "-C", "5", path, u, p}
			first = false
		}
		if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
			t.Fatalf("htpasswd: %v\n%s", err, out)
		}
	}
	return path
}

func serve(h http.Handler, r *http.Request) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func withClient(r *http.Request, client string) (*http.Request, *reqinfo.Info) {
	info := &reqinfo.Info{Client: netip.MustParseAddr(client)}
	return r.WithContext(reqinfo.NewContext(r.Context(), info)), info
}

func TestBasicWithHtpasswdFile(t *testing.T) {
	path := htpasswd(t, map[string]string{"alice": "wonderland", "bob": "builder"})
	b, err := NewBasic(BasicOptions{Htpasswd: path, Realm: "staff", FailRate: "1r/m", FailBurst: 3})
	if err != nil {
		t.Fatal(err)
	}
	var reached atomic.Int32
	h := b.Handler(nil, "s", "r", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached.Add(1)
		io.WriteString(w, reqinfo.From(r.Context()).User)
	}))
	req := func(client, user, pass string) *httptest.ResponseRecorder {
		r := httptest.NewRequest("GET", "/", nil)
		if user != "" {
			r.SetBasicAuth(user, pass)
		}
		r, _ = withClient(r, client)
		return serve(h, r)
	}
	if w := req("192.0.2.1", "", ""); w.Code != 401 || w.Header().Get("Www-Authenticate") != `Basic realm="staff", charset="UTF-8"` {
		t.Fatalf("no credentials: %d %q", w.Code, w.Header().Get("Www-Authenticate"))
	}
	if w := req("192.0.2.1", "alice", "wonderland"); w.Code != 200 || w.Body.String() != "alice" {
		t.Fatalf("alice: %d %q", w.Code, w.Body)
	}
	// Again, from the cache of verified pairs.
	if w := req("192.0.2.1", "alice", "wonderland"); w.Code != 200 {
		t.Fatalf("alice again: %d", w.Code)
	}
	if w := req("192.0.2.1", "bob", "builder"); w.Code != 200 {
		t.Fatalf("bob: %d", w.Code)
	}
	// Three wrong guesses are answered 401, then the client is held back
	// (429, Retry-After) even with the right password; another client
	// is not.
	for _, c := range []struct{ user, pass string }{{"alice", "x"}, {"mallory", "x"}, {"bob", "wonderland"}} {
		if w := req("198.51.100.7", c.user, c.pass); w.Code != 401 {
			t.Fatalf("%s/%s: %d", c.user, c.pass, w.Code)
		}
	}
	w := req("198.51.100.7", "alice", "wonderland")
	if w.Code != 429 || w.Header().Get("Retry-After") == "" {
		t.Fatalf("after 3 failures: %d %q", w.Code, w.Header().Get("Retry-After"))
	}
	if w := req("192.0.2.1", "bob", "builder"); w.Code != 200 {
		t.Fatalf("another client: %d", w.Code)
	}
	if n := reached.Load(); n != 4 {
		t.Fatalf("%d requests reached the route, want 4", n)
	}
}

func TestBasicRefusesWeakHashes(t *testing.T) {
	dir := t.TempDir()
	good, _ := bcrypt.GenerateFromPassword([]byte("pw"), 4)
	for name, content := range map[string]string{
		"md5":   "alice:$apr1$abc$0123456789abcdef012345\n",
		"sha":   "alice:{SHA}qUqP5cyxm6YcTAhz05Hph5gvu9M=\n",
		"plain": "alice:secret\n",
		"nocol": "alice\n",
		"dup":   "alice:" + string(good) + "\nalice:" + string(good) + "\n",
	} {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte("# comment\n\n"+content), 0o644)
		_, err := NewBasic(BasicOptions{Htpasswd: p})
		line := ":3"
		if name == "dup" {
			line = ":4"
		}
		if err == nil || !strings.Contains(err.Error(), p+line) {
			t.Errorf("%s: %v (want an error naming %s%s)", name, err, p, line)
		}
	}
	if _, err := NewBasic(BasicOptions{Users: map[string]string{"a": "$1$x$y"}}); err == nil || !strings.Contains(err.Error(), "htpasswd -B") {
		t.Errorf("inline crypt hash: %v", err)
	}
	if _, err := NewBasic(BasicOptions{Htpasswd: filepath.Join(dir, "missing")}); err == nil {
		t.Error("missing file accepted")
	}
	b, err := NewBasic(BasicOptions{Users: map[string]string{"alice": string(good)}})
	if err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest("GET", "/", nil)
	r.SetBasicAuth("alice", "pw")
	if w := serve(b.Handler(nil, "s", "r", http.NotFoundHandler()), r); w.Code != 404 {
		t.Fatalf("inline user: %d", w.Code)
	}
}

// authService is a real authentication endpoint on loopback: it accepts
// the cookie "session=good", redirects browsers without a session, fails
// on "session=broken", and records what it was asked.
func authService(t *testing.T) (string, *atomic.Pointer[http.Request]) {
	var last atomic.Pointer[http.Request]
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		last.Store(r.Clone(r.Context()))
		c, _ := r.Cookie("session")
		switch {
		case c != nil && c.Value == "good":
			w.Header().Set("X-Auth-User", "alice")
			w.Header().Set("X-Auth-Groups", "admins")
			w.Header().Set("X-Not-Copied", "x")
			io.WriteString(w, "ok")
		case c != nil && c.Value == "broken":
			http.Error(w, "database down", http.StatusInternalServerError)
		case r.Header.Get("Accept") == "text/html":
			w.Header().Set("Location", "https://login.example/?rd="+r.Header.Get("X-Original-Url"))
			w.WriteHeader(http.StatusFound)
		default:
			w.Header().Set("WWW-Authenticate", `Bearer realm="x"`)
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, "who are you?")
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/verify?app=1", &last
}

func TestForwardAuth(t *testing.T) {
	url, last := authService(t)
	f, err := NewForward(ForwardOptions{URL: url, CopyHeaders: []string{"x-auth-user", "X-Auth-Groups"}})
	if err != nil {
		t.Fatal(err)
	}
	h := f.Handler(nil, "s", "r", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "user=%s groups=%s other=%s", r.Header.Get("X-Auth-User"), r.Header.Get("X-Auth-Groups"), r.Header.Get("X-Not-Copied"))
	}))
	req := func(cookie, accept string) *httptest.ResponseRecorder {
		r := httptest.NewRequest("POST", "http://app.example/admin/x?y=1", strings.NewReader("body"))
		r.Header.Set("X-Auth-User", "forged")
		if cookie != "" {
			r.Header.Set("Cookie", "session="+cookie)
		}
		if accept != "" {
			r.Header.Set("Accept", accept)
		}
		r, _ = withClient(r, "203.0.113.4")
		return serve(h, r)
	}
	if w := req("good", ""); w.Code != 200 || w.Body.String() != "user=alice groups=admins other=" {
		t.Fatalf("good session: %d %q", w.Code, w.Body)
	}
	sub := last.Load()
	for k, want := range map[string]string{
		"X-Forwarded-Method": "POST", "X-Forwarded-Uri": "/admin/x?y=1", "X-Forwarded-Host": "app.example",
		"X-Forwarded-For": "203.0.113.4", "X-Original-Url": "http://app.example/admin/x?y=1", "Content-Length": "",
	} {
		if got := sub.Header.Get(k); got != want {
			t.Errorf("subrequest %s = %q, want %q", k, got, want)
		}
	}
	if sub.Method != "GET" || sub.URL.RequestURI() != "/verify?app=1" || sub.ContentLength != 0 {
		t.Errorf("subrequest %s %s (%d bytes)", sub.Method, sub.URL, sub.ContentLength)
	}
	// No session: the forged header is gone and the 401 goes back as is.
	w := req("", "")
	if w.Code != 401 || w.Body.String() != "who are you?" || w.Header().Get("Www-Authenticate") != `Bearer realm="x"` {
		t.Fatalf("no session: %d %q %v", w.Code, w.Body, w.Header())
	}
	// A browser is sent to the login page.
	if w := req("", "text/html"); w.Code != 302 || !strings.HasPrefix(w.Header().Get("Location"), "https://login.example/?rd=http://app.example/admin/x") {
		t.Fatalf("browser: %d %v", w.Code, w.Header())
	}
	// The service fails: 502.
	if w := req("broken", ""); w.Code != 502 {
		t.Fatalf("failing service: %d", w.Code)
	}
	// The service is down: 502.
	down, _ := NewForward(ForwardOptions{URL: "http://127.0.0.1:1/verify"})
	r := httptest.NewRequest("GET", "/", nil)
	if w := serve(down.Handler(nil, "s", "r", http.NotFoundHandler()), r); w.Code != 502 {
		t.Fatalf("service down: %d", w.Code)
	}
}

func BenchmarkBasicVerified(b *testing.B) {
	hash, _ := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.DefaultCost)
	ba, _ := NewBasic(BasicOptions{Users: map[string]string{"alice": string(hash)}})
	h := ba.Handler(nil, "s", "r", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	r := httptest.NewRequest("GET", "/", nil)
	r.SetBasicAuth("alice", "pw")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	b.ReportAllocs()
	for b.Loop() {
		h.ServeHTTP(w, r)
	}
}
