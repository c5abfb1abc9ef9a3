package main

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/edgeapp/edgeapp/internal/syncbuf"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgeapp/edgeapp/appd/supervisor"
)

var appdBin, workerBin string

// rootUser is the app.user line the tests' configurations need when the
// tests run as root: appd refuses to run workers as root unless told so.
var rootUser = map[bool]string{true: "user = \"root\"\n"}[os.Geteuid() == 0]

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "appd-main-test")
	if err != nil {
		panic(err)
	}
	appdBin = filepath.Join(dir, "appd")
	workerBin = filepath.Join(dir, "testworker")
	for out, pkg := range map[string]string{appdBin: ".", workerBin: "./internal/testworker"} {
		if b, err := exec.Command("go", "build", "-o", out, pkg).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "building %s: %v\n%s", pkg, err, b)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func writeConf(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "app.toml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func TestCheckConfig(t *testing.T) {
	good := writeConf(t, fmt.Sprintf("[app]\n"+rootUser+"command = [%q]\n[workers]\ncount = 2\n", workerBin))
	out, err := exec.Command(appdBin, "-t", "-config", good).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "configuration OK") {
		t.Errorf("good config: %v %s", err, out)
	}
	bad := writeConf(t, "[app]\ncommand = [\"/nonexistent/bin/app\"]\n[limits]\ncpu_max = \"lots\"\n")
	out, err = exec.Command(appdBin, "-t", "-config", bad).CombinedOutput()
	if code := exitCode(err); code != 1 {
		t.Errorf("bad config: exit %d", code)
	}
	for _, want := range []string{bad + ":2: app.command: /nonexistent/bin/app: no such file or directory", bad + ":4: limits.cpu_max: \"lots\""} {
		if !strings.Contains(string(out), want) {
			t.Errorf("-t output lacks %q:\n%s", want, out)
		}
	}
}

// TestRootWorkersRefused: appd as root refuses a configuration without
// app.user, at -t and at start, naming the file and line; user = "root"
// is accepted on purpose.
func TestRootWorkersRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("appd is not root here, so its workers would not be either")
	}
	noUser := writeConf(t, fmt.Sprintf("# no user\n[app]\ncommand = [%q]\n", workerBin))
	want := noUser + ":2: app.user: not set, and appd runs as root"
	for _, args := range [][]string{{"-t", "-config", noUser}, {"-config", noUser}} {
		out, err := exec.Command(appdBin, args...).CombinedOutput()
		if exitCode(err) != 1 || !strings.Contains(string(out), want) {
			t.Errorf("appd %v: exit %d, want 1 and %q:\n%s", args, exitCode(err), want, out)
		}
	}
	asRoot := writeConf(t, fmt.Sprintf("[app]\ncommand = [%q]\nuser = \"root\"\n", workerBin))
	if out, err := exec.Command(appdBin, "-t", "-config", asRoot).CombinedOutput(); err != nil {
		t.Errorf("user = \"root\" refused: %v\n%s", err, out)
	}
}

func TestVersionAndUsage(t *testing.T) {
	out, err := exec.Command(appdBin, "-version").CombinedOutput()
	if err != nil || string(out) != "appd dev\n" {
		t.Errorf("-version: %q %v", out, err)
	}
	out, err = exec.Command(appdBin, "-h").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "appd status [-json]") || !strings.Contains(string(out), "-config") {
		t.Errorf("-h: %v\n%s", err, out)
	}
	out, err = exec.Command(appdBin, "bogus").CombinedOutput()
	if exitCode(err) != 2 {
		t.Errorf("bad argument: %v %s", err, out)
	}
}

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	return -1
}

func TestRequiredLimitsRefusedWithoutCgroupTree(t *testing.T) {
	if os.Getenv("APPD_CGROUP_TESTS") == "1" {
		t.Skip("in the VM a delegated tree exists")
	}
	dir := t.TempDir()
	p := writeConf(t, fmt.Sprintf("[app]\n"+rootUser+"command = [%q]\nlisten = [\"unix:%s/app.sock\"]\ncontrol = \"%s/app.ctl\"\n[limits]\nmemory_max = \"128MiB\"\nrequired = true\n", workerBin, dir, dir))
	cmd := exec.Command(appdBin, "-config", p)
	out, err := cmd.CombinedOutput()
	if exitCode(err) != 1 || !strings.Contains(string(out), "limits.required = true but there is no delegated cgroup v2 tree") {
		t.Errorf("exit %d:\n%s", exitCode(err), out)
	}
}

// TestRunReloadStatusStop runs appd as systemd would: the socket passed as
// fd 3 named "app", NOTIFY_SOCKET set; then status, metrics, SIGHUP and
// SIGTERM, each checked from the outside.
func TestRunReloadStatusStop(t *testing.T) {
	dir := t.TempDir()
	ctl := filepath.Join(dir, "myapp.ctl")
	p := writeConf(t, fmt.Sprintf("[app]\n"+rootUser+"command = [%q]\ncontrol = %q\nenvironment = { TW_STATUS = \"serving\" }\n[workers]\ncount = 2\n", workerBin, ctl))

	notifyPath := filepath.Join(dir, "notify.sock")
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notifyPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer notify.Close()
	msgs := make(chan string, 100)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := notify.Read(buf)
			if err != nil {
				close(msgs)
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	expect := func(what string) string {
		t.Helper()
		timeout := time.After(60 * time.Second)
		for {
			select {
			case m := <-msgs:
				if strings.Contains(m, what) {
					return m
				}
			case <-timeout:
				t.Fatalf("no notify message with %q", what)
			}
		}
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	lf, _ := ln.(*net.TCPListener).File()
	ln.Close()
	defer lf.Close()

	stderr := &syncbuf.Buffer{}
	// LISTEN_PID must be appd's own pid: set it in a shell that execs appd.
	cmd := exec.Command("/bin/sh", "-c", `LISTEN_PID=$$ exec "$0" -name myapp -config "$1"`, appdBin, p)
	cmd.Env = append(os.Environ(), "LISTEN_FDS=1", "LISTEN_FDNAMES=app", "NOTIFY_SOCKET="+notifyPath, "WATCHDOG_USEC=400000")
	cmd.ExtraFiles = []*os.File{lf}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	done := false
	defer func() {
		if !done {
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("appd stderr:\n%s", stderr.String())
		}
	}()

	ready := expect("READY=1")
	if !strings.Contains(ready, "STATUS=2/2 ready, gen 1, 0 restarting") {
		t.Errorf("READY message %q", ready)
	}
	expect("WATCHDOG=1") // from the event loop, every WATCHDOG_USEC/2
	if !strings.Contains(stderr.String(), "using the socket passed by systemd") {
		t.Errorf("appd did not use the passed socket:\n%s", stderr.String())
	}
	resp, err := http.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "gen=1") {
		t.Errorf("answer %q", body)
	}

	// appd status, as text and JSON, over the control socket.
	var st supervisor.Status
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		out, err := exec.Command(appdBin, "status", "-json", "-socket", ctl).Output()
		if err == nil && json.Unmarshal(out, &st) == nil && len(st.Slots) == 2 && st.Slots[0].Status == "serving" && st.Slots[1].Status == "serving" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status -json: %v %s", err, out)
		}
	}
	if st.Name != "myapp" || st.Ready != 2 || st.Generation != 1 || st.Slots[0].PID == 0 {
		t.Errorf("status %+v", st)
	}
	out, err := exec.Command(appdBin, "status", "-socket", ctl).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "myapp (pid ") || !strings.Contains(string(out), "2/2 ready, gen 1") ||
		!strings.Contains(string(out), "SLOT") || !strings.Contains(string(out), "serving") {
		t.Errorf("status: %v\n%s", err, out)
	}
	t.Logf("appd status:\n%s", out)
	mc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", ctl)
	}}}
	resp, err = mc.Get("http://appd/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"appd_workers_ready 2", "appd_generation 1", `appd_workers{state="ready"} 2`, "appd_worker_memory_bytes{slot=\"0\""} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("metrics lack %q:\n%s", want, metrics)
		}
	}

	// SIGHUP: RELOADING=1 with MONOTONIC_USEC, then READY=1 with gen 2.
	cmd.Process.Signal(syscall.SIGHUP)
	if m := expect("RELOADING=1"); !strings.Contains(m, "MONOTONIC_USEC=") {
		t.Errorf("reloading message %q", m)
	}
	if m := expect("READY=1"); !strings.Contains(m, "gen 2") {
		t.Errorf("ready after reload %q", m)
	}

	// SIGTTIN adds a worker.
	cmd.Process.Signal(syscall.SIGTTIN)
	expect("STATUS=3/3 ready, gen 2")

	// SIGTERM: STOPPING=1, workers drained, exit 0.
	cmd.Process.Signal(syscall.SIGTERM)
	expect("STOPPING=1")
	select {
	case err := <-exited:
		done = true
		if err != nil {
			t.Errorf("appd exited with %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("appd did not exit on SIGTERM")
	}
	if _, err := os.Stat(ctl); !os.IsNotExist(err) {
		t.Errorf("control socket left behind: %v", err)
	}
}

// TestBindsConfiguredUnixSocket runs appd by hand: no socket from systemd,
// so it binds app.listen, and removes the socket file when it exits.
func TestBindsConfiguredUnixSocket(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "run", "app.sock")
	p := writeConf(t, fmt.Sprintf("[app]\n"+rootUser+"command = [%q]\nlisten = [\"unix:%s\"]\ncontrol = \"-\"\n[workers]\ncount = 1\n", workerBin, sock))
	cmd := exec.Command(appdBin, "-config", p)
	stderr := &syncbuf.Buffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	var body []byte
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		resp, err := client.Get("http://app/")
		if err == nil {
			body, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no answer on %s: %v\n%s", sock, err, stderr.String())
		}
	}
	if !strings.Contains(string(body), "slot=0 gen=1") {
		t.Errorf("answer %q", body)
	}
	cmd.Process.Signal(syscall.SIGINT)
	if err := cmd.Wait(); err != nil {
		t.Errorf("appd exited with %v\n%s", err, stderr.String())
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("socket file left behind: %v", err)
	}
}

// TestKeepHeapSmall: appd collects at GOGC 25 and keeps no memory
// profile, unless the environment sets either.
func TestKeepHeapSmall(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	defer func(r int) { runtime.MemProfileRate = r }(runtime.MemProfileRate)
	t.Setenv("GOGC", "")
	t.Setenv("GODEBUG", "")
	runtime.MemProfileRate = 4096
	keepHeapSmall()
	if gc := debug.SetGCPercent(100); gc != 25 || runtime.MemProfileRate != 0 {
		t.Errorf("GOGC %d, MemProfileRate %d: want 25 and 0", gc, runtime.MemProfileRate)
	}
	t.Setenv("GOGC", "200")
	t.Setenv("GODEBUG", "memprofilerate=1024")
	runtime.MemProfileRate = 1024
	keepHeapSmall()
	if gc := debug.SetGCPercent(100); gc != 100 || runtime.MemProfileRate != 1024 {
		t.Errorf("with GOGC and GODEBUG set: GOGC %d, MemProfileRate %d: want them left alone", gc, runtime.MemProfileRate)
	}
}
