package systemd

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestNotifySendsDatagrams(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", path)
	n := NewNotifier()
	if os.Getenv("NOTIFY_SOCKET") != "" {
		t.Fatal("NOTIFY_SOCKET left in the environment for children")
	}
	if err := n.Reloading("reloading"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	k, err := conn.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(buf[:k]), "\n")
	if lines[0] != "RELOADING=1" || !strings.HasPrefix(lines[1], "MONOTONIC_USEC=") || lines[2] != "STATUS=reloading" {
		t.Fatalf("datagram %q", lines)
	}
	if us, err := strconv.ParseInt(strings.TrimPrefix(lines[1], "MONOTONIC_USEC="), 10, 64); err != nil || us <= 0 {
		t.Fatalf("MONOTONIC_USEC %q", lines[1])
	}
	if err := n.Ready("serving"); err != nil {
		t.Fatal(err)
	}
	k, _ = conn.Read(buf)
	if string(buf[:k]) != "READY=1\nSTATUS=serving" {
		t.Fatalf("datagram %q", buf[:k])
	}
}

func TestNotifyDisabledIsNoop(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	n := NewNotifier()
	if n.Enabled() {
		t.Fatal("enabled without a socket")
	}
	if err := n.Ready("x"); err != nil {
		t.Fatal(err)
	}
}

func TestSplitAddr(t *testing.T) {
	good := map[string][2]string{
		"unix:/run/a.sock": {"unix", "/run/a.sock"},
		":80":              {"tcp", ":80"},
		"127.0.0.1:8080":   {"tcp", "127.0.0.1:8080"},
		"[::1]:443":        {"tcp", "[::1]:443"},
	}
	for in, want := range good {
		n, a, err := SplitAddr(in)
		if err != nil || n != want[0] || a != want[1] {
			t.Errorf("SplitAddr(%q) = %q %q %v", in, n, a, err)
		}
	}
	for _, bad := range []string{"unix:", "unix:rel.sock", "localhost", "1.2.3.4:"} {
		if _, _, err := SplitAddr(bad); err == nil {
			t.Errorf("SplitAddr(%q) accepted", bad)
		}
	}
}

func TestBindUnixRemovesStaleButNotLive(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.sock")
	live, err := Bind("unix:" + path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Bind("unix:" + path); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second bind on a live socket: %v", err)
	}
	// A stale socket: file present, nobody listening.
	live.(*net.UnixListener).SetUnlinkOnClose(false)
	live.Close()
	ln, err := Bind("unix:" + path)
	if err != nil {
		t.Fatalf("bind over stale socket: %v", err)
	}
	ln.Close()
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("socket file left after close: %v", err)
	}
	regular := filepath.Join(t.TempDir(), "file")
	os.WriteFile(regular, nil, 0o644)
	if _, err := Bind("unix:" + regular); err == nil {
		t.Fatal("bound over a regular file")
	}
}

// TestActivationByName re-runs the test binary with a socket passed as fd 3
// under the sd_listen_fds protocol, exactly as systemd would.
func TestActivationByName(t *testing.T) {
	if os.Getenv("SYSTEMD_TEST_CHILD") == "1" {
		a := TakeActivated()
		lns, fromSystemd, err := a.ListenOrBind("http", []string{"127.0.0.1:0"})
		if err != nil || !fromSystemd || len(lns) != 1 {
			os.Stdout.WriteString("FAIL " + strings.Join(a.Names(), ","))
			os.Exit(1)
		}
		if os.Getenv("LISTEN_FDS") != "" {
			os.Stdout.WriteString("FAIL env not unset")
			os.Exit(1)
		}
		c, err := lns[0].Accept()
		if err != nil {
			os.Exit(1)
		}
		c.Write([]byte("hello from " + lns[0].Addr().String()))
		c.Close()
		os.Exit(0)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	f, _ := ln.(*net.TCPListener).File()
	ln.Close() // f still holds the listening socket
	// LISTEN_PID must equal the child's own pid, unknown before the fork
	// (appd's trampoline solves that); a shell that execs keeps its pid.
	cmd := exec.Command("/bin/sh", "-c", `LISTEN_PID=$$ exec "$0" -test.run='^TestActivationByName$'`, os.Args[0])
	cmd.ExtraFiles = []*os.File{f}
	cmd.Env = append(os.Environ(), "SYSTEMD_TEST_CHILD=1", "LISTEN_FDS=1", "LISTEN_FDNAMES=http")
	out := make(chan string, 1)
	go func() {
		b, _ := cmd.CombinedOutput()
		out <- string(b)
	}()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 100)
	k, _ := c.Read(buf)
	c.Close()
	if !strings.HasPrefix(string(buf[:k]), "hello from 127.0.0.1:") {
		t.Fatalf("child said %q; output %s", buf[:k], <-out)
	}
	if o := <-out; strings.Contains(o, "FAIL") {
		t.Fatal(o)
	}
}

// TestBindMakesTheSocketDirectory: a daemon run by hand finds its runtime
// directory made for it, as RuntimeDirectory= would; a deeper missing path
// is an error, not invented.
func TestBindMakesTheSocketDirectory(t *testing.T) {
	dir := t.TempDir()
	ln, err := Bind("unix:" + filepath.Join(dir, "run", "admin.sock"))
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	if fi, err := os.Stat(filepath.Join(dir, "run")); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o755 {
		t.Fatalf("socket directory: %v %v", fi, err)
	}
	if _, err := Bind("unix:" + filepath.Join(dir, "a", "b", "x.sock")); err == nil || !strings.Contains(err.Error(), "creating the socket's directory") {
		t.Fatalf("a deeper missing path: %v", err)
	}
}

func TestDirs(t *testing.T) {
	t.Setenv("STATE_DIRECTORY", "/var/lib/edged:/var/lib/other")
	t.Setenv("RUNTIME_DIRECTORY", "")
	t.Setenv("CACHE_DIRECTORY", "/var/cache/edged")
	if StateDir("/x") != "/var/lib/edged" || RuntimeDir("/run/edged") != "/run/edged" || CacheDir("/y") != "/var/cache/edged" {
		t.Fatal(StateDir("/x"), RuntimeDir("/run/edged"), CacheDir("/y"))
	}
	if !FromSystemd("/var/lib/other") || FromSystemd("/run/edged") {
		t.Fatal("FromSystemd")
	}
}

func TestSplitAddrPorts(t *testing.T) {
	for _, good := range []string{":80", "127.0.0.1:0", "[::1]:65535", "unix:/run/x.sock", "unix:@abstract", "example.com:443"} {
		if _, _, err := SplitAddr(good); err != nil {
			t.Errorf("%s: %v", good, err)
		}
	}
	for _, bad := range []string{"80", ":65536", ":http", "127.0.0.1:-1", "unix:run/x.sock", "http://a:80", "a b:80", ""} {
		if _, _, err := SplitAddr(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	for _, bad := range []string{":80", "a:0"} {
		if _, _, err := SplitDialAddr(bad); err == nil {
			t.Errorf("dial address %q accepted", bad)
		}
	}
}
