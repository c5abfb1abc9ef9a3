package cgroup

// Tests of real limits. They need the memory, cpu and pids controllers,
// which the build host does not have: `make vm-test` runs them in a Debian
// VM under `systemd-run -p Delegate=yes` with APPD_CGROUP_TESTS=1, where a
// missing controller fails them.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The test process is appd here: Open moved it into the supervisor leaf of
// its delegated unit.
func TestOpenSelf(t *testing.T) {
	if !vmMode {
		t.Skip("moves the test process into a supervisor leaf: runs only with APPD_CGROUP_TESTS=1 (make vm-test)")
	}
	base := baseDir(t)
	if got, want := cgroupOf(t, os.Getpid()), rel(t, filepath.Join(base, SupervisorLeaf)); got != want {
		t.Fatalf("test process is in %s after Open, want %s", got, want)
	}
	for _, x := range delegateXattrs {
		buf := make([]byte, 16)
		n, err := unix.Getxattr(base, x, buf)
		t.Logf("%s on %s: %q %v", x, base, buf[:max(n, 0)], err)
	}
	tr, err := Open(testLog(t))
	if err != nil {
		t.Fatalf("second Open: %v", err)
	}
	if tr.Path() != base {
		t.Errorf("second Open: Path %s, want %s", tr.Path(), base)
	}
	if got := strings.Join(tr.Controllers(), ","); got != "memory,cpu,pids" {
		t.Errorf("Controllers() = %s, want memory,cpu,pids", got)
	}
	tr.Close()
}

func readTrim(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func TestLimitsWritten(t *testing.T) {
	tr := testTree(t)
	needControllers(t, tr, "memory", "cpu", "pids")
	l, err := tr.NewLeaf("w0", Limits{MemoryMax: 64 << 20, MemoryHigh: 48 << 20, SwapMax: 16 << 20, CPUMax: 0.2, CPUWeight: 50, PidsMax: 64})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Remove()
	for file, want := range map[string]string{
		"memory.max": "67108864", "memory.high": "50331648", "memory.swap.max": "16777216",
		"memory.oom.group": "1", "cpu.max": "20000 100000", "cpu.weight": "50", "pids.max": "64",
	} {
		if got := readTrim(t, filepath.Join(l.Path(), file)); got != want {
			t.Errorf("%s = %q, want %q", file, got, want)
		}
	}
	z, err := tr.NewLeaf("w2", Limits{})
	if err != nil {
		t.Fatal(err)
	}
	defer z.Remove()
	if got := readTrim(t, filepath.Join(z.Path(), "memory.swap.max")); got != "0" {
		t.Errorf("zero Limits: memory.swap.max = %q, want 0 (no swap)", got)
	}
	d, err := tr.NewLeaf("w1", Limits{SwapMax: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Remove()
	for file, want := range map[string]string{"memory.max": "max", "memory.high": "max", "memory.swap.max": "max", "memory.oom.group": "1", "cpu.max": "max 100000", "cpu.weight": "100", "pids.max": "max"} {
		if got := readTrim(t, filepath.Join(d.Path(), file)); got != want {
			t.Errorf("no limits: %s = %q, want %q", file, got, want)
		}
	}
}

// A worker that allocates past memory.max is OOM-killed as a whole
// (memory.oom.group), memory.events counts it, WaitEvents reports it at
// once, and the peak is near the limit.
func TestOOMKill(t *testing.T) {
	tr := testTree(t)
	needControllers(t, tr, "memory")
	const limit = 64 << 20
	l, err := tr.NewLeaf("w0", Limits{MemoryMax: limit})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	events := l.WaitEvents(ctx)
	if ev := <-events; ev.OOMKill != 0 {
		t.Fatalf("fresh leaf reports %+v", ev)
	}
	c := startChild(t, "alloc", l.FD(), "APPD_CGROUP_ALLOC_MIB=512", "APPD_CGROUP_ALLOC_GRANDCHILD=1", "GOGC=off")
	gc, err := strconv.Atoi(c.line(t, 60*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	last := ""
	for l := range c.lines {
		if l == "done" {
			t.Fatal("the child allocated 512 MiB under a 64 MiB memory.max")
		}
		last = l
	}
	if ws := c.wait(t, 120*time.Second); ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child ended with %v, want SIGKILL by the OOM killer", ws)
	}
	var ev Events
	deadline := time.After(60 * time.Second)
	for ev.OOMKill == 0 {
		select {
		case e, ok := <-events:
			if !ok {
				t.Fatal("WaitEvents closed before reporting the OOM kill")
			}
			ev = e
		case <-deadline:
			t.Fatalf("WaitEvents reported no OOM kill in 60s (last %+v)", ev)
		}
	}
	polled, err := l.Events()
	if err != nil || polled.OOMKill < 1 || polled.Max < 1 || polled.OOM < 1 {
		t.Fatalf("Events() = %+v, %v; want oom, oom_kill and max counted", polled, err)
	}
	eventually(t, 60*time.Second, "the grandchild outlived the OOM kill (memory.oom.group)", func() bool { return dead(gc) })
	st, err := l.Stats()
	if err != nil {
		t.Fatal(err)
	}
	// The charge may pass memory.max by a page or so before reclaim fails.
	if st.MemoryPeak < limit*3/4 || st.MemoryPeak > limit+1<<20 {
		t.Errorf("MemoryPeak = %d, want between 3/4 of the limit and the limit %d (+1 MiB)", st.MemoryPeak, limit)
	}
	t.Logf("OOM kill after %q; events %+v; peak %.1f MiB of %d MiB", last, polled, float64(st.MemoryPeak)/(1<<20), limit>>20)
	eventually(t, 60*time.Second, "leaf still populated", func() bool { p, err := l.Populated(); return err == nil && !p })
	if err := l.Remove(); err != nil {
		t.Fatal(err)
	}
	// Removing the leaf ends the watch.
	deadline = time.After(60 * time.Second)
	for open := true; open; {
		select {
		case _, open = <-events:
		case <-deadline:
			t.Fatal("WaitEvents channel still open 60s after Remove")
		}
	}
}

// pids.max contains a fork bomb: fork fails with EAGAIN inside the leaf,
// the leaf never holds more than the limit, and the test process (the
// supervisor) can still fork and kill the bomb.
func TestPidsMaxForkBomb(t *testing.T) {
	tr := testTree(t)
	needControllers(t, tr, "pids")
	const limit = 32
	l, err := tr.NewLeaf("w0", Limits{PidsMax: limit})
	if err != nil {
		t.Fatal(err)
	}
	c := startChild(t, "forkbomb", l.FD(), "GOMAXPROCS=1")
	line := c.line(t, 300*time.Second)
	if !strings.HasPrefix(line, "fork failed") || !strings.Contains(line, fmt.Sprintf(": %d ", int(syscall.EAGAIN))) {
		t.Fatalf("fork bomb reported %q, want a fork failing with EAGAIN", line)
	}
	st, err := l.Stats()
	if err != nil {
		t.Fatal(err)
	}
	pe, _ := readKV(filepath.Join(l.Path(), "pids.events"))
	if st.PidsCurrent > limit || pe["max"] < 1 {
		t.Fatalf("pids.current %d (limit %d), pids.events max %d", st.PidsCurrent, limit, pe["max"])
	}
	t.Logf("bomb: %s; pids.current %d of %d, pids.events max %d", line, st.PidsCurrent, limit, pe["max"])
	// The supervisor is unaffected: it can still start processes.
	ok := startChild(t, "exit0", -1)
	if ws := ok.wait(t, 60*time.Second); ws.ExitStatus() != 0 {
		t.Fatalf("the test process could not run a child beside the bomb: %v", ws)
	}
	if err := l.Kill(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "bomb leaf still populated after Kill", func() bool { p, err := l.Populated(); return err == nil && !p })
	if err := l.Remove(); err != nil {
		t.Fatal(err)
	}
}

// cpuShare runs a spinning child in a leaf with the given limits and returns
// its CPU use over a wall-clock window as a fraction of one CPU, and the
// leaf's nr_throttled.
func cpuShare(t *testing.T, tr *Tree, name string, lim Limits, window time.Duration) (float64, int64) {
	t.Helper()
	l, err := tr.NewLeaf(name, lim)
	if err != nil {
		t.Fatal(err)
	}
	c := startChild(t, "spin", l.FD(), "GOMAXPROCS=2")
	if got := c.line(t, 60*time.Second); got != "spinning" {
		t.Fatalf("spinner said %q", got)
	}
	usage := func() (time.Duration, time.Time) {
		st, err := l.Stats()
		if err != nil {
			t.Fatal(err)
		}
		return st.CPUUsage, time.Now()
	}
	u0, t0 := usage()
	time.Sleep(window) // the measuring window itself, not a synchronisation
	u1, t1 := usage()
	kv, _ := readKV(filepath.Join(l.Path(), "cpu.stat"))
	if err := l.Kill(); err != nil {
		t.Fatal(err)
	}
	c.wait(t, 60*time.Second)
	if err := l.Remove(); err != nil {
		t.Fatal(err)
	}
	return float64(u1-u0) / float64(t1.Sub(t0)), kv["nr_throttled"]
}

// cpu.max 0.2 caps a spinning worker near 20% of a CPU; without it the same
// worker takes far more.
func TestCPUMax(t *testing.T) {
	tr := testTree(t)
	needControllers(t, tr, "cpu")
	capped, throttled := cpuShare(t, tr, "capped", Limits{CPUMax: 0.2}, 3*time.Second)
	free, _ := cpuShare(t, tr, "free", Limits{}, 3*time.Second)
	t.Logf("spinner with cpu.max 0.2: %.3f CPU (throttled %d times); without: %.3f CPU", capped, throttled, free)
	// Generous margins: under emulation the guest is slow and noisy.
	if capped > 0.45 || capped < 0.02 { // a loaded VM once measured 0.351
		t.Errorf("capped spinner used %.3f CPU, want about 0.2", capped)
	}
	if throttled < 1 {
		t.Errorf("cpu.stat nr_throttled = %d under cpu.max 0.2", throttled)
	}
	if free < 0.5 || free < 2*capped {
		t.Errorf("uncapped spinner used only %.3f CPU (capped %.3f): the comparison proves nothing", free, capped)
	}
}

// TestTreeMemoryAndPressure: a tree's own memory.current/memory.max and
// memory.pressure can be read, as autoscaling and surge read them (the
// supervisor's tests make the pressure rise).
func TestTreeMemoryAndPressure(t *testing.T) {
	tr := testTree(t)
	needControllers(t, tr, "memory")
	p, ok, err := tr.MemoryPressure()
	if err != nil || !ok {
		t.Fatalf("memory.pressure of the tree: %v ok=%v", err, ok)
	}
	t.Logf("pressure before: %+v", p)
	cur, limit, ok, err := tr.Memory()
	t.Logf("memory.current %d, memory.max %d, ok %v, err %v", cur, limit, ok, err)
	if err != nil {
		t.Fatal(err)
	}
}

func TestReadPressure(t *testing.T) {
	f := filepath.Join(t.TempDir(), "memory.pressure")
	os.WriteFile(f, []byte("some avg10=12.50 avg60=3.00 avg300=0.50 total=123456\nfull avg10=4.25 avg60=1.00 avg300=0.10 total=2345\n"), 0o644)
	p, ok, err := ReadPressure(f)
	if err != nil || !ok || p.Some10 != 12.5 || p.Some60 != 3 || p.Full10 != 4.25 {
		t.Errorf("%+v %v %v", p, ok, err)
	}
	if _, ok, err := ReadPressure(filepath.Join(t.TempDir(), "none")); ok || err != nil {
		t.Errorf("missing file: ok=%v err=%v", ok, err)
	}
}
