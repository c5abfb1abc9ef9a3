package cgroup

// The test binary doubles as every child process the tests need: with
// APPD_CGROUP_CHILD=<role> in its environment, TestMain runs that role
// instead of the tests.

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const childEnv = "APPD_CGROUP_CHILD"

func TestMain(m *testing.M) {
	if role := os.Getenv(childEnv); role != "" {
		os.Exit(runChild(role))
	}
	os.Exit(m.Run())
}

// openReport is what the "open" child prints as JSON.
type openReport struct {
	Path, Path2  string
	Controllers  []string
	Cgroup       string // the child's own cgroup after Open
	Err          string
	NotDelegated bool
}

func runChild(role string) int {
	out := os.Stdout
	switch role {
	case "sleep":
		time.Sleep(time.Hour)
	case "exit0":
	case "tree":
		// A grandchild in its own session: a process-group kill would
		// miss it, cgroup.kill must not.
		gc := exec.Command(os.Args[0])
		gc.Env = append(os.Environ(), childEnv+"=sleep")
		gc.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := gc.Start(); err != nil {
			fmt.Fprintln(out, "error", err)
			return 1
		}
		fmt.Fprintln(out, gc.Process.Pid)
		time.Sleep(time.Hour)
	case "open":
		// A helper that stays in the tree's root: Open must move it too.
		h := exec.Command(os.Args[0])
		h.Env = append(os.Environ(), childEnv+"=sleep")
		if err := h.Start(); err != nil {
			fmt.Fprintln(out, "error", err)
			return 1
		}
		defer h.Process.Kill()
		var r openReport
		if os.Getenv("APPD_CGROUP_RO") == "1" {
			// As ProtectControlGroups=yes does: the cgroup mount read-only
			// in this process's own mount namespace (Unshareflags).
			mnt, _, err := cgroup2Mount()
			self, _ := os.Readlink("/proc/self/ns/mnt")
			parent, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", os.Getppid()))
			if self == "" || self == parent {
				// Never touch the mount the rest of the machine sees.
				err = fmt.Errorf("not in a private mount namespace (%q)", self)
			}
			if err == nil {
				err = unix.Mount("", mnt, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY, "")
			}
			if err != nil {
				fmt.Fprintln(out, "error", err)
				return 1
			}
		}
		log := slog.New(slog.NewTextHandler(os.Stderr, nil))
		t, err := Open(log)
		if err != nil {
			r.Err, r.NotDelegated = err.Error(), errors.Is(err, ErrNotDelegated)
		} else {
			r.Path, r.Controllers = t.Path(), t.Controllers()
			if t2, err := Open(log); err != nil {
				r.Err = "second Open: " + err.Error()
			} else {
				r.Path2 = t2.Path()
			}
		}
		b, _ := os.ReadFile("/proc/self/cgroup")
		for line := range strings.SplitSeq(string(b), "\n") {
			if c, ok := strings.CutPrefix(line, "0::"); ok {
				r.Cgroup = c
			}
		}
		j, _ := json.Marshal(r)
		fmt.Fprintf(out, "%s\n%d\n", j, h.Process.Pid)
		// Stay alive (threads and all) until the test is done looking.
		bufio.NewReader(os.Stdin).ReadString('\n')
	case "alloc":
		// Allocate and touch memory in 1 MiB steps, reporting progress,
		// until the kernel kills us or the target is reached.
		target, _ := strconv.Atoi(os.Getenv("APPD_CGROUP_ALLOC_MIB"))
		if os.Getenv("APPD_CGROUP_ALLOC_GRANDCHILD") == "1" {
			// memory.oom.group must take this bystander too.
			gc := exec.Command(os.Args[0])
			gc.Env = append(os.Environ(), childEnv+"=sleep")
			gc.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
			if err := gc.Start(); err != nil {
				fmt.Fprintln(out, "error", err)
				return 1
			}
			fmt.Fprintln(out, gc.Process.Pid)
		}
		var keep [][]byte
		for i := 1; i <= target; i++ {
			b := make([]byte, 1<<20)
			for j := 0; j < len(b); j += 4096 {
				b[j] = 1
			}
			keep = append(keep, b)
			if i%4 == 0 {
				fmt.Fprintln(out, "allocated", i)
			}
		}
		runtime.KeepAlive(keep)
		fmt.Fprintln(out, "done")
	case "spin":
		for range runtime.GOMAXPROCS(0) - 1 {
			go spin()
		}
		fmt.Fprintln(out, "spinning")
		spin()
	case "forkbomb":
		n, errno := forkBomb(100000)
		if errno != 0 {
			fmt.Fprintf(out, "fork failed after %d forks: %d %v\n", n, int(errno), errno)
		} else {
			fmt.Fprintf(out, "no fork failed in %d forks\n", n)
		}
		time.Sleep(time.Hour)
	default:
		fmt.Fprintln(os.Stderr, "unknown child role", role)
		return 2
	}
	return 0
}

var sink uint64

func spin() {
	var x uint64
	for i := uint64(0); ; i++ {
		x += i * i
		if i&(1<<24-1) == 0 {
			sink = x // keep the loop from being optimised away
		}
	}
}

// forkBomb forks with the raw system call until a fork fails. Every forked
// process runs the same loop without the Go runtime (one thread, raw system
// calls only, no stack growth) and, once a fork fails, pauses forever: the
// classic bomb, which the pids controller must contain. The original
// process returns the number of its own successful forks and the errno
// that stopped it.
//
//go:nosplit
//go:norace
func forkBomb(limit int) (int, syscall.Errno) {
	for i := 0; i < limit; i++ {
		pid, _, e := syscall.RawSyscall(syscall.SYS_FORK, 0, 0, 0)
		if e != 0 {
			return i, e
		}
		if pid == 0 {
			for {
				_, _, e := syscall.RawSyscall(syscall.SYS_FORK, 0, 0, 0)
				if e != 0 {
					for {
						syscall.RawSyscall(syscall.SYS_PAUSE, 0, 0, 0)
					}
				}
			}
		}
	}
	return limit, 0
}
