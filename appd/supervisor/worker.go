package supervisor

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/edgeapp/edgeapp/appd/cgroup"
	"github.com/edgeapp/edgeapp/appd/config"
)

// State is where a worker is in its life. Every worker goes
// starting -> ready -> draining -> (exited, removed); a worker that never
// becomes ready may also go from starting straight to exited.
type State int

const (
	Starting State = iota // started, not yet ready (READY=1, exec, probe)
	Ready                 // serving
	Draining              // SIGTERM sent; SIGKILL at the drain deadline
)

func (s State) String() string {
	switch s {
	case Starting:
		return "starting"
	case Ready:
		return "ready"
	case Draining:
		return "draining"
	}
	return "unknown"
}

// kind is how a process came to be.
type kind int

const (
	execd  kind = iota // started by appd (trampoline, exec of the command)
	zygote             // started by appd; forks the generation's workers
	forked             // forked by a zygote at appd's request
)

// worker is one process the supervisor started, or had a zygote fork.
// Only the event loop reads or writes it.
type worker struct {
	id   int // unique for the supervisor's life
	slot int // -1 for a zygote
	gen  int
	cfg  *config.Config // the generation's config it was started with
	kind kind

	cmd  *exec.Cmd    // execd and zygote
	pid  int          // 0 while a fork is requested but not yet forked
	leaf *cgroup.Leaf // nil without a cgroup tree

	// A zygote: its end of the socket pair, and whether it exited.
	ctl    *zygoteConn
	exited bool
	gens   map[int]bool // the generations it forks for (a reload may keep it)
	// A fork: its zygote, its pidfd (signals and exit), whether appd let
	// it go (after placing it in its leaf), its output pipe until the pid
	// is known, and when its pidfd said it exited (the zygote's report
	// with the status is awaited a moment).
	zygote *worker
	pidfd  *os.File
	placed bool
	outR   *os.File
	goneAt time.Time

	state   State
	started time.Time
	readyAt time.Time
	cancel  context.CancelFunc // stops the probe

	// retire is set when the worker should make way for a replacement in
	// its slot (max_lifetime, max_memory, rolled-back generation): it keeps
	// serving until the replacement is ready, then drains.
	retire string
	// planned is why the supervisor ended the worker (drain, scale down):
	// its exit is expected and not a failure.
	planned string
	// failure is why the supervisor killed a worker that misbehaved
	// (watchdog, start_timeout): its exit counts as a failure.
	failure string

	drainDeadline time.Time     // SIGKILL after this, while draining
	drainGrace    time.Duration // what drainDeadline allowed (a fast stop shortens it)
	killed        bool          // SIGKILL sent
	abortedAt     time.Time     // watchdog SIGABRT sent

	startDeadline time.Time
	watchdog      time.Duration // 0 = off
	lastPing      time.Time     // zero until the first WATCHDOG=1
	status        string        // last STATUS=
	lifetimeEnd   time.Time     // zero = no max_lifetime
	askedRecycle  string        // APPD_RECYCLE= from the worker: why it wants a replacement
	execErr       string        // the trampoline's exec error, if any

	stats cgroupStats
	util  float64 // CPU wanted over the last sample interval (1 = one CPU; schedstat)
}

var errNoProcess = errors.New("no process yet")

// signal sends sig to the worker's main process: through os/exec's handle
// for what appd started, through the pidfd for a fork (never a reused pid).
func (w *worker) signal(sig syscall.Signal) error {
	switch {
	case w.cmd != nil:
		return w.cmd.Process.Signal(sig)
	case w.pidfd != nil:
		return pidfdSignal(w.pidfd, sig)
	}
	return errNoProcess
}

// cgroupStats is the last sample of a worker's resource use.
type cgroupStats struct {
	memCurrent, memPeak int64
	cpu                 time.Duration
	pids                int64
	sched               time.Duration // the main process's threads: run + run-queue wait
	at                  time.Time
}

// slot is the history of one worker position (w0, w1, ...): what survives
// its workers.
type slot struct {
	restarts   int         // unexpected exits, ever
	failures   int         // consecutive, for the backoff
	history    []time.Time // failure times within the crash-loop window
	crashLoop  bool
	nextStart  time.Time // backoff: no spawn before this
	lastExit   string
	lastExitAt time.Time
	cpuDone    time.Duration // CPU time of its workers that are gone (a counter per slot)
}
