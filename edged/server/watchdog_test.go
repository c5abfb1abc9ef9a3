package server

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeapp/edgeapp/internal/systemd"
)

// TestWatchdogPingsOnlyAServingEdged: with listeners open and every
// goroutine alive but nothing accepting (a wedged accept loop), the
// watchdog is not pinged; once edged serves, it is (issue 9).
func TestWatchdogPingsOnlyAServingEdged(t *testing.T) {
	for _, c := range []struct{ name, extra string }{
		{"http listener", ""},
		{"PROXY protocol listener", "[server.proxy_protocol]\nfrom = [\"192.0.2.1\"]\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := filepath.Join(dir, "edged.toml")
			os.WriteFile(cfg, []byte(strings.ReplaceAll(serverPreamble, "{{DIR}}", dir)+c.extra+`
[[site]]
[[site.route]]
path = "/"
respond = "ok"
`), 0o644)
			srv, err := New(Options{ConfigPath: cfg, Log: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatal(err)
			}
			if (c.extra != "") != (srv.wd.pipe != nil) {
				t.Fatalf("probe target %s %v, pipe %v", srv.wd.network, srv.wd.addresses, srv.wd.pipe != nil)
			}
			notifyPath := filepath.Join(dir, "notify.sock")
			notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notifyPath, Net: "unixgram"})
			if err != nil {
				t.Fatal(err)
			}
			defer notify.Close()
			t.Setenv("NOTIFY_SOCKET", notifyPath)
			n := systemd.NewNotifier()
			stop := make(chan struct{})
			defer close(stop)
			const interval = 100 * time.Millisecond
			go n.RunWatchdog(interval, func() bool { return srv.Healthy(interval / 2) }, stop)

			// Not serving yet: several intervals pass without a ping.
			notify.SetReadDeadline(time.Now().Add(8 * interval))
			buf := make([]byte, 512)
			if k, err := notify.Read(buf); err == nil {
				t.Fatalf("pinged a server that does not accept: %q", buf[:k])
			}

			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- srv.Serve(ctx) }()
			defer func() { cancel(); <-done }()
			notify.SetReadDeadline(time.Now().Add(20 * time.Second))
			for {
				k, err := notify.Read(buf)
				if err != nil {
					t.Fatalf("no WATCHDOG=1 from a serving edged: %v", err)
				}
				if string(buf[:k]) == "WATCHDOG=1" {
					break
				}
			}
		})
	}
}

// TestWatchdogPathIsOrdinaryForOthers: without the process's token the
// probe's path is routed like any other.
func TestWatchdogPathIsOrdinaryForOthers(t *testing.T) {
	ts := startServer(t, "[[site]]\n[[site.route]]\npath = \"/\"\nrespond = \"site\"\n")
	if code, body, _ := ts.get(watchdogPath, watchdogHeader, "guess"); code != 200 || body != "site" {
		t.Fatalf("%d %q", code, body)
	}
	if !ts.srv.Healthy(5 * time.Second) {
		t.Fatal("a serving edged is not healthy")
	}
}

// TestWatchdogAtConnectionCap: an edged at max_connections still answers
// (the cap's 503), so it is not restarted under a flood.
func TestWatchdogAtConnectionCap(t *testing.T) {
	ts := startServer(t, strings.Replace(serverPreamble, "admin = \"\"", "admin = \"\"\nmax_connections = 1", 1)+"[[site]]\n[[site.route]]\npath = \"/\"\nrespond = \"site\"\n")
	c, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitUntil(t, "the idle connection to be held", func() bool { return ts.srv.limiter.Open() == 1 })
	if !ts.srv.Healthy(5 * time.Second) {
		t.Fatal("an edged at its connection cap is not healthy")
	}
	if ts.srv.limiter.Refused("max_connections") != 1 {
		t.Fatal("the probe did not meet the cap")
	}
}

// TestWatchdogProbesEveryAddressListener: a listener on every address is
// probed on loopback, IPv4 first (a [::] listener takes IPv4 too).
func TestWatchdogProbesEveryAddressListener(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", "[::]:0"} {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Skipf("%s: %v", addr, err)
		}
		srv := &Server{httpLns: []net.Listener{ln}}
		srv.probeTarget()
		ln.Close()
		if len(srv.wd.addresses) == 0 || !strings.HasPrefix(srv.wd.addresses[0], "127.0.0.1:") {
			t.Errorf("%s: probe addresses %v", addr, srv.wd.addresses)
		}
	}
}
