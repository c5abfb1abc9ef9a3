package proxy

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// openIn counts this process's open files under dir: a spool's nameless
// file shows in /proc/self/fd as "dir/#inode (deleted)".
func openIn(t testing.TB, dir string) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, fd := range fds {
		if l, err := os.Readlink("/proc/self/fd/" + fd.Name()); err == nil && strings.HasPrefix(l, dir+"/") {
			n++
		}
	}
	return n
}

func buffered(t testing.TB) (HandlerOptions, string) {
	dir := t.TempDir()
	b := DefaultBuffering()
	b.Dir = dir
	return HandlerOptions{Buffering: b}, dir
}

// TestRequestBodySpooledBeforeUpstream: a slow upload is read into a
// nameless temporary file while no upstream connection exists; the
// upstream gets the whole body at once with a Content-Length, and the file
// is gone afterwards.
func TestRequestBodySpooledBeforeUpstream(t *testing.T) {
	var conns atomic.Int32
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	up := serveOnState(t, ln, ln.Addr().String(), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%d %x cl=%d te=%q expect=%q %v", len(b), sha256.Sum256(b), r.ContentLength, r.TransferEncoding, r.Header.Get("Expect"), err)
	}), func(c net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	})
	o, dir := buffered(t)
	f := newFront(t, UpstreamConfig{Servers: servers(up.Addr)}, o)
	body := bytes.Repeat([]byte("0123456789abcdef"), 4096) // 64 KiB: past the 16 KiB in memory
	c, err := net.Dial("tcp", strings.TrimPrefix(f.URL(), "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	// Chunked and with Expect: edged answers the 100 itself.
	fmt.Fprintf(c, "POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n")
	br := bufio.NewReader(c)
	if line, _ := br.ReadString('\n'); !strings.HasPrefix(line, "HTTP/1.1 100") {
		t.Fatalf("want 100 Continue from edged, got %q", line)
	}
	br.ReadString('\n')
	half := body[:40<<10]
	fmt.Fprintf(c, "%x\r\n%s\r\n", len(half), half)
	waitFor(t, "the body to reach a temporary file", func() bool { return openIn(t, dir) == 1 })
	if n := conns.Load(); n != 0 {
		t.Fatalf("%d upstream connections while the client was still uploading", n)
	}
	if es, _ := os.ReadDir(dir); len(es) != 0 {
		t.Fatalf("the temporary file has a name: %v", es[0].Name())
	}
	rest := body[40<<10:]
	fmt.Fprintf(c, "%x\r\n%s\r\n0\r\n\r\n", len(rest), rest)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(res.Body)
	want := fmt.Sprintf("%d %x cl=%d te=[] expect=\"\" <nil>", len(body), sha256.Sum256(body), len(body))
	if string(got) != want {
		t.Fatalf("upstream saw %q\nwant %q", got, want)
	}
	waitFor(t, "the temporary file to be closed", func() bool { return openIn(t, dir) == 0 })
	if v := counterValue(t, f, "edged_proxy_spool_files_total", "direction", "request"); v != 1 {
		t.Fatalf("edged_proxy_spool_files_total{direction=request} = %v", v)
	}
}

// counterValue reads a counter of f's registry (0 if absent).
func counterValue(t *testing.T, f *front, name string, labels ...string) float64 {
	t.Helper()
	v, _ := metricValue(t, f.reg, name, labels...)
	return v
}

// TestBodyCutShortNeverReachesUpstream: a client that stops partway is
// answered by edged; no upstream connection is ever made.
func TestBodyCutShortNeverReachesUpstream(t *testing.T) {
	up := startTCP(t, named("up"))
	o, dir := buffered(t)
	f := newFront(t, UpstreamConfig{Servers: servers(up.Addr)}, o)
	c, err := net.Dial("tcp", strings.TrimPrefix(f.URL(), "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"+strings.Repeat("x", 50000))
	c.(*net.TCPConn).CloseWrite()
	io.Copy(io.Discard, c)
	waitFor(t, "the request to end", func() bool { return openIn(t, dir) == 0 && f.pool.inflight.Load() == 0 })
	if up.Hits() != 0 {
		t.Fatal("a request whose body never arrived reached the upstream")
	}
}

// slowReader is a raw client that sends a GET and then reads nothing
// until told: with a small receive buffer, whatever edged does not hold
// itself waits in the upstream.
func slowReader(t *testing.T, url string) (net.Conn, *bufio.Reader) {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) {
			syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
	}}
	c, err := d.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(60 * time.Second))
	io.WriteString(c, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
	return c, bufio.NewReaderSize(c, 4096)
}

// TestUpstreamReleasedBeforeSlowClient: the upstream's whole response is
// taken while the client has read almost none of it; the connection is
// back in the pool, and the client still gets every byte.
func TestUpstreamReleasedBeforeSlowClient(t *testing.T) {
	for _, chunked := range []bool{false, true} {
		t.Run(fmt.Sprintf("chunked=%v", chunked), func(t *testing.T) {
			const size = 32 << 20
			done := make(chan struct{})
			up := startTCP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				defer close(done)
				if !chunked {
					w.Header().Set("Content-Length", strconv.Itoa(size))
				}
				buf := make([]byte, 1<<20)
				for off := int64(0); off < size; off += int64(len(buf)) {
					fillPattern(buf, off)
					if _, err := w.Write(buf); err != nil {
						return
					}
				}
			}))
			o, dir := buffered(t)
			f := newFront(t, UpstreamConfig{Servers: servers(up.Addr)}, o)
			_, br := slowReader(t, f.URL())
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				t.Fatal("the upstream could not send its response while the client was slow")
			}
			waitFor(t, "the upstream connection to be idle in the pool", func() bool { return f.pool.servers()[0].cp.idleCount() == 1 })
			if openIn(t, dir) != 1 {
				t.Fatal("the response is not in a temporary file")
			}
			res, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			var n int64
			buf := make([]byte, 64<<10)
			for {
				k, err := res.Body.Read(buf)
				if i := patternMismatch(buf[:k], n); i >= 0 {
					t.Fatalf("byte %d differs", n+int64(i))
				}
				n += int64(k)
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatalf("after %d bytes: %v", n, err)
				}
			}
			if n != size {
				t.Fatalf("got %d bytes", n)
			}
			waitFor(t, "the temporary file to be closed", func() bool { return openIn(t, dir) == 0 })
			if v := counterValue(t, f, "edged_proxy_spool_files_total", "direction", "response"); v != 1 {
				t.Fatalf("spool files %v", v)
			}
		})
	}
}

// TestResponseFileCap: with no file allowed (response_temp_max = 0), the
// spool holds its memory's worth ahead of the client and the upstream
// waits for the rest; the client still gets everything, in order.
func TestResponseFileCap(t *testing.T) {
	const size = 8 << 20
	up := startTCP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(size))
		buf := make([]byte, 100000)
		for off := int64(0); off < size; off += int64(len(buf)) {
			n := min(int64(len(buf)), size-off)
			fillPattern(buf[:n], off)
			if _, err := w.Write(buf[:n]); err != nil {
				return
			}
		}
	}))
	o, dir := buffered(t)
	o.Buffering.ResponseFileMax = 0
	f := newFront(t, UpstreamConfig{Servers: servers(up.Addr)}, o)
	_, br := slowReader(t, f.URL())
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	buf := make([]byte, 3000) // slowly, in small reads
	for {
		k, err := res.Body.Read(buf)
		if i := patternMismatch(buf[:k], n); i >= 0 {
			t.Fatalf("byte %d differs", n+int64(i))
		}
		n += int64(k)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if openIn(t, dir) != 0 {
			t.Fatal("a temporary file with response_temp_max = 0")
		}
	}
	if n != size {
		t.Fatalf("got %d bytes", n)
	}
}

// TestStreamsNotBuffered: X-Accel-Buffering: no (removed on the way), an
// event stream, and a response of unknown length that flushes each reach
// the client part by part while the upstream waits for the client.
func TestStreamsNotBuffered(t *testing.T) {
	for _, c := range []struct{ name, header, value string }{
		{"x-accel-buffering", "X-Accel-Buffering", "no"},
		{"event-stream", "Content-Type", "text/event-stream"},
		{"unknown length", "X-Kind", "plain"},
	} {
		t.Run(c.name, func(t *testing.T) {
			next := make(chan struct{})
			up := startTCP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set(c.header, c.value)
				for i := 0; i < 3; i++ {
					fmt.Fprintf(w, "part %d\n", i)
					w.(http.Flusher).Flush()
					select {
					case <-next:
					case <-r.Context().Done():
						return
					}
				}
			}))
			o, _ := buffered(t)
			f := newFront(t, UpstreamConfig{Servers: servers(up.Addr)}, o)
			res, err := http.Get(f.URL() + "/")
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			if c.header == "X-Accel-Buffering" && res.Header.Get("X-Accel-Buffering") != "" {
				t.Fatal("X-Accel-Buffering reached the client")
			}
			br := bufio.NewReader(res.Body)
			for i := 0; i < 3; i++ {
				line, err := br.ReadString('\n')
				if err != nil || line != fmt.Sprintf("part %d\n", i) {
					t.Fatalf("part %d: %q %v", i, line, err)
				}
				next <- struct{}{}
			}
		})
	}
}

// TestSmallResponseCutShortIs502: a response that fits in memory is read
// whole before anything reaches the client, so an upstream that dies in
// its body is a clean 502, not a truncated 200.
func TestSmallResponseCutShortIs502(t *testing.T) {
	addr, _ := rawUpstream(t, func(*http.Request) string {
		return "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nSet-Cookie: s=1\r\nConnection: close\r\n\r\nonly this"
	})
	o, _ := buffered(t)
	f := newFront(t, UpstreamConfig{Servers: servers(addr)}, o)
	res, body := get(t, f.URL()+"/")
	if res.StatusCode != http.StatusBadGateway || res.Header.Get("Set-Cookie") != "" {
		t.Fatalf("got %d %q %v", res.StatusCode, body, res.Header)
	}
	if !strings.Contains(f.log.String(), "reading the response body") {
		t.Fatalf("log:\n%s", f.log)
	}
}

// TestRetryResendsSpooledBody: with retry_idempotent, a PUT of a body that
// went to a file is sent whole to the next server after the first one
// dropped the connection.
func TestRetryResendsSpooledBody(t *testing.T) {
	echo := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%d %x", len(b), sha256.Sum256(b))
	})
	a, b := startTCP(t, resetter()), startTCP(t, echo)
	o, _ := buffered(t)
	f := newFront(t, UpstreamConfig{Servers: servers(a.Addr, b.Addr), Policy: "first", MaxFails: 0, Retries: 1, RetryIdempotent: true}, o)
	body := bytes.Repeat([]byte("spooled "), 256<<10) // 2 MiB
	req, _ := http.NewRequest("PUT", f.URL()+"/", bytes.NewReader(body))
	res, got := do(t, req)
	if want := fmt.Sprintf("%d %x", len(body), sha256.Sum256(body)); res.StatusCode != 200 || got != want {
		t.Fatalf("got %d %q, want %q", res.StatusCode, got, want)
	}
	// POST is still not sent twice.
	req, _ = http.NewRequest("POST", f.URL()+"/", bytes.NewReader(body))
	if res, _ := do(t, req); res.StatusCode != http.StatusBadGateway {
		t.Fatalf("POST: %d", res.StatusCode)
	}
}

// TestClientLeavesMidResponse: a client that goes away while a buffered
// response streams to it ends the upstream exchange too; nothing stays
// open.
func TestClientLeavesMidResponse(t *testing.T) {
	stopped := make(chan struct{})
	up := startTCP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer close(stopped)
		buf := make([]byte, 64<<10)
		for { // an endless body of unknown length
			if _, err := w.Write(buf); err != nil {
				return
			}
		}
	}))
	o, dir := buffered(t)
	o.Buffering.ResponseFileMax = 1 << 20
	f := newFront(t, UpstreamConfig{Servers: servers(up.Addr)}, o)
	c, br := slowReader(t, f.URL())
	if _, err := http.ReadResponse(br, nil); err != nil {
		t.Fatal(err)
	}
	c.Close()
	select {
	case <-stopped:
	case <-time.After(30 * time.Second):
		t.Fatal("the upstream kept sending after the client left")
	}
	waitFor(t, "the exchange to end", func() bool {
		return f.pool.inflight.Load() == 0 && openIn(t, dir) == 0 && statusOf(f.pool, up.Addr).Active == 0
	})
	if s := statusOf(f.pool, up.Addr); s.Fails != 0 {
		t.Fatalf("the client leaving counted against the server: %+v", s)
	}
}

// TestStalledBodyTimesOut: a buffered response whose body stops arriving
// ends after response_header_timeout of silence (nginx
// proxy_read_timeout); the client gets a 502, the server a failure.
func TestStalledBodyTimesOut(t *testing.T) {
	addr, _ := rawUpstream(t, func(*http.Request) string {
		return "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nonly this" // and then nothing
	})
	o, _ := buffered(t)
	f := newFront(t, UpstreamConfig{Servers: servers(addr), ResponseHeaderTimeout: 300 * time.Millisecond}, o)
	res, _ := get(t, f.URL()+"/")
	if res.StatusCode != http.StatusBadGateway || !strings.Contains(f.log.String(), "timeout reading the response body") {
		t.Fatalf("got %d\n%s", res.StatusCode, f.log)
	}
}
