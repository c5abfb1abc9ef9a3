// Package etcdtest starts a real etcd cluster (Debian's etcd-server) on
// loopback for tests: one or three members on free ports, each in its own
// data directory, stopped and removed at the end of the test.
package etcdtest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Member is one etcd process.
type Member struct {
	Name      string
	ClientURL string
	PeerURL   string
	dir       string
	cmd       *exec.Cmd
	exited    chan struct{}
}

// Cluster is the members of one etcd cluster.
type Cluster struct {
	t       testing.TB
	Members []*Member
	initial string
	mu      sync.Mutex
}

// Binary is the etcd executable, or "" with the reason the test skips.
func Binary() (string, string) {
	p, err := exec.LookPath("etcd")
	if err != nil {
		return "", "etcd is not installed (apt-get install etcd-server)"
	}
	return p, ""
}

// Start starts n members and waits until each serves clients. Timeouts are
// raised above etcd's defaults (heartbeat 250 ms, election 2.5 s), so a
// busy test machine does not see spurious elections.
func Start(t testing.TB, n int) *Cluster {
	t.Helper()
	if _, why := Binary(); why != "" {
		t.Skip(why)
	}
	c := &Cluster{t: t}
	var parts []string
	for i := range n {
		m := &Member{
			Name:      fmt.Sprintf("m%d", i),
			ClientURL: "http://" + freeAddr(t),
			PeerURL:   "http://" + freeAddr(t),
			dir:       filepath.Join(t.TempDir(), fmt.Sprintf("m%d", i)),
		}
		c.Members = append(c.Members, m)
		parts = append(parts, m.Name+"="+m.PeerURL)
	}
	c.initial = strings.Join(parts, ",")
	t.Cleanup(c.Close)
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i, m := range c.Members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = c.start(m, "new")
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	return c
}

func freeAddr(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// start runs m and returns once it logs that it serves clients (etcd
// needs a quorum for that, so the first members wait for the others).
func (c *Cluster) start(m *Member, state string) error {
	bin, _ := Binary()
	cmd := exec.Command(bin,
		"--name", m.Name, "--data-dir", m.dir,
		"--listen-client-urls", m.ClientURL, "--advertise-client-urls", m.ClientURL,
		"--listen-peer-urls", m.PeerURL, "--initial-advertise-peer-urls", m.PeerURL,
		"--initial-cluster", c.initial, "--initial-cluster-state", state,
		"--initial-cluster-token", "edged-test",
		"--heartbeat-interval", "250", "--election-timeout", "2500",
		"--logger", "zap", "--log-outputs", "stderr",
	)
	cmd.Env = append(os.Environ(), "ETCD_UNSUPPORTED_ARCH=")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting etcd %s: %w", m.Name, err)
	}
	c.mu.Lock()
	m.cmd = cmd
	m.exited = make(chan struct{})
	c.mu.Unlock()
	ready := make(chan struct{})
	var tail []string
	var tailMu sync.Mutex
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		once := sync.Once{}
		for sc.Scan() {
			line := sc.Text()
			tailMu.Lock()
			tail = append(tail, line)
			if len(tail) > 20 {
				tail = tail[1:]
			}
			tailMu.Unlock()
			if strings.Contains(line, "ready to serve client requests") || strings.Contains(line, "serving client traffic") {
				once.Do(func() { close(ready) })
			}
		}
		io.Copy(io.Discard, stderr)
	}()
	exited := m.exited
	go func() {
		cmd.Wait()
		close(exited)
	}()
	select {
	case <-ready:
		return nil
	case <-exited:
	case <-time.After(2 * time.Minute):
		cmd.Process.Kill()
	}
	tailMu.Lock()
	defer tailMu.Unlock()
	return fmt.Errorf("etcd %s did not become ready:\n%s", m.Name, strings.Join(tail, "\n"))
}

// Endpoints are the members' client URLs.
func (c *Cluster) Endpoints() []string {
	var out []string
	for _, m := range c.Members {
		out = append(out, m.ClientURL)
	}
	return out
}

// Client is a client of the whole cluster, closed with the test.
func (c *Cluster) Client() *clientv3.Client {
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { cli.Close() })
	return cli
}

// Leader returns the index of the member that leads now.
func (c *Cluster) Leader(ctx context.Context) (int, error) {
	cli := c.Client()
	for i, m := range c.Members {
		if !m.Running() {
			continue
		}
		st, err := cli.Status(ctx, m.ClientURL)
		if err != nil {
			continue
		}
		if st.Leader == st.Header.MemberId {
			return i, nil
		}
	}
	return -1, fmt.Errorf("no member says it leads")
}

// Running reports whether m's process is alive.
func (m *Member) Running() bool {
	if m.exited == nil {
		return false
	}
	select {
	case <-m.exited:
		return false
	default:
		return true
	}
}

// Kill stops member i at once (SIGKILL), as a crash would.
func (c *Cluster) Kill(i int) {
	c.mu.Lock()
	m := c.Members[i]
	c.mu.Unlock()
	if m.cmd != nil && m.Running() {
		m.cmd.Process.Kill()
		<-m.exited
	}
}

// Restart starts member i again on its data directory.
func (c *Cluster) Restart(i int) error {
	return c.start(c.Members[i], "existing")
}

// Close kills every member.
func (c *Cluster) Close() {
	for i := range c.Members {
		c.Kill(i)
	}
}
