// Package cgroup gives appd a delegated cgroup v2 tree: appd moves itself
// into a "supervisor" leaf (the no-internal-process rule), enables the
// memory, cpu and pids controllers, and creates one limited leaf per worker.
// Workers are placed at clone time through Leaf.FD and
// syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: leaf.FD()}, and killed as
// a whole through cgroup.kill, so nothing that re-parents escapes.
package cgroup

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// ErrNotDelegated is wrapped by every error of Open that means "there is no
// cgroup v2 tree appd may manage": no cgroup2 mount, the root cgroup, a
// cgroup that is not writable or not delegated (no Delegate=yes).
var ErrNotDelegated = errors.New("no delegated cgroup v2 tree")

// DelegatedEnv, set to "1" in a unit that has Delegate=yes, makes Open
// accept its cgroup without systemd's delegate mark, which systemd before
// 251 (Debian 11, Ubuntu 22.04) does not set.
const DelegatedEnv = "APPD_CGROUP_DELEGATED"

// SupervisorLeaf is the leaf appd moves itself into.
const SupervisorLeaf = "supervisor"

// wanted are the controllers Open enables for the leaves, in this order.
var wanted = []string{"memory", "cpu", "pids"}

// delegateXattrs are set to "1" by systemd on a cgroup it delegated
// (Delegate=yes). Debian 12's systemd 252 sets both (measured in the VM);
// only user.* is readable by an unprivileged appd (or one without
// CAP_SYS_ADMIN). systemd before 251 sets neither: there a non-root appd is
// accepted by owner, a root one needs DelegatedEnv.
var delegateXattrs = []string{"trusted.delegate", "user.delegate"}

// Tree is appd's delegated cgroup: its leaves are the supervisor leaf and one
// leaf per worker.
type Tree struct {
	log         *slog.Logger
	dir         string
	controllers []string // enabled in dir's cgroup.subtree_control

	mu     sync.Mutex
	closed bool
}

// Open finds the calling process's cgroup v2 directory, checks that it was
// delegated to us, moves every process in it (appd itself, all its threads)
// into the "supervisor" leaf and enables memory, cpu and pids for the leaves
// as far as the parent offers them. Open is idempotent: a process already in
// <tree>/supervisor opens <tree>. Errors that mean "no usable tree" wrap
// ErrNotDelegated and say why.
func Open(log *slog.Logger) (*Tree, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dir, err := ownDir()
	if err != nil {
		return nil, err
	}
	// After a re-exec (or a second Open) we already sit in the supervisor
	// leaf: the tree is its parent.
	if filepath.Base(dir) == SupervisorLeaf {
		if parent := filepath.Dir(dir); checkDelegated(parent) == nil {
			dir = parent
		}
	}
	if err := checkDelegated(dir); err != nil {
		return nil, err
	}
	t := &Tree{log: log, dir: dir}
	if err := t.adopt(); err != nil {
		return nil, err
	}
	if err := t.enable(); err != nil {
		return nil, err
	}
	log.Info("cgroup tree opened, workers get their own leaves", "cgroup", dir, "controllers", strings.Join(t.controllers, ","))
	return t, nil
}

// newTree makes a Tree of an existing cgroup directory that holds no
// processes of its own (tests, and trees made by the caller): it enables the
// controllers but moves nothing.
func newTree(log *slog.Logger, dir string) (*Tree, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t := &Tree{log: log, dir: dir}
	if err := t.enable(); err != nil {
		return nil, err
	}
	return t, nil
}

// Path is the tree's directory under the cgroup2 mount.
func (t *Tree) Path() string { return t.dir }

// Controllers are the controllers enabled for the leaves (a subset of
// memory, cpu, pids).
func (t *Tree) Controllers() []string { return slices.Clone(t.controllers) }

func (t *Tree) has(c string) bool { return slices.Contains(t.controllers, c) }

// Close releases the tree. It removes nothing: worker leaves are the
// caller's to Kill and Remove, and appd stays in the supervisor leaf.
func (t *Tree) Close() {
	t.mu.Lock()
	t.closed = true
	t.mu.Unlock()
}

// adopt moves every process of the tree's own cgroup into the supervisor
// leaf. A controller can be enabled for children only when the cgroup itself
// holds no process.
func (t *Tree) adopt() error {
	sup := filepath.Join(t.dir, SupervisorLeaf)
	if err := os.Mkdir(sup, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("creating supervisor cgroup %s: %w", sup, err)
	}
	procs := filepath.Join(sup, "cgroup.procs")
	// Ourselves first, then anything else that lives in the tree's root
	// (a wrapper shell, say). New forks may race in: loop until empty.
	if err := writeFile(procs, strconv.Itoa(os.Getpid())); err != nil {
		return fmt.Errorf("moving appd (pid %d) into %s: %w", os.Getpid(), sup, err)
	}
	for range 100 {
		pids, err := readPids(filepath.Join(t.dir, "cgroup.procs"))
		if err != nil {
			return fmt.Errorf("listing processes of %s: %w", t.dir, err)
		}
		if len(pids) == 0 {
			return nil
		}
		for _, pid := range pids {
			err := writeFile(procs, strconv.Itoa(pid))
			if err != nil && !errors.Is(err, syscall.ESRCH) {
				return fmt.Errorf("moving pid %d into %s: %w", pid, sup, err)
			}
			if err == nil {
				t.log.Info("moved a process of the service cgroup into the supervisor leaf", "pid", pid, "cgroup", sup)
			}
		}
	}
	return fmt.Errorf("moving processes into %s: %s keeps gaining processes", sup, t.dir)
}

// enable turns on the wanted controllers the parent offers, one at a time so
// one refusal does not hide the others, and records what ended up enabled.
func (t *Tree) enable() error {
	avail, err := readFields(filepath.Join(t.dir, "cgroup.controllers"))
	if err != nil {
		return fmt.Errorf("reading controllers of %s: %w", t.dir, err)
	}
	ctl := filepath.Join(t.dir, "cgroup.subtree_control")
	for _, c := range wanted {
		if !slices.Contains(avail, c) {
			continue
		}
		if err := writeFile(ctl, "+"+c); err != nil {
			t.log.Warn("cannot enable cgroup controller, its limits are off", "controller", c, "cgroup", t.dir, "err", err)
		}
	}
	on, err := readFields(ctl)
	if err != nil {
		return fmt.Errorf("reading %s: %w", ctl, err)
	}
	t.controllers = nil
	for _, c := range wanted {
		if slices.Contains(on, c) {
			t.controllers = append(t.controllers, c)
		}
	}
	if missing := missingOf(t.controllers); len(missing) > 0 {
		t.log.Warn("cgroup controllers not available, their limits cannot be set", "cgroup", t.dir, "missing", strings.Join(missing, ","), "available", strings.Join(avail, ","))
	}
	return nil
}

func missingOf(have []string) []string {
	var m []string
	for _, c := range wanted {
		if !slices.Contains(have, c) {
			m = append(m, c)
		}
	}
	return m
}

// ownDir is the calling process's cgroup v2 directory, refusing the root.
func ownDir() (string, error) {
	mnt, rel, err := ownPath()
	if err != nil {
		return "", err
	}
	if rel == "/" {
		return "", fmt.Errorf("%w: appd runs in the root cgroup of %s, which is the whole machine, not a service's; run it as a systemd service with Delegate=yes (or systemd-run -p Delegate=yes)", ErrNotDelegated, mnt)
	}
	return filepath.Join(mnt, rel), nil
}

// ownPath is the cgroup2 mount point and the calling process's cgroup
// relative to it ("/" for the root).
func ownPath() (mnt, rel string, err error) {
	rel, err = ownCgroup()
	if err != nil {
		return "", "", err
	}
	mnt, root, err := cgroup2Mount()
	if err != nil {
		return "", "", err
	}
	if root != "/" {
		// A mount of a subtree (cgroup namespaces, containers): the
		// path in /proc/self/cgroup is relative to the same root.
		if r, ok := strings.CutPrefix(rel, root); ok && (r == "" || r[0] == '/') {
			rel = r
		}
	}
	if rel == "" {
		rel = "/"
	}
	return mnt, rel, nil
}

// ownCgroup is the unified-hierarchy path from /proc/self/cgroup ("0::/x").
func ownCgroup() (string, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", fmt.Errorf("%w: reading /proc/self/cgroup: %v", ErrNotDelegated, err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			return strings.TrimSuffix(p, " (deleted)"), nil
		}
	}
	return "", fmt.Errorf("%w: the process is in no cgroup v2 hierarchy (/proc/self/cgroup has no 0:: line; cgroup v1 only)", ErrNotDelegated)
}

// cgroup2Mount finds the cgroup2 mount point and the cgroup it shows as its
// root, preferring /sys/fs/cgroup over /sys/fs/cgroup/unified (hybrid).
func cgroup2Mount() (mnt, root string, err error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", "", fmt.Errorf("%w: reading /proc/self/mountinfo: %v", ErrNotDelegated, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		// id parent maj:min root mountpoint opts [optional...] - fstype source superopts
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok || !strings.HasPrefix(post, "cgroup2 ") {
			continue
		}
		f := strings.Fields(pre)
		if len(f) < 5 {
			continue
		}
		m, r := unescapeMount(f[4]), unescapeMount(f[3])
		if mnt == "" || m == "/sys/fs/cgroup" {
			mnt, root = m, r
		}
	}
	if err := sc.Err(); err != nil {
		return "", "", fmt.Errorf("%w: reading /proc/self/mountinfo: %v", ErrNotDelegated, err)
	}
	if mnt == "" {
		return "", "", fmt.Errorf("%w: no cgroup2 filesystem is mounted (see /proc/self/mountinfo)", ErrNotDelegated)
	}
	return mnt, root, nil
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// checkDelegated says whether dir is a cgroup we may manage: writable, and
// marked delegated by systemd (the delegate xattr) or owned by us as a
// non-root user (systemd chowns a delegated cgroup to the unit's User=).
func checkDelegated(dir string) error {
	for _, p := range []string{dir, filepath.Join(dir, "cgroup.procs"), filepath.Join(dir, "cgroup.subtree_control")} {
		if err := unix.Access(p, unix.W_OK); errors.Is(err, unix.EROFS) {
			return fmt.Errorf("%w: the cgroup filesystem is read-only for appd (%s: %v); a unit with Delegate=yes must not set ProtectControlGroups=yes", ErrNotDelegated, p, err)
		} else if err != nil {
			return fmt.Errorf("%w: %s is not writable by uid %d (%v); run appd with Delegate=yes", ErrNotDelegated, p, os.Geteuid(), err)
		}
	}
	for _, x := range delegateXattrs {
		buf := make([]byte, 16)
		n, err := unix.Getxattr(dir, x, buf)
		if err == nil && string(bytes.TrimSpace(buf[:n])) == "1" {
			return nil
		}
	}
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrNotDelegated, dir, err)
	}
	if euid := os.Geteuid(); euid != 0 && int(st.Uid) == euid {
		return nil
	}
	if os.Getenv(DelegatedEnv) == "1" {
		// systemd before 251 marks nothing: the unit vouches for itself.
		return nil
	}
	return fmt.Errorf("%w: cgroup %s was not delegated to appd (no trusted.delegate or user.delegate mark, owner uid %d); set Delegate=yes in the unit (or systemd-run -p Delegate=yes; with systemd before 251 also %s=1)", ErrNotDelegated, dir, st.Uid, DelegatedEnv)
}

func writeFile(path, s string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(s)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func readFields(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return strings.Fields(string(b)), nil
}

func readPids(path string) ([]int, error) {
	f, err := readFields(path)
	if err != nil {
		return nil, err
	}
	pids := make([]int, 0, len(f))
	for _, s := range f {
		p, err := strconv.Atoi(s)
		if err != nil {
			return nil, fmt.Errorf("%s: bad pid %q", path, s)
		}
		pids = append(pids, p)
	}
	return pids, nil
}
