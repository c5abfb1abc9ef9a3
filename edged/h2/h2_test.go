package h2

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/edgeapp/edgeapp/edged/reqinfo"
)

// testServer serves h on a loopback TLS listener with ALPN h2 and returns
// an HTTP/2 client for it.
func testServer(t testing.TB, o Options, h http.Handler) (*Server, *http.Client, string) {
	t.Helper()
	o.Handler = h
	s := New(o)
	// httptest provides the certificate and a client that trusts it; its
	// own server never gets a connection.
	ts := httptest.NewUnstartedServer(nil)
	ts.EnableHTTP2 = true
	ts.StartTLS()
	tlsConf := ts.TLS.Clone()
	tlsConf.NextProtos = []string{"h2"}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				tc := tls.Server(nc, tlsConf)
				if tc.Handshake() != nil {
					nc.Close()
					return
				}
				st := tc.ConnectionState()
				s.ServeConn(tc, &st)
				tc.Close()
			}()
		}
	}()
	tr := &http2.Transport{TLSClientConfig: ts.Client().Transport.(*http.Transport).TLSClientConfig.Clone()}
	tr.TLSClientConfig.NextProtos = []string{"h2"}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		ln.Close()
		s.Shutdown()
		wg.Wait()
		ts.Close()
	})
	return s, &http.Client{Transport: tr, Timeout: 20 * time.Second}, "https://" + ln.Addr().String()
}

func TestRequestAndResponse(t *testing.T) {
	_, c, url := testServer(t, Options{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if reqinfo.From(r.Context()) == nil {
			t.Error("no reqinfo record in the request's context")
		}
		b, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("reading the body: %v", err)
		}
		w.Header().Set("X-Method", r.Method)
		fmt.Fprintf(w, "%s %s %s host=%s cookie=%q len=%d body=%d", r.Proto, r.URL.Path, r.URL.RawQuery, r.Host, r.Header.Get("Cookie"), r.ContentLength, len(b))
	}))
	res, err := c.Get(url + "/a/b?x=1")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	host := strings.TrimPrefix(url, "https://")
	if want := "HTTP/2.0 /a/b x=1 host=" + host + ` cookie="" len=0 body=0`; string(b) != want {
		t.Errorf("GET: %q, want %q", b, want)
	}
	if res.ContentLength != int64(len(b)) || res.Header.Get("Date") == "" || res.Header.Get("Content-Type") == "" {
		t.Errorf("GET: Content-Length %d, header %v", res.ContentLength, res.Header)
	}
	// A large body in both directions goes through flow control.
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	res, err = c.Post(url+"/up", "application/octet-stream", bytes.NewReader(big))
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(res.Body)
	res.Body.Close()
	if want := fmt.Sprintf("len=%d body=%d", len(big), len(big)); !strings.HasSuffix(string(b), want) {
		t.Errorf("POST: %q, want suffix %q", b, want)
	}
}

func TestLargeResponseAndHead(t *testing.T) {
	big := bytes.Repeat([]byte("x"), 3<<20)
	_, c, url := testServer(t, Options{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for p := big; len(p) > 0; p = p[min(len(p), 10000):] {
			w.Write(p[:min(len(p), 10000)])
		}
	}))
	res, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if !bytes.Equal(b, big) {
		t.Errorf("got %d bytes, want %d", len(b), len(big))
	}
	res, err = c.Head(url)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(res.Body)
	res.Body.Close()
	if len(b) != 0 || res.StatusCode != 200 {
		t.Errorf("HEAD: status %d, %d body bytes", res.StatusCode, len(b))
	}
}

func TestTrailersBothWays(t *testing.T) {
	_, c, url := testServer(t, Options{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Trailer", "X-Sum")
		w.Write([]byte("body"))
		w.(http.Flusher).Flush()
		w.Header().Set("X-Sum", "in="+r.Trailer.Get("X-In"))
		w.Header().Set(http.TrailerPrefix+"X-Late", "late")
	}))
	req, _ := http.NewRequest("POST", url, io.NopCloser(strings.NewReader("payload")))
	req.Trailer = http.Header{"X-In": {"v1"}}
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if string(b) != "body" || res.Trailer.Get("X-Sum") != "in=v1" || res.Trailer.Get("X-Late") != "late" {
		t.Errorf("body %q trailer %v", b, res.Trailer)
	}
}

func TestFlushStreams(t *testing.T) {
	next := make(chan struct{})
	_, c, url := testServer(t, Options{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range 3 {
			fmt.Fprintf(w, "data: %d\n\n", i)
			w.(http.Flusher).Flush()
			select {
			case <-next:
			case <-r.Context().Done():
				return
			}
		}
	}))
	res, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	buf := make([]byte, 64)
	for i := range 3 {
		// Each event arrives before the handler goes on: nothing waits in
		// a buffer for more.
		n, err := res.Body.Read(buf)
		if err != nil || string(buf[:n]) != fmt.Sprintf("data: %d\n\n", i) {
			t.Fatalf("event %d: %q %v", i, buf[:n], err)
		}
		next <- struct{}{}
	}
}

func TestHeaderTooLarge(t *testing.T) {
	called := false
	_, c, url := testServer(t, Options{MaxHeaderBytes: 4096}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		called = true
	}))
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("X-Big", strings.Repeat("a", 8000))
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusRequestHeaderFieldsTooLarge || called {
		t.Errorf("status %d, handler called %v", res.StatusCode, called)
	}
}

func TestManyConcurrentStreams(t *testing.T) {
	var mu sync.Mutex
	cur := map[string]int{} // handlers running, per client connection
	peak := 0
	_, c, url := testServer(t, Options{MaxConcurrentStreams: 8}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		cur[r.RemoteAddr]++
		peak = max(peak, cur[r.RemoteAddr])
		mu.Unlock()
		time.Sleep(time.Millisecond) // hold the stream open while others arrive
		mu.Lock()
		cur[r.RemoteAddr]--
		mu.Unlock()
		io.WriteString(w, r.URL.Path)
	}))
	var wg sync.WaitGroup
	var bad atomic.Int32
	for i := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Streams over the limit, sent before the client knew it, are
			// refused (REFUSED_STREAM) and retried by the client.
			res, err := c.Get(fmt.Sprintf("%s/%d", url, i))
			if err != nil {
				t.Log(err)
				bad.Add(1)
				return
			}
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if string(b) != fmt.Sprintf("/%d", i) {
				bad.Add(1)
			}
		}()
	}
	wg.Wait()
	if bad.Load() != 0 || peak > 8 {
		t.Errorf("%d failed requests; %d handlers at once on one connection (limit 8)", bad.Load(), peak)
	}
}

func TestClientResetCancelsContext(t *testing.T) {
	started := make(chan struct{})
	done := make(chan error, 1)
	_, c, url := testServer(t, Options{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-r.Context().Done()
		done <- r.Context().Err()
	}))
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	go func() {
		<-started
		cancel()
	}()
	c.Do(req)
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("context error %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the handler's context was not cancelled when the client reset the stream")
	}
}

func TestBodyTimeout(t *testing.T) {
	got := make(chan error, 1)
	_, c, url := testServer(t, Options{ClientBodyTimeout: 200 * time.Millisecond}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := io.ReadAll(r.Body)
		got <- err
		w.WriteHeader(http.StatusRequestTimeout)
	}))
	pr, pw := io.Pipe()
	defer pw.Close()
	go pw.Write([]byte("first bytes"))
	req, _ := http.NewRequest("POST", url, pr)
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	select {
	case err := <-got:
		if !errors.Is(err, os.ErrDeadlineExceeded) || res.StatusCode != http.StatusRequestTimeout {
			t.Errorf("read error %v, status %d", err, res.StatusCode)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("client_body_timeout did not end the read")
	}
}

func TestPanicResetsStream(t *testing.T) {
	_, c, url := testServer(t, Options{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/panic" {
			panic(http.ErrAbortHandler)
		}
		io.WriteString(w, "fine")
	}))
	if res, err := c.Get(url + "/panic"); err == nil {
		res.Body.Close()
		t.Fatalf("a panicking handler's stream answered %d", res.StatusCode)
	}
	res, err := c.Get(url + "/ok")
	if err != nil {
		t.Fatalf("the connection did not survive a handler's panic: %v", err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if string(b) != "fine" {
		t.Errorf("got %q", b)
	}
}

func TestShutdownFinishesStreams(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 8)
	s, c, url := testServer(t, Options{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		<-release
		io.WriteString(w, "done")
	}))
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			res, err := c.Get(url)
			if err == nil {
				b, _ := io.ReadAll(res.Body)
				res.Body.Close()
				if string(b) != "done" {
					err = fmt.Errorf("body %q", b)
				}
			}
			errs <- err
		}()
	}
	for range 4 {
		<-started
	}
	s.Shutdown()
	time.Sleep(50 * time.Millisecond) // the GOAWAYs are on their way; the streams are still in progress
	close(release)
	for range 4 {
		if err := <-errs; err != nil {
			t.Errorf("a stream in progress at shutdown failed: %v", err)
		}
	}
	// The connection closes once its streams are done.
	deadline := time.Now().Add(5 * time.Second)
	for {
		s.mu.Lock()
		n := len(s.conns)
		s.mu.Unlock()
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d connections still open after shutdown", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// rawConn opens a TLS connection speaking HTTP/2 frame by frame, with
// the given client SETTINGS.
func rawConn(t *testing.T, c *http.Client, url string, settings ...http2.Setting) (*http2.Framer, func(id uint32, end bool, fields ...string)) {
	t.Helper()
	conf := c.Transport.(*http2.Transport).TLSClientConfig.Clone()
	nc, err := tls.Dial("tcp", strings.TrimPrefix(url, "https://"), conf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(nc, http2.ClientPreface)
	fr := http2.NewFramer(nc, nc)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	fr.WriteSettings(settings...)
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	headers := func(id uint32, end bool, fields ...string) {
		hb.Reset()
		for i := 0; i+1 < len(fields); i += 2 {
			enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
		}
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hb.Bytes(), EndStream: end, EndHeaders: true})
	}
	return fr, headers
}

func TestSendTimeoutWithoutCredit(t *testing.T) {
	werr := make(chan error, 1)
	_, c, url := testServer(t, Options{SendTimeout: 300 * time.Millisecond}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := w.Write(make([]byte, 64<<10))
		werr <- err
	}))
	// A client that grants no flow-control credit at all.
	fr, headers := rawConn(t, c, url, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
	headers(1, true, ":method", "GET", ":scheme", "https", ":authority", "x", ":path", "/")
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading: %v", err)
		}
		switch f := f.(type) {
		case *http2.DataFrame:
			if len(f.Data()) > 0 {
				t.Fatalf("%d bytes of DATA sent without flow-control credit", len(f.Data()))
			}
		case *http2.RSTStreamFrame:
			if f.StreamID != 1 || f.ErrCode != http2.ErrCodeCancel {
				t.Fatalf("RST_STREAM %v on stream %d", f.ErrCode, f.StreamID)
			}
			if err := <-werr; !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("the handler's Write returned %v", err)
			}
			return
		}
	}
}

func TestExpectContinue(t *testing.T) {
	_, c, url := testServer(t, Options{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Write(b)
	}))
	fr, headers := rawConn(t, c, url)
	headers(1, false, ":method", "POST", ":scheme", "https", ":authority", "x", ":path", "/", "expect", "100-continue", "content-length", "2")
	var statuses []string
	sentBody := false
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading: %v (statuses so far %v)", err, statuses)
		}
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			statuses = append(statuses, f.PseudoValue("status"))
			if f.PseudoValue("status") == "100" && !sentBody {
				sentBody = true
				fr.WriteData(1, true, []byte("hi"))
			}
		case *http2.DataFrame:
			if string(f.Data()) != "hi" || strings.Join(statuses, ",") != "100,200" {
				t.Fatalf("body %q after statuses %v", f.Data(), statuses)
			}
			return
		}
	}
}

func TestMalformedRequestsRefused(t *testing.T) {
	var called atomic.Int32
	_, c, url := testServer(t, Options{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		called.Add(1)
	}))
	fr, headers := rawConn(t, c, url)
	base := []string{":method", "GET", ":scheme", "https", ":path", "/"}
	cases := [][]string{
		{":authority", "a.test", "host", "b.test"}, // Host disagrees with :authority
		{":authority", "a.test", "connection", "keep-alive"},
		{":authority", "a.test", "transfer-encoding", "chunked"},
		{":authority", "a.test", "te", "gzip"},
		{":authority", "a.test", "content-length", "1x"},
	}
	for i, extra := range cases {
		id := uint32(2*i + 1)
		// Pseudo-header fields first, then the regular ones.
		fields := append(append([]string{}, base...), extra[:2]...)
		fields = append(fields, extra[2:]...)
		headers(id, true, fields...)
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				t.Fatalf("case %d (%v): %v", i, extra, err)
			}
			if rst, ok := f.(*http2.RSTStreamFrame); ok && rst.StreamID == id {
				if rst.ErrCode != http2.ErrCodeProtocol {
					t.Errorf("case %d (%v): RST_STREAM %v", i, extra, rst.ErrCode)
				}
				break
			}
			if h, ok := f.(*http2.MetaHeadersFrame); ok && h.StreamID == id {
				t.Fatalf("case %d (%v) was answered %s", i, extra, h.PseudoValue("status"))
			}
		}
	}
	if n := called.Load(); n != 0 {
		t.Errorf("the handler ran %d times for malformed requests", n)
	}
}

// TestFullDuplexWaits: a handler reads the request body on one goroutine
// while another writes the response and waits for flow-control credit,
// as a gRPC bidirectional stream does. Each side must be woken by what it
// waits for (DATA for the reader, WINDOW_UPDATE for the writer), whichever
// of them began to wait first.
func TestFullDuplexWaits(t *testing.T) {
	const window = 1000 // the client's initial stream window
	const respLen = 5000
	opts := Options{ClientBodyTimeout: 5 * time.Second, SendTimeout: 5 * time.Second}
	type readResult struct {
		s   string
		err error
	}

	t.Run("writer woken by WINDOW_UPDATE while the reader waits", func(t *testing.T) {
		startWriting := make(chan struct{})
		got := make(chan readResult, 1)
		writeErr := make(chan error, 1)
		_, c, url := testServer(t, opts, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			wrote := make(chan error, 1)
			go func() {
				<-startWriting
				_, err := w.Write(bytes.Repeat([]byte("w"), respLen))
				if err == nil {
					err = http.NewResponseController(w).Flush()
				}
				wrote <- err
			}()
			buf := make([]byte, 16)
			n, err := io.ReadFull(r.Body, buf[:3]) // sends 100 Continue, then waits
			got <- readResult{string(buf[:n]), err}
			writeErr <- <-wrote
		}))
		fr, headers := rawConn(t, c, url, http2.Setting{ID: http2.SettingInitialWindowSize, Val: window})
		headers(1, false, ":method", "POST", ":scheme", "https", ":authority", "x", ":path", "/", "expect", "100-continue")
		events := frameEvents(t, fr)
		received := 0
		for {
			ev := <-events
			switch {
			case ev.err != nil:
				t.Fatalf("reading: %v (received %d bytes)", ev.err, received)
			case ev.rst:
				t.Fatalf("RST_STREAM %v after %d bytes: the writer was not woken by WINDOW_UPDATE while the body reader waited", ev.code, received)
			case ev.status == "100":
				// The handler's Read waits for the body now (it sent the
				// 100 as it began to wait); the writer comes second.
				close(startWriting)
			case ev.data:
				received += ev.n
				if ev.n > 0 && received == window {
					// The writer has used its credit and waits for more.
					fr.WriteWindowUpdate(1, respLen)
				}
				if ev.n > 0 && received == respLen {
					fr.WriteData(1, true, []byte("abc"))
					select {
					case r := <-got:
						if r.s != "abc" || r.err != nil {
							t.Fatalf("the handler read %q, %v", r.s, r.err)
						}
					case <-time.After(10 * time.Second):
						t.Fatal("the body reader was never woken")
					}
				}
				if ev.end {
					if received != respLen {
						t.Fatalf("response body %d bytes, want %d", received, respLen)
					}
					if err := <-writeErr; err != nil {
						t.Fatalf("the handler's Write: %v", err)
					}
					return
				}
			}
		}
	})

	t.Run("reader woken by DATA while the writer waits", func(t *testing.T) {
		// The first part of the body is with the server before the
		// handler reads it; reading it all makes the server send a stream
		// WINDOW_UPDATE, and then the handler's ReadFull goes straight on
		// to wait for the rest, after the writer began to wait.
		first := streamWindow / 4
		startReading := make(chan struct{})
		got := make(chan readResult, 1)
		writeErr := make(chan error, 1)
		_, c, url := testServer(t, opts, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			wrote := make(chan error, 1)
			go func() {
				_, err := w.Write(bytes.Repeat([]byte("w"), respLen))
				if err == nil {
					err = http.NewResponseController(w).Flush()
				}
				wrote <- err
			}()
			<-startReading
			buf := make([]byte, first+3)
			n, err := io.ReadFull(r.Body, buf)
			got <- readResult{string(buf[min(n, first):n]), err}
			writeErr <- <-wrote
		}))
		fr, headers := rawConn(t, c, url, http2.Setting{ID: http2.SettingInitialWindowSize, Val: window})
		headers(1, false, ":method", "POST", ":scheme", "https", ":authority", "x", ":path", "/")
		events := frameEvents(t, fr)
		received := 0
		for {
			ev := <-events
			switch {
			case ev.err != nil:
				t.Fatalf("reading: %v (received %d bytes)", ev.err, received)
			case ev.rst:
				t.Fatalf("RST_STREAM %v after %d bytes", ev.code, received)
			case ev.pingAck:
				close(startReading)
			case ev.windowUpdate && ev.stream == 1:
				// The handler has read the first part and waits for the
				// rest; the writer has waited for credit since before.
				// (Had the reader not begun to wait yet, it would find
				// the data without waiting: this order can only make the
				// check weaker, never fail a correct server.)
				fr.WriteData(1, true, []byte("abc"))
				select {
				case r := <-got:
					if r.s != "abc" || r.err != nil {
						t.Fatalf("the handler read %q, %v: the body reader was not woken by DATA while the writer waited", r.s, r.err)
					}
				case <-time.After(10 * time.Second):
					t.Fatal("the body reader was never woken")
				}
				fr.WriteWindowUpdate(1, respLen)
			case ev.data:
				received += ev.n
				if ev.n > 0 && received == window {
					// The writer waits for credit: now the first part
					// of the body, and a PING whose answer says the
					// server has taken it.
					for p := make([]byte, first); len(p) > 0; p = p[min(len(p), maxFrameSize):] {
						fr.WriteData(1, false, p[:min(len(p), maxFrameSize)])
					}
					fr.WritePing(false, [8]byte{'b', 'o', 'd', 'y'})
				}
				if ev.end {
					if received != respLen {
						t.Fatalf("response body %d bytes, want %d", received, respLen)
					}
					if err := <-writeErr; err != nil {
						t.Fatalf("the handler's Write: %v", err)
					}
					return
				}
			}
		}
	})
}

// frameEvent is what a test needs to know of a frame the server sent.
type frameEvent struct {
	err          error
	stream       uint32
	status       string // HEADERS: :status
	data         bool   // DATA: n bytes
	n            int
	end          bool // END_STREAM
	rst          bool // RST_STREAM with code
	code         http2.ErrCode
	windowUpdate bool
	pingAck      bool
}

// frameEvents reads frames on a goroutine of its own, so that a test can
// wait for a frame and for its handler at once.
func frameEvents(t *testing.T, fr *http2.Framer) <-chan frameEvent {
	events := make(chan frameEvent)
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	go func() {
		for {
			var ev frameEvent
			f, err := fr.ReadFrame()
			if err != nil {
				ev.err = err
			} else {
				ev.stream = f.Header().StreamID
				switch f := f.(type) {
				case *http2.MetaHeadersFrame:
					ev.status, ev.end = f.PseudoValue("status"), f.StreamEnded()
				case *http2.DataFrame:
					ev.data, ev.n, ev.end = true, len(f.Data()), f.StreamEnded()
				case *http2.RSTStreamFrame:
					ev.rst, ev.code = true, f.ErrCode
				case *http2.WindowUpdateFrame:
					ev.windowUpdate = true
				case *http2.PingFrame:
					ev.pingAck = f.IsAck()
				default:
					continue
				}
			}
			select {
			case events <- ev:
			case <-done:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	return events
}

// TestTimeoutsNotRestartedByOtherFrames: client_body_timeout runs from
// when a read begins to wait, and send_timeout from a writer's last
// progress; frames that bring neither body bytes nor credit (empty DATA,
// PING) do not start them again, or a client could hold a handler, and
// what it holds upstream, for ever while sending nothing.
func TestTimeoutsNotRestartedByOtherFrames(t *testing.T) {
	const timeout = 300 * time.Millisecond
	const trickle = 3 * time.Second // the client's frames, every 50 ms, for this long

	t.Run("client_body_timeout, empty DATA frames", func(t *testing.T) {
		got := make(chan error, 1)
		_, c, url := testServer(t, Options{ClientBodyTimeout: timeout}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, err := r.Body.Read(make([]byte, 16))
			got <- err
		}))
		fr, headers := rawConn(t, c, url)
		headers(1, false, ":method", "POST", ":scheme", "https", ":authority", "x", ":path", "/")
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		end := time.After(trickle)
		for {
			select {
			case err := <-got:
				if !errors.Is(err, os.ErrDeadlineExceeded) {
					t.Fatalf("the handler's Read returned %v", err)
				}
				return
			case <-tick.C:
				fr.WriteData(1, false, nil)
				fr.WritePing(false, [8]byte{})
			case <-end:
				t.Fatalf("the body read did not time out (client_body_timeout %v) while the client sent empty DATA frames for %v", timeout, trickle)
			}
		}
	})

	t.Run("send_timeout, PINGs while the connection has no credit", func(t *testing.T) {
		werr := make(chan error, 1)
		_, c, url := testServer(t, Options{SendTimeout: timeout}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			// More than the connection's initial window (65535), which
			// this client never raises: the writer waits for
			// connection-level credit.
			_, err := w.Write(make([]byte, 100<<10))
			werr <- err
		}))
		fr, headers := rawConn(t, c, url)
		headers(1, true, ":method", "GET", ":scheme", "https", ":authority", "x", ":path", "/")
		events := frameEvents(t, fr)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		end := time.After(trickle)
		for {
			select {
			case ev := <-events:
				if ev.err != nil {
					t.Fatalf("reading: %v", ev.err)
				}
				if ev.rst {
					if ev.code != http2.ErrCodeCancel {
						t.Fatalf("RST_STREAM %v", ev.code)
					}
					if err := <-werr; !errors.Is(err, os.ErrDeadlineExceeded) {
						t.Fatalf("the handler's Write returned %v", err)
					}
					return
				}
			case <-tick.C:
				fr.WritePing(false, [8]byte{})
			case <-end:
				t.Fatalf("the writer did not time out (send_timeout %v) while the client sent PINGs for %v", timeout, trickle)
			}
		}
	})

	t.Run("send_timeout starts again with each credit", func(t *testing.T) {
		// One Write that takes longer than send_timeout in all, as a slow
		// client grants credit bit by bit (a tenth of send_timeout apart,
		// 15 times): never a timeout.
		const timeout = time.Second
		const size, grant = 32000, 2000
		werr := make(chan error, 1)
		_, c, url := testServer(t, Options{SendTimeout: timeout}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, err := w.Write(make([]byte, size))
			werr <- err
		}))
		fr, headers := rawConn(t, c, url, http2.Setting{ID: http2.SettingInitialWindowSize, Val: grant})
		headers(1, true, ":method", "GET", ":scheme", "https", ":authority", "x", ":path", "/")
		events := frameEvents(t, fr)
		tick := time.NewTicker(timeout / 10)
		defer tick.Stop()
		start := time.Now()
		received := 0
		for {
			select {
			case ev := <-events:
				switch {
				case ev.err != nil:
					t.Fatalf("reading: %v", ev.err)
				case ev.rst:
					t.Fatalf("RST_STREAM %v after %d bytes in %v, while the client granted %d bytes every %v", ev.code, received, time.Since(start), grant, timeout/10)
				case ev.data:
					received += ev.n
					if ev.end {
						if err := <-werr; received != size || err != nil {
							t.Fatalf("%d bytes, the handler's Write returned %v", received, err)
						}
						return
					}
				}
			case <-tick.C:
				fr.WriteWindowUpdate(1, grant)
			}
		}
	})
}

// TestBlockedWriterListedOnce: a writer waiting for connection-level
// credit is listed once however often the client wakes it with credit on
// its stream alone; each wake-up used to list it again, so a client that
// sent stream WINDOW_UPDATEs, and never connection credit, grew the list
// without bound.
func TestBlockedWriterListedOnce(t *testing.T) {
	const updates = 2000
	s, c, url := testServer(t, Options{SendTimeout: 10 * time.Second}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(make([]byte, 100<<10))
	}))
	// A stream window larger than the connection's, which stays at its
	// initial 65535: the connection runs out of credit first.
	fr, headers := rawConn(t, c, url, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20})
	headers(1, true, ":method", "GET", ":scheme", "https", ":authority", "x", ":path", "/")
	received := 0
	for received < 65535 {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading: %v (received %d)", err, received)
		}
		if d, ok := f.(*http2.DataFrame); ok {
			received += len(d.Data())
		}
	}
	for range updates {
		fr.WriteWindowUpdate(1, 1)
	}
	// No frame answers a WINDOW_UPDATE: the server's state is polled until
	// it has taken them all.
	want := int64(1<<20 - 65535 + updates)
	deadline := time.Now().Add(10 * time.Second)
	for {
		var window int64 = -1
		blocked := 0
		s.mu.Lock()
		for sc := range s.conns {
			sc.mu.Lock()
			if st := sc.streams[1]; st != nil {
				window, blocked = st.sendWindow, len(sc.blocked)
			}
			sc.mu.Unlock()
		}
		s.mu.Unlock()
		if window == want {
			if blocked > 1 {
				t.Fatalf("the waiting writer is listed %d times after %d stream WINDOW_UPDATEs", blocked, updates)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("stream window %d, want %d", window, want)
		}
		time.Sleep(time.Millisecond) // polling the server's state (no event to wait for)
	}
}
