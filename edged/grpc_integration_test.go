package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/edgeapp/edgeapp/internal/grpcecho"
)

// gRPC through the real edged (built with -race): grpc-go clients over
// h2c and TLS, a grpc-go server in a child process (bench/grpcecho) that
// the test kills with SIGKILL mid-stream, and reloads (SIGHUP) while a
// bidirectional stream is open.

var (
	grpcEchoOnce sync.Once
	grpcEchoBin  string
	grpcEchoErr  error
)

// grpcEchoServer starts bench/grpcecho on addr ("" picks a port) and
// returns its address and process.
func grpcEchoServer(t *testing.T, addr, name string) (string, *exec.Cmd) {
	t.Helper()
	grpcEchoOnce.Do(func() {
		grpcEchoBin = filepath.Join(filepath.Dir(edgedBin), "grpcecho")
		out, err := exec.Command("go", "build", "-o", grpcEchoBin, "../bench/grpcecho").CombinedOutput()
		if err != nil {
			grpcEchoErr = fmt.Errorf("building bench/grpcecho: %v\n%s", err, out)
		}
	})
	if grpcEchoErr != nil {
		t.Fatal(grpcEchoErr)
	}
	if addr == "" {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr = ln.Addr().String()
		ln.Close()
	}
	cmd := exec.Command(grpcEchoBin, "-listen", addr, "-name", name)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, _ := bufio.NewReader(out).ReadString('\n') // "serving on ADDR" once it listens
	if !strings.HasPrefix(line, "serving on") {
		t.Fatalf("grpcecho on %s: %q", addr, line)
	}
	return addr, cmd
}

func TestGRPCThroughEdged(t *testing.T) {
	dir := t.TempDir()
	cert, key, pool := selfSigned(t, dir, "grpc.test")
	up, upCmd := grpcEchoServer(t, "", "a")
	config := func(extra string) string {
		return fmt.Sprintf(`[server]
admin = "{{ADMIN}}"
h2c = true
[tls]
storage = "{{DIR}}/state"
[[site]]
hosts = ["grpc.test", "127.0.0.1"]
tls = { cert = %q, key = %q }
redirect_http = false
  [[site.route]]
  path = "/"
  upstream = "g"
[upstream.g]
servers = [%q]
protocol = "h2c"
health = { grpc = true, interval = "300ms", timeout = "250ms", rise = 1, fall = 1 }
%s`, cert, key, up, extra)
	}
	e, addrs := startEdgedWith(t, config(""), "http", "https")

	h2c, err := grpc.NewClient(addrs[0], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer h2c.Close()
	overTLS, err := grpc.NewClient(addrs[1], grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: "grpc.test"})))
	if err != nil {
		t.Fatal(err)
	}
	defer overTLS.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	for name, cc := range map[string]*grpc.ClientConn{"h2c": h2c, "tls": overTLS} {
		var trl metadata.MD
		if got, err := grpcecho.Say(ctx, cc, "hi", grpc.Trailer(&trl)); err != nil || !strings.HasPrefix(got, "a:hi xff=127.0.0.1") || len(trl.Get("x-echo-trailer")) == 0 {
			t.Fatalf("%s: Say: %q %v, trailer %v", name, got, err, trl)
		}
		hr, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
		if err != nil || hr.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("%s: health through edged: %v %v", name, hr, err)
		}
	}

	// A bidirectional stream lives through reloads, one of which changes
	// the upstream's connection settings.
	st, err := grpcecho.Chat(ctx, overTLS)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	exchange := func(st grpc.ClientStream, want string) error {
		n++
		msg := fmt.Sprint("m", n)
		if err := st.SendMsg(wrapperspb.String(msg)); err != nil {
			return err
		}
		in := new(wrapperspb.StringValue)
		if err := st.RecvMsg(in); err != nil {
			return err
		}
		if in.GetValue() != want+":"+msg {
			return fmt.Errorf("got %q", in.GetValue())
		}
		return nil
	}
	if err := exchange(st, "a"); err != nil {
		t.Fatal(err)
	}
	for i, extra := range []string{"", "connect_timeout = \"3s\"\n", "connect_timeout = \"3s\"\nretries = 1\n"} {
		e.reload(config(extra))
		if err := exchange(st, "a"); err != nil {
			t.Fatalf("the stream after reload %d: %v", i, err)
		}
		if got, err := grpcecho.Say(ctx, h2c, "after"); err != nil || !strings.HasPrefix(got, "a:after") {
			t.Fatalf("a call after reload %d: %q %v", i, got, err)
		}
	}
	st.CloseSend()
	if err := st.RecvMsg(new(wrapperspb.StringValue)); err != io.EOF || st.Trailer().Get("x-chat-end")[0] != "bye" {
		t.Fatalf("the stream's end: %v %v", err, st.Trailer())
	}

	// The server is killed mid-stream: the call ends UNAVAILABLE, and
	// edged says so to calls until it is back.
	st, err = grpcecho.Chat(ctx, h2c)
	if err != nil {
		t.Fatal(err)
	}
	if err := exchange(st, "a"); err != nil {
		t.Fatal(err)
	}
	upCmd.Process.Signal(syscall.SIGKILL)
	upCmd.Wait()
	err = st.RecvMsg(new(wrapperspb.StringValue))
	if s, _ := status.FromError(err); s.Code() != codes.Unavailable || !strings.Contains(s.Message(), "edged:") {
		t.Fatalf("the stream when its server was killed: %v, want UNAVAILABLE from edged", err)
	}
	_, err = grpcecho.Say(ctx, overTLS, "x")
	if s, _ := status.FromError(err); s.Code() != codes.Unavailable {
		t.Fatalf("a call with the server gone: %v, want UNAVAILABLE", err)
	}
	grpcEchoServer(t, up, "b")
	deadline := time.Now().Add(20 * time.Second)
	for {
		got, err := grpcecho.Say(ctx, overTLS, "back")
		if err == nil && strings.HasPrefix(got, "b:back") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the restarted server never took calls: %q %v", got, err)
		}
		time.Sleep(100 * time.Millisecond) // the health check's interval brings it back
	}
	if s := e.stderr.String(); !strings.Contains(s, "upstream server failed mid-response") {
		t.Fatalf("edged's log does not tell of the failed stream:\n%s", s)
	}
}

// TestGRPCEdgedOwnErrors: what edged answers a gRPC call itself, outside
// the proxy too (no route, access control, a limit), reaches a grpc-go
// client as a gRPC status with edged's reason, over h2c and TLS; so do an
// upstream that cannot be reached and a call's deadline.
func TestGRPCEdgedOwnErrors(t *testing.T) {
	dir := t.TempDir()
	cert, key, pool := selfSigned(t, dir, "grpc.test")
	up, _ := grpcEchoServer(t, "", "a")
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close() // nothing listens there: connections are refused
	_, addrs := startEdgedWith(t, fmt.Sprintf(`[server]
admin = "{{ADMIN}}"
h2c = true
[tls]
storage = "{{DIR}}/state"
[limit.once]
rate = "1r/m"
[[site]]
hosts = ["grpc.test", "127.0.0.1"]
tls = { cert = %q, key = %q }
redirect_http = false
  [[site.route]]
  path = "/edged.test.Echo/"
  upstream = "g"
  [[site.route]]
  path = "/limited.Service/"
  upstream = "g"
  limit = ["once"]
  [[site.route]]
  path = "/denied.Service/"
  upstream = "g"
  deny = ["127.0.0.0/8"]
  [[site.route]]
  path = "/dead.Service/"
  upstream = "dead"
[upstream.g]
servers = [%q]
protocol = "h2c"
[upstream.dead]
servers = [%q]
protocol = "h2c"
`, cert, key, up, deadAddr), "http", "https")

	h2c, err := grpc.NewClient(addrs[0], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer h2c.Close()
	overTLS, err := grpc.NewClient(addrs[1], grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: "grpc.test"})))
	if err != nil {
		t.Fatal(err)
	}
	defer overTLS.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	call := func(cc *grpc.ClientConn, method string, opts ...grpc.CallOption) error {
		return cc.Invoke(ctx, method, wrapperspb.String("x"), new(wrapperspb.StringValue), opts...)
	}
	want := func(what string, err error, code codes.Code, msg string) {
		t.Helper()
		s, _ := status.FromError(err)
		if s.Code() != code || !strings.Contains(s.Message(), msg) {
			t.Errorf("%s: %v; want %v with %q", what, err, code, msg)
		}
	}
	for name, cc := range map[string]*grpc.ClientConn{"h2c": h2c, "tls": overTLS} {
		want(name+": no route", call(cc, "/nothing.Here/Call"), codes.Unimplemented, "edged: HTTP 404")
		want(name+": denied", call(cc, "/denied.Service/Call"), codes.PermissionDenied, "edged: HTTP 403")
		want(name+": dead upstream", call(cc, "/dead.Service/Call"), codes.Unavailable, "edged: could not connect")
		dctx, dcancel := context.WithTimeout(ctx, 300*time.Millisecond)
		_, err := grpcecho.Say(dctx, cc, "sleep:5s")
		dcancel()
		want(name+": deadline", err, codes.DeadlineExceeded, "")
	}
	// The limit's first call reaches the server (which has no such
	// service); the next one is edged's.
	want("limit: first call", call(h2c, "/limited.Service/Call"), codes.Unimplemented, "unknown service limited.Service")
	want("limit: second call", call(overTLS, "/limited.Service/Call"), codes.Unavailable, "edged: HTTP 429")
	// Calls that edged lets through still work.
	if got, err := grpcecho.Say(ctx, h2c, "ok"); err != nil || !strings.HasPrefix(got, "a:ok") {
		t.Fatalf("Say after the errors: %q %v", got, err)
	}
}
