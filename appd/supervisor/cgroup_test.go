package supervisor

import (
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgeapp/edgeapp/appd/cgroup"
	"github.com/edgeapp/edgeapp/internal/logging"
	"golang.org/x/sys/unix"
)

// delegatedTree opens the test process's delegated cgroup v2 tree (moving
// the test process into its supervisor leaf, as appd does) or skips: these
// tests run in the VM (`make vm-test`, under systemd-run -p Delegate=yes).
func delegatedTree(t *testing.T, controllers ...string) *cgroup.Tree {
	t.Helper()
	tree, err := cgroup.Open(logging.New(testLogWriter{t}, logging.Options{Level: slog.LevelInfo}))
	vm := os.Getenv("APPD_CGROUP_TESTS") == "1" // make vm-test: a skip would hide a failure
	if err != nil && vm {
		t.Fatalf("APPD_CGROUP_TESTS=1 but no delegated cgroup tree: %v", err)
	}
	if err != nil {
		t.Skipf("SKIPPED: no delegated cgroup v2 tree here (%v); cgroup limits are tested in the VM: make vm-test", err)
	}
	for _, c := range controllers {
		if !slices.Contains(tree.Controllers(), c) {
			if vm {
				t.Fatalf("APPD_CGROUP_TESTS=1 but the tree %s lacks the %s controller (has %v)", tree.Path(), c, tree.Controllers())
			}
			t.Skipf("SKIPPED: the delegated tree %s lacks the %s controller (has %v); run make vm-test", tree.Path(), c, tree.Controllers())
		}
	}
	return tree
}

func TestCgroupOOMKillIsLoggedAndReplaced(t *testing.T) {
	tree := delegatedTree(t, "memory")
	h := start(t, conf(t, "[workers]\ncount = 2\n[limits]\nmemory_max = \"64MiB\"\nswap_max = 0\n"), withTree(tree))
	st := h.waitFor("2 ready", 60*time.Second, allReady(2, 1))
	before := pidsOf(st)
	h.client.Timeout = 10 * time.Second
	h.get("/leak?mb=200") // the worker that takes it dies mid-request
	st = h.waitFor("the OOM-killed worker replaced", 60*time.Second, func(st Status) bool {
		for _, w := range st.Slots {
			if w.Restarts == 1 && strings.Contains(w.LastExit, "OOM-killed") && w.PID != before[w.Slot] && w.State == "ready" {
				return st.Ready == 2
			}
		}
		return false
	})
	if !strings.Contains(h.logs.String(), "worker killed by the kernel's OOM killer") || !strings.Contains(h.logs.String(), "memory_max=64.0MiB") {
		t.Errorf("OOM kill not logged with the limit:\n%s", h.logs.String())
	}
	for _, w := range st.Slots {
		t.Logf("slot %+v", w)
	}
	if body, err := h.get("/"); err != nil {
		t.Errorf("not serving after the OOM kill: %q %v", body, err)
	}
}

func TestCgroupPidsMaxStopsForkBomb(t *testing.T) {
	tree := delegatedTree(t, "pids")
	h := start(t, conf(t, "environment = { TW_FORK_BOMB = \"200\" }\n[workers]\ncount = 1\n[limits]\npids_max = 32\n"), withTree(tree))
	h.waitFor("1 ready", 60*time.Second, allReady(1, 1))
	re := regexp.MustCompile(`fork bomb: started (\d+) of 200`)
	var started int
	deadline := time.Now().Add(30 * time.Second)
	for {
		if m := re.FindStringSubmatch(h.out.String()); m != nil {
			fmt.Sscan(m[1], &started)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no fork bomb report:\n%s", h.out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if started >= 32 {
		t.Errorf("pids_max 32 let %d children start", started)
	}
	st := h.waitFor("pids sampled", 10*time.Second, func(st Status) bool { return len(st.Slots) == 1 && st.Slots[0].Pids > 0 })
	if st.Slots[0].Pids > 32 {
		t.Errorf("%d pids in the leaf", st.Slots[0].Pids)
	}
	if _, err := h.get("/"); err != nil {
		t.Errorf("worker not serving: %v", err)
	}
}

func TestCgroupCPUMaxCapsSpinningWorker(t *testing.T) {
	tree := delegatedTree(t, "cpu")
	h := start(t, conf(t, "environment = { TW_SPIN = \"1\" }\n[workers]\ncount = 1\n[limits]\ncpu_max = \"20%\"\n"), withTree(tree))
	h.waitFor("1 ready", 60*time.Second, allReady(1, 1))
	first := h.waitFor("cpu sampled", 10*time.Second, func(st Status) bool { return len(st.Slots) == 1 && st.Slots[0].CPU > 0 })
	time.Sleep(3 * time.Second)
	last := h.status()
	used := last.Slots[0].CPU - first.Slots[0].CPU
	wall := last.Slots[0].Uptime - first.Slots[0].Uptime
	t.Logf("spinning worker used %.2fs CPU in %.2fs with cpu_max 20%%", used, wall)
	if wall <= 0 || used/wall > 0.5 { // uncapped, the spinning goroutine takes a whole CPU
		t.Errorf("cpu_max 20%% not enforced: %.2fs CPU in %.2fs", used, wall)
	}
}

func TestCgroupMaxMemoryRecyclesFromMemoryCurrent(t *testing.T) {
	tree := delegatedTree(t, "memory")
	h := start(t, conf(t, "[workers]\ncount = 2\nmax_memory = \"48MiB\"\n[limits]\nmemory_max = \"256MiB\"\n"), withTree(tree))
	st := h.waitFor("2 ready", 60*time.Second, allReady(2, 1))
	before := pidsOf(st)
	body, err := h.get("/leak?mb=80")
	if err != nil {
		t.Fatal(err)
	}
	var leaker int
	fmt.Sscanf(body, "pid=%d", &leaker)
	st = h.waitFor("leaker recycled", 60*time.Second, func(st Status) bool {
		for _, w := range st.Slots {
			if w.PID == leaker {
				return false
			}
		}
		return st.Ready == 2 && len(st.Slots) == 2
	})
	for _, w := range st.Slots {
		if before[w.Slot] == leaker && (w.Restarts != 0 || !strings.Contains(w.LastExit, "max_memory")) {
			t.Errorf("slot %+v", w)
		}
	}
}

func TestCgroupLeafPerWorkerKilledAndRemoved(t *testing.T) {
	tree := delegatedTree(t)
	h := start(t, conf(t, "environment = { TW_CHILD = \"1\" }\n[workers]\ncount = 1\n"), withTree(tree))
	st := h.waitFor("1 ready", 60*time.Second, allReady(1, 1))
	if st.Cgroup != tree.Path() {
		t.Errorf("status cgroup %q", st.Cgroup)
	}
	pid := pidsOf(st)[0]
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	leaf := strings.TrimSpace(string(b)[strings.LastIndex(string(b), ":")+1:])
	if !strings.HasPrefix(filepath.Base(leaf), "w0-") {
		t.Fatalf("worker is in cgroup %q, not a worker leaf", leaf)
	}
	var child int
	for deadline := time.Now().Add(10 * time.Second); child == 0; time.Sleep(10 * time.Millisecond) {
		if m := regexp.MustCompile(`grandchild pid=(\d+)`).FindStringSubmatch(h.out.String()); m != nil {
			fmt.Sscan(m[1], &child)
		}
		if time.Now().After(deadline) {
			t.Fatal("no grandchild")
		}
	}
	if err := syscallKill(pid); err != nil {
		t.Fatal(err)
	}
	h.waitFor("replaced", 60*time.Second, func(st Status) bool { p := pidsOf(st)[0]; return p != 0 && p != pid && st.Ready == 1 })
	for deadline := time.Now().Add(10 * time.Second); alive(child); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("grandchild %d survived its worker", child)
		}
	}
	dir := filepath.Join(tree.Path(), filepath.Base(leaf))
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(dir); os.IsNotExist(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("leaf %s not removed", dir)
		}
	}
}

// TestCgroupLeavesOnThisHost runs the leaf test in a child process placed
// in a fresh cgroup marked delegated, under whatever cgroup2 mount this
// host has: without controllers no limits apply, but placement at clone
// time, cgroup.kill and leaf removal are real.
func TestCgroupLeavesOnThisHost(t *testing.T) {
	if os.Getenv("APPD_SUPERVISOR_CGROUP_CHILD") == "1" {
		t.Skip("already the child")
	}
	if os.Getenv("APPD_CGROUP_TESTS") == "1" {
		t.Skip("in the VM the tests above run in a real delegated tree")
	}
	mnt := ""
	for _, m := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"} {
		var st unix.Statfs_t
		if unix.Statfs(m, &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
			mnt = m
			break
		}
	}
	if mnt == "" || os.Geteuid() != 0 {
		t.Skip("SKIPPED: no cgroup2 mount or not root")
	}
	dir := filepath.Join(mnt, fmt.Sprintf("appd-suptest-%d", os.Getpid()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Skipf("SKIPPED: cannot create a cgroup under %s: %v", mnt, err)
	}
	defer removeCgroup(t, dir)
	if err := unix.Setxattr(dir, "trusted.delegate", []byte("1"), 0); err != nil {
		t.Skipf("SKIPPED: cannot mark %s delegated: %v", dir, err)
	}
	fd, err := unix.Open(dir, unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	cmd := exec.Command(os.Args[0], "-test.run=^(TestCgroupLeafPerWorkerKilledAndRemoved|TestCgroupReloadAndDrainThroughLeaves|TestCgroupZygoteForksInOwnLeaves)$", "-test.v")
	cmd.Env = append(os.Environ(), "APPD_SUPERVISOR_CGROUP_CHILD=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
	out, err := cmd.CombinedOutput()
	t.Logf("child:\n%s", out)
	if err != nil {
		t.Fatalf("leaf test in a delegated cgroup failed: %v", err)
	}
	for _, name := range []string{"TestCgroupLeafPerWorkerKilledAndRemoved", "TestCgroupReloadAndDrainThroughLeaves", "TestCgroupZygoteForksInOwnLeaves"} {
		if !strings.Contains(string(out), "--- PASS: "+name) {
			t.Errorf("%s did not pass in the child", name)
		}
	}
}

// removeCgroup kills and removes a test cgroup, leaves first.
func removeCgroup(t *testing.T, dir string) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.IsDir() {
			removeCgroup(t, filepath.Join(dir, e.Name()))
		}
	}
	os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		err := unix.Rmdir(dir)
		if err == nil || os.IsNotExist(err) {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("removing test cgroup %s: %v", dir, err)
			return
		}
	}
}

// TestCgroupReloadAndDrainThroughLeaves: reloads under load with every
// worker in its own leaf, then a stop whose workers ignore SIGTERM and
// leave grandchildren: cgroup.kill ends them all and every leaf goes.
func TestCgroupReloadAndDrainThroughLeaves(t *testing.T) {
	tree := delegatedTree(t)
	text := func(env string) string {
		return conf(t, "environment = { TW_CHILD = \"1\""+env+" }\n[workers]\ncount = 2\ngraceful_timeout = \"1s\"\n")
	}
	h := start(t, text(""), withTree(tree))
	h.waitFor("2 ready", 60*time.Second, allReady(2, 1))
	stop := make(chan struct{})
	res, wg := h.load(4, 1000000, stop)
	for gen := 2; gen <= 4; gen++ {
		env := ""
		if gen == 4 {
			env = ", TW_IGNORE_TERM = \"1\""
		}
		h.reload(text(env))
		h.waitFor(fmt.Sprintf("gen %d", gen), 60*time.Second, allReady(2, gen))
	}
	close(stop)
	wg.Wait()
	if res.failed.Load() != 0 {
		t.Errorf("%d of %d requests failed during reloads: %v", res.failed.Load(), res.total.Load(), res.errs)
	}
	var children []int
	for _, m := range regexp.MustCompile(`grandchild pid=(\d+)`).FindAllStringSubmatch(h.out.String(), -1) {
		var p int
		fmt.Sscan(m[1], &p)
		children = append(children, p)
	}
	if len(children) < 8 {
		t.Fatalf("%d grandchildren reported", len(children))
	}
	h.sigs <- syscall.SIGTERM
	if err := h.wait(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	// cgroup.kill delivers SIGKILL asynchronously: on a loaded machine a
	// grandchild may still run for a moment after appd is gone.
	deadline := time.Now().Add(10 * time.Second)
	for _, p := range children {
		for alive(p) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if alive(p) {
			t.Errorf("grandchild %d survived", p)
		}
	}
	entries, _ := os.ReadDir(tree.Path())
	for _, e := range entries {
		if e.IsDir() && strings.HasPrefix(e.Name(), "w") {
			for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
				if _, err := os.Stat(filepath.Join(tree.Path(), e.Name())); os.IsNotExist(err) {
					break
				}
				if time.Now().After(deadline) {
					t.Errorf("leaf %s left behind", e.Name())
					break
				}
			}
		}
	}
}

// cgroupOf is the cgroup v2 path of pid, as /proc/PID/cgroup gives it.
func cgroupOf(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b)[strings.LastIndex(string(b), ":")+1:])
}

// TestCgroupZygoteForksInOwnLeaves: each fork of a zygote is moved into a
// leaf of its own before it is let go: the leaf's cgroup.procs lists it
// alone, the log places it before its READY=1, and what it answers once
// serving is read in that leaf. Both with preload and with appd-python's
// default (a zygote without preload), which a reload keeps: the new
// generation's forks get new leaves, and the old ones are removed.
func TestCgroupZygoteForksInOwnLeaves(t *testing.T) {
	for _, tc := range []struct{ name, extra string }{
		{"preload", "preload = true\n"},
		{"appd-python's default", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tree := delegatedTree(t)
			text := runnerConf(t, "", tc.extra+"[workers]\ncount = 2\n")
			h := start(t, text, withTree(tree))
			st := h.waitFor("2 ready", 90*time.Second, allReady(2, 1))
			if len(st.Zygotes) != 1 {
				t.Fatalf("zygotes: %+v", st.Zygotes)
			}
			zpid := st.Zygotes[0].PID
			zleaf := cgroupOf(t, zpid)
			if !strings.HasPrefix(filepath.Base(zleaf), "zygote-") {
				t.Errorf("the zygote is in %q, not a zygote leaf", zleaf)
			}
			old := checkForkLeaves(t, h, tree, st, zleaf)
			if tc.extra != "" {
				return
			}
			h.reload(text)
			st = h.waitFor("gen 2", 90*time.Second, allReady(2, 2))
			if len(st.Zygotes) != 1 || st.Zygotes[0].PID != zpid || cgroupOf(t, zpid) != zleaf {
				t.Errorf("the zygote was not kept in its leaf: %d in %s -> %+v", zpid, zleaf, st.Zygotes)
			}
			for leaf := range checkForkLeaves(t, h, tree, st, zleaf) {
				if old[leaf] {
					t.Errorf("gen 2 reuses gen 1's leaf %s", leaf)
				}
			}
			for leaf := range old {
				for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
					if _, err := os.Stat(filepath.Join(tree.Path(), filepath.Base(leaf))); os.IsNotExist(err) {
						break
					}
					if time.Now().After(deadline) {
						t.Errorf("gen 1's leaf %s is still there", leaf)
						break
					}
				}
			}
		})
	}
}

// checkForkLeaves checks that each worker in st is a fork alone in a leaf
// of its own, placed before it was ready, and serving from that leaf; it
// returns the leaves.
func checkForkLeaves(t *testing.T, h *harness, tree *cgroup.Tree, st Status, zleaf string) map[string]bool {
	t.Helper()
	leaves := map[string]bool{}
	logs := h.logs.String()
	for _, w := range st.Slots {
		leaf := cgroupOf(t, w.PID)
		if leaves[leaf] || leaf == zleaf || !strings.HasPrefix(filepath.Base(leaf), fmt.Sprintf("w%d-", w.Slot)) {
			t.Errorf("slot %d pid %d is in %q (zygote %q)", w.Slot, w.PID, leaf, zleaf)
		}
		leaves[leaf] = true
		b, err := os.ReadFile(filepath.Join(tree.Path(), filepath.Base(leaf), "cgroup.procs"))
		if err != nil || strings.TrimSpace(string(b)) != fmt.Sprint(w.PID) {
			t.Errorf("%s/cgroup.procs = %q %v, want just %d", leaf, b, err, w.PID)
		}
		placed := strings.Index(logs, fmt.Sprintf("worker forked worker=w%d pid=%d ", w.Slot, w.PID))
		ready := strings.Index(logs, fmt.Sprintf("worker ready worker=w%d pid=%d ", w.Slot, w.PID))
		if placed < 0 || ready < 0 || placed > ready {
			t.Errorf("pid %d: placed at %d, ready at %d in the log", w.PID, placed, ready)
		}
	}
	h.client.Transport = &http.Transport{DisableKeepAlives: true}
	for i := 0; i < 10; i++ {
		body, err := h.get("/cgroup")
		if err != nil {
			t.Fatal(err)
		}
		var pid int
		fmt.Sscanf(body, "pid=%d", &pid)
		if got := strings.TrimSpace(body[strings.LastIndex(body, ":")+1:]); got != cgroupOf(t, pid) || !leaves[got] {
			t.Errorf("worker %d served from %q", pid, got)
		}
	}
	return leaves
}

// TestCgroupZygoteOOMKillsOneFork: a fork that allocates past memory_max
// is OOM-killed alone (the memory it shares with the zygote is charged to
// the zygote's leaf); the zygote forks its replacement.
func TestCgroupZygoteOOMKillsOneFork(t *testing.T) {
	tree := delegatedTree(t, "memory")
	h := start(t, runnerConf(t, "", "preload = true\nenvironment = { APP_IMPORT_MB = \"40\" }\n[workers]\ncount = 2\n[limits]\nmemory_max = \"64MiB\"\n"), withTree(tree))
	st := h.waitFor("2 ready", 90*time.Second, allReady(2, 1))
	before, zpid := pidsOf(st), st.Zygotes[0].PID
	h.client.Transport = &http.Transport{DisableKeepAlives: true}
	h.client.Timeout = 20 * time.Second
	h.get("/leak?mb=200") // the fork that takes it dies mid-request
	st = h.waitFor("the OOM-killed fork replaced", 90*time.Second, func(st Status) bool {
		for _, w := range st.Slots {
			if strings.Contains(w.LastExit, "OOM-killed") && w.PID != before[w.Slot] && w.State == "ready" {
				return st.Ready == 2
			}
		}
		return false
	})
	victims := 0
	for _, w := range st.Slots {
		if w.PID != before[w.Slot] {
			victims++
		}
	}
	if victims != 1 || st.Zygotes[0].PID != zpid {
		t.Errorf("want one fork replaced and the same zygote: before %v (zygote %d), after %+v", before, zpid, st)
	}
	if !strings.Contains(h.logs.String(), "worker killed by the kernel's OOM killer") {
		t.Errorf("OOM kill not logged:\n%s", h.logs.String())
	}
}

// TestCgroupAutoscaleHeldBackUnderMemoryPressure: a worker that allocates
// past its memory.high is throttled, which shows as memory pressure (PSI)
// of appd's cgroup; while it lasts, autoscaling adds no worker although
// every worker is busy, and says so in the status and the log.
func TestCgroupAutoscaleHeldBackUnderMemoryPressure(t *testing.T) {
	tree := delegatedTree(t, "memory")
	if _, ok, err := tree.MemoryPressure(); !ok || err != nil {
		t.Fatalf("no memory.pressure in %s: %v", tree.Path(), err)
	}
	// The throttled worker counts as busy before PSI's 10 s average shows
	// the pressure: a worker added then would be rightly added (seen in the
	// VM on a loaded machine). The first scale-up waits a cool-down after
	// start, long enough for the pressure to show.
	h := start(t, conf(t, "[workers]\ncount = { min = 1, max = 3 }\nscale_up_cooldown = \"30s\"\nmemory_pressure_limit = 2.0\n[limits]\nmemory_high = \"32MiB\"\n"), withTree(tree))
	st := h.waitFor("1 ready", 60*time.Second, allReady(1, 1))
	pid := pidsOf(st)[0]
	go func() {
		c := &http.Client{Timeout: 10 * time.Minute}
		if resp, err := c.Get("http://" + h.addr + "/leak?mb=400"); err == nil {
			resp.Body.Close()
		}
	}()
	h.waitFor("memory pressure", 120*time.Second, func(st Status) bool { return st.MemoryPressure > 2 })
	if _, err := h.get("/spin"); err != nil {
		t.Fatal(err)
	}
	st = h.waitFor("held back", 60*time.Second, func(st Status) bool { return strings.Contains(st.HeldBack, "memory pressure") })
	t.Logf("status: %s (pressure %.1f%%, busy %.1f)", st.Message, st.MemoryPressure, st.Busy)
	if !strings.Contains(st.Message, "scale-up held back: memory pressure") {
		t.Errorf("STATUS= line does not say it: %q", st.Message)
	}
	time.Sleep(3 * time.Second) // twelve looks: still one worker
	if st := h.status(); st.Workers != 1 || st.ScaleUps != 0 {
		t.Fatalf("scaled up under memory pressure: %+v", st)
	}
	if !strings.Contains(h.logs.String(), "autoscale held back: not adding a worker") {
		t.Errorf("hold-back not logged:\n%s", h.logs.String())
	}
	// The throttled worker gone, the pressure decays and the hold-back ends.
	syscall.Kill(pid, syscall.SIGKILL)
	h.waitFor("no longer held back", 120*time.Second, func(st Status) bool { return st.HeldBack == "" && st.Ready >= 1 })
	if !strings.Contains(h.logs.String(), "autoscale no longer held back") {
		t.Error("the end of the hold-back is not logged")
	}
}
