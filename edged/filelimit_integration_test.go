package main

import (
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestOpenFileLimitBelowMaxConnections: edged run with an open-file limit
// (LimitNOFILE=) far below max_connections says so at start, and when
// clients take every descriptor it neither dies nor spins: accepting
// fails with "too many open files" and is retried, the connections wait
// in the listen queue, and edged serves again once clients go.
func TestOpenFileLimitBelowMaxConnections(t *testing.T) {
	const limit = 64
	e, addrs := startEdgedShell(t, `
[server]
admin = ""
max_connections = 16384
max_connections_per_ip = 0
[[site]]
hosts = ["x"]
tls = "off"
  [[site.route]]
  path = "/"
  respond = "ok\n"
`, "ulimit -n 64 || exit 97", "http")
	if out := e.stderr.String(); !strings.Contains(out, "open-file limit is too low for max_connections") || !strings.Contains(out, "limit=64") {
		t.Fatalf("no warning about the open-file limit at start:\n%s", out)
	}
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	// More connections than edged may hold descriptors: the kernel
	// completes them all (backlog); edged accepts until EMFILE.
	for range 2 * limit {
		c, err := net.DialTimeout("tcp", addrs[0], 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	// One clear line per failed accept (backing off to one a second), on
	// either engine.
	acceptFailed := regexp.MustCompile(`WARN accepting a connection failed; retrying .*accept4: too many open files`)
	deadline := time.Now().Add(30 * time.Second)
	for !acceptFailed.MatchString(e.stderr.String()) {
		if time.Now().After(deadline) {
			t.Fatalf("edged never ran out of descriptors with %d connections open:\n%s", len(held), e.stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := e.cmd.Process.Signal(syscall.Signal(0)); err != nil {
		t.Fatalf("edged died at its open-file limit: %v", err)
	}
	for _, c := range held {
		c.Close()
	}
	held = nil
	// The queued connections are accepted and end; a new client is served.
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	deadline = time.Now().Add(30 * time.Second)
	for {
		req, _ := http.NewRequest("GET", "http://"+addrs[0]+"/", nil)
		req.Host = "x"
		resp, err := client.Do(req)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 && string(body) == "ok\n" {
				break
			}
			err = &unexpected{resp.Status, string(body)}
		}
		if time.Now().After(deadline) {
			t.Fatalf("edged does not serve again after clients left: %v\n%s", err, e.stderr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	select {
	case err := <-e.done:
		t.Fatalf("edged exited: %v", err)
	default:
	}
}

type unexpected struct{ status, body string }

func (u *unexpected) Error() string { return u.status + ": " + u.body }
