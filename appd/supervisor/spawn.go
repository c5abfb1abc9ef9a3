package supervisor

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/edgeapp/edgeapp/appd/cgroup"
	"github.com/edgeapp/edgeapp/appd/config"
)

// Events the helper goroutines post to the loop.
type (
	execEvent struct {
		id  int
		err string // "" when the command was executed
	}
	exitEvent struct {
		id  int
		how string // exitString of its wait status
	}
	probeEvent struct{ id int }
)

// spawn starts a worker of the current generation in slot i: its cgroup
// leaf first (when there is a tree), then the trampoline, born in the leaf.
// With a zygote, the worker is forked by the generation's zygote once it
// is ready (the slot waits meanwhile).
func (s *Supervisor) spawn(i int, now time.Time) {
	c := s.cfg
	if c.App.Zygote {
		if z := s.zygoteOf(s.gen); z != nil && z.state == Ready {
			s.fork(z, i, now)
		}
		return
	}
	s.nextID++
	w := &worker{id: s.nextID, slot: i, gen: s.gen, cfg: c, state: Starting, started: now,
		startDeadline: now.Add(c.Workers.StartTimeout.D()), watchdog: c.Workers.Timeout.D()}
	if s.tree != nil {
		leaf, err := s.tree.NewLeaf(fmt.Sprintf("w%d-%d", i, w.id), limitsOf(c, s.tree.Controllers()))
		if err != nil {
			s.spawnFailed(w, fmt.Errorf("creating its cgroup leaf: %w", err), now)
			return
		}
		w.leaf = leaf
	}
	if err := s.start(w); err != nil {
		if w.leaf != nil {
			w.leaf.Remove()
		}
		s.spawnFailed(w, err, now)
		return
	}
	s.workers[w.id] = w
	s.byPid[w.pid] = w
	s.log.Info("worker started", "worker", wname(w), "pid", w.pid, "gen", w.gen)
}

// spawnFailed counts a worker that could not even be started as a failure
// of its slot, so the backoff applies.
func (s *Supervisor) spawnFailed(w *worker, err error, now time.Time) {
	s.log.Error("cannot start worker", "worker", wname(w), "gen", w.gen, "err", err)
	s.failed(w, "cannot start: "+err.Error(), now)
}

// limitsOf is the leaf limits of c; the default pids_max applies only where
// the tree has the pids controller (a written one is an error without it).
func limitsOf(c *config.Config, controllers []string) cgroup.Limits {
	l := c.Limits
	out := cgroup.Limits{MemoryMax: int64(l.MemoryMax), MemoryHigh: int64(l.MemoryHigh), SwapMax: -1,
		CPUMax: l.CPUFraction, CPUWeight: l.CPUWeight, PidsMax: l.PidsMax}
	if l.PidsMaxDefault && !slices.Contains(controllers, "pids") {
		out.PidsMax = 0
	}
	if l.SwapMax != nil {
		out.SwapMax = int64(*l.SwapMax)
	}
	return out
}

// start forks the trampoline with the sockets as fd 3.. and the
// exec-status pipe after them (and a zygote's end of its socket pair after
// that), and starts the goroutines that wait on it.
func (s *Supervisor) start(w *worker) error {
	c := w.cfg
	execR, execW, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("making the exec-status pipe: %w", err)
	}
	defer execW.Close()
	files := append(append([]*os.File{}, s.opts.Listeners...), execW)
	env := s.workerEnv(w, 3+len(s.opts.Listeners))
	if w.kind == zygote {
		ctl, theirs, err := newZygotePair()
		if err != nil {
			execR.Close()
			return err
		}
		defer theirs.Close()
		w.ctl = ctl
		files = append(files, theirs)
		preload := "0"
		if c.App.Preload {
			preload = "1"
		}
		env = append(env, envZygoteFD+"="+strconv.Itoa(3+len(s.opts.Listeners)+1), envPreload+"="+preload)
	}
	fail := func() {
		execR.Close()
		if w.ctl != nil {
			w.ctl.Close()
			w.ctl = nil
		}
	}
	cmd := &exec.Cmd{
		Path:       s.opts.Trampoline,
		Args:       append([]string{"appd-trampoline"}, c.App.Command...),
		Env:        env,
		Dir:        c.App.Directory,
		ExtraFiles: files,
		SysProcAttr: &syscall.SysProcAttr{
			Setpgid: true, // signals to appd's terminal group are not the workers'
		},
	}
	if w.leaf != nil {
		cmd.SysProcAttr.UseCgroupFD = true
		cmd.SysProcAttr.CgroupFD = w.leaf.FD()
	}
	if os.Geteuid() == 0 {
		uid, gid, groups, ok, err := c.App.Credentials()
		if err != nil {
			fail()
			return err
		}
		if ok {
			cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uid, Gid: gid, Groups: groups}
		}
	}
	var outR *os.File
	if c.App.Output == "inherit" {
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	} else {
		var outW *os.File
		outR, outW, err = os.Pipe()
		if err != nil {
			fail()
			return fmt.Errorf("making the output pipe: %w", err)
		}
		defer outW.Close()
		cmd.Stdout, cmd.Stderr = outW, outW
	}
	if err := cmd.Start(); err != nil {
		fail()
		if outR != nil {
			outR.Close()
		}
		return fmt.Errorf("starting %s: %w", c.App.Command[0], err)
	}
	w.cmd = cmd
	w.pid = cmd.Process.Pid
	if outR != nil {
		s.copyOutput(outR, w)
	}
	// One goroutine, in order: the exec status (EOF or the trampoline's
	// error text), then the exit, so the loop sees why an exec failed
	// before it sees the exit.
	id := w.id
	go func() {
		msg, _ := io.ReadAll(execR)
		execR.Close()
		s.post(execEvent{id: id, err: string(msg)})
		cmd.Wait()
		s.waitNotify() // what it said before it exited comes first
		s.post(exitEvent{id: id, how: exitString(cmd.ProcessState)})
	}()
	return nil
}

// workerEnv is appd's environment without what systemd meant for appd,
// then the configured environment, then the protocol variables.
func (s *Supervisor) workerEnv(w *worker, execFD int) []string {
	c := w.cfg
	drop := map[string]bool{"LISTEN_PID": true, "LISTEN_FDS": true, "LISTEN_FDNAMES": true, "NOTIFY_SOCKET": true,
		"WATCHDOG_USEC": true, "WATCHDOG_PID": true, "APPD_WORKER": true, "APPD_GENERATION": true,
		envTrampoline: true, envExecFD: true, envZygoteFD: true, envPreload: true}
	env := make([]string, 0, 64)
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if drop[k] {
			continue
		}
		if _, over := c.App.Environment[k]; over {
			continue
		}
		env = append(env, kv)
	}
	for k, v := range c.App.Environment {
		if !drop[k] {
			env = append(env, k+"="+v)
		}
	}
	names := make([]string, len(s.opts.Listeners))
	for i := range names {
		names[i] = "app"
	}
	env = append(env,
		"LISTEN_FDS="+strconv.Itoa(len(s.opts.Listeners)),
		"LISTEN_FDNAMES="+strings.Join(names, ":"),
		"NOTIFY_SOCKET="+s.notifyPath,
		"APPD_GENERATION="+strconv.Itoa(w.gen),
		envTrampoline+"=1",
		envExecFD+"="+strconv.Itoa(execFD),
	)
	if w.kind != zygote {
		env = append(env, "APPD_WORKER="+strconv.Itoa(w.slot))
	}
	if wd := w.cfg.Workers.Timeout.D(); wd > 0 {
		env = append(env, "WATCHDOG_USEC="+strconv.FormatInt(wd.Microseconds(), 10))
	}
	return env
}

// reap is the exit of a worker's main process: whatever it left behind in
// its group or leaf is killed, the leaf removed, and the slot's history
// updated. An exit the supervisor did not ask for is a failure.
func (s *Supervisor) reap(w *worker, how string, now time.Time) {
	delete(s.workers, w.id)
	if s.byPid[w.pid] == w {
		delete(s.byPid, w.pid)
	}
	if w.cancel != nil {
		w.cancel()
	}
	if w.execErr != "" {
		how = w.execErr
	}
	if w.pidfd != nil {
		w.pidfd.Close()
	}
	if w.outR != nil {
		w.outR.Close()
	}
	// Leftovers (gunicorn's own workers, anything forked) must not keep
	// accepting on the shared socket. (A fork leads its own group too.)
	if w.pid > 0 {
		syscall.Kill(-w.pid, syscall.SIGKILL)
	}
	if w.kind == zygote {
		s.zygoteGone(w, now)
	}
	if w.leaf != nil {
		if ev, err := w.leaf.Events(); err == nil && ev.OOMKill > 0 {
			st, _ := w.leaf.Stats()
			how = fmt.Sprintf("OOM-killed (limits.memory_max %v, peak %v)", sizeString(int64(w.cfg.Limits.MemoryMax)), sizeString(st.MemoryPeak))
			s.log.Error("worker killed by the kernel's OOM killer", "worker", wname(w), "pid", w.pid, "gen", w.gen,
				"memory_max", sizeString(int64(w.cfg.Limits.MemoryMax)), "peak", sizeString(st.MemoryPeak), "oom_kills", ev.OOMKill)
			s.exits["oom"]++
			if w.failure == "" {
				w.failure = how
			}
		}
		leaf := w.leaf
		leaf.Kill()
		go func() {
			if err := leaf.Remove(); err != nil {
				s.log.Warn("removing a worker's cgroup leaf failed", "cgroup", leaf.Path(), "err", err)
			}
		}()
	}
	sl := s.slotOf(w)
	sl.cpuDone += w.stats.cpu
	if w.planned != "" && w.failure == "" {
		s.exits["planned"]++
		if w.killed && w.state == Draining {
			how = "killed after graceful_timeout"
		}
		sl.lastExit = fmt.Sprintf("%s: %s", w.planned, how)
		sl.lastExitAt = now
		s.log.Info(kindName(w)+" exited", "worker", wname(w), "pid", w.pid, "gen", w.gen, "reason", w.planned, "status", how, "uptime", now.Sub(w.started).Round(time.Millisecond))
		return
	}
	why := how
	if w.failure != "" && w.failure != how {
		why = w.failure + " (" + how + ")"
	}
	if w.state == Starting && w.status != "" {
		why += "; it said: " + w.status // an import error, say
	}
	if s.stopping {
		sl.lastExit = why
		sl.lastExitAt = now
		s.log.Warn("worker exited while stopping", "worker", wname(w), "pid", w.pid, "status", why)
		return
	}
	s.failed(w, why, now)
	if s.rollout && w.gen == s.gen && s.stableCfg != nil && s.stableGen != s.gen {
		sl.nextStart = time.Time{} // the stable generation restarts at once
		s.rollback(fmt.Sprintf("%s %s", wname(w), why))
	}
}

// failed records an unexpected end of a worker in its slot and schedules
// the restart with exponential backoff and jitter; many failures within
// the window mark a crash loop, which slows restarts but never stops them.
func (s *Supervisor) failed(w *worker, why string, now time.Time) {
	s.exits["failed"]++
	sl := s.slotOf(w)
	sl.restarts++
	sl.lastExit = why
	sl.lastExitAt = now
	wc := w.cfg.Workers
	if !w.readyAt.IsZero() && now.Sub(w.readyAt) >= stableAfter {
		sl.failures = 0
	}
	sl.failures++
	delay := wc.RestartDelay.D() << min(sl.failures-1, 30)
	if delay <= 0 || delay > wc.RestartDelayMax.D() {
		delay = wc.RestartDelayMax.D()
	}
	if j := int64(delay) / jitterPart; j > 0 {
		delay += time.Duration(rand.Int64N(2*j) - j)
	}
	if sl.failures == 1 && !w.readyAt.IsZero() {
		delay = 0 // a worker that served and then died: capacity back at once
	}
	sl.nextStart = now.Add(delay)
	window := wc.CrashLoopWindow.D()
	keep := sl.history[:0]
	for _, t := range sl.history {
		if now.Sub(t) < window {
			keep = append(keep, t)
		}
	}
	sl.history = append(keep, now)
	wasLoop := sl.crashLoop
	sl.crashLoop = len(sl.history) >= wc.CrashLoopRestarts
	if sl.crashLoop && !wasLoop {
		s.log.Error("crash loop: worker keeps failing; restarts continue with backoff", "worker", wname(w), "failures", len(sl.history), "window", window, "last", why, "next_restart_in", delay.Round(time.Millisecond))
	}
	switch {
	case w.kind == zygote && w.readyAt.IsZero():
		s.log.Error("zygote exited before it was ready", "pid", w.pid, "gen", w.gen, "status", why, "restart_in", delay.Round(time.Millisecond))
	case w.kind == zygote:
		s.log.Warn("zygote exited unexpectedly, restarting it; its workers keep serving", "pid", w.pid, "gen", w.gen, "status", why, "restart_in", delay.Round(time.Millisecond))
	case w.pid != 0:
		s.log.Warn("worker exited unexpectedly, restarting", "worker", wname(w), "pid", w.pid, "gen", w.gen, "status", why, "uptime", now.Sub(w.started).Round(time.Millisecond), "restart_in", delay.Round(time.Millisecond))
	}
}

func exitString(ps *os.ProcessState) string {
	if ps == nil {
		return "unknown exit"
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok {
		switch {
		case ws.Exited():
			return fmt.Sprintf("exit status %d", ws.ExitStatus())
		case ws.Signaled():
			s := "killed by signal " + unixSignalName(ws.Signal())
			if ws.CoreDump() {
				s += " (core dumped)"
			}
			return s
		}
	}
	return ps.String()
}

func unixSignalName(sig syscall.Signal) string {
	names := map[syscall.Signal]string{syscall.SIGKILL: "SIGKILL", syscall.SIGTERM: "SIGTERM", syscall.SIGABRT: "SIGABRT",
		syscall.SIGSEGV: "SIGSEGV", syscall.SIGINT: "SIGINT", syscall.SIGQUIT: "SIGQUIT", syscall.SIGBUS: "SIGBUS",
		syscall.SIGHUP: "SIGHUP", syscall.SIGPIPE: "SIGPIPE", syscall.SIGILL: "SIGILL", syscall.SIGFPE: "SIGFPE"}
	if n, ok := names[sig]; ok {
		return n
	}
	return strconv.Itoa(int(sig))
}

// copyLines copies a worker's output to w line by line with the worker's
// prefix, keeping an sd-daemon "<N>" priority in front so the journal
// still files the line at the worker's level.
func copyLines(w io.Writer, r *os.File, prefix string) {
	defer r.Close()
	br := bufio.NewReaderSize(r, 4096)
	buf := make([]byte, 0, 256)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			buf = buf[:0]
			if len(line) >= 3 && line[0] == '<' && line[1] >= '0' && line[1] <= '7' && line[2] == '>' {
				buf = append(buf, line[:3]...)
				line = line[3:]
			}
			buf = append(buf, prefix...)
			buf = append(buf, line...)
			if buf[len(buf)-1] != '\n' {
				buf = append(buf, '\n')
			}
			w.Write(buf)
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
	}
}

func sizeString(n int64) string {
	switch {
	case n <= 0:
		return "0"
	case n >= 1<<30:
		return fmt.Sprintf("%.1fGiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1fMiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1fKiB", float64(n)/(1<<10))
	}
	return strconv.FormatInt(n, 10) + "B"
}

// groupStats samples workers without a cgroup leaf from /proc, in one
// pass: per process group (each worker leads its own), the summed RSS,
// CPU time and task count of its processes, so a pre-forking program's
// own workers count too.
func groupStats() map[int]cgroupStats {
	out := map[int]cgroupStats{}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return out
	}
	page := int64(os.Getpagesize())
	for _, e := range entries {
		name := e.Name()
		if name[0] < '0' || name[0] > '9' {
			continue
		}
		b, err := os.ReadFile("/proc/" + name + "/stat")
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 22 {
			continue
		}
		pgrp, _ := strconv.Atoi(f[2])
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		threads, _ := strconv.ParseInt(f[17], 10, 64)
		rss, _ := strconv.ParseInt(f[21], 10, 64)
		g := out[pgrp]
		g.memCurrent += rss * page
		g.cpu += time.Duration(ut+st) * (time.Second / 100) // USER_HZ is 100 on Linux
		g.pids += threads
		out[pgrp] = g
	}
	return out
}

// schedTime is the time pid's threads ran or waited to run (schedstat:
// on a CPU plus on a run queue): a worker that wants CPU all the time
// counts as busy even on a machine too loaded to give it a whole CPU.
func schedTime(pid int) time.Duration {
	dir := "/proc/" + strconv.Itoa(pid) + "/task"
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	var sum int64
	for _, t := range tasks {
		b, err := os.ReadFile(dir + "/" + t.Name() + "/schedstat")
		if err != nil {
			continue
		}
		f := strings.Fields(string(b))
		if len(f) < 2 {
			continue
		}
		run, _ := strconv.ParseInt(f[0], 10, 64)
		wait, _ := strconv.ParseInt(f[1], 10, 64)
		sum += run + wait
	}
	return time.Duration(sum)
}

// sample reads every worker's resource use (and, without autoscaling,
// which reads them more often, the accept queues) and recycles one that
// passed max_memory.
func (s *Supervisor) sample(now time.Time) {
	defer func() { s.as.busy = s.busyWorkers() }()
	s.as.pressure, _ = s.memoryPressure()
	if !s.cfg.Workers.Autoscale {
		s.readQueues()
	}
	recycling := s.recycling()
	var groups map[int]cgroupStats
	for _, w := range s.workers {
		var st cgroupStats
		if w.leaf != nil {
			cs, err := w.leaf.Stats()
			if err != nil {
				continue
			}
			st = cgroupStats{memCurrent: cs.MemoryCurrent, memPeak: cs.MemoryPeak, cpu: cs.CPUUsage, pids: cs.PidsCurrent}
		} else {
			if groups == nil {
				groups = groupStats()
			}
			var ok bool
			if st, ok = groups[w.pid]; !ok {
				continue
			}
			st.memPeak = max(w.stats.memPeak, st.memCurrent) // as sampled
		}
		st.at = now
		st.sched = schedTime(w.pid)
		w.util = 0
		// Only an interval the worker served throughout counts: the CPU a
		// runtime spends starting up is not load.
		if prev := w.stats; !prev.at.IsZero() && now.After(prev.at) && !w.readyAt.IsZero() && !w.readyAt.After(prev.at) {
			w.util = max(st.sched-prev.sched, 0).Seconds() / now.Sub(prev.at).Seconds()
		}
		w.stats = st
		mm := int64(w.cfg.Workers.MaxMemory)
		if mm > 0 && st.memCurrent > mm && w.state == Ready && w.retire == "" && !recycling && !s.stopping && w.kind != zygote {
			s.retire(w, fmt.Sprintf("max_memory: using %s, more than %s", sizeString(st.memCurrent), sizeString(mm)))
			recycling = true
		}
	}
}

// startProbe checks readiness = "probe" until it answers or the worker is
// gone.
func (s *Supervisor) startProbe(w *worker) {
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	p := w.cfg.App.Probe
	id := w.id
	addr := s.probeAddr()
	go func() {
		t := time.NewTicker(p.Interval.D())
		defer t.Stop()
		for {
			if probe(ctx, addr, p) {
				s.post(probeEvent{id: id})
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
}
