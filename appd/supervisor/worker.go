package supervisor

import (
	"context"
	"os/exec"
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

// worker is one process the supervisor started. Only the event loop reads
// or writes it.
type worker struct {
	id   int // unique for the supervisor's life
	slot int
	gen  int
	cfg  *config.Config // the generation's config it was started with

	cmd  *exec.Cmd
	pid  int
	leaf *cgroup.Leaf // nil without a cgroup tree

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

	drainDeadline time.Time // SIGKILL after this, while draining
	killed        bool      // SIGKILL sent
	abortedAt     time.Time // watchdog SIGABRT sent

	startDeadline time.Time
	watchdog      time.Duration // 0 = off
	lastPing      time.Time     // zero until the first WATCHDOG=1
	status        string        // last STATUS=
	lifetimeEnd   time.Time     // zero = no max_lifetime
	execErr       string        // the trampoline's exec error, if any

	stats cgroupStats
}

// cgroupStats is the last sample of a worker's resource use.
type cgroupStats struct {
	memCurrent, memPeak int64
	cpu                 time.Duration
	pids                int64
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
}
