package proxy

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/protobuf/proto"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/edgeapp/edgeapp/edged/engine"
	"github.com/edgeapp/edgeapp/internal/grpcecho"
)

// The gRPC tests run real grpc-go servers and clients on loopback, with
// edged's proxy handler between them behind edged's own HTTP/2 server
// (h2c, and TLS with ALPN).

// grpcUpstream is a real grpc-go server on loopback (h2c, or TLS with the
// test certificate) with the echo and health services.
type grpcUpstream struct {
	addr   string
	srv    *grpc.Server
	echo   *grpcecho.Server
	health *health.Server
	conns  atomic.Int32 // connections accepted
}

func startGRPC(t testing.TB, name string, opts ...grpc.ServerOption) *grpcUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return serveGRPC(t, ln, name, opts...)
}

func serveGRPC(t testing.TB, ln net.Listener, name string, opts ...grpc.ServerOption) *grpcUpstream {
	u := &grpcUpstream{addr: ln.Addr().String()}
	u.srv, u.echo, u.health = grpcecho.Serve(&countingListener{Listener: ln, n: &u.conns}, name, opts...)
	t.Cleanup(u.srv.Stop)
	return u
}

type countingListener struct {
	net.Listener
	n *atomic.Int32
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// h2Front is edged's stand-in for gRPC: edged's engine with HTTP/2 in
// cleartext (h2c) or over TLS, the proxy handler behind it. The handler
// can be swapped, as a reload swaps the route chain.
type h2Front struct {
	addr string
	tls  *tls.Config // for clients; nil for h2c
	h    atomic.Pointer[http.Handler]
	pool *Pool
	log  *logBuf
	m    *Metrics
	reg  *prometheus.Registry
}

func newH2Front(t testing.TB, cfg UpstreamConfig, o HandlerOptions, withTLS bool) *h2Front {
	t.Helper()
	log, lb := newLog()
	if cfg.Name == "" {
		cfg.Name = "app"
	}
	if cfg.Protocol == "" {
		cfg.Protocol = ProtoH2C
	}
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	p, err := NewPool(cfg, nil, m, log)
	if err != nil {
		t.Fatal(err)
	}
	p.Start()
	t.Cleanup(p.Close)
	o.Log = log
	f := &h2Front{pool: p, log: lb, m: m, reg: reg}
	f.setHandler(NewHandler(p, o))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.addr = ln.Addr().String()
	if withTLS {
		cert, roots := testCert(t)
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}})
		f.tls = &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"}
	}
	s := engine.New(engine.Options{H2C: !withTLS, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		(*f.h.Load()).ServeHTTP(w, r)
	})})
	go s.Serve(ln)
	t.Cleanup(func() { s.Close() })
	return f
}

func (f *h2Front) setHandler(h http.Handler) { f.h.Store(&h) }

// dial connects a grpc-go client to the front.
func (f *h2Front) dial(t testing.TB) *grpc.ClientConn {
	t.Helper()
	creds := insecure.NewCredentials()
	if f.tls != nil {
		creds = credentials.NewTLS(f.tls)
	}
	cc, err := grpc.NewClient(f.addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

var (
	say  = grpcecho.Say
	chat = grpcecho.Chat
)

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestGRPCUnary: unary calls and the health service through edged, over
// h2c and TLS on the client side; headers, trailers and the forwarded
// client address pass; a status error passes as it is.
func TestGRPCUnary(t *testing.T) {
	for _, withTLS := range []bool{false, true} {
		t.Run(fmt.Sprintf("tls=%v", withTLS), func(t *testing.T) {
			up := startGRPC(t, "a")
			f := newH2Front(t, UpstreamConfig{Servers: servers(up.addr)}, HandlerOptions{}, withTLS)
			cc := f.dial(t)
			ctx := testCtx(t)

			hr, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
			if err != nil || hr.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				t.Fatalf("health check through edged: %v %v", hr, err)
			}
			var hdr, trl metadata.MD
			got, err := say(ctx, cc, "hello", grpc.Header(&hdr), grpc.Trailer(&trl))
			if err != nil || !strings.HasPrefix(got, "a:hello xff=127.0.0.1") {
				t.Fatalf("Say: %q %v", got, err)
			}
			if hdr.Get("x-echo-server")[0] != "a" || len(trl.Get("x-echo-trailer")) == 0 || trl.Get("x-echo-trailer")[0] != "t-hello" {
				t.Fatalf("header %v trailer %v: the server's metadata did not pass", hdr, trl)
			}
			_, err = say(ctx, cc, "fail:no such thing")
			if st, _ := status.FromError(err); st.Code() != codes.NotFound || st.Message() != "no such thing" {
				t.Fatalf("a status error: %v, want NotFound passed through", err)
			}
			// Many calls at once share one upstream connection.
			var wg sync.WaitGroup
			errs := make(chan error, 50)
			for i := range 50 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					want := fmt.Sprint("m", i)
					if got, err := say(ctx, cc, want); err != nil || !strings.HasPrefix(got, "a:"+want+" ") {
						errs <- fmt.Errorf("call %d: %q %v", i, got, err)
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			if n := up.conns.Load(); n != 1 {
				t.Errorf("%d upstream connections for 53 calls, want 1", n)
			}
		})
	}
}

// TestGRPCTLSUpstream: a grpc-go server over TLS (protocol "h2", the
// certificate verified against a CA file, HTTP/2 agreed by ALPN): unary
// and bidirectional calls, trailers, and active checks of the gRPC
// health service over the same TLS.
func TestGRPCTLSUpstream(t *testing.T) {
	cert, _ := testCert(t)
	up := startGRPC(t, "s", grpc.Creds(credentials.NewServerTLSFromCert(&cert)))
	up.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	f := newH2Front(t, UpstreamConfig{Protocol: ProtoH2, Servers: servers(up.addr),
		TLS:    TLSConfig{Enabled: true, CAFile: writeCA(t, cert)},
		Health: HealthConfig{GRPC: true, Interval: 20 * time.Millisecond, Timeout: time.Second, Rise: 1, Fall: 1}}, HandlerOptions{}, true)
	waitFor(t, "the server taken out by its health service", func() bool { return statusOf(f.pool, up.addr).State == "down" })
	up.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	waitFor(t, "the server back", func() bool { return statusOf(f.pool, up.addr).State == "up" })

	cc := f.dial(t)
	ctx := testCtx(t)
	var trl metadata.MD
	if got, err := say(ctx, cc, "over tls", grpc.Trailer(&trl)); err != nil || !strings.HasPrefix(got, "s:over tls") || len(trl.Get("x-echo-trailer")) == 0 {
		t.Fatalf("Say: %q %v, trailer %v", got, err, trl)
	}
	st, err := chat(ctx, cc)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		msg := fmt.Sprint("m", i)
		in := new(wrapperspb.StringValue)
		if err := st.SendMsg(wrapperspb.String(msg)); err != nil {
			t.Fatal(err)
		}
		if err := st.RecvMsg(in); err != nil || in.GetValue() != "s:"+msg {
			t.Fatalf("receive %d: %q %v", i, in.GetValue(), err)
		}
	}
	st.CloseSend()
	if err := st.RecvMsg(new(wrapperspb.StringValue)); err != io.EOF || st.Trailer().Get("x-chat-end")[0] != "bye" {
		t.Fatalf("end of stream: %v %v", err, st.Trailer())
	}
}

// TestGRPCBidiStream: each message of a bidirectional stream is echoed
// before the next is sent, so neither direction is buffered; the
// stream's trailers arrive after the client closes its side.
func TestGRPCBidiStream(t *testing.T) {
	up := startGRPC(t, "a")
	f := newH2Front(t, UpstreamConfig{Servers: servers(up.addr)}, DefaultHandlerOptionsForTest(t), false)
	cc := f.dial(t)
	ctx := testCtx(t)
	st, err := chat(ctx, cc)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		msg := fmt.Sprint("ping ", i)
		if err := st.SendMsg(wrapperspb.String(msg)); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		in := new(wrapperspb.StringValue)
		if err := st.RecvMsg(in); err != nil || in.GetValue() != "a:"+msg {
			t.Fatalf("receive %d: %q %v", i, in.GetValue(), err)
		}
	}
	if err := st.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if err := st.RecvMsg(new(wrapperspb.StringValue)); err != io.EOF {
		t.Fatalf("end of stream: %v, want io.EOF (status OK)", err)
	}
	if v := st.Trailer().Get("x-chat-end"); len(v) != 1 || v[0] != "bye" {
		t.Fatalf("trailer %v", st.Trailer())
	}
}

// TestGRPCBidiFullDuplex: the client sends while it receives, many
// messages larger than HTTP/2's initial flow-control windows, so that
// both directions of the stream wait for window updates at once, on
// edged's HTTP/2 server (h2c and TLS) and on its upstream connection.
func TestGRPCBidiFullDuplex(t *testing.T) {
	for _, withTLS := range []bool{false, true} {
		t.Run(fmt.Sprintf("tls=%v", withTLS), func(t *testing.T) {
			up := startGRPC(t, "a")
			f := newH2Front(t, UpstreamConfig{Servers: servers(up.addr)}, DefaultHandlerOptionsForTest(t), withTLS)
			ctx := testCtx(t)
			st, err := chat(ctx, f.dial(t))
			if err != nil {
				t.Fatal(err)
			}
			const n = 100
			pad := strings.Repeat("x", 48<<10)
			sent := make(chan error, 1)
			go func() {
				for i := range n {
					if err := st.SendMsg(wrapperspb.String(fmt.Sprint(i, " ", pad))); err != nil {
						sent <- fmt.Errorf("send %d: %w", i, err)
						return
					}
				}
				sent <- st.CloseSend()
			}()
			for i := range n {
				in := new(wrapperspb.StringValue)
				if err := st.RecvMsg(in); err != nil || in.GetValue() != fmt.Sprint("a:", i, " ", pad) {
					t.Fatalf("receive %d: %d bytes, %v", i, len(in.GetValue()), err)
				}
			}
			if err := <-sent; err != nil {
				t.Fatal(err)
			}
			if err := st.RecvMsg(new(wrapperspb.StringValue)); err != io.EOF {
				t.Fatalf("end of stream: %v, want io.EOF (status OK)", err)
			}
		})
	}
}

// DefaultHandlerOptionsForTest is a route with edged's default buffering:
// gRPC must stream through it all the same.
func DefaultHandlerOptionsForTest(t testing.TB) HandlerOptions {
	b := DefaultBuffering()
	b.Dir = t.TempDir()
	return HandlerOptions{Buffering: b}
}

// TestGRPCErrorsFromEdged: what edged answers itself is a gRPC status.
func TestGRPCErrorsFromEdged(t *testing.T) {
	ctx := testCtx(t)
	t.Run("no server", func(t *testing.T) {
		f := newH2Front(t, UpstreamConfig{Servers: servers(refusedAddr(t))}, HandlerOptions{}, false)
		_, err := say(ctx, f.dial(t), "x")
		if st, _ := status.FromError(err); st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "edged: could not connect") {
			t.Fatalf("got %v, want UNAVAILABLE from edged", err)
		}
	})
	t.Run("all down", func(t *testing.T) {
		up := startGRPC(t, "a")
		f := newH2Front(t, UpstreamConfig{Servers: []ServerConfig{{Addr: up.addr, MaxConns: 1}}}, HandlerOptions{}, false)
		cc := f.dial(t)
		st, err := chat(ctx, cc) // holds the only slot
		if err != nil {
			t.Fatal(err)
		}
		st.SendMsg(wrapperspb.String("hold"))
		st.RecvMsg(new(wrapperspb.StringValue))
		_, err = say(ctx, cc, "x")
		if s, _ := status.FromError(err); s.Code() != codes.Unavailable || !strings.Contains(s.Message(), "no upstream server is available") {
			t.Fatalf("at max_conns: %v, want UNAVAILABLE", err)
		}
		st.CloseSend()
	})
	t.Run("response header timeout", func(t *testing.T) {
		up := startGRPC(t, "a")
		f := newH2Front(t, UpstreamConfig{Servers: servers(up.addr), ResponseHeaderTimeout: 200 * time.Millisecond}, HandlerOptions{}, false)
		// No deadline of the call's own (grpc-timeout would bound the
		// wait instead).
		nctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		_, err := say(nctx, f.dial(t), "sleep:5s")
		if st, _ := status.FromError(err); st.Code() != codes.DeadlineExceeded || !strings.Contains(st.Message(), "edged:") {
			t.Fatalf("got %v, want DEADLINE_EXCEEDED from edged", err)
		}
	})
}

// TestGRPCTimeoutHeader: edged applies a call's grpc-timeout itself and
// answers DEADLINE_EXCEEDED with HTTP status 200 in one header block
// (Trailers-Only). A raw HTTP/2 client sends the call, so that the answer
// seen is edged's and not the client library's own timer.
func TestGRPCTimeoutHeader(t *testing.T) {
	up := startGRPC(t, "a")
	f := newH2Front(t, UpstreamConfig{Servers: servers(up.addr)}, HandlerOptions{}, false)
	msg := grpcFrame(t, wrapperspb.String("sleep:5s"))
	req, _ := http.NewRequest("POST", "http://"+f.addr+"/edged.test.Echo/Say", strings.NewReader(string(msg)))
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("Te", "trailers")
	req.Header.Set("Grpc-Timeout", "300m")
	start := time.Now()
	res, err := h2cClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("answered after %v; the deadline was 300ms", d)
	}
	if res.StatusCode != 200 || res.Header.Get("Grpc-Status") != "4" || len(body) != 0 || !strings.Contains(res.Header.Get("Grpc-Message"), "deadline") {
		t.Fatalf("got %d %v body %q; want 200 with grpc-status 4 in the header", res.StatusCode, res.Header, body)
	}
}

// testCert is a self-signed certificate for 127.0.0.1 and the roots that
// trust it.
func testCert(t testing.TB) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "edged test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, IsCA: true, BasicConstraintsValid: true,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	roots := x509.NewCertPool()
	roots.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, roots
}

// writeCA writes the roots' one certificate as PEM, for tls_ca.
func writeCA(t testing.TB, cert tls.Certificate) string {
	p := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// grpcFrame is msg as one gRPC message frame.
func grpcFrame(t testing.TB, msg proto.Message) []byte {
	b, err := proto.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	f := make([]byte, 5, 5+len(b))
	binary.BigEndian.PutUint32(f[1:], uint32(len(b)))
	return append(f, b...)
}

// h2cClient speaks HTTP/2 with prior knowledge.
func h2cClient() *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}}
}

// TestGRPCServerKilledMidStream: a server that dies during a
// bidirectional stream ends the call with UNAVAILABLE in its trailers
// (the response had begun), counted against the server; edged carries on.
func TestGRPCServerKilledMidStream(t *testing.T) {
	up := startGRPC(t, "a")
	f := newH2Front(t, UpstreamConfig{Servers: servers(up.addr)}, HandlerOptions{}, false)
	cc := f.dial(t)
	ctx := testCtx(t)
	st, err := chat(ctx, cc)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.SendMsg(wrapperspb.String("one")); err != nil {
		t.Fatal(err)
	}
	if err := st.RecvMsg(new(wrapperspb.StringValue)); err != nil {
		t.Fatal(err)
	}
	up.srv.Stop() // closes its connections, as the kernel does for a killed process
	err = st.RecvMsg(new(wrapperspb.StringValue))
	if s, _ := status.FromError(err); s.Code() != codes.Unavailable || !strings.Contains(s.Message(), "edged: the upstream server failed mid-response") {
		t.Fatalf("after the server died: %v, want UNAVAILABLE from edged", err)
	}
	waitFor(t, "the failure counted", func() bool {
		v, _ := metricValue(t, f.reg, "edged_upstream_failures_total", "cause", "body")
		return v == 1
	})
	// A server in its place serves the next call.
	ln, err := net.Listen("tcp", up.addr)
	if err != nil {
		t.Skipf("cannot listen on %s again: %v", up.addr, err)
	}
	serveGRPC(t, ln, "b")
	if got, err := say(ctx, cc, "again"); err != nil || !strings.HasPrefix(got, "b:again") {
		t.Fatalf("after a restart: %q %v", got, err)
	}
}

// TestGRPCReloadDuringBidiStream: reloads while a bidirectional stream is
// open leave it alone. The same settings keep the connection, which new
// calls then share; changed settings give new calls a new connection and
// let the old one finish its stream.
func TestGRPCReloadDuringBidiStream(t *testing.T) {
	up := startGRPC(t, "a")
	cfg := UpstreamConfig{Name: "app", Protocol: ProtoH2C, Servers: servers(up.addr)}
	f := newH2Front(t, cfg, HandlerOptions{}, false)
	cc := f.dial(t)
	ctx := testCtx(t)
	st, err := chat(ctx, cc)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	exchange := func() {
		t.Helper()
		n++
		msg := fmt.Sprint("msg ", n)
		if err := st.SendMsg(wrapperspb.String(msg)); err != nil {
			t.Fatalf("send %d: %v", n, err)
		}
		in := new(wrapperspb.StringValue)
		if err := st.RecvMsg(in); err != nil || in.GetValue() != "a:"+msg {
			t.Fatalf("receive %d: %q %v", n, in.GetValue(), err)
		}
	}
	reload := func(cfg UpstreamConfig) *Pool {
		t.Helper()
		old := f.pool
		p, err := NewPool(cfg, old, f.m, nil)
		if err != nil {
			t.Fatal(err)
		}
		p.Start()
		f.setHandler(NewHandler(p, HandlerOptions{}))
		old.Close()
		f.pool = p
		t.Cleanup(p.Close)
		return p
	}
	exchange()
	for range 3 {
		reload(cfg)
		exchange()
		if got, err := say(ctx, cc, "x"); err != nil || !strings.HasPrefix(got, "a:x") {
			t.Fatalf("a call after the reload: %q %v", got, err)
		}
	}
	if c := up.conns.Load(); c != 1 {
		t.Fatalf("%d upstream connections after reloads with the same settings, want 1", c)
	}
	cfg.ConnectTimeout = 3 * time.Second // another connection pool
	p := reload(cfg)
	exchange()
	if got, err := say(ctx, cc, "y"); err != nil || !strings.HasPrefix(got, "a:y") {
		t.Fatalf("a call after the settings changed: %q %v", got, err)
	}
	if c := up.conns.Load(); c != 2 {
		t.Fatalf("%d upstream connections, want 2: the old one still carries the stream", c)
	}
	exchange()
	st.CloseSend()
	if err := st.RecvMsg(new(wrapperspb.StringValue)); err != io.EOF {
		t.Fatalf("end of stream: %v", err)
	}
	if s := p.servers()[0]; s.cp.h2.connCount() != 1 {
		t.Fatalf("the new pool holds %d connections, want 1", s.cp.h2.connCount())
	}
}
