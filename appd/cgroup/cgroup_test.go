package cgroup

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// With APPD_CGROUP_TESTS=1 (make vm-test: a delegated tree with memory, cpu
// and pids) the tests that need controllers must run: missing controllers
// fail them instead of skipping.
var vmMode = os.Getenv("APPD_CGROUP_TESTS") == "1"

var (
	sharedOnce sync.Once
	sharedBase string
	sharedErr  error
	dirSeq     atomic.Int64
)

func testLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, nil))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// baseDir is where tests create their own cgroups. In VM mode it is the
// tree Open makes of the test process's delegated unit (which moves the
// test process into its supervisor leaf, as appd does); otherwise the test
// process's own cgroup (on the build host, the root of the cgroup2 mount).
func baseDir(t *testing.T) string {
	t.Helper()
	sharedOnce.Do(func() {
		if vmMode {
			tr, err := Open(nil)
			if err != nil {
				sharedErr = fmt.Errorf("APPD_CGROUP_TESTS=1 but Open failed: %w", err)
				return
			}
			sharedBase = tr.Path()
			return
		}
		mnt, rel, err := ownPath()
		if err != nil {
			sharedErr = err
			return
		}
		sharedBase = filepath.Join(mnt, rel)
	})
	if sharedErr != nil {
		if vmMode {
			t.Fatal(sharedErr)
		}
		t.Skipf("no cgroup v2 here: %v", sharedErr)
	}
	return sharedBase
}

// testDir creates an empty cgroup owned by the test, removed (with anything
// in it killed) when the test ends.
func testDir(t *testing.T) string {
	t.Helper()
	base := baseDir(t)
	dir := filepath.Join(base, fmt.Sprintf("appd-cgtest-%d-%d", os.Getpid(), dirSeq.Add(1)))
	if err := os.Mkdir(dir, 0o755); err != nil {
		if vmMode {
			t.Fatalf("creating a test cgroup: %v", err)
		}
		t.Skipf("cannot create a test cgroup under %s (needs root on a cgroup2 mount): %v", base, err)
	}
	t.Cleanup(func() { removeAll(t, dir) })
	return dir
}

// removeAll kills everything under dir and removes it, leaves first.
func removeAll(t *testing.T, dir string) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.IsDir() {
			removeAll(t, filepath.Join(dir, e.Name()))
		}
	}
	_ = writeFile(filepath.Join(dir, "cgroup.kill"), "1")
	l := &Leaf{dir: dir, fd: -1}
	if err := l.Remove(); err != nil {
		t.Errorf("cleanup: %v", err)
	}
}

// testTree is a Tree over a fresh test cgroup, with the controllers its
// parent offers enabled.
func testTree(t *testing.T) *Tree {
	t.Helper()
	tr, err := newTree(testLog(t), testDir(t))
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// needControllers skips (or, in VM mode, fails) a test whose controllers
// the tree does not have.
func needControllers(t *testing.T, tr *Tree, ctl ...string) {
	t.Helper()
	var missing []string
	for _, c := range ctl {
		if !tr.has(c) {
			missing = append(missing, c)
		}
	}
	if len(missing) == 0 {
		return
	}
	avail, _ := os.ReadFile(filepath.Join(filepath.Dir(tr.Path()), "cgroup.subtree_control"))
	msg := fmt.Sprintf("needs the %s cgroup controller(s); %s offers %q (run make vm-test)",
		strings.Join(missing, ","), filepath.Dir(tr.Path()), strings.TrimSpace(string(avail)))
	if vmMode {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// child starts the test binary in a child role, born in the cgroup whose
// directory fd is cgfd (none if -1). Its stdout is returned line by line.
type child struct {
	cmd   *exec.Cmd
	lines chan string
	stdin io.WriteCloser
	done  chan struct{}
	err   error // of Wait, valid after done
}

func startChild(t *testing.T, role string, cgfd int, env ...string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	// DelegatedEnv only where a test sets it (later entries win).
	cmd.Env = append(append(os.Environ(), childEnv+"="+role, DelegatedEnv+"="), env...)
	cmd.Stderr = tWriter{t}
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: cgfd >= 0, CgroupFD: cgfd}
	if slices.Contains(env, "APPD_CGROUP_RO=1") {
		// A private mount namespace for the read-only remount.
		cmd.SysProcAttr.Unshareflags = syscall.CLONE_NEWNS
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting child %s: %v", role, err)
	}
	c := &child{cmd: cmd, lines: make(chan string, 1024), stdin: stdin, done: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		close(c.lines)
		c.err = cmd.Wait()
		close(c.done)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		stdin.Close()
		<-c.done
	})
	return c
}

// line waits for the child's next stdout line.
func (c *child) line(t *testing.T, timeout time.Duration) string {
	t.Helper()
	select {
	case l, ok := <-c.lines:
		if !ok {
			<-c.done
			t.Fatalf("child exited before printing a line: %v", c.err)
		}
		return l
	case <-time.After(timeout):
		t.Fatalf("child printed nothing for %v", timeout)
	}
	return ""
}

// wait waits for the child to exit and returns its wait status.
func (c *child) wait(t *testing.T, timeout time.Duration) syscall.WaitStatus {
	t.Helper()
	select {
	case <-c.done:
	case <-time.After(timeout):
		t.Fatalf("child %d still running after %v", c.cmd.Process.Pid, timeout)
	}
	return c.cmd.ProcessState.Sys().(syscall.WaitStatus)
}

// cgroupOf is the unified cgroup of pid, from /proc/PID/cgroup.
func cgroupOf(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if c, ok := strings.CutPrefix(line, "0::"); ok {
			return c
		}
	}
	t.Fatalf("pid %d has no cgroup v2 line: %q", pid, b)
	return ""
}

// rel is dir relative to the cgroup2 mount, as /proc/PID/cgroup shows it.
func rel(t *testing.T, dir string) string {
	t.Helper()
	mnt, _, err := cgroup2Mount()
	if err != nil {
		t.Fatal(err)
	}
	r, err := filepath.Rel(mnt, dir)
	if err != nil {
		t.Fatal(err)
	}
	return "/" + r
}

// dead says whether pid is gone or a zombie waiting for its reaper.
func dead(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	_, after, _ := strings.Cut(string(b), ") ")
	return strings.HasPrefix(after, "Z") || strings.HasPrefix(after, "X")
}

// eventually polls cond (external kernel state) until it holds or the
// deadline passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestOpenRootCgroupRefused(t *testing.T) {
	_, rel, err := ownPath()
	if err != nil {
		t.Skipf("no cgroup v2 here: %v", err)
	}
	if rel != "/" {
		t.Skipf("the test process is in %s, not the root cgroup", rel)
	}
	_, err = Open(testLog(t))
	if !errors.Is(err, ErrNotDelegated) || !strings.Contains(err.Error(), "root cgroup") || !strings.Contains(err.Error(), "Delegate=yes") {
		t.Fatalf("Open in the root cgroup: got %v, want ErrNotDelegated naming the root cgroup and Delegate=yes", err)
	}
}

// runOpenChild starts an "open" child born in dir and returns its report
// and the pid of the helper it started before calling Open.
func runOpenChild(t *testing.T, dir string, env ...string) (*child, openReport, int) {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	c := startChild(t, "open", fd, env...)
	var r openReport
	if err := json.Unmarshal([]byte(c.line(t, 30*time.Second)), &r); err != nil {
		t.Fatal(err)
	}
	helper, err := strconv.Atoi(c.line(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return c, r, helper
}

func TestOpenNotDelegated(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("not root: every cgroup this user can create is its own, so delegated to it")
	}
	dir := testDir(t) // writable by us (root) but not marked delegated
	_, r, _ := runOpenChild(t, dir)
	if !r.NotDelegated || !strings.Contains(r.Err, "Delegate=yes") || !strings.Contains(r.Err, dir) {
		t.Fatalf("Open in an undelegated cgroup: %+v; want ErrNotDelegated naming %s and Delegate=yes", r, dir)
	}
	if _, err := os.Stat(filepath.Join(dir, SupervisorLeaf)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a refused Open left a supervisor leaf behind: %v", err)
	}
	// A unit on systemd < 251 vouches for its Delegate=yes itself.
	_, r, _ = runOpenChild(t, dir, DelegatedEnv+"=1")
	if r.Err != "" || r.Path != dir {
		t.Fatalf("Open with %s=1: %+v", DelegatedEnv, r)
	}
}

// ProtectControlGroups=yes in a unit with Delegate=yes: say so.
func TestOpenReadOnlyCgroupfs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for a private mount namespace")
	}
	dir := testDir(t)
	if err := unix.Setxattr(dir, "trusted.delegate", []byte("1"), 0); err != nil {
		t.Skipf("cannot mark %s delegated: %v", dir, err)
	}
	_, r, _ := runOpenChild(t, dir, "APPD_CGROUP_RO=1")
	if !r.NotDelegated || !strings.Contains(r.Err, "ProtectControlGroups") {
		t.Fatalf("Open on a read-only cgroupfs: %+v; want ErrNotDelegated naming ProtectControlGroups", r)
	}
}

func TestOpenDelegated(t *testing.T) {
	for _, x := range delegateXattrs {
		t.Run(x, func(t *testing.T) {
			dir := testDir(t)
			if err := unix.Setxattr(dir, x, []byte("1"), 0); err != nil {
				t.Skipf("cannot mark %s delegated with %s: %v", dir, x, err)
			}
			c, r, helper := runOpenChild(t, dir)
			if r.Err != "" {
				t.Fatalf("Open in a delegated cgroup: %s", r.Err)
			}
			sup := filepath.Join(dir, SupervisorLeaf)
			if r.Path != dir || r.Path2 != dir {
				t.Errorf("Path = %q, second Open %q; want %s", r.Path, r.Path2, dir)
			}
			if want := rel(t, sup); r.Cgroup != want {
				t.Errorf("child's cgroup after Open = %q, want %q", r.Cgroup, want)
			}
			// Every process of the tree's root, and every thread, moved.
			if pids, _ := readPids(filepath.Join(dir, "cgroup.procs")); len(pids) != 0 {
				t.Errorf("processes left in the tree's root: %v", pids)
			}
			pid := c.cmd.Process.Pid
			if got := cgroupOf(t, helper); got != rel(t, sup) {
				t.Errorf("helper process %d is in %s, want %s", helper, got, rel(t, sup))
			}
			threads, _ := readPids(filepath.Join(sup, "cgroup.threads"))
			tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
			for _, task := range tasks {
				tid, _ := strconv.Atoi(task.Name())
				if !slices.Contains(threads, tid) {
					t.Errorf("thread %d of the child is not in %s (threads there: %v)", tid, sup, threads)
				}
			}
			// The controllers the parent offers are enabled for the leaves.
			avail, _ := readFields(filepath.Join(dir, "cgroup.controllers"))
			var want []string
			for _, w := range wanted {
				if slices.Contains(avail, w) {
					want = append(want, w)
				}
			}
			if !slices.Equal(r.Controllers, want) {
				t.Errorf("Controllers() = %v, want %v", r.Controllers, want)
			}
			if vmMode && len(want) != len(wanted) {
				t.Errorf("VM mode: the delegated test cgroup offers only %v", avail)
			}
			t.Logf("Open: tree %s, controllers %v, %d threads moved", r.Path, r.Controllers, len(tasks))
		})
	}
}

func TestLeafPlacementAndKill(t *testing.T) {
	tr := testTree(t)
	l, err := tr.NewLeaf("w0", Limits{})
	if err != nil {
		t.Fatal(err)
	}
	c := startChild(t, "tree", l.FD())
	gc, err := strconv.Atoi(c.line(t, 30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	pid := c.cmd.Process.Pid
	for _, p := range []int{pid, gc} {
		if got := cgroupOf(t, p); got != rel(t, l.Path()) {
			t.Fatalf("pid %d is in %s, want %s", p, got, rel(t, l.Path()))
		}
	}
	if sid, _ := unix.Getsid(gc); sid != gc {
		t.Fatalf("grandchild %d is not a session leader (sid %d): the test would not prove anything", gc, sid)
	}
	pids, err := l.Pids()
	if err != nil || !slices.Contains(pids, pid) || !slices.Contains(pids, gc) {
		t.Fatalf("Pids() = %v, %v; want %d and %d", pids, err, pid, gc)
	}
	if pop, err := l.Populated(); err != nil || !pop {
		t.Fatalf("Populated() = %v, %v", pop, err)
	}
	st, err := l.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.CPUUsage <= 0 {
		t.Errorf("Stats().CPUUsage = %v for a leaf that ran two processes", st.CPUUsage)
	}
	if !tr.has("memory") && st.MemoryCurrent != 0 {
		t.Errorf("no memory controller but MemoryCurrent = %d", st.MemoryCurrent)
	}
	if _, err := l.Events(); err != nil {
		t.Errorf("Events() without memory controller: %v", err)
	}

	if err := l.Kill(); err != nil {
		t.Fatal(err)
	}
	if ws := c.wait(t, 30*time.Second); ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child ended with %v, want SIGKILL", ws)
	}
	eventually(t, 30*time.Second, fmt.Sprintf("grandchild %d (own session) survived Kill", gc), func() bool { return dead(gc) })
	eventually(t, 30*time.Second, "leaf still populated after Kill", func() bool {
		pop, err := l.Populated()
		return err == nil && !pop
	})
	if err := l.Remove(); err != nil {
		t.Fatal(err)
	}
	if l.FD() != -1 {
		t.Errorf("FD() = %d after Remove", l.FD())
	}
	if _, err := os.Stat(l.Path()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("leaf still there after Remove: %v", err)
	}
	if err := l.Remove(); err != nil {
		t.Errorf("second Remove: %v", err)
	}
	if err := l.Kill(); err != nil {
		t.Errorf("Kill of a removed leaf: %v", err)
	}
}

// The fallback for kernels without cgroup.kill.
func TestKillBySignal(t *testing.T) {
	tr := testTree(t)
	l, err := tr.NewLeaf("w0", Limits{})
	if err != nil {
		t.Fatal(err)
	}
	c := startChild(t, "tree", l.FD())
	gc, err := strconv.Atoi(c.line(t, 30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.killBySignal(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	if ws := c.wait(t, 30*time.Second); ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child ended with %v, want SIGKILL", ws)
	}
	eventually(t, 30*time.Second, "grandchild survived", func() bool { return dead(gc) })
	if err := l.Remove(); err != nil {
		t.Fatal(err)
	}
}

func TestRemoveRefusesLiveLeaf(t *testing.T) {
	tr := testTree(t)
	l, err := tr.NewLeaf("w0", Limits{})
	if err != nil {
		t.Fatal(err)
	}
	c := startChild(t, "tree", l.FD())
	c.line(t, 30*time.Second)
	// A stale leaf with live processes is not silently reused.
	if _, err := tr.NewLeaf("w0", Limits{}); err == nil || !strings.Contains(err.Error(), "stale") {
		t.Fatalf("NewLeaf over a live leaf: %v, want an error about the stale leaf", err)
	}
	start := time.Now()
	err = l.removeWithin(300 * time.Millisecond)
	if err == nil || !errors.Is(err, unix.EBUSY) {
		t.Fatalf("Remove of a live leaf: %v, want EBUSY", err)
	}
	t.Logf("Remove gave up after %v: %v", time.Since(start).Round(time.Millisecond), err)
	if err := l.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := l.Remove(); err != nil {
		t.Fatal(err)
	}
}

func TestNewLeafReplacesStaleEmptyLeaf(t *testing.T) {
	tr := testTree(t)
	if err := os.Mkdir(filepath.Join(tr.Path(), "w3"), 0o755); err != nil {
		t.Fatal(err)
	}
	l, err := tr.NewLeaf("w3", Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Remove(); err != nil {
		t.Fatal(err)
	}
}

func TestNewLeafErrors(t *testing.T) {
	tr := testTree(t)
	for _, name := range []string{"", ".", "..", "a/b", SupervisorLeaf, "cgroup.procs", "memory.max"} {
		if l, err := tr.NewLeaf(name, Limits{}); err == nil {
			l.Remove()
			t.Errorf("NewLeaf(%q) succeeded", name)
		}
	}
	bad := []Limits{{MemoryMax: -1}, {SwapMax: -2}, {CPUMax: -0.5}, {CPUWeight: 10001}, {PidsMax: -3}}
	for _, lim := range bad {
		if l, err := tr.NewLeaf("bad", lim); err == nil {
			l.Remove()
			t.Errorf("NewLeaf with %+v succeeded", lim)
		}
	}
	// A limit whose controller is missing names the controller.
	cases := []struct {
		lim Limits
		ctl string
	}{
		{Limits{MemoryMax: 64 << 20}, "memory"},
		{Limits{MemoryHigh: 64 << 20}, "memory"},
		{Limits{SwapMax: 1 << 20}, "memory"},
		{Limits{CPUMax: 0.5}, "cpu"},
		{Limits{CPUWeight: 50}, "cpu"},
		{Limits{PidsMax: 10}, "pids"},
	}
	for _, c := range cases {
		if tr.has(c.ctl) {
			continue
		}
		_, err := tr.NewLeaf("lim", c.lim)
		if err == nil || !strings.Contains(err.Error(), "the "+c.ctl+" cgroup controller") {
			t.Errorf("NewLeaf with %+v and no %s controller: %v", c.lim, c.ctl, err)
		}
	}
	if _, err := os.Stat(filepath.Join(tr.Path(), "lim")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused NewLeaf left its directory: %v", err)
	}
}

func TestLimitFiles(t *testing.T) {
	tr := &Tree{dir: "/x", controllers: wanted}
	got, err := tr.limitFiles(Limits{MemoryMax: 512 << 20, MemoryHigh: 400 << 20, SwapMax: 0, CPUMax: 0.2, CPUWeight: 50, PidsMax: 128})
	if err != nil {
		t.Fatal(err)
	}
	want := [][2]string{
		{"memory.high", "419430400"}, {"memory.max", "536870912"}, {"memory.swap.max", "0"}, {"memory.oom.group", "1"},
		{"cpu.max", "20000 100000"}, {"cpu.weight", "50"}, {"pids.max", "128"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("limitFiles = %v\nwant %v", got, want)
	}
	for frac, want := range map[float64]string{0.0001: "1000 100000", 1: "100000 100000", 2.5: "250000 100000"} {
		got, err := tr.limitFiles(Limits{CPUMax: frac})
		if err != nil || !slices.Contains(got, [2]string{"cpu.max", want}) {
			t.Errorf("CPUMax %v: %v %v, want cpu.max %q", frac, got, err, want)
		}
	}
	if got, _ := (&Tree{dir: "/x"}).limitFiles(Limits{}); len(got) != 0 {
		t.Errorf("zero Limits without controllers: %v", got)
	}
	got, _ = tr.limitFiles(Limits{SwapMax: 1 << 20})
	if !slices.Contains(got, [2]string{"memory.swap.max", "1048576"}) {
		t.Errorf("SwapMax: %v", got)
	}
	got, _ = tr.limitFiles(Limits{SwapMax: -1})
	if slices.ContainsFunc(got, func(kv [2]string) bool { return kv[0] == "memory.swap.max" }) {
		t.Errorf("SwapMax -1 wrote memory.swap.max: %v", got)
	}
}

func TestUnescapeMount(t *testing.T) {
	for in, want := range map[string]string{`/sys/fs/cgroup`: "/sys/fs/cgroup", `/a\040b`: "/a b", `/x\134`: `/x\`, `/t\`: `/t\`} {
		if got := unescapeMount(in); got != want {
			t.Errorf("unescapeMount(%q) = %q, want %q", in, got, want)
		}
	}
}

// Without the memory controller there is no memory.events to watch: the
// channel closes and the caller polls.
func TestWaitEventsWithoutMemory(t *testing.T) {
	tr := testTree(t)
	if tr.has("memory") {
		t.Skip("memory controller present: covered by TestOOMKill")
	}
	l, err := tr.NewLeaf("w0", Limits{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Remove()
	select {
	case _, ok := <-l.WaitEvents(t.Context()):
		if ok {
			t.Fatal("WaitEvents sent events for a leaf without memory.events")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("WaitEvents channel neither sent nor closed")
	}
}

func TestAddStatsAfterRemoveAndClose(t *testing.T) {
	tr := testTree(t)
	l, err := tr.NewLeaf("w0", Limits{})
	if err != nil {
		t.Fatal(err)
	}
	c := startChild(t, "sleep", -1)
	pid := c.cmd.Process.Pid
	if err := l.Add(pid); err != nil {
		t.Fatal(err)
	}
	if got := cgroupOf(t, pid); got != rel(t, l.Path()) {
		t.Fatalf("after Add, pid %d is in %s, want %s", pid, got, rel(t, l.Path()))
	}
	if err := l.Kill(); err != nil {
		t.Fatal(err)
	}
	c.wait(t, 30*time.Second)
	if err := l.Remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Stats(); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Stats of a removed leaf: %v, want ErrNotExist", err)
	}
	if err := l.Add(pid); err == nil {
		t.Error("Add to a removed leaf succeeded")
	}
	tr.Close()
	if _, err := tr.NewLeaf("w1", Limits{}); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("NewLeaf on a closed tree: %v", err)
	}
}

// Stats and Events are polled for every worker every second.
func BenchmarkStats(b *testing.B) {
	l := benchLeaf(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := l.Stats(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEvents(b *testing.B) {
	l := benchLeaf(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := l.Events(); err != nil {
			b.Fatal(err)
		}
	}
}

func benchLeaf(b *testing.B) *Leaf {
	mnt, rel, err := ownPath()
	if err != nil {
		b.Skip(err)
	}
	dir := filepath.Join(mnt, rel, fmt.Sprintf("appd-cgbench-%d", os.Getpid()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		b.Skipf("cannot create a cgroup for the benchmark: %v", err)
	}
	tr := &Tree{log: slog.New(slog.DiscardHandler), dir: dir}
	l, err := tr.NewLeaf("w0", Limits{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		l.Remove()
		unix.Rmdir(dir)
	})
	return l
}

// Stats parses the interface files; on kernels without memory.peak the
// highest memory.current seen stands in. Plain files in a directory laid
// out like a cgroup exercise the parsing and the fallback.
func TestStatsFiles(t *testing.T) {
	dir := t.TempDir()
	put := func(name, v string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	put("cpu.stat", "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\nnr_throttled 3\n")
	put("memory.current", "1000\n")
	put("pids.current", "7\n")
	put("memory.events", "low 1\nhigh 2\nmax 3\noom 4\noom_kill 5\noom_group_kill 1\n")
	l := &Leaf{dir: dir, fd: -1}
	st, err := l.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if want := (Stats{MemoryCurrent: 1000, MemoryPeak: 1000, CPUUsage: 2500 * time.Millisecond, PidsCurrent: 7}); st != want {
		t.Errorf("Stats() = %+v, want %+v", st, want)
	}
	put("memory.current", "400\n")
	if st, _ = l.Stats(); st.MemoryPeak != 1000 || st.MemoryCurrent != 400 {
		t.Errorf("without memory.peak: %+v, want the highest current seen (1000) as peak", st)
	}
	put("memory.peak", "4096\n")
	if st, _ = l.Stats(); st.MemoryPeak != 4096 {
		t.Errorf("with memory.peak: %+v", st)
	}
	ev, err := l.Events()
	if want := (Events{Low: 1, High: 2, Max: 3, OOM: 4, OOMKill: 5}); err != nil || ev != want {
		t.Errorf("Events() = %+v, %v; want %+v", ev, err, want)
	}
	put("memory.current", "junk\n")
	if _, err := l.Stats(); err == nil {
		t.Error("Stats accepted a malformed memory.current")
	}
}
