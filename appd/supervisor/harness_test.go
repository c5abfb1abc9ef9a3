package supervisor

import (
	"bytes"
	"context"
	"fmt"
	"github.com/edgeapp/edgeapp/internal/syncbuf"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/edgeapp/edgeapp/appd/cgroup"
	"github.com/edgeapp/edgeapp/appd/config"
	"github.com/edgeapp/edgeapp/internal/logging"
)

// testWorker is the path of the test worker, built once by TestMain.
var testWorker string

func TestMain(m *testing.M) {
	RunTrampolineIfRequested()
	// In the VM (make vm-test) there is no Go toolchain: the worker is
	// built on the host and named here.
	if p := os.Getenv("APPD_TESTWORKER"); p != "" {
		testWorker = p
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "appd-supervisor-test")
	if err != nil {
		panic(err)
	}
	testWorker = filepath.Join(dir, "testworker")
	if out, err := exec.Command("go", "build", "-o", testWorker, "../internal/testworker").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building the test worker: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type harness struct {
	t      *testing.T
	sup    *Supervisor
	sigs   chan os.Signal
	addr   string
	logs   *syncbuf.Buffer
	out    *syncbuf.Buffer
	done   chan error
	next   atomic.Pointer[string] // config text for the next reload
	client *http.Client
	ln     *os.File
	// finished is set once Run's result was taken from done.
	finished atomic.Bool
}

// conf makes a config for the test worker; extra is TOML with [app]
// keys first (they continue the [app] table).
func conf(t *testing.T, extra string) string {
	t.Helper()
	return fmt.Sprintf("[app]\ncommand = [%q]\ncontrol = \"-\"\n%s\n", testWorker, extra)
}

func parse(t *testing.T, text string) *config.Config {
	t.Helper()
	c, err := config.Parse("test.toml", "test", []byte(text))
	if err != nil {
		t.Fatalf("config: %v\n%s", err, text)
	}
	return c
}

type hopt func(*Options)

func withTree(tree *cgroup.Tree) hopt { return func(o *Options) { o.Tree = tree } }

// start runs a Supervisor on a fresh loopback socket.
func start(t *testing.T, text string, opts ...hopt) *harness {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // f keeps the socket listening
	h := &harness{t: t, sigs: make(chan os.Signal, 4), addr: addr, logs: &syncbuf.Buffer{}, out: &syncbuf.Buffer{}, done: make(chan error, 1), ln: f}
	h.next.Store(&text)
	h.client = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	o := Options{
		Name:   "test",
		Config: parse(t, text),
		Reload: func() (*config.Config, error) {
			return config.Parse("test.toml", "test", []byte(*h.next.Load()))
		},
		Listeners:  []*os.File{f},
		Log:        logging.New(io.MultiWriter(h.logs, testLogWriter{t}), logging.Options{Level: slog.LevelDebug}),
		Signals:    h.sigs,
		Trampoline: os.Args[0],
		Output:     h.out,
	}
	for _, fn := range opts {
		fn(&o)
	}
	sup, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	h.sup = sup
	go func() { h.done <- sup.Run(context.Background()) }()
	t.Cleanup(func() {
		if !h.finished.Load() {
			h.sigs <- syscall.SIGINT
			select {
			case <-h.done:
			case <-time.After(30 * time.Second):
				t.Errorf("supervisor did not stop")
			}
		}
		h.client.CloseIdleConnections()
		f.Close()
	})
	return h
}

// testLogWriter shows the supervisor's log with the test's output (-v).
type testLogWriter struct{ t *testing.T }

func (w testLogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func (h *harness) status() Status {
	h.t.Helper()
	// 30 s: in the VM under load (2 emulated CPUs, load average above
	// 20 on the host) the loop answered in up to 5 s during a reload under
	// load, and once not within 10 s.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := h.sup.Status(ctx)
	if err != nil {
		h.t.Fatalf("status: %v", err)
	}
	return st
}

// waitFor polls the status until cond holds (external processes: poll
// with a deadline).
func (h *harness) waitFor(what string, timeout time.Duration, cond func(Status) bool) Status {
	h.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st := h.status()
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("timed out waiting for %s; status: %+v", what, st)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func allReady(n, gen int) func(Status) bool {
	return func(st Status) bool {
		if st.Ready != n || st.Generation != gen || st.Serving != gen {
			return false
		}
		for _, w := range st.Slots {
			if w.State != "ready" {
				return false
			}
		}
		return len(st.Slots) == n
	}
}

func (h *harness) get(path string) (string, error) {
	resp, err := h.client.Get("http://" + h.addr + path)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != 200 {
		return string(b), fmt.Errorf("status %s", resp.Status)
	}
	return string(b), nil
}

func (h *harness) reload(text string) {
	h.next.Store(&text)
	h.sigs <- syscall.SIGHUP
}

func (h *harness) wait(timeout time.Duration) error {
	h.t.Helper()
	select {
	case err := <-h.done:
		h.finished.Store(true)
		return err
	case <-time.After(timeout):
		h.t.Fatalf("supervisor still running after %v", timeout)
		return nil
	}
}

// load runs GETs from conc goroutines until stop closes or n requests
// were made; it returns the number made and the failures.
type loadResult struct {
	total, failed atomic.Int64
	mu            sync.Mutex
	errs          []string
}

func (h *harness) load(conc int, n int64, stop <-chan struct{}) (*loadResult, *sync.WaitGroup) {
	r := &loadResult{}
	var wg sync.WaitGroup
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if r.total.Add(1) > n {
					r.total.Add(-1)
					return
				}
				if _, err := h.get("/"); err != nil {
					r.failed.Add(1)
					r.mu.Lock()
					if len(r.errs) < 10 {
						r.errs = append(r.errs, time.Now().Format("15:04:05.000000")+" "+err.Error())
					}
					r.mu.Unlock()
				}
			}
		}()
	}
	return r, &wg
}

func pidsOf(st Status) map[int]int {
	m := map[int]int{}
	for _, w := range st.Slots {
		if w.PID != 0 {
			m[w.Slot] = w.PID
		}
	}
	return m
}

func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	if err != nil {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i > 0 && len(b) > i+2 && b[i+2] != 'Z'
}

func syscallKill(pid int) error { return syscall.Kill(pid, syscall.SIGKILL) }
