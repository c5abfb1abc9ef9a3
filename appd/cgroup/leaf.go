package cgroup

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Limits of one leaf. Zero values mean "no limit" / "default".
type Limits struct {
	MemoryMax  int64 // memory.max in bytes; 0 = no limit
	MemoryHigh int64 // memory.high in bytes (reclaim pressure); 0 = no limit
	// SwapMax is memory.swap.max in bytes: -1 leaves it unset (the
	// kernel's "max"), 0 forbids swap (so memory.max means an OOM kill,
	// not paging), >0 limits it. 0 needs the memory controller only when
	// there is one: the zero Limits works on any tree.
	SwapMax int64
	// CPUMax is a fraction of one CPU (1.0 = 100%, 2.0 = two CPUs); 0 = none.
	CPUMax    float64
	CPUWeight int // cpu.weight 1..10000; 0 = default (100)
	PidsMax   int // pids.max; 0 = none
}

// cpuPeriod is the cpu.max period in microseconds (the kernel default).
const cpuPeriod = 100000

// Leaf is one worker's cgroup.
type Leaf struct {
	tree *Tree
	name string
	dir  string

	mu       sync.Mutex
	fd       int      // -1 once closed
	watchers []func() // stop the WaitEvents watches; called by Remove

	seenPeak atomic.Int64 // highest memory.current seen, where there is no memory.peak
}

// NewLeaf creates <tree>/<name> with the given limits and memory.oom.group=1
// (an OOM kill takes the whole worker, not a random thread of it). A stale
// empty leaf of that name is removed first. A limit whose controller is not
// enabled is an error naming the controller.
func (t *Tree) NewLeaf(name string, l Limits) (*Leaf, error) {
	t.mu.Lock()
	closed := t.closed
	t.mu.Unlock()
	if closed {
		return nil, fmt.Errorf("cgroup leaf %q: the tree %s is closed", name, t.dir)
	}
	if err := checkName(name); err != nil {
		return nil, err
	}
	files, err := t.limitFiles(l)
	if err != nil {
		return nil, fmt.Errorf("cgroup leaf %q: %w", name, err)
	}
	dir := filepath.Join(t.dir, name)
	if err := os.Mkdir(dir, 0o755); errors.Is(err, os.ErrExist) {
		// Left over from a worker of a previous appd: reuse only if empty.
		if rerr := unix.Rmdir(dir); rerr != nil {
			return nil, fmt.Errorf("removing stale cgroup %s before reuse (still has processes?): %w", dir, rerr)
		}
		t.log.Info("removed stale worker cgroup", "cgroup", dir)
		err = os.Mkdir(dir, 0o755)
		if err != nil {
			return nil, fmt.Errorf("creating cgroup %s: %w", dir, err)
		}
	} else if err != nil {
		return nil, fmt.Errorf("creating cgroup %s: %w", dir, err)
	}
	for _, kv := range files {
		if err := writeFile(filepath.Join(dir, kv[0]), kv[1]); err != nil {
			_ = unix.Rmdir(dir)
			return nil, fmt.Errorf("setting %s=%q on %s: %w", kv[0], kv[1], dir, err)
		}
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		_ = unix.Rmdir(dir)
		return nil, fmt.Errorf("opening cgroup %s: %w", dir, err)
	}
	return &Leaf{tree: t, name: name, dir: dir, fd: fd}, nil
}

func checkName(name string) error {
	switch {
	case name == "", name == ".", name == "..", strings.ContainsAny(name, "/\x00\n"):
		return fmt.Errorf("invalid cgroup leaf name %q", name)
	case name == SupervisorLeaf:
		return fmt.Errorf("cgroup leaf name %q is reserved for appd itself", name)
	case strings.HasPrefix(name, "cgroup."), strings.HasPrefix(name, "memory."),
		strings.HasPrefix(name, "cpu."), strings.HasPrefix(name, "pids."),
		strings.HasPrefix(name, "io."):
		// Would shadow the kernel's interface files in listings.
		return fmt.Errorf("cgroup leaf name %q looks like a cgroup interface file", name)
	}
	return nil
}

// limitFiles validates l against the enabled controllers and returns the
// interface files to write, in order.
func (t *Tree) limitFiles(l Limits) ([][2]string, error) {
	var files [][2]string
	need := func(ctl, limit string) error {
		if t.has(ctl) {
			return nil
		}
		return fmt.Errorf("limit %s needs the %s cgroup controller, which is not enabled in %s (enabled: %s)",
			limit, ctl, t.dir, strings.Join(t.controllers, ",")+orNone(t.controllers))
	}
	bytesVal := func(file string, v int64) error {
		if v < 0 {
			return fmt.Errorf("%s: negative value %d", file, v)
		}
		if v == 0 {
			return nil
		}
		if err := need("memory", file); err != nil {
			return err
		}
		files = append(files, [2]string{file, strconv.FormatInt(v, 10)})
		return nil
	}
	if err := bytesVal("memory.high", l.MemoryHigh); err != nil {
		return nil, err
	}
	if err := bytesVal("memory.max", l.MemoryMax); err != nil {
		return nil, err
	}
	switch {
	case l.SwapMax < -1:
		return nil, fmt.Errorf("memory.swap.max: negative value %d (-1 leaves it unset)", l.SwapMax)
	case l.SwapMax == 0:
		if t.has("memory") {
			files = append(files, [2]string{"memory.swap.max", "0"})
		}
	case l.SwapMax > 0:
		if err := bytesVal("memory.swap.max", l.SwapMax); err != nil {
			return nil, err
		}
	}
	if t.has("memory") {
		files = append(files, [2]string{"memory.oom.group", "1"})
	}
	switch {
	case l.CPUMax < 0 || math.IsNaN(l.CPUMax) || math.IsInf(l.CPUMax, 0):
		return nil, fmt.Errorf("cpu.max: invalid CPU fraction %v", l.CPUMax)
	case l.CPUMax > 0:
		if err := need("cpu", "cpu.max"); err != nil {
			return nil, err
		}
		// The kernel refuses a quota below 1 ms.
		quota := max(int64(math.Round(l.CPUMax*cpuPeriod)), 1000)
		files = append(files, [2]string{"cpu.max", fmt.Sprintf("%d %d", quota, cpuPeriod)})
	}
	switch {
	case l.CPUWeight < 0 || l.CPUWeight > 10000:
		return nil, fmt.Errorf("cpu.weight: %d is outside 1..10000", l.CPUWeight)
	case l.CPUWeight > 0:
		if err := need("cpu", "cpu.weight"); err != nil {
			return nil, err
		}
		files = append(files, [2]string{"cpu.weight", strconv.Itoa(l.CPUWeight)})
	}
	switch {
	case l.PidsMax < 0:
		return nil, fmt.Errorf("pids.max: negative value %d", l.PidsMax)
	case l.PidsMax > 0:
		if err := need("pids", "pids.max"); err != nil {
			return nil, err
		}
		files = append(files, [2]string{"pids.max", strconv.Itoa(l.PidsMax)})
	}
	return files, nil
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return ""
}

// Path is the leaf's directory.
func (l *Leaf) Path() string { return l.dir }

// Name is the leaf's name under the tree.
func (l *Leaf) Name() string { return l.name }

// FD is an O_DIRECTORY|O_CLOEXEC descriptor of the leaf, for
// syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: leaf.FD()}: the child is
// born in the leaf (clone3 CLONE_INTO_CGROUP). -1 after Remove.
func (l *Leaf) FD() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.fd
}

// Add moves a running process (all its threads) into the leaf: the fallback
// where a child cannot be born in it (kernel before 5.7, no clone3
// CLONE_INTO_CGROUP). Prefer FD with UseCgroupFD: it leaves no window in
// which the child runs, or forks, outside its limits.
func (l *Leaf) Add(pid int) error {
	if err := writeFile(filepath.Join(l.dir, "cgroup.procs"), strconv.Itoa(pid)); err != nil {
		return fmt.Errorf("moving pid %d into cgroup %s: %w", pid, l.dir, err)
	}
	return nil
}

// Pids lists the processes in the leaf.
func (l *Leaf) Pids() ([]int, error) {
	return readPids(filepath.Join(l.dir, "cgroup.procs"))
}

// Populated says whether any process is left in the leaf.
func (l *Leaf) Populated() (bool, error) {
	kv, err := readKV(filepath.Join(l.dir, "cgroup.events"))
	if err != nil {
		return false, fmt.Errorf("reading cgroup.events of %s: %w", l.dir, err)
	}
	return kv["populated"] != 0, nil
}

// Kill sends SIGKILL to every process in the leaf, descendants that left
// the process group or re-parented included. It does not wait for them to
// die; Remove does.
func (l *Leaf) Kill() error {
	err := writeFile(filepath.Join(l.dir, "cgroup.kill"), "1")
	if err == nil || errors.Is(err, os.ErrNotExist) && !dirExists(l.dir) {
		return nil
	}
	if errors.Is(err, os.ErrNotExist) {
		// Kernel before 5.14: no cgroup.kill.
		return l.killBySignal(5 * time.Second)
	}
	return fmt.Errorf("killing cgroup %s: %w", l.dir, err)
}

// killBySignal kills every pid listed in cgroup.procs until none is left.
// The leaf is frozen meanwhile (where cgroup.freeze exists) so a fork bomb
// cannot outrun the loop; SIGKILL still reaches frozen tasks.
func (l *Leaf) killBySignal(timeout time.Duration) error {
	freeze := filepath.Join(l.dir, "cgroup.freeze")
	if writeFile(freeze, "1") == nil {
		defer writeFile(freeze, "0")
	}
	deadline := time.Now().Add(timeout)
	for {
		pids, err := l.Pids()
		if err != nil {
			if !dirExists(l.dir) {
				return nil
			}
			return fmt.Errorf("listing processes of %s to kill them: %w", l.dir, err)
		}
		if len(pids) == 0 {
			return nil
		}
		for _, pid := range pids {
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
				return fmt.Errorf("killing pid %d of %s: %w", pid, l.dir, err)
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("killing cgroup %s: %d processes still listed after %v", l.dir, len(pids), timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Remove closes the leaf's FD and removes its directory, retrying for a few
// seconds while the kernel finishes reaping killed processes. Kill first.
// Removing a leaf that is already gone is not an error.
func (l *Leaf) Remove() error { return l.removeWithin(5 * time.Second) }

func (l *Leaf) removeWithin(timeout time.Duration) error {
	l.mu.Lock()
	if l.fd >= 0 {
		unix.Close(l.fd)
		l.fd = -1
	}
	// The kernel sends no inotify event when a cgroup directory goes.
	for _, stop := range l.watchers {
		stop()
	}
	l.watchers = nil
	l.mu.Unlock()
	deadline := time.Now().Add(timeout)
	for delay := time.Millisecond; ; delay = min(2*delay, 50*time.Millisecond) {
		err := unix.Rmdir(l.dir)
		if err == nil || errors.Is(err, unix.ENOENT) {
			return nil
		}
		if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
			pids, _ := l.Pids()
			return fmt.Errorf("removing cgroup %s (processes left: %v): %w", l.dir, pids, err)
		}
		time.Sleep(delay)
	}
}

func dirExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}
