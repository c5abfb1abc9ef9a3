package plainhttp

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// serveTest serves a handler that answers /status and /big, and 404
// otherwise, on a unix socket; net/http's client talks to it.
func serveTest(t *testing.T) (string, *http.Client) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "ctl")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := Serve(ln, func(ctx context.Context, path string) Response {
		switch path {
		case "/status":
			return Response{ContentType: "application/json", Body: []byte(`{"ok":true}`)}
		case "/big":
			return Response{Body: []byte(strings.Repeat("x", 1<<20))}
		}
		return Error(404, "no "+path)
	})
	t.Cleanup(func() { srv.Close() })
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}}}
	return sock, client
}

func TestServerAnswersNetHTTP(t *testing.T) {
	_, client := serveTest(t)
	for i := 0; i < 2; i++ { // the client's second request needs a new connection
		resp, err := client.Get("http://appd/status?x=1")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != `{"ok":true}` || resp.Header.Get("Content-Type") != "application/json" ||
			resp.ContentLength != int64(len(b)) || !resp.Close {
			t.Errorf("GET /status: %d %q %v length %d close %v", resp.StatusCode, b, resp.Header, resp.ContentLength, resp.Close)
		}
	}
	resp, err := client.Head("http://appd/big")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.ContentLength != 1<<20 {
		t.Errorf("HEAD /big: %d, length %d", resp.StatusCode, resp.ContentLength)
	}
	resp, err = client.Get("http://appd/nothing")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 404 || string(b) != "no /nothing\n" {
		t.Errorf("GET /nothing: %d %q", resp.StatusCode, b)
	}
	resp, err = client.Post("http://appd/status", "text/plain", strings.NewReader("hello"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 405 || resp.Header.Get("Allow") != "GET, HEAD" {
		t.Errorf("POST: %d, Allow %q", resp.StatusCode, resp.Header.Get("Allow"))
	}
}

// raw sends req on a new connection and returns the status line.
func raw(t *testing.T, sock, req string) string {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("%q: %v", req, err)
	}
	return strings.TrimSpace(line)
}

func TestServerRefusesWhatItDoesNotServe(t *testing.T) {
	sock, _ := serveTest(t)
	for req, want := range map[string]string{
		"GET /status HTTP/1.0\r\n\r\n":                                            "HTTP/1.1 200 OK",
		"BLAH\r\n\r\n":                                                            "HTTP/1.1 400 Bad Request",
		"GET status HTTP/1.1\r\nHost: a\r\n\r\n":                                  "HTTP/1.1 400 Bad Request",
		"GET /status HTTP/2.0\r\n\r\n":                                            "HTTP/1.1 505 HTTP Version Not Supported",
		"GET /status HTTP/1.1\r\nContent-Length: 5\r\n\r\n":                       "HTTP/1.1 400 Bad Request",
		"GET /status HTTP/1.1\r\nTransfer-Encoding: x\r\n\r\n":                    "HTTP/1.1 400 Bad Request",
		"GET /status HTTP/1.1\r\nbad header\r\n\r\n":                              "HTTP/1.1 400 Bad Request",
		"GET /status HTTP/1.1\r\nX: " + strings.Repeat("a", MaxHead) + "\r\n\r\n": "HTTP/1.1 431 Request Header Fields Too Large",
	} {
		if got := raw(t, sock, req); got != want {
			t.Errorf("%.60q: %q, want %q", req, got, want)
		}
	}
}

// TestServerCloseEndsConnections: a client that says nothing does not
// hold Close up; its connection is closed.
func TestServerCloseEndsConnections(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "ctl")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	srv := Serve(ln, func(ctx context.Context, path string) Response {
		close(served)
		<-ctx.Done() // a handler waiting for something: Close ends its context
		return Error(503, "closing")
	})
	idle, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	busy, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	io.WriteString(busy, "GET /x HTTP/1.1\r\n\r\n")
	<-served
	srv.Close()
	idle.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := idle.Read(make([]byte, 1)); n != 0 || !errors.Is(err, io.EOF) {
		t.Errorf("idle connection after Close: %d bytes, %v; want EOF", n, err)
	}
	if _, err := net.Dial("unix", sock); err == nil {
		t.Error("still accepting after Close")
	}
}

func TestGet(t *testing.T) {
	// net/http's server, which chunks a large body of unknown length for
	// HTTP/1.1 clients; Get's HTTP/1.0 request gets it plain.
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Host != "probe.example" || r.Proto != "HTTP/1.0" && !(r.Proto == "HTTP/1.1" && r.Close) {
			http.Error(w, "host "+r.Host+" "+r.Proto, 400)
			return
		}
		switch r.URL.Path {
		case "/big":
			for i := 0; i < 64; i++ {
				w.Write([]byte(strings.Repeat("y", 1024)))
			}
		case "/down":
			http.Error(w, "down", 503)
		}
	}))
	defer ts.Close()
	addr := strings.TrimPrefix(ts.URL, "http://")
	ctx := context.Background()
	code, body, err := Get(ctx, "tcp", addr, "probe.example", "/big?q=1", 1<<20)
	if err != nil || code != 200 || len(body) != 64<<10 || strings.Trim(string(body), "y") != "" {
		t.Errorf("GET /big: %d, %d bytes, %v", code, len(body), err)
	}
	if code, body, err = Get(ctx, "tcp", addr, "probe.example", "/big", 100); err != nil || len(body) != 100 {
		t.Errorf("GET /big limited to 100 bytes: %d, %d bytes, %v", code, len(body), err)
	}
	if code, err = Probe(ctx, "tcp", addr, "probe.example", "/down"); err != nil || code != 503 {
		t.Errorf("probe of /down: %d %v", code, err)
	}
	if code, err = Probe(ctx, "tcp", addr, "probe.example", "/big"); err != nil || code != 200 {
		t.Errorf("probe of /big: %d %v", code, err)
	}
	if code, err = Probe(ctx, "tcp", addr, "other", "/"); err != nil || code != 400 {
		t.Errorf("Host field not sent as given: %d %v", code, err)
	}

	// Against this package's server.
	sock, _ := serveTest(t)
	if code, body, err = Get(ctx, "unix", sock, "appd", "/status", 1<<20); err != nil || code != 200 || string(body) != `{"ok":true}` {
		t.Errorf("GET /status: %d %q %v", code, body, err)
	}

	// A server that accepts and never answers: the context ends the wait.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			defer c.Close()
			io.Copy(io.Discard, c)
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if _, err := Probe(ctx, "tcp", ln.Addr().String(), "x", "/"); err == nil {
		t.Error("GET of a silent server: no error")
	}

	// A body cut short of its Content-Length is an error.
	ln2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln2.Close()
	go func() {
		c, err := ln2.Accept()
		if err == nil {
			bufio.NewReader(c).ReadString('\n')
			io.WriteString(c, "HTTP/1.0 200 OK\r\nContent-Length: 10\r\n\r\nabc")
			c.Close()
		}
	}()
	if _, body, err := Get(context.Background(), "tcp", ln2.Addr().String(), "x", "/", 100); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("short body: %q, %v; want ErrUnexpectedEOF", body, err)
	}
}
