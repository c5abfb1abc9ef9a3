package supervisor

// Autoscaling by pressure, for workers.count = { min, max }. Every
// scaleTick the loop reads the listening sockets' accept queues (through
// sock_diag: connections no worker has accepted yet); every statsInterval
// it learns how busy the workers are (the time each worker's threads ran
// or waited to run over the last interval, from schedstat, at most one
// worker's worth each: busy even where the machine is too loaded to give
// it a whole CPU). Then:
//
//   - up by one when connections have waited in the queue for queueFor,
//     or every ready worker is busy; at most once per scale_up_cooldown
//     (the first one a cool-down after appd starts: workers that just
//     started are busy warming up, and memory pressure shows in PSI's
//     10 s average only seconds after it began),
//     never while the previous addition is still starting or a reload
//     rolls out, and never while appd's cgroup is under memory pressure
//     (PSI memory.pressure "some" avg10 above memory_pressure_limit): a
//     worker that cannot get memory adds nothing, and more workers would
//     make the pressure worse. The hold-back is logged once and shown in
//     appd status until the pressure is gone.
//   - down by one when nothing is queued and the others could carry the
//     load (the busy workers' worth below idleShare of count-1) for
//     scale_down_after, and no change happened within that time; the
//     highest slot drains, one at a time.
//
// SIGTTIN/SIGTTOU change the count by hand within min..max and restart
// the cool-downs, so the autoscaler leaves a manual change alone for a
// while.

import (
	"fmt"
	"time"

	"github.com/edgeapp/edgeapp/appd/cgroup"
	"github.com/edgeapp/edgeapp/appd/sockdiag"
)

const (
	scaleTick = 250 * time.Millisecond // how often the accept queues are read
	queueFor  = 500 * time.Millisecond // queued this long (two looks or more): add a worker
	busyShare = 0.9                    // a worker using this much CPU is busy
	idleShare = 0.7                    // scale down when the busy share of count-1 workers would stay below this
)

// scaler is the autoscaler's state; the loop owns it.
type scaler struct {
	prober   *sockdiag.Prober
	probeErr string // the last error reading the queues (logged when it changes)

	queued, backlog int       // accept queues at the last look
	queueSince      time.Time // connections have waited since
	busy            float64   // workers' worth of CPU use, last sample
	idleSince       time.Time // a worker's worth of capacity idle since
	lastChange      time.Time // last scale up or down, automatic or by hand
	heldBack        string    // why a wanted worker is not added; "" = not held back
	pressure        float64   // memory PSI some avg10 at the last look; -1 unknown
	ups, downs      int       // automatic scale changes, for metrics
}

// readQueues sums the accept queues of the listening sockets.
func (s *Supervisor) readQueues() {
	a := &s.as
	if a.prober == nil {
		p, err := sockdiag.Open()
		if err != nil {
			s.noteProbeErr(err)
			return
		}
		a.prober = p
	}
	queued, backlog := 0, 0
	for _, f := range s.opts.Listeners {
		q, err := a.prober.AcceptQueue(f)
		if err != nil {
			s.noteProbeErr(err)
			return
		}
		queued += int(q.Queued)
		backlog += int(q.Backlog)
	}
	s.noteProbeErr(nil)
	a.queued, a.backlog = queued, backlog
}

func (s *Supervisor) noteProbeErr(err error) {
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	if msg != s.as.probeErr && msg != "" {
		if s.cfg.Workers.Autoscale {
			s.log.Warn("cannot read the listening socket's accept queue; autoscaling goes by busy workers alone", "err", msg)
		} else {
			s.log.Debug("cannot read the listening socket's accept queue", "err", msg)
		}
	}
	s.as.probeErr = msg
}

// memoryPressure is PSI "some" avg10 of appd's cgroup (the workers'
// leaves included); without a tree, the machine's.
func (s *Supervisor) memoryPressure() (float64, bool) {
	var p cgroup.Pressure
	var ok bool
	var err error
	if s.tree != nil {
		p, ok, err = s.tree.MemoryPressure()
	} else {
		p, ok, err = cgroup.ReadPressure("/proc/pressure/memory")
	}
	if err != nil || !ok {
		return -1, false
	}
	return p.Some10, true
}

// autoscale is one look: maybe a worker more, maybe one less.
func (s *Supervisor) autoscale(now time.Time) {
	wc := s.cfg.Workers
	a := &s.as
	if !wc.Autoscale || s.stopping {
		s.holdBack("")
		return
	}
	s.readQueues()
	if a.queued > 0 {
		if a.queueSince.IsZero() {
			a.queueSince = now
		}
	} else {
		a.queueSince = time.Time{}
	}
	ready, starting := 0, 0
	for i := 0; i < s.count; i++ {
		switch c := s.current(i); {
		case c == nil:
		case c.state == Ready:
			ready++
		case c.state == Starting:
			starting++
		}
	}
	queuedLong := !a.queueSince.IsZero() && now.Sub(a.queueSince) >= queueFor
	allBusy := ready > 0 && a.busy >= float64(ready)*busyShare
	if queuedLong || allBusy {
		a.idleSince = time.Time{}
		if s.count >= wc.Max || s.rollout || starting > 0 || now.Sub(a.lastChange) < wc.ScaleUpCooldown.D() {
			return
		}
		p, ok := s.memoryPressure()
		a.pressure = p
		if ok && p > wc.MemoryPressureLimit {
			s.holdBack(fmt.Sprintf("memory pressure %.1f%% (PSI some avg10) above memory_pressure_limit %g%%", p, wc.MemoryPressureLimit))
			return
		}
		s.holdBack("")
		why := fmt.Sprintf("%d connections waiting in the accept queue", a.queued)
		if !queuedLong {
			why = fmt.Sprintf("all %d workers busy (%.1f workers' worth of CPU)", ready, a.busy)
		}
		a.ups++
		s.scaleTo(s.count+1, "autoscale up: "+why, now)
		return
	}
	s.releaseHoldBack()
	idle := a.queued == 0 && s.count > wc.Min && a.busy < float64(s.count-1)*idleShare
	if !idle {
		a.idleSince = time.Time{}
		return
	}
	if a.idleSince.IsZero() {
		a.idleSince = now
	}
	after := wc.ScaleDownAfter.D()
	if s.rollout || now.Sub(a.idleSince) < after || now.Sub(a.lastChange) < after {
		return
	}
	a.downs++
	a.idleSince = now // the next one after another full period
	s.scaleTo(s.count-1, fmt.Sprintf("autoscale down: idle for %v (%.1f workers' worth of CPU in use)", after, a.busy), now)
}

// holdBack records (and logs, when it changes) why a worker that is
// wanted is not added.
func (s *Supervisor) holdBack(why string) {
	a := &s.as
	if why == a.heldBack {
		return
	}
	switch {
	case why != "" && a.heldBack == "":
		s.log.Warn("autoscale held back: not adding a worker", "reason", why, "workers", s.count, "max", s.cfg.Workers.Max)
	case why == "":
		s.log.Info("autoscale no longer held back", "workers", s.count)
	}
	a.heldBack = why
}

// releaseHoldBack ends a hold-back once the pressure is gone. A moment in
// which no worker is wanted (a busy sample just below the mark) does not
// end it: the log and the status would flap with every sample.
func (s *Supervisor) releaseHoldBack() {
	a := &s.as
	if a.heldBack == "" {
		return
	}
	p, ok := s.memoryPressure()
	a.pressure = p
	if ok && p > s.cfg.Workers.MemoryPressureLimit {
		return
	}
	s.holdBack("")
}

// scaleTo sets the target count (manage starts or drains the difference)
// and restarts the cool-downs.
func (s *Supervisor) scaleTo(n int, why string, now time.Time) {
	s.log.Info("scaling", "from", s.count, "to", n, "reason", why)
	s.count = n
	s.as.lastChange = now
}

// busyWorkers sums the CPU the current workers wanted over their last
// sample, at most one worker's worth each.
func (s *Supervisor) busyWorkers() float64 {
	busy := 0.0
	for _, w := range s.workers {
		if w.kind != zygote && w.state == Ready && w.gen == s.gen {
			busy += min(w.util, 1)
		}
	}
	return busy
}
