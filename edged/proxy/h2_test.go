package proxy

import (
	"bytes"
	"crypto/sha256"

	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// h2cUpstream is a real net/http server speaking HTTP/2 in cleartext
// only (prior knowledge), counting its connections.
func h2cUpstream(t *testing.T, h http.Handler) (addr string, conns *atomic.Int32) {
	t.Helper()
	conns = new(atomic.Int32)
	srv := httptest.NewUnstartedServer(h)
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Config.ConnState = func(c net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String(), conns
}

// protoEcho answers with the protocol it was spoken to in, the body's
// length and hash, and a trailer.
var protoEcho = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	w.Header().Set("Trailer", "X-Sum")
	fmt.Fprintf(w, "%s %s %s host=%s xff=%s body=%d", r.Proto, r.Method, r.URL.RequestURI(), r.Host, r.Header.Get("X-Forwarded-For"), len(b))
	w.Header().Set("X-Sum", fmt.Sprintf("%x", sha256.Sum256(b)))
})

// TestH2CUpstream: protocol h2c speaks HTTP/2 with prior knowledge; many
// requests at once share one connection; bodies and trailers pass.
func TestH2CUpstream(t *testing.T) {
	addr, conns := h2cUpstream(t, protoEcho)
	f := newFront(t, UpstreamConfig{Protocol: ProtoH2C, Servers: servers(addr)}, HandlerOptions{StripPrefix: "/api"})
	res, body := get(t, f.URL()+"/api/x?q=1")
	if res.StatusCode != 200 || !strings.HasPrefix(body, "HTTP/2.0 GET /x?q=1 host=127.0.0.1:") || !strings.Contains(body, "xff=127.0.0.1") {
		t.Fatalf("GET: %d %q", res.StatusCode, body)
	}
	if res.Trailer.Get("X-Sum") != fmt.Sprintf("%x", sha256.Sum256(nil)) {
		t.Fatalf("trailer %v", res.Trailer)
	}
	payload := bytes.Repeat([]byte("h2 body "), 50000)
	req, _ := http.NewRequest("POST", f.URL()+"/api/up", bytes.NewReader(payload))
	res, body = do(t, req)
	if res.StatusCode != 200 || !strings.HasSuffix(body, fmt.Sprintf("body=%d", len(payload))) || res.Trailer.Get("X-Sum") != fmt.Sprintf("%x", sha256.Sum256(payload)) {
		t.Fatalf("POST: %d %q %v", res.StatusCode, body, res.Trailer)
	}
	var wg sync.WaitGroup
	for range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if res, body := get(t, f.URL()+"/api/c"); res.StatusCode != 200 || !strings.HasPrefix(body, "HTTP/2.0 GET /c") {
				t.Errorf("concurrent GET: %d %q", res.StatusCode, body)
			}
		}()
	}
	wg.Wait()
	if n := conns.Load(); n != 1 {
		t.Fatalf("%d upstream connections, want 1 shared by every request", n)
	}
	if v, _ := metricValue(t, f.reg, "edged_upstream_requests_total", "code", "2xx"); v != 42 {
		t.Fatalf("edged_upstream_requests_total{code=2xx} = %v, want 42", v)
	}
}

// TestH2TLSUpstream: protocol h2 agrees on HTTP/2 by ALPN over a verified
// TLS connection; a server that only speaks HTTP/1.1 is a failed
// connection whose log line says why.
func TestH2TLSUpstream(t *testing.T) {
	srv := httptest.NewUnstartedServer(protoEcho)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	ca := writeCA(t, srv.TLS.Certificates[0])
	addr := strings.TrimPrefix(srv.URL, "https://")
	f := newFront(t, UpstreamConfig{Protocol: ProtoH2, Servers: servers(addr), TLS: TLSConfig{Enabled: true, CAFile: ca}}, HandlerOptions{})
	if res, body := get(t, f.URL()+"/tls"); res.StatusCode != 200 || !strings.HasPrefix(body, "HTTP/2.0 GET /tls") {
		t.Fatalf("h2 over TLS: %d %q", res.StatusCode, body)
	}

	old := httptest.NewUnstartedServer(protoEcho) // HTTP/1.1 only
	old.StartTLS()
	t.Cleanup(old.Close)
	ca = writeCA(t, old.TLS.Certificates[0])
	f = newFront(t, UpstreamConfig{Protocol: ProtoH2, Servers: servers(strings.TrimPrefix(old.URL, "https://")), TLS: TLSConfig{Enabled: true, CAFile: ca}}, HandlerOptions{})
	if res, _ := get(t, f.URL()+"/"); res.StatusCode != http.StatusBadGateway {
		t.Fatalf("a server without h2: %d, want 502", res.StatusCode)
	}
	if !strings.Contains(f.log.String(), "ALPN offered only h2") {
		t.Fatalf("the log does not say why:\n%s", f.log)
	}
}

// rawH2 is an HTTP/2 server written with x/net's Framer, for the faults
// a real server makes only by chance (a refused stream, a GOAWAY that
// overtakes a stream): act says what to do with the n-th stream (from 0)
// of the c-th connection: "refuse", "goaway", or answer it.
func rawH2(t *testing.T, act func(c, n int) string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for c := 0; ; c++ {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { nc.Close() })
			go serveRawH2(nc, c, act)
		}
	}()
	return ln.Addr().String()
}

func serveRawH2(nc net.Conn, c int, act func(c, n int) string) {
	defer nc.Close()
	preface := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(nc, preface); err != nil {
		return
	}
	fr := http2.NewFramer(nc, nc)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	fr.WriteSettings()
	bodies := map[uint32]*bytes.Buffer{}
	var hbuf bytes.Buffer
	enc := hpack.NewEncoder(&hbuf)
	trailer := map[uint32]bool{}
	answer := func(id uint32) {
		body := fmt.Appendf(nil, "conn=%d stream=%d body=%q", c, id, bodies[id].String())
		hbuf.Reset()
		enc.WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
		if trailer[id] {
			// HTTP/2 allows a content-length beside trailers
			enc.WriteField(hpack.HeaderField{Name: "content-length", Value: fmt.Sprint(len(body))})
			enc.WriteField(hpack.HeaderField{Name: "trailer", Value: "x-sum"})
		}
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hbuf.Bytes(), EndHeaders: true})
		fr.WriteData(id, !trailer[id], body)
		if trailer[id] {
			hbuf.Reset()
			enc.WriteField(hpack.HeaderField{Name: "x-sum", Value: fmt.Sprintf("%x", sha256.Sum256(body))})
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hbuf.Bytes(), EndHeaders: true, EndStream: true})
		}
	}
	n := 0
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				fr.WriteSettingsAck()
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				fr.WritePing(true, f.Data)
			}
		case *http2.MetaHeadersFrame:
			id := f.StreamID
			switch act(c, n) {
			case "refuse":
				fr.WriteRSTStream(id, http2.ErrCodeRefusedStream)
			case "goaway":
				fr.WriteGoAway(0, http2.ErrCodeNo, nil)
				time.Sleep(50 * time.Millisecond)
				return
			case "trailer":
				trailer[id] = true
				fallthrough
			default:
				bodies[id] = new(bytes.Buffer)
				if f.StreamEnded() {
					answer(id)
				}
			}
			n++
		case *http2.DataFrame:
			id := f.StreamID
			if b := bodies[id]; b != nil {
				b.Write(f.Data())
				if len(f.Data()) > 0 {
					fr.WriteWindowUpdate(0, uint32(len(f.Data())))
					fr.WriteWindowUpdate(id, uint32(len(f.Data())))
				}
				if f.StreamEnded() {
					answer(id)
				}
			} else if len(f.Data()) > 0 {
				fr.WriteWindowUpdate(0, uint32(len(f.Data())))
			}
		}
	}
}

// TestH2TrailerWithLength: a response with both a Content-Length and
// trailers (allowed in HTTP/2) reaches an HTTP/1.1 client chunked, so that
// its trailers are not lost (net/http's server, as engine, would
// otherwise send the length and drop them).
func TestH2TrailerWithLength(t *testing.T) {
	addr := rawH2(t, func(c, n int) string { return "trailer" })
	f := newFront(t, UpstreamConfig{Protocol: ProtoH2C, Servers: servers(addr)}, HandlerOptions{})
	res, body := get(t, f.URL()+"/")
	want := fmt.Sprintf("%x", sha256.Sum256([]byte(body)))
	if res.StatusCode != 200 || body != `conn=0 stream=1 body=""` || res.Trailer.Get("X-Sum") != want {
		t.Fatalf("got %d %q, trailer %v; want the body and X-Sum %s", res.StatusCode, body, res.Trailer, want)
	}
	if res.ContentLength != -1 || len(res.TransferEncoding) == 0 || res.TransferEncoding[0] != "chunked" {
		t.Fatalf("length %d, transfer-encoding %v: want chunked", res.ContentLength, res.TransferEncoding)
	}
}

// TestH2NotProcessedIsResent: a stream the server refused, or one its
// GOAWAY says it never began, goes again (its streamed body replayed), on
// the same server; a server that keeps refusing hands the request to
// another.
func TestH2NotProcessedIsResent(t *testing.T) {
	streamingOnly(t) // the body streams (a buffered one is replayed from its spool: TestH2CUpstream)
	post := func(t *testing.T, f *front) (int, string) {
		req, _ := http.NewRequest("POST", f.URL()+"/", io.MultiReader(strings.NewReader("streamed "), strings.NewReader("body")))
		res, body := do(t, req)
		return res.StatusCode, body
	}
	t.Run("refused", func(t *testing.T) {
		addr := rawH2(t, func(c, n int) string {
			if n == 0 {
				return "refuse"
			}
			return ""
		})
		f := newFront(t, UpstreamConfig{Protocol: ProtoH2C, Servers: servers(addr)}, HandlerOptions{})
		if code, body := post(t, f); code != 200 || body != `conn=0 stream=3 body="streamed body"` {
			t.Fatalf("got %d %q, want the second stream of the connection with the whole body", code, body)
		}
	})
	t.Run("goaway", func(t *testing.T) {
		addr := rawH2(t, func(c, n int) string {
			if c == 0 {
				return "goaway"
			}
			return ""
		})
		f := newFront(t, UpstreamConfig{Protocol: ProtoH2C, Servers: servers(addr)}, HandlerOptions{})
		if code, body := post(t, f); code != 200 || body != `conn=1 stream=1 body="streamed body"` {
			t.Fatalf("got %d %q, want a new connection with the whole body", code, body)
		}
	})
	t.Run("another server", func(t *testing.T) {
		refusing := rawH2(t, func(c, n int) string { return "refuse" })
		good := rawH2(t, func(c, n int) string { return "" })
		f := newFront(t, UpstreamConfig{Protocol: ProtoH2C, Servers: servers(refusing, good), Retries: 1, MaxFails: 1}, HandlerOptions{})
		if code, body := post(t, f); code != 200 || body != `conn=0 stream=1 body="streamed body"` {
			t.Fatalf("got %d %q, want the other server's answer", code, body)
		}
		if v, _ := metricValue(t, f.reg, "edged_upstream_retries_total"); v != 1 {
			t.Fatalf("retries %v, want 1", v)
		}
		if st := statusOf(f.pool, refusing); st.Fails != 1 {
			t.Fatalf("the refusing server: %+v, want its failure counted", st)
		}
	})
	t.Run("too long to resend", func(t *testing.T) {
		addr := rawH2(t, func(c, n int) string { return "refuse" })
		f := newFront(t, UpstreamConfig{Protocol: ProtoH2C, Servers: servers(addr), RetryBodyMax: 4}, HandlerOptions{})
		if code, _ := post(t, f); code != http.StatusBadGateway {
			t.Fatalf("got %d, want 502: the body's start is gone", code)
		}
	})
}

// TestH2PassiveAndActiveHealth: over HTTP/2 a server that cannot be
// reached is taken out (passive), and the gRPC health service decides
// which servers take calls (active, health = { grpc = true }).
func TestH2PassiveAndActiveHealth(t *testing.T) {
	ctx := testCtx(t)
	t.Run("passive", func(t *testing.T) {
		a := startGRPC(t, "a")
		dead := refusedAddr(t)
		f := newH2Front(t, UpstreamConfig{Servers: servers(dead, a.addr), MaxFails: 1, Retries: 1}, HandlerOptions{}, false)
		cc := f.dial(t)
		for i := range 4 {
			if got, err := say(ctx, cc, "x"); err != nil || !strings.HasPrefix(got, "a:x") {
				t.Fatalf("call %d: %q %v", i, got, err)
			}
		}
		if st := statusOf(f.pool, dead); st.State != "down" || !strings.Contains(st.Reason, "connection refused") {
			t.Fatalf("the dead server: %+v", st)
		}
	})
	t.Run("grpc health", func(t *testing.T) {
		a, b := startGRPC(t, "a"), startGRPC(t, "b")
		b.health.SetServingStatus("", grpc_health_v1.HealthCheckResponse_NOT_SERVING)
		f := newH2Front(t, UpstreamConfig{Servers: servers(a.addr, b.addr),
			Health: HealthConfig{GRPC: true, Interval: 20 * time.Millisecond, Timeout: time.Second, Rise: 1, Fall: 1}}, HandlerOptions{}, false)
		waitFor(t, "b taken out", func() bool { return statusOf(f.pool, b.addr).State == "down" })
		if r := statusOf(f.pool, b.addr).Reason; !strings.Contains(r, "NOT_SERVING") {
			t.Fatalf("reason %q", r)
		}
		if st := statusOf(f.pool, a.addr); st.State != "up" {
			t.Fatalf("a: %+v", st)
		}
		cc := f.dial(t)
		for range 6 {
			if got, err := say(ctx, cc, "x"); err != nil || !strings.HasPrefix(got, "a:") {
				t.Fatalf("%q %v, want a", got, err)
			}
		}
		b.health.SetServingStatus("", grpc_health_v1.HealthCheckResponse_SERVING)
		waitFor(t, "b back", func() bool { return statusOf(f.pool, b.addr).State == "up" })
		seen := map[string]bool{}
		for range 6 {
			got, err := say(ctx, cc, "x")
			if err != nil {
				t.Fatal(err)
			}
			seen[got[:1]] = true
		}
		if !seen["a"] || !seen["b"] {
			t.Fatalf("calls went to %v, want both servers (round robin)", seen)
		}
		// A named service the server does not know fails the check.
		f2 := newH2Front(t, UpstreamConfig{Servers: servers(a.addr),
			Health: HealthConfig{GRPC: true, GRPCService: "nope", Interval: 20 * time.Millisecond, Timeout: time.Second, Rise: 1, Fall: 1}}, HandlerOptions{}, false)
		waitFor(t, "a down for service nope", func() bool { return statusOf(f2.pool, a.addr).State == "down" })
		if r := statusOf(f2.pool, a.addr).Reason; !strings.Contains(r, "grpc-status 5") {
			t.Fatalf("reason %q, want NOT_FOUND (5)", r)
		}
	})
	t.Run("http path", func(t *testing.T) {
		var sick atomic.Bool
		addr, _ := h2cUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/healthz" && sick.Load() {
				w.WriteHeader(503)
			}
		}))
		f := newFront(t, UpstreamConfig{Protocol: ProtoH2C, Servers: servers(addr),
			Health: HealthConfig{Path: "/healthz", Interval: 20 * time.Millisecond, Timeout: time.Second, Rise: 1, Fall: 1}}, HandlerOptions{})
		waitFor(t, "a passed check", func() bool { return !statusOf(f.pool, addr).LastCheck.IsZero() })
		if st := statusOf(f.pool, addr); st.State != "up" {
			t.Fatalf("%+v", st)
		}
		sick.Store(true)
		waitFor(t, "down", func() bool { return statusOf(f.pool, addr).State == "down" })
		if r := statusOf(f.pool, addr).Reason; !strings.Contains(r, "status 503") {
			t.Fatalf("reason %q", r)
		}
	})
}

// TestH2Balancing: HTTP/2 servers share calls by the policy, and
// max_conns counts calls in flight, not connections.
func TestH2Balancing(t *testing.T) {
	a, b := startGRPC(t, "a"), startGRPC(t, "b")
	f := newH2Front(t, UpstreamConfig{Servers: []ServerConfig{{Addr: a.addr, MaxConns: 1}, {Addr: b.addr}}}, HandlerOptions{}, false)
	cc := f.dial(t)
	ctx := testCtx(t)
	for range 10 {
		if _, err := say(ctx, cc, "x"); err != nil {
			t.Fatal(err)
		}
	}
	if a.echo.Calls.Load() != 5 || b.echo.Calls.Load() != 5 {
		t.Fatalf("a %d, b %d calls; want 5 each", a.echo.Calls.Load(), b.echo.Calls.Load())
	}
	// A stream holds a's one slot: every call meanwhile goes to b.
	var st interface {
		SendMsg(any) error
		RecvMsg(any) error
		CloseSend() error
	}
	for {
		s, err := chat(ctx, cc)
		if err != nil {
			t.Fatal(err)
		}
		s.SendMsg(wrapperspb.String("hold"))
		in := new(wrapperspb.StringValue)
		if err := s.RecvMsg(in); err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(in.GetValue(), "a:") {
			st = s
			break
		}
		s.CloseSend()
		s.RecvMsg(in)
	}
	before := b.echo.Calls.Load()
	for range 6 {
		if got, err := say(ctx, cc, "x"); err != nil || !strings.HasPrefix(got, "b:") {
			t.Fatalf("%q %v, want b while a is at max_conns", got, err)
		}
	}
	if b.echo.Calls.Load() != before+6 {
		t.Fatal("calls not counted on b")
	}
	st.CloseSend()
}
