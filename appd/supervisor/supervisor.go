// Package supervisor is appd's master: one event loop that owns every
// worker and reacts to signals, worker exits, notify messages and timers,
// each transition a named method (spawn, markReady, drain, retire, reap,
// reload, rollback, scale). Goroutines around it only wait on something
// (a process, a pipe, a socket) and post an event; they never touch worker
// state.
package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/edgeapp/edgeapp/appd/cgroup"
	"github.com/edgeapp/edgeapp/appd/config"
	"github.com/edgeapp/edgeapp/internal/systemd"
	"golang.org/x/sys/unix"
)

// Options is what a Supervisor needs from its caller.
type Options struct {
	Name   string         // instance name, for logs and status
	Config *config.Config // validated
	// Reload re-reads and validates the configuration (SIGHUP).
	Reload func() (*config.Config, error)
	// Listeners are the listening sockets the workers inherit as fd 3..,
	// in order; the supervisor never accepts on them.
	Listeners []*os.File
	// Tree is appd's delegated cgroup; nil runs without limits. TreeErr
	// says why there is none (for the warning, or the refusal when limits
	// are required).
	Tree    *cgroup.Tree
	TreeErr error
	Log     *slog.Logger
	// Notifier reports to systemd; nil or disabled is fine.
	Notifier *systemd.Notifier
	// Signals delivers SIGHUP, SIGTERM, SIGINT, SIGQUIT, SIGTTIN, SIGTTOU.
	Signals <-chan os.Signal
	// Trampoline is the executable started in trampoline mode (see
	// RunTrampolineIfRequested). Default /proc/self/exe.
	Trampoline string
	// Output receives the workers' prefixed output lines. Default os.Stderr.
	Output io.Writer
	// Journal sends the workers' output lines to the journal instead, with
	// their slot, generation and pid as fields (APPD_SLOT, ...).
	Journal bool
}

// Timing constants that are not worth a configuration key.
const (
	abortGrace    = 5 * time.Second        // SIGABRT -> SIGKILL on a watchdog timeout
	fastGrace     = 1 * time.Second        // SIGTERM -> SIGKILL on SIGINT/SIGQUIT
	stableAfter   = 10 * time.Second       // a worker up this long resets its slot's backoff
	statsInterval = 1 * time.Second        // cgroup/proc sampling, max_memory checks
	controlWait   = 5 * time.Second        // how long a status request waits for the loop
	farFuture     = 365 * 24 * time.Hour   // "no timer"
	notifyBuf     = 4096                   // sd_notify datagrams are small
	flushWait     = 2 * time.Second        // bounds waitNotify if the notify reader is gone
	eventQueue    = 256                    // events buffered for the loop
	jitterPart    = 4                      // backoff jitter is +-1/jitterPart
	readyTimeoutR = "start_timeout passed" // failure reason prefix
)

// Supervisor runs the worker pool. Create with New, run with Run.
type Supervisor struct {
	opts   Options
	log    *slog.Logger
	notify *systemd.Notifier
	tree   *cgroup.Tree

	cfg     *config.Config // current generation's
	gen     int
	lastGen int // highest generation number handed out
	count   int // target number of workers (config, then TTIN/TTOU)

	// stable is the last generation that was fully serving: the rollback
	// target of a reload.
	stableGen   int
	stableCfg   *config.Config
	stableCount int
	rollout     bool // the current generation is not fully serving yet
	rolledBack  bool // ... and it is the stable one again, after a rollback
	reloadStart time.Time
	reloadNote  string // shown in STATUS after a failed reload

	workers map[int]*worker // by id
	byPid   map[int]*worker
	slots   []*slot
	zslot   *slot // the current generation's zygote's history (backoff)

	as scaler // autoscaling (count = { min, max })

	surgeUsed    int // replacements started in this manage pass
	lastMemSurge int // what memorySurge said last (logged when it changes)
	nextID       int

	events chan any
	done   chan struct{}

	notifyPath string
	self       int         // appd's pid: the sender of notifyFlush's markers
	flush      notifyFlush // orders a process's last notify messages before its exit
	stopping   bool
	fast       bool
	readySent  bool
	lastStatus string
	reloads    map[string]int // result -> count, for metrics
	lastReload *ReloadOutcome // the last reload's outcome, for status
	exits      map[string]int // kind -> count, for metrics
	started    time.Time
}

// New checks the options and prepares a Supervisor; it starts nothing.
func New(opts Options) (*Supervisor, error) {
	if opts.Config == nil {
		return nil, errors.New("supervisor: no configuration")
	}
	if len(opts.Listeners) == 0 {
		return nil, errors.New("supervisor: no listening socket for the workers")
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Trampoline == "" {
		opts.Trampoline = "/proc/self/exe"
	}
	if opts.Output == nil {
		opts.Output = os.Stderr
	}
	s := &Supervisor{
		opts:    opts,
		log:     opts.Log,
		notify:  opts.Notifier,
		tree:    opts.Tree,
		workers: map[int]*worker{},
		byPid:   map[int]*worker{},
		zslot:   &slot{},
		self:    os.Getpid(),
		events:  make(chan any, eventQueue),
		done:    make(chan struct{}),
		reloads: map[string]int{},
		exits:   map[string]int{},
	}
	if err := s.checkLimits(opts.Config); err != nil {
		return nil, err
	}
	if s.tree == nil {
		why := "no cgroup tree given"
		if opts.TreeErr != nil {
			why = opts.TreeErr.Error()
		}
		if opts.Config.Limits.Any() {
			s.log.Warn("workers run WITHOUT the configured [limits]: no delegated cgroup v2 tree (run under systemd with Delegate=yes, or set limits.required = true to refuse)", "reason", why)
		} else {
			s.log.Warn("no delegated cgroup v2 tree: workers get no cgroup leaves (no per-worker limits; memory and CPU read from /proc)", "reason", why)
		}
	}
	if os.Geteuid() != 0 && (opts.Config.App.User != "" || opts.Config.App.Group != "") {
		s.log.Warn("app.user/app.group ignored: appd is not running as root", "uid", os.Geteuid())
	}
	files, err := stableFiles(opts.Listeners)
	if err != nil {
		return nil, err
	}
	s.opts.Listeners = files
	s.cfg = opts.Config
	s.count = s.cfg.Workers.N
	return s, nil
}

// stableFiles duplicates the listening sockets into files that os/exec
// will not touch. os.StartProcess calls Fd() on every file it passes, and
// Fd() on a pollable (non-blocking) *os.File clears O_NONBLOCK on the open
// file description, which every worker shares: a Go worker's accept would
// then block in the kernel and its listener could not be closed. A file
// made from a blocking fd is left alone, so the sockets are set blocking
// once, here, before any worker runs (systemd passes them that way too);
// workers set their own mode after that.
func stableFiles(in []*os.File) ([]*os.File, error) {
	out := make([]*os.File, 0, len(in))
	for _, f := range in {
		rc, err := f.SyscallConn()
		if err != nil {
			return nil, fmt.Errorf("using listening socket %s: %w", f.Name(), err)
		}
		nfd := -1
		var derr error
		if err := rc.Control(func(fd uintptr) {
			nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 3)
		}); err != nil || derr != nil {
			return nil, fmt.Errorf("duplicating listening socket %s: %v %v", f.Name(), err, derr)
		}
		if err := unix.SetNonblock(nfd, false); err != nil {
			unix.Close(nfd)
			return nil, fmt.Errorf("setting listening socket %s blocking: %w", f.Name(), err)
		}
		out = append(out, os.NewFile(uintptr(nfd), f.Name()))
	}
	return out, nil
}

// checkLimits refuses a config that requires limits when there is no tree.
func (s *Supervisor) checkLimits(c *config.Config) error {
	if s.tree == nil && c.Limits.Required {
		why := "no cgroup tree given"
		if s.opts.TreeErr != nil {
			why = s.opts.TreeErr.Error()
		}
		return fmt.Errorf("%s: limits.required = true but there is no delegated cgroup v2 tree (%s); run appd under systemd with Delegate=yes", c.Path, why)
	}
	return nil
}

// Run starts the workers and supervises them until SIGTERM/SIGINT/SIGQUIT
// (or ctx ends, treated as SIGTERM) and every worker has exited.
func (s *Supervisor) Run(ctx context.Context) error {
	defer close(s.done)
	defer func() {
		for _, f := range s.opts.Listeners {
			f.Close()
		}
	}()
	s.started = time.Now()
	notifyConn, err := s.listenNotify()
	if err != nil {
		return err
	}
	defer notifyConn.Close()
	if err := s.flush.open(s.notifyPath); err != nil {
		return err
	}
	defer s.flush.close()
	go s.readNotify(notifyConn)

	var ctl *controlServer
	if s.cfg.App.Control != "-" {
		ctl, err = s.serveControl(s.cfg.App.Control)
		if err != nil {
			return err
		}
		defer ctl.Close()
	}

	s.log.Info("starting workers", "name", s.opts.Name, "workers", s.count, "command", strings.Join(s.cfg.App.Command, " "), "readiness", s.cfg.App.Readiness)
	s.lastGen = 1
	s.gen = 1
	s.rollout = true

	stats := time.NewTicker(statsInterval)
	defer stats.Stop()
	scaleT := time.NewTicker(scaleTick)
	defer scaleT.Stop()
	defer func() {
		if s.as.prober != nil {
			s.as.prober.Close()
		}
	}()
	var wdC <-chan time.Time
	if iv := systemd.WatchdogInterval(); iv > 0 && s.notify.Enabled() {
		wd := time.NewTicker(iv)
		defer wd.Stop()
		wdC = wd.C
	}
	timer := time.NewTimer(farFuture)
	defer timer.Stop()
	ctxDone := ctx.Done()

	s.as.lastChange = time.Now() // the first scale-up waits a cool-down too
	s.manage(time.Now())
	s.manageZygotes(time.Now())
	s.report()
	for {
		if s.stopping && len(s.workers) == 0 {
			s.log.Info("all workers gone, exiting", "name", s.opts.Name)
			return nil
		}
		timer.Reset(time.Until(s.nextDeadline()))
		select {
		case <-ctxDone:
			ctxDone = nil
			s.stop(false)
		case sig := <-s.opts.Signals:
			s.handleSignal(sig)
		case ev := <-s.events:
			s.handleEvent(ev)
		case <-timer.C:
		case <-stats.C:
			s.sample(time.Now())
		case <-scaleT.C:
			s.autoscale(time.Now())
		case <-wdC:
			s.notify.Send("WATCHDOG=1")
		}
		now := time.Now()
		s.checkTimers(now)
		s.manage(now)
		s.manageZygotes(now)
		s.report()
	}
}

// post hands an event to the loop from a helper goroutine; after Run has
// returned it drops the event instead of blocking forever.
func (s *Supervisor) post(ev any) {
	select {
	case s.events <- ev:
	case <-s.done:
	}
}

func (s *Supervisor) handleSignal(sig os.Signal) {
	switch sig {
	case syscall.SIGHUP:
		s.reload()
	case syscall.SIGTTIN:
		s.scale(+1)
	case syscall.SIGTTOU:
		s.scale(-1)
	case syscall.SIGTERM:
		s.stop(false)
	case syscall.SIGINT, syscall.SIGQUIT:
		s.stop(true)
	default:
		s.log.Info("signal ignored", "signal", sig)
	}
}

// stop drains every worker: SIGTERM, then SIGKILL after graceful_timeout
// (fast: after fastGrace). A second fast stop kills at once.
func (s *Supervisor) stop(fast bool) {
	if s.stopping && (!fast || s.fast) {
		if fast {
			s.log.Warn("second fast stop: killing every worker now")
			for _, w := range s.workers {
				s.kill(w)
			}
		}
		return
	}
	s.stopping = true
	s.fast = s.fast || fast
	how := "gracefully"
	if fast {
		how = "fast"
	}
	s.log.Info("stopping: draining every worker "+how, "workers", len(s.workers))
	s.notify.Stopping(fmt.Sprintf("stopping, draining %d workers", len(s.workers)))
	now := time.Now()
	for _, w := range s.workers {
		if fast && w.state == Draining && w.drainDeadline.After(now.Add(fastGrace)) {
			w.drainDeadline, w.drainGrace = now.Add(fastGrace), fastGrace
		}
		// A zygote goes once its forks are gone (it reports their exits).
		if w.state != Draining && w.kind != zygote {
			s.drain(w, "appd stopping", now)
		}
	}
}

// scale changes the target by one within [workers] min..max.
func (s *Supervisor) scale(delta int) {
	if s.stopping {
		return
	}
	n := s.count + delta
	wc := s.cfg.Workers
	if n < wc.Min || n > wc.Max {
		s.log.Warn("scale request ignored: outside workers.min..max", "workers", s.count, "min", wc.Min, "max", wc.Max)
		return
	}
	why := "SIGTTIN"
	if delta < 0 {
		why = "SIGTTOU"
	}
	s.scaleTo(n, why, time.Now())
}

// reload re-reads the configuration and starts a new generation beside the
// old; manage drains each old worker once its slot's new one is ready.
func (s *Supervisor) reload() {
	if s.stopping {
		return
	}
	s.notify.Reloading("reloading configuration")
	s.reloadStart = time.Now()
	var c *config.Config
	var err error
	if s.opts.Reload == nil {
		err = errors.New("this supervisor cannot reload")
	} else {
		c, err = s.opts.Reload()
	}
	if err == nil {
		err = s.checkLimits(c)
	}
	if err != nil {
		s.reloads["invalid"]++
		msg := strings.ReplaceAll(err.Error(), "\n", "; ")
		s.log.Error("reload refused, the running generation keeps serving: "+msg, "gen", s.gen)
		s.reloadNote = "reload refused: invalid config (see log)"
		s.lastReload = &ReloadOutcome{At: time.Now(), Result: "invalid", Generation: s.gen, Detail: msg}
		s.notify.Ready(s.statusLine())
		return
	}
	if !sameStrings(c.App.Listen, s.cfg.App.Listen) {
		s.log.Warn("app.listen changed: sockets are kept until appd restarts", "old", strings.Join(s.cfg.App.Listen, ","), "new", strings.Join(c.App.Listen, ","))
	}
	if c.App.Control != s.cfg.App.Control {
		s.log.Warn("app.control changed: takes effect when appd restarts")
	}
	// Starting workers of a generation that never finished are no use.
	for _, w := range s.workers {
		if w.gen == s.gen && w.state == Starting && s.gen != s.stableGen {
			w.planned = "superseded by a newer reload"
			s.kill(w)
		}
	}
	keep := s.zygoteOf(s.gen)
	s.lastGen++
	s.gen = s.lastGen
	if c.Workers.Autoscale && s.cfg.Workers.Autoscale {
		// Keep the capacity the load called for, within the new bounds.
		s.count = min(max(s.count, c.Workers.Min), c.Workers.Max)
	} else {
		s.count = c.Workers.N
	}
	s.cfg = c
	s.zslot.nextStart, s.zslot.failures = time.Time{}, 0 // new code: no backoff from the old
	s.rollout = true
	s.rolledBack = false
	s.reloadNote = ""
	s.reloads["started"]++
	s.lastReload = &ReloadOutcome{At: time.Now(), Result: "started", Generation: s.gen}
	s.log.Info("reloading: starting a new generation beside the old", "gen", s.gen, "workers", s.count)
	if keep != nil && keepZygote(keep, c) {
		keep.gens[s.gen] = true
		s.log.Info("the zygote stays: it holds no application code, each fork imports it", "pid", keep.pid, "gen", s.gen)
	}
}

// rollback abandons the current generation after one of its workers
// failed before the whole generation was serving: the stable generation's
// workers still serve; slots that already switched get stable workers
// again before the failed generation's ready workers drain.
func (s *Supervisor) rollback(cause string) {
	failed := s.gen
	s.log.Error("new generation failed, rolling back: the previous generation keeps serving", "failed_gen", failed, "cause", cause, "serving_gen", s.stableGen)
	s.reloads["rolled_back"]++
	s.gen = s.stableGen
	s.cfg = s.stableCfg
	s.count = s.stableCount
	s.rolledBack = true
	s.reloadNote = fmt.Sprintf("reload to gen %d rolled back: %s", failed, cause)
	s.lastReload = &ReloadOutcome{At: time.Now(), Result: "rolled_back", Generation: failed, Detail: cause}
	for _, w := range s.workers {
		if w.gen != failed || w.state == Draining || w.kind == zygote && w.state == Ready {
			continue // a ready zygote goes once its forks are gone
		}
		if w.state == Starting {
			w.planned = "generation rolled back"
			s.kill(w)
		} else if w.retire == "" {
			w.retire = "generation rolled back"
		}
	}
	s.notify.Ready(s.statusLine())
	s.readySent = true
}

// manage is the reconciler: for each slot below the target, it makes sure
// a worker of the current generation is starting or ready, and drains the
// slot's other workers once that one is ready. Surplus slots drain.
func (s *Supervisor) manage(now time.Time) {
	if s.stopping {
		return
	}
	for _, w := range s.workers {
		if w.slot >= s.count && w.state != Draining {
			s.drain(w, "scaled down", now)
		}
	}
	surge := s.surgeBudget()
	for i := 0; i < s.count; i++ {
		sl := s.slot(i)
		cur := s.current(i)
		if cur == nil {
			if now.Before(sl.nextStart) {
				continue
			}
			// A slot with nothing serving starts at once; one whose old
			// worker still serves waits for room under surge.
			if s.serving(i) {
				if surge() <= 0 {
					continue
				}
				s.surgeUsed++
			}
			s.spawn(i, now)
			continue
		}
		if cur.state != Ready {
			continue
		}
		for _, w := range s.workers {
			if w.slot != i || w == cur || w.state == Draining {
				continue
			}
			reason := w.retire
			if reason == "" {
				reason = fmt.Sprintf("replaced by generation %d", cur.gen)
			}
			s.drain(w, reason, now)
		}
	}
	if s.rollout && s.generationServing() {
		s.rollout = false
		first := s.stableGen == 0
		s.stableGen, s.stableCfg, s.stableCount = s.gen, s.cfg, s.count
		switch {
		case first:
			s.log.Info("all workers ready", "workers", s.count, "took", now.Sub(s.started).Round(time.Millisecond))
		case s.rolledBack:
			s.rolledBack = false
			s.log.Info("rollback done: the previous generation serves alone again", "gen", s.gen, "workers", s.count)
		default:
			s.reloads["done"]++
			s.lastReload = &ReloadOutcome{At: now, Result: "done", Generation: s.gen}
			s.log.Info("reload done: new generation serving", "gen", s.gen, "workers", s.count, "took", now.Sub(s.reloadStart).Round(time.Millisecond))
		}
		s.notify.Ready(s.statusLine())
		s.readySent = true
	}
}

// serving reports whether slot i has a ready worker that is not of the
// current generation or is being recycled: one a new worker replaces.
func (s *Supervisor) serving(i int) bool {
	for _, w := range s.workers {
		if w.slot == i && w.kind != zygote && w.state == Ready {
			return true
		}
	}
	return false
}

// surgeBudget returns how many more replacements may start now (computed
// on first use): workers.surge (default: all), fewer when appd's cgroup
// has a memory.max without room for them, less those already starting.
// At least one may always be starting, so a reload always progresses.
func (s *Supervisor) surgeBudget() func() int {
	s.surgeUsed = 0
	budget, known := 0, false
	return func() int {
		if !known {
			known = true
			limit := s.cfg.Workers.Surge
			if limit <= 0 {
				limit = s.count
			}
			if m := s.memorySurge(); m < limit {
				limit = m
			}
			starting := 0
			for _, w := range s.workers {
				if w.kind != zygote && w.gen == s.gen && w.state == Starting && s.serving(w.slot) {
					starting++
				}
			}
			budget = max(limit, 1) - starting
		}
		return budget - s.surgeUsed
	}
}

// memorySurge is how many more workers fit under the memory.max of appd's
// own cgroup, at the largest memory a ready worker uses now; effectively
// unlimited without such a limit or without samples. A change is logged.
func (s *Supervisor) memorySurge() int {
	unlimited := 1 << 30
	if s.tree == nil {
		return unlimited
	}
	cur, limit, ok, err := s.tree.Memory()
	if err != nil || !ok || limit < 0 {
		return unlimited
	}
	var per int64
	for _, w := range s.workers {
		if w.kind != zygote && w.state == Ready {
			per = max(per, w.stats.memCurrent)
		}
	}
	if per == 0 {
		return unlimited
	}
	n := int(max(limit-cur, 0) / per)
	if n != s.lastMemSurge && n < s.count {
		s.log.Info("surge bounded by appd's memory limit", "fits", n, "memory_max", sizeString(limit), "in_use", sizeString(cur), "per_worker", sizeString(per))
	}
	s.lastMemSurge = n
	return n
}

// current is slot i's worker of the current generation that is not
// making way for another: the one the slot wants serving.
func (s *Supervisor) current(i int) *worker {
	var best *worker
	for _, w := range s.workers {
		if w.slot == i && w.gen == s.gen && w.state != Draining && w.retire == "" {
			if best == nil || w.id > best.id {
				best = w
			}
		}
	}
	return best
}

// generationServing: every slot has a ready worker of the current
// generation and nothing else is left serving beside it.
func (s *Supervisor) generationServing() bool {
	for i := 0; i < s.count; i++ {
		if c := s.current(i); c == nil || c.state != Ready {
			return false
		}
	}
	for _, w := range s.workers {
		if w.kind != zygote && w.state != Draining && (w.gen != s.gen || w.retire != "") {
			return false
		}
	}
	return true
}

// slotOf is the history a worker's failures count against: its slot's,
// or the zygotes'.
func (s *Supervisor) slotOf(w *worker) *slot {
	if w.kind == zygote {
		return s.zslot
	}
	return s.slot(w.slot)
}

func (s *Supervisor) slot(i int) *slot {
	for len(s.slots) <= i {
		s.slots = append(s.slots, &slot{})
	}
	return s.slots[i]
}

// markReady is starting -> ready.
func (s *Supervisor) markReady(w *worker, how string, now time.Time) {
	if w.state != Starting {
		return
	}
	w.state = Ready
	w.readyAt = now
	if w.cancel != nil {
		w.cancel()
	}
	if w.kind == zygote {
		s.zslot.failures = 0
		s.log.Info("zygote ready", "pid", w.pid, "gen", w.gen, "took", now.Sub(w.started).Round(time.Millisecond))
		return
	}
	if ml := w.cfg.Workers.MaxLifetime.D(); ml > 0 {
		j := w.cfg.Workers.LifetimeJitter.D()
		if j > 0 {
			ml += rand.N(j)
		}
		w.lifetimeEnd = now.Add(ml)
	}
	s.log.Info("worker ready", "worker", wname(w), "pid", w.pid, "gen", w.gen, "by", how, "took", now.Sub(w.started).Round(time.Millisecond))
}

// drain is ready/starting -> draining: SIGTERM now, SIGKILL at the deadline.
func (s *Supervisor) drain(w *worker, reason string, now time.Time) {
	if w.state == Draining {
		return
	}
	grace := w.cfg.Workers.GracefulTimeout.D()
	if s.fast {
		grace = min(grace, fastGrace)
	}
	w.state = Draining
	if w.planned == "" {
		w.planned = reason
	}
	w.drainDeadline, w.drainGrace = now.Add(grace), grace
	if w.cancel != nil {
		w.cancel()
	}
	if w.pid == 0 { // a fork not forked yet: it is aborted when it is
		s.kill(w)
		return
	}
	s.log.Info("draining "+kindName(w), "worker", wname(w), "pid", w.pid, "gen", w.gen, "reason", reason, "graceful_timeout", grace)
	if err := w.signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		s.log.Warn("sending SIGTERM failed, killing", "worker", wname(w), "pid", w.pid, "err", err)
		s.kill(w)
	}
}

// kill sends SIGKILL to the worker and everything it started: through its
// cgroup (cgroup.kill reaches re-parented grandchildren too), else to its
// process group.
func (s *Supervisor) kill(w *worker) {
	w.killed = true
	if w.cancel != nil {
		w.cancel()
	}
	if w.pid == 0 {
		return // a fork request: aborted if the zygote still forks it
	}
	if w.leaf != nil && (w.kind != forked || w.placed) {
		if err := w.leaf.Kill(); err == nil {
			return
		} else {
			s.log.Warn("cgroup.kill failed, killing the process group", "worker", wname(w), "err", err)
		}
	}
	syscall.Kill(-w.pid, syscall.SIGKILL)
	w.signal(syscall.SIGKILL)
}

// checkTimers fires the per-worker deadlines: start_timeout, watchdog,
// SIGABRT grace, drain deadline, max_lifetime.
func (s *Supervisor) checkTimers(now time.Time) {
	recycling := s.recycling()
	for _, w := range s.workers {
		switch {
		case w.kind == forked && w.pid == 0 && w.killed:
			s.reap(w, "never forked", now)
			continue
		case !w.goneAt.IsZero() && now.Sub(w.goneAt) >= forkStatusWait:
			s.reap(w, "exited, status not reported by its zygote", now)
			continue
		case w.killed:
			continue
		case w.state == Draining:
			if now.After(w.drainDeadline) {
				s.log.Warn(kindName(w)+" did not exit within graceful_timeout, killing it", "worker", wname(w), "pid", w.pid, "gen", w.gen, "graceful_timeout", w.drainGrace)
				s.kill(w)
			}
			continue
		case !w.abortedAt.IsZero():
			if now.Sub(w.abortedAt) >= abortGrace {
				s.log.Warn("worker still alive after SIGABRT, killing it", "worker", wname(w), "pid", w.pid)
				s.kill(w)
			}
			continue
		}
		if w.state == Starting && now.After(w.startDeadline) {
			w.failure = fmt.Sprintf("%s (%v) without becoming ready", readyTimeoutR, w.cfg.Workers.StartTimeout.D())
			s.log.Error("worker did not become ready in time, killing it", "worker", wname(w), "pid", w.pid, "gen", w.gen, "start_timeout", w.cfg.Workers.StartTimeout.D(), "readiness", w.cfg.App.Readiness, "last_status", w.status)
			s.kill(w)
			continue
		}
		if w.watchdog > 0 && !w.lastPing.IsZero() && now.Sub(w.lastPing) > w.watchdog {
			s.watchdogExpired(w, now)
			continue
		}
		if w.state != Ready || w.retire != "" || recycling || s.rollout || w.kind == zygote {
			continue
		}
		switch {
		case w.askedRecycle != "":
			s.retire(w, "the worker asked: "+w.askedRecycle)
			recycling = true
		case !w.lifetimeEnd.IsZero() && now.After(w.lifetimeEnd):
			s.retire(w, fmt.Sprintf("max_lifetime (%v) reached", w.cfg.Workers.MaxLifetime.D()))
			recycling = true
		}
	}
}

// watchdogExpired sends SIGABRT (a runtime may dump its stacks) and
// schedules SIGKILL.
func (s *Supervisor) watchdogExpired(w *worker, now time.Time) {
	w.failure = fmt.Sprintf("watchdog timeout: no WATCHDOG=1 for %v", w.watchdog)
	w.abortedAt = now
	s.log.Error("worker watchdog timeout: sending SIGABRT, SIGKILL follows",
		"worker", wname(w), "pid", w.pid, "gen", w.gen, "state", w.state.String(),
		"last_ping", w.lastPing.Format(time.RFC3339Nano), "silent_for", now.Sub(w.lastPing).Round(time.Millisecond),
		"timeout", w.watchdog, "last_status", w.status, "kill_in", abortGrace)
	if err := w.signal(syscall.SIGABRT); err != nil {
		s.kill(w)
	}
}

// recycling reports whether a worker is already making way for a
// replacement: recycling goes one slot at a time.
func (s *Supervisor) recycling() bool {
	for _, w := range s.workers {
		if w.retire != "" && w.state != Draining {
			return true
		}
	}
	return false
}

// retire asks for a replacement of w in its slot; w drains once it is ready.
func (s *Supervisor) retire(w *worker, reason string) {
	w.retire = reason
	s.log.Info("recycling worker: starting its replacement first", "worker", wname(w), "pid", w.pid, "gen", w.gen, "reason", reason)
}

// nextDeadline is the earliest moment a timer in checkTimers or manage
// must run.
func (s *Supervisor) nextDeadline() time.Time {
	next := time.Now().Add(farFuture)
	earlier := func(t time.Time) {
		if !t.IsZero() && t.Before(next) {
			next = t
		}
	}
	for _, w := range s.workers {
		if !w.goneAt.IsZero() {
			earlier(w.goneAt.Add(forkStatusWait))
		}
		switch {
		case w.killed:
		case w.state == Draining:
			earlier(w.drainDeadline)
		case !w.abortedAt.IsZero():
			earlier(w.abortedAt.Add(abortGrace))
		default:
			if w.state == Starting {
				earlier(w.startDeadline)
			}
			if w.watchdog > 0 && !w.lastPing.IsZero() {
				earlier(w.lastPing.Add(w.watchdog))
			}
			if w.state == Ready {
				earlier(w.lifetimeEnd)
			}
		}
	}
	if !s.stopping && s.cfg.App.Zygote && s.zygoteOf(s.gen) == nil {
		earlier(s.zslot.nextStart)
	}
	if !s.stopping {
		for i := 0; i < s.count && i < len(s.slots); i++ {
			if s.current(i) == nil {
				earlier(s.slots[i].nextStart)
			}
		}
	}
	return next.Add(time.Millisecond) // timers fire after, not at, the deadline
}

// handleEvent dispatches what the helper goroutines post.
func (s *Supervisor) handleEvent(ev any) {
	now := time.Now()
	switch e := ev.(type) {
	case execEvent:
		w := s.workers[e.id]
		if w == nil {
			return
		}
		if e.err != "" {
			w.execErr = e.err
			return
		}
		switch w.cfg.App.Readiness {
		case "exec":
			s.markReady(w, "exec", now)
		case "probe":
			s.startProbe(w)
		}
	case exitEvent:
		if w := s.workers[e.id]; w != nil {
			s.reap(w, e.how, now)
		}
	case zygoteEvent:
		s.handleZygote(e, now)
	case forkGoneEvent:
		s.forkGone(e, now)
	case probeEvent:
		if w := s.workers[e.id]; w != nil {
			s.markReady(w, "probe", now)
		}
	case notifyEvent:
		s.handleNotify(e, now)
	case statusRequest:
		e.reply <- s.snapshot(now)
	}
}

func wname(w *worker) string {
	if w.kind == zygote {
		return "zygote"
	}
	return fmt.Sprintf("w%d", w.slot)
}

func kindName(w *worker) string {
	if w.kind == zygote {
		return "zygote"
	}
	return "worker"
}

func sameStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
