package cgroup

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Stats is a leaf's resource use. A figure whose controller is absent is 0.
type Stats struct {
	MemoryCurrent int64         // memory.current, bytes
	MemoryPeak    int64         // memory.peak, bytes (before 5.19: the highest MemoryCurrent seen)
	CPUUsage      time.Duration // cpu.stat usage_usec
	PidsCurrent   int64         // pids.current
}

// Stats reads the leaf's memory.current, memory.peak, cpu.stat and
// pids.current. Files that do not exist (controller absent, older kernel)
// give zero values, not errors.
func (l *Leaf) Stats() (Stats, error) {
	var s Stats
	var err error
	if s.MemoryCurrent, err = readInt(filepath.Join(l.dir, "memory.current")); err != nil {
		return s, err
	}
	peak, err := os.ReadFile(filepath.Join(l.dir, "memory.peak"))
	switch {
	case err == nil:
		if s.MemoryPeak, err = strconv.ParseInt(strings.TrimSpace(string(peak)), 10, 64); err != nil {
			return s, fmt.Errorf("reading memory.peak of %s: %w", l.dir, err)
		}
	case errors.Is(err, os.ErrNotExist):
		// Kernels before 5.19 have no memory.peak: the highest
		// memory.current seen by Stats stands in for it.
		s.MemoryPeak = max(l.seenPeak.Load(), s.MemoryCurrent)
		l.seenPeak.Store(s.MemoryPeak)
	default:
		return s, fmt.Errorf("reading memory.peak of %s: %w", l.dir, err)
	}
	if s.PidsCurrent, err = readInt(filepath.Join(l.dir, "pids.current")); err != nil {
		return s, err
	}
	cpu, err := readKV(filepath.Join(l.dir, "cpu.stat"))
	if errors.Is(err, os.ErrNotExist) && !dirExists(l.dir) {
		// Every cgroup v2 directory has cpu.stat: the leaf is gone.
		return s, fmt.Errorf("reading stats of %s: the cgroup was removed: %w", l.dir, os.ErrNotExist)
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return s, fmt.Errorf("reading cpu.stat of %s: %w", l.dir, err)
	}
	s.CPUUsage = time.Duration(cpu["usage_usec"]) * time.Microsecond
	return s, nil
}

// Events are the counters of memory.events: how often the leaf went over
// memory.low/high/max, hit OOM, and had a process OOM-killed.
type Events struct {
	Low, High, Max, OOM, OOMKill int64
}

// Events reads memory.events; without the memory controller all are 0.
func (l *Leaf) Events() (Events, error) {
	kv, err := readKV(filepath.Join(l.dir, "memory.events"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return Events{}, fmt.Errorf("reading memory.events of %s: %w", l.dir, err)
	}
	return Events{Low: kv["low"], High: kv["high"], Max: kv["max"], OOM: kv["oom"], OOMKill: kv["oom_kill"]}, nil
}

// WaitEvents sends the leaf's memory.events each time the kernel changes
// them (inotify; the kernel notifies on every counter change), starting
// with the current values. A slow reader gets the latest values, not a
// backlog. The channel closes when ctx ends, Remove is called, or the
// leaf has no memory.events (no memory controller) — poll Events then.
func (l *Leaf) WaitEvents(ctx context.Context) <-chan Events {
	ch := make(chan Events, 1)
	path := filepath.Join(l.dir, "memory.events")
	ifd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		l.tree.log.Warn("cannot watch memory.events, OOM kills are seen by polling only", "cgroup", l.dir, "err", err)
		close(ch)
		return ch
	}
	if _, err := unix.InotifyAddWatch(ifd, path, unix.IN_MODIFY); err != nil {
		unix.Close(ifd)
		close(ch)
		return ch
	}
	// A non-blocking fd in an *os.File uses the runtime poller: Read parks
	// the goroutine, Close wakes it.
	f := os.NewFile(uintptr(ifd), "inotify:"+path)
	l.mu.Lock()
	if l.fd < 0 { // already removed
		l.mu.Unlock()
		f.Close()
		close(ch)
		return ch
	}
	l.watchers = append(l.watchers, func() { f.Close() })
	l.mu.Unlock()
	stop := context.AfterFunc(ctx, func() { f.Close() })
	go func() {
		defer close(ch)
		defer stop()
		defer f.Close()
		send := func() bool {
			ev, err := l.Events()
			if err != nil {
				return false
			}
			select { // keep only the latest
			case <-ch:
			default:
			}
			ch <- ev
			return true
		}
		if !send() {
			return
		}
		buf := make([]byte, 4096)
		for {
			n, err := f.Read(buf)
			if err != nil || ctx.Err() != nil {
				return
			}
			for off := 0; off+unix.SizeofInotifyEvent <= n; {
				ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
				if ev.Mask&(unix.IN_IGNORED|unix.IN_DELETE_SELF) != 0 {
					return // the leaf is gone
				}
				off += unix.SizeofInotifyEvent + int(ev.Len)
			}
			if !send() {
				return
			}
		}
	}()
	return ch
}

// readInt reads a single-number interface file; "max" reads as -1 and a
// missing file as 0.
func readInt(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("reading %s: %w", path, err)
	}
	s := strings.TrimSpace(string(b))
	if s == "max" {
		return -1, nil
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("reading %s: %w", path, err)
	}
	return v, nil
}

// readKV reads a flat-keyed interface file ("key value" lines).
func readKV(path string) (map[string]int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return map[string]int64{}, err
	}
	defer f.Close()
	kv := make(map[string]int64, 8)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		if n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
			kv[k] = n
		}
	}
	return kv, sc.Err()
}

// Memory reads the tree's own memory.current and memory.max (the unit's
// MemoryMax=; -1 when "max"), which count appd and every worker. ok is
// false when the tree's cgroup has no memory accounting.
func (t *Tree) Memory() (current, limit int64, ok bool, err error) {
	b, err := os.ReadFile(filepath.Join(t.dir, "memory.current"))
	if errors.Is(err, os.ErrNotExist) {
		return 0, 0, false, nil
	}
	if err != nil {
		return 0, 0, false, fmt.Errorf("reading memory.current of %s: %w", t.dir, err)
	}
	if current, err = strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err != nil {
		return 0, 0, false, fmt.Errorf("reading memory.current of %s: %w", t.dir, err)
	}
	limit, err = readInt(filepath.Join(t.dir, "memory.max"))
	if err != nil {
		return 0, 0, false, err
	}
	if limit == 0 { // no such file: the root, or no memory controller above
		limit = -1
	}
	return current, limit, true, nil
}

// Pressure is a cgroup's PSI line: the share of time (percent) in which
// some (or all) of its tasks stalled on a resource, over 10, 60 and 300s.
type Pressure struct {
	Some10, Some60, Full10 float64
}

// MemoryPressure reads the tree's memory.pressure, which covers appd and
// every worker leaf below it. ok is false where the kernel has no PSI
// (CONFIG_PSI off, or psi=0).
func (t *Tree) MemoryPressure() (p Pressure, ok bool, err error) {
	return ReadPressure(filepath.Join(t.dir, "memory.pressure"))
}

// ReadPressure parses a PSI file ("some avg10=1.23 avg60=... total=...").
func ReadPressure(path string) (p Pressure, ok bool, err error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.EOPNOTSUPP) {
		return p, false, nil
	}
	if err != nil {
		return p, false, fmt.Errorf("reading %s: %w", path, err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		avg := func(field, name string) float64 {
			v, _ := strconv.ParseFloat(strings.TrimPrefix(field, name+"="), 64)
			return v
		}
		switch f[0] {
		case "some":
			p.Some10, p.Some60 = avg(f[1], "avg10"), avg(f[2], "avg60")
		case "full":
			p.Full10 = avg(f[1], "avg10")
		}
	}
	return p, true, nil
}
