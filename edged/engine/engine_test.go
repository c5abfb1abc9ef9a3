package engine

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/edgeapp/edgeapp/edged/httpwire"
	"github.com/edgeapp/edgeapp/edged/reqinfo"
)

// start serves h with o on a loopback port until the test ends.
func start(t *testing.T, h http.Handler, o Options) (*Server, string) {
	t.Helper()
	o.Handler = h
	s := New(o)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		s.Close()
		if err := <-done; err != ErrServerClosed {
			t.Errorf("Serve returned %v", err)
		}
	})
	return s, ln.Addr().String()
}

// exchange writes raw bytes on a new connection and returns what comes
// back until the server closes or the deadline passes.
func exchange(t *testing.T, addr, raw string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, raw)
	b, _ := io.ReadAll(c)
	return string(b)
}

// readResponses reads n responses from br for the given methods.
func readResponse(t *testing.T, br *bufio.Reader, method string) (*http.Response, string) {
	t.Helper()
	res, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res, string(b)
}

func hello(w http.ResponseWriter, r *http.Request) {
	fmt.Fprintf(w, "hello %s %s", r.Method, r.URL.Path)
}

func TestKeepAliveSmallAndLargeBodies(t *testing.T) {
	big := strings.Repeat("x", 100<<10)
	_, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/big":
			for i := 0; i < len(big); i += 1000 {
				io.WriteString(w, big[i:min(i+1000, len(big))])
			}
		case "/declared":
			w.Header().Set("Content-Length", "5")
			io.WriteString(w, "12345")
		default:
			hello(w, r)
		}
	}), Options{})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	for _, path := range []string{"/a", "/big", "/declared", "/b"} {
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path)
		res, body := readResponse(t, br, "GET")
		switch path {
		case "/big":
			if body != big || res.ContentLength != -1 || len(res.TransferEncoding) != 1 {
				t.Errorf("%s: %d bytes, length %d, TE %v", path, len(body), res.ContentLength, res.TransferEncoding)
			}
		case "/declared":
			if body != "12345" || res.ContentLength != 5 {
				t.Errorf("%s: %q %d", path, body, res.ContentLength)
			}
		default:
			if body != "hello GET "+path || res.ContentLength != int64(len(body)) {
				t.Errorf("%s: %q, length %d: a small body must get Content-Length", path, body, res.ContentLength)
			}
			if res.Header.Get("Date") == "" || res.Header.Get("Content-Type") != "text/plain; charset=utf-8" {
				t.Errorf("%s: Date %q, Content-Type %q", path, res.Header.Get("Date"), res.Header.Get("Content-Type"))
			}
		}
		if res.Close {
			t.Fatalf("%s: connection closed", path)
		}
	}
}

func TestPipelinedResponsesInOrder(t *testing.T) {
	var writes atomic.Int32
	_, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			time.Sleep(50 * time.Millisecond)
		}
		if r.Method == "POST" {
			b, _ := io.ReadAll(r.Body)
			w.Write(b)
			return
		}
		hello(w, r)
	}), Options{ConnState: func(net.Conn, http.ConnState) { writes.Add(1) }})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"+
		"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody"+
		"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"+
		"HEAD /h HTTP/1.1\r\nHost: x\r\n\r\n"+
		"GET /last HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(c)
	for _, want := range []struct{ method, body string }{{"GET", "hello GET /slow"}, {"POST", "body"}, {"POST", "abc"}, {"HEAD", ""}, {"GET", "hello GET /last"}} {
		res, body := readResponse(t, br, want.method)
		if body != want.body {
			t.Fatalf("got %q, want %q", body, want.body)
		}
		if want.method == "HEAD" && res.ContentLength != int64(len("hello HEAD /h")) {
			t.Errorf("HEAD: Content-Length %d, want the GET's", res.ContentLength)
		}
	}
}

func TestBodylessStatuses(t *testing.T) {
	_, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/204":
			w.WriteHeader(204)
			if _, err := w.Write([]byte("x")); err != http.ErrBodyNotAllowed {
				t.Errorf("write after 204: %v", err)
			}
		case "/304":
			w.Header().Set("ETag", `"x"`)
			w.WriteHeader(304)
		}
	}), Options{})
	out := exchange(t, addr, "GET /204 HTTP/1.1\r\nHost: x\r\n\r\nGET /304 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	if !strings.HasPrefix(out, "HTTP/1.1 204 No Content\r\n") || strings.Contains(out, "Content-Length") || strings.Contains(out, "Transfer-Encoding") {
		t.Errorf("204/304:\n%s", out)
	}
	if i := strings.Index(out, "HTTP/1.1 304 Not Modified\r\n"); i < 0 || !strings.HasSuffix(out, "\r\n\r\n") {
		t.Errorf("304 missing or with a body:\n%s", out)
	}
}

func TestExpectContinue(t *testing.T) {
	_, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/refuse" {
			w.WriteHeader(http.StatusRequestEntityTooLarge)
			return
		}
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "got %s", b)
	}), Options{})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	io.WriteString(c, "POST /read HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
	line, _ := br.ReadString('\n')
	if line != "HTTP/1.1 100 Continue\r\n" {
		t.Fatalf("first line %q, want 100 Continue", line)
	}
	br.ReadString('\n')
	io.WriteString(c, "data")
	if _, body := readResponse(t, br, "POST"); body != "got data" {
		t.Fatalf("body %q", body)
	}
	// A handler that answers without reading: no 100, and the connection
	// closes since the client may or may not send the body.
	io.WriteString(c, "POST /refuse HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
	res, _ := readResponse(t, br, "POST")
	if res.StatusCode != 413 || !res.Close {
		t.Errorf("status %d close %v", res.StatusCode, res.Close)
	}
}

func TestTrailersBothWays(t *testing.T) {
	_, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Trailer", "X-Sum")
		w.Write(b)
		w.Header().Set("X-Sum", "sum-"+r.Trailer.Get("X-Checksum"))
		w.Header().Set(http.TrailerPrefix+"X-Late", "late")
	}), Options{})
	out := exchange(t, addr, "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\nConnection: close\r\n\r\n2\r\nhi\r\n0\r\nX-Checksum: 42\r\n\r\n")
	res, err := http.ReadResponse(bufio.NewReader(strings.NewReader(out)), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	if string(b) != "hi" || res.Trailer.Get("X-Sum") != "sum-42" || res.Trailer.Get("X-Late") != "late" {
		t.Errorf("body %q trailers %v\n%s", b, res.Trailer, out)
	}
}

// TestSmugglingCorpusRefused sends every request of httpwire's corpus to
// the engine: each gets its error status and the connection closes, so
// nothing after it is ever read as a request.
func TestSmugglingCorpusRefused(t *testing.T) {
	var served atomic.Int32
	_, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		io.Copy(io.Discard, r.Body)
	}), Options{})
	for _, tc := range httpwire.SmugglingCorpus {
		out := exchange(t, addr, tc.Request+"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n")
		want := fmt.Sprintf("HTTP/1.1 %d ", tc.Status)
		if !strings.HasPrefix(out, want) || len(statusLine.FindAllString(out, -1)) != 1 || !strings.Contains(out, "Connection: close") {
			t.Errorf("%s: got\n%s", tc.Name, out)
		}
	}
	if n := served.Load(); n != 0 {
		t.Errorf("%d refused requests reached the handler", n)
	}
	for _, tc := range httpwire.ChunkedCorpus {
		out := exchange(t, addr, "POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"+tc.Body+"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n")
		if strings.Contains(out, "/smuggled") || len(statusLine.FindAllString(out, -1)) > 1 {
			t.Errorf("%s: a second response:\n%s", tc.Name, out)
		}
	}
}

var statusLine = regexp.MustCompile(`(?m)^HTTP/1\.1 \d{3} `)

func TestHeadTooLarge(t *testing.T) {
	_, addr := start(t, http.HandlerFunc(hello), Options{MaxHeaderBytes: 8 << 10})
	out := exchange(t, addr, "GET / HTTP/1.1\r\nHost: x\r\nX-Big: "+strings.Repeat("a", 10<<10)+"\r\n\r\n")
	if !strings.HasPrefix(out, "HTTP/1.1 431 ") {
		t.Errorf("got %.100q", out)
	}
	// A head larger than the first buffer but within the limit is served.
	out = exchange(t, addr, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: "+strings.Repeat("a", 6<<10)+"\r\n\r\n")
	if !strings.HasPrefix(out, "HTTP/1.1 200 ") {
		t.Errorf("6 KiB head: %.100q", out)
	}
}

func TestHijackKeepsPipelinedBytes(t *testing.T) {
	_, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
		line, _ := brw.ReadString('\n')
		brw.WriteString("echo " + line)
		brw.Flush()
	}), Options{})
	out := exchange(t, addr, "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\nearly bytes\n")
	if !strings.HasSuffix(out, "\r\n\r\necho early bytes\n") {
		t.Errorf("got %q", out)
	}
}

func TestFlushStreams(t *testing.T) {
	release := make(chan struct{})
	_, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: one\n\n")
		w.(http.Flusher).Flush()
		<-release
		io.WriteString(w, "data: two\n\n")
	}), Options{})
	res, err := http.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	br := bufio.NewReader(res.Body)
	if line, _ := br.ReadString('\n'); line != "data: one\n" {
		t.Fatalf("first event %q", line)
	}
	close(release)
	rest, _ := io.ReadAll(br)
	if string(rest) != "\ndata: two\n\n" {
		t.Errorf("rest %q", rest)
	}
}

func TestEarlyHints(t *testing.T) {
	_, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</a.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		io.WriteString(w, "final")
	}), Options{})
	out := exchange(t, addr, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	if !strings.HasPrefix(out, "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\n") || !strings.HasSuffix(out, "final") {
		t.Errorf("got\n%s", out)
	}
}

func TestHTTP10(t *testing.T) {
	_, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/stream" {
			io.WriteString(w, "a")
			w.(http.Flusher).Flush()
			io.WriteString(w, "b")
			return
		}
		hello(w, r)
	}), Options{})
	out := exchange(t, addr, "GET /ka HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /stream HTTP/1.0\r\n\r\n")
	if !strings.Contains(out, "Content-Length: 13\r\nConnection: keep-alive\r\n\r\nhello GET /ka") {
		t.Errorf("keep-alive response:\n%s", out)
	}
	if !strings.HasSuffix(out, "Connection: close\r\n\r\nab") {
		t.Errorf("close-delimited response:\n%s", out)
	}
}

func TestPanicClosesConnection(t *testing.T) {
	_, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		panic(http.ErrAbortHandler)
	}), Options{})
	out := exchange(t, addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n")
	if !strings.HasPrefix(out, "HTTP/1.1 500 ") || strings.Count(out, "HTTP/1.1") != 1 {
		t.Errorf("got\n%s", out)
	}
}

func TestRequestContext(t *testing.T) {
	ctxs := make(chan context.Context, 2)
	_, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if reqinfo.From(r.Context()) == nil {
			t.Error("no reqinfo record in the request's context")
		}
		child, cancel := context.WithCancel(r.Context())
		defer cancel()
		go func() { <-child.Done(); ctxs <- child }()
		ctxs <- r.Context()
	}), Options{})
	res, err := http.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	ctx := <-ctxs
	select {
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("request context not cancelled after the handler returned")
	}
	<-ctxs
}

func TestTimeouts(t *testing.T) {
	closed := make(chan string, 16) // client addresses of the connections the server closed
	_, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/big" {
			w.Write(make([]byte, 64<<20))
			return
		}
		if _, err := io.ReadAll(r.Body); err != nil {
			return
		}
		hello(w, r)
	}), Options{ReadHeaderTimeout: 200 * time.Millisecond, IdleTimeout: 300 * time.Millisecond, ClientBodyTimeout: 200 * time.Millisecond, SendTimeout: 200 * time.Millisecond,
		ConnState: func(c net.Conn, st http.ConnState) {
			if st == http.StateClosed {
				closed <- c.RemoteAddr().String()
			}
		}})
	for name, tc := range map[string]struct {
		send string
		max  time.Duration
	}{
		"idle":   {"", 2 * time.Second},
		"header": {"GET / HTTP/1.1\r\nHost: x\r\n", 2 * time.Second},
		"body":   {"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc", 2 * time.Second},
	} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		io.WriteString(c, tc.send)
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.ReadAll(c)
		if d := time.Since(start); d > tc.max {
			t.Errorf("%s: closed after %v", name, d)
		}
		c.Close()
	}
	// send_timeout: a client that stops reading a large response.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
	// The client reads nothing until the server has given up on it: the
	// socket buffers fill, a write makes no progress for send_timeout, and
	// the server closes the connection.
	for gaveUp := false; !gaveUp; {
		select {
		case a := <-closed:
			gaveUp = a == c.LocalAddr().String()
		case <-time.After(10 * time.Second):
			t.Fatal("the server did not close a connection whose client stopped reading")
		}
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	n, _ := io.Copy(io.Discard, c)
	if n >= 64<<20 {
		t.Errorf("the whole response arrived (%d bytes) although the client stalled past send_timeout", n)
	}
}

func TestSendfile(t *testing.T) {
	dir := t.TempDir()
	content := strings.Repeat("0123456789", 300<<10/10)
	path := filepath.Join(dir, "f")
	os.WriteFile(path, []byte(content), 0o644)
	_, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f, err := os.Open(path)
		if err != nil {
			t.Error(err)
			return
		}
		defer f.Close()
		f.Seek(10, io.SeekStart)
		w.Header().Set("Content-Length", fmt.Sprint(len(content)-20))
		n, err := io.Copy(w, &io.LimitedReader{R: f, N: int64(len(content) - 20)})
		if err != nil || n != int64(len(content)-20) {
			t.Errorf("copied %d: %v", n, err)
		}
	}), Options{})
	for range 2 {
		res, err := http.Get("http://" + addr + "/")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if string(b) != content[10:len(content)-10] {
			t.Fatalf("body of %d bytes differs", len(b))
		}
	}
}

func TestShutdownDrains(t *testing.T) {
	inHandler := make(chan struct{})
	release := make(chan struct{})
	// DrainQuiet is far longer than the test: the late request below is
	// written after Shutdown began, on a connection that has been idle for
	// as long as the setup took, which on a loaded machine can pass the
	// default 500ms (the quiet close has its own test).
	s := New(Options{DrainQuiet: time.Minute, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(inHandler)
			<-release
		}
		hello(w, r)
	})})
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := &closeSignalListener{Listener: tl, closed: make(chan struct{})}
	addr := ln.Addr().String()
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	t.Cleanup(func() {
		s.Close()
		if err := <-served; err != ErrServerClosed {
			t.Errorf("Serve returned %v", err)
		}
	})
	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	io.WriteString(idle, "GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
	ibr := bufio.NewReader(idle)
	readResponse(t, ibr, "GET")
	busy, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	io.WriteString(busy, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
	<-inHandler
	done := make(chan error, 1)
	go func() { done <- s.Shutdown(context.Background()) }()
	// Shutdown has begun once it closes the listener (it marks the server
	// closing first); waiting for that, not for the goroutine to be
	// scheduled, is what makes the responses below follow it.
	<-ln.closed
	// A request on the kept-alive connection right after shutdown began
	// is still answered, with Connection: close.
	io.WriteString(idle, "GET /late HTTP/1.1\r\nHost: x\r\n\r\n")
	res, body := readResponse(t, ibr, "GET")
	if body != "hello GET /late" || !res.Close {
		t.Errorf("late request: %q close=%v", body, res.Close)
	}
	close(release)
	res, body = readResponse(t, bufio.NewReader(busy), "GET")
	if body != "hello GET /slow" || !res.Close {
		t.Errorf("in-flight request: %q close=%v", body, res.Close)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return")
	}
}

// closeSignalListener closes closed when the server closes it.
type closeSignalListener struct {
	net.Listener
	once   sync.Once
	closed chan struct{}
}

func (l *closeSignalListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

func TestHTTP2(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s", r.Proto, r.URL.Path)
	})
	// TLS with ALPN.
	ts := httptest.NewUnstartedServer(nil)
	ts.EnableHTTP2 = true
	ts.StartTLS()
	cfg := ts.TLS.Clone()
	ts.Close()
	s := New(Options{Handler: h})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.NextProtos = []string{"h2", "http/1.1"}
	go s.Serve(tls.NewListener(ln, cfg))
	defer s.Close()
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	res, err := (&http.Client{Transport: tr}).Get("https://" + ln.Addr().String() + "/tls")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if string(b) != "HTTP/2.0 /tls" {
		t.Errorf("TLS: %q", b)
	}
	// h2c with prior knowledge, and HTTP/1.1 on the same listener.
	_, addr := start(t, h, Options{H2C: true})
	h2c := &http2.Transport{AllowHTTP: true, DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
		return net.Dial(network, addr)
	}}
	res, err = (&http.Client{Transport: h2c}).Get("http://" + addr + "/h2c")
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(res.Body)
	res.Body.Close()
	if string(b) != "HTTP/2.0 /h2c" {
		t.Errorf("h2c: %q", b)
	}
	if out := exchange(t, addr, "GET /h1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"); !strings.HasSuffix(out, "HTTP/1.1 /h1") {
		t.Errorf("HTTP/1.1 beside h2c: %q", out)
	}
}

func TestClientGoneCancelsContext(t *testing.T) {
	cancelled := make(chan error, 1)
	entered := make(chan struct{}, 1)
	_, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == "POST" {
			io.ReadAll(r.Body)
		}
		entered <- struct{}{}
		// /a must stay uncancelled for a second; the others must be
		// cancelled, and the bound only keeps a failure from hanging.
		wait := 10 * time.Second
		if r.URL.Path == "/a" {
			wait = time.Second
		}
		select {
		case <-r.Context().Done():
			cancelled <- r.Context().Err()
		case <-time.After(wait):
			cancelled <- nil
		}
	}), Options{})
	for _, req := range []string{"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, req)
		<-entered // the client leaves while its request is being handled
		c.Close()
		if err := <-cancelled; err != context.Canceled {
			t.Errorf("%q: the handler's context was not cancelled when the client left (%v)", req[:4], err)
		}
	}
	// A pipelined request is not mistaken for a close.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
	<-entered // the next request arrives while /a is being handled
	io.WriteString(c, "GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
	if err := <-cancelled; err != nil {
		t.Errorf("cancelled by a pipelined request: %v", err)
	}
	<-entered
	c.Close()
	<-cancelled
}
