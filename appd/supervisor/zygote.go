package supervisor

// The zygote: with [app] zygote = true (or preload = true) the command
// runs once per generation as a zygote, which loads what it can share and
// forks the generation's workers when appd asks. The protocol is text
// messages over an AF_UNIX SOCK_SEQPACKET socket pair; the zygote's end is
// the fd in APPD_ZYGOTE_FD. Fields are KEY=VALUE, separated by spaces;
// descriptors travel as SCM_RIGHTS, in the order the fds= field names.
//
//	zygote -> appd  ready                          loaded; may fork now
//	appd -> zygote  fork id=N slot=S gen=G fds=output
//	                                               fork a worker; the fd (if
//	                                               any) becomes its stdout
//	                                               and stderr
//	zygote -> appd  forked id=N pid=P              forked; the child waits;
//	                                               a pidfd of it may ride
//	                                               along (SCM_RIGHTS)
//	appd -> zygote  go id=N                        the child is in its
//	                                               cgroup leaf: let it run
//	appd -> zygote  abort id=N                     let it exit at once
//	zygote -> appd  exited pid=P code=C            a child exited (or
//	                signal=S core=0|1              was killed)
//
// The child of a fork sets APPD_WORKER=S, APPD_GENERATION=G, LISTEN_PID
// and WATCHDOG_PID to its own pid, puts itself in its own process group,
// closes its copy of the socket pair, and waits for go (EOF: exit) before
// it accepts on fds 3... It must not depend on the zygote afterwards: a
// zygote that dies takes no worker with it. The zygote is ready when it
// sends "ready"; it exits when appd closes the socket pair or sends
// SIGTERM. Workers report READY=1, WATCHDOG=1, STATUS= to NOTIFY_SOCKET as
// any worker does.
//
// In the loop, a zygote is a worker of its own kind (slot -1): it starts,
// becomes ready, drains and is reaped by the same transitions. A fork is a
// worker whose start is a request to its generation's zygote.

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/edgeapp/edgeapp/appd/config"
	"golang.org/x/sys/unix"
)

const (
	zygoteWriteWait = 2 * time.Second  // a zygote that does not read this long is broken
	forkStatusWait  = 2 * time.Second  // pidfd said "exited": wait this long for the zygote's status
	envZygoteFD     = "APPD_ZYGOTE_FD" // the zygote's end of the socket pair
	envPreload      = "APPD_PRELOAD"   // "1": load the application before forking
	unknownStatus   = "exited, status unknown (its zygote was gone)"
)

// Events the zygote's reader and a fork's pidfd watcher post.
type (
	zygoteEvent struct {
		id     int // the zygote's worker id
		verb   string
		fields map[string]string
		fds    []int
		closed bool // the zygote closed its end (or died)
	}
	forkGoneEvent struct{ id int }
)

// zygoteConn is appd's end of a zygote's socket pair.
type zygoteConn struct{ c *net.UnixConn }

// newZygotePair makes the socket pair: appd's end, and the zygote's end to
// pass as an inherited file.
func newZygotePair() (*zygoteConn, *os.File, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("making the zygote's socket pair: %w", err)
	}
	mine := os.NewFile(uintptr(fds[0]), "zygote-ctl")
	defer mine.Close()
	c, err := net.FileConn(mine)
	if err != nil {
		unix.Close(fds[1])
		return nil, nil, fmt.Errorf("making the zygote's socket pair: %w", err)
	}
	return &zygoteConn{c: c.(*net.UnixConn)}, os.NewFile(uintptr(fds[1]), "zygote"), nil
}

// send writes one message with optional descriptors; a zygote that does
// not take it within zygoteWriteWait is broken.
func (z *zygoteConn) send(msg string, fds ...int) error {
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	z.c.SetWriteDeadline(time.Now().Add(zygoteWriteWait))
	_, _, err := z.c.WriteMsgUnix([]byte(msg), oob, nil)
	return err
}

func (z *zygoteConn) Close() error { return z.c.Close() }

// readZygote posts each message of zygote id until the connection ends.
func (s *Supervisor) readZygote(id int, z *zygoteConn) {
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(8*4))
	for {
		n, oobn, _, _, err := z.c.ReadMsgUnix(buf, oob)
		var fds []int
		if oobn > 0 {
			if msgs, perr := unix.ParseSocketControlMessage(oob[:oobn]); perr == nil {
				for i := range msgs {
					if got, rerr := unix.ParseUnixRights(&msgs[i]); rerr == nil {
						fds = append(fds, got...)
					}
				}
			}
		}
		if err != nil || n == 0 {
			closeFDs(fds)
			s.post(zygoteEvent{id: id, closed: true})
			return
		}
		verb, fields := parseFields(string(buf[:n]))
		if verb == "exited" {
			s.waitNotify() // the fork's last notify messages come first
		}
		s.post(zygoteEvent{id: id, verb: verb, fields: fields, fds: fds})
	}
}

func parseFields(msg string) (string, map[string]string) {
	parts := strings.Fields(msg)
	if len(parts) == 0 {
		return "", nil
	}
	m := make(map[string]string, len(parts)-1)
	for _, p := range parts[1:] {
		if k, v, ok := strings.Cut(p, "="); ok {
			m[k] = v
		}
	}
	return parts[0], m
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// zygoteOf is generation gen's zygote that is not on its way out.
func (s *Supervisor) zygoteOf(gen int) *worker {
	for _, w := range s.workers {
		if w.kind == zygote && w.gens[gen] && w.state != Draining && !w.killed {
			return w
		}
	}
	return nil
}

// keepZygote lets a reload to c keep the zygote z, rather than start a new
// one: when neither preloads (z holds no application code: its forks
// import the application and read gunicorn's configuration themselves)
// and what the zygote was started with is the same. The new generation's
// forks then come at the speed of fork.
func keepZygote(z *worker, c *config.Config) bool {
	a, b := z.cfg.App, c.App
	return z.state == Ready && a.Zygote && b.Zygote && !a.Preload && !b.Preload &&
		slices.Equal(a.Command, b.Command) && maps.Equal(a.Environment, b.Environment) &&
		a.Directory == b.Directory && a.User == b.User && a.Group == b.Group
}

// spawnZygote starts the current generation's zygote (after its backoff).
func (s *Supervisor) spawnZygote(now time.Time) {
	if now.Before(s.zslot.nextStart) {
		return
	}
	c := s.cfg
	s.nextID++
	w := &worker{id: s.nextID, slot: -1, gen: s.gen, cfg: c, kind: zygote, state: Starting, started: now,
		startDeadline: now.Add(c.Workers.StartTimeout.D()), gens: map[int]bool{s.gen: true}}
	if s.tree != nil {
		leaf, err := s.tree.NewLeaf(fmt.Sprintf("zygote-%d", w.id), limitsOf(c, s.tree.Controllers()))
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
	go s.readZygote(w.id, w.ctl)
	s.log.Info("zygote started", "pid", w.pid, "gen", w.gen, "preload", c.App.Preload)
}

// fork asks zygote z for a worker in slot i: its leaf first, then the
// request; the worker exists (pid 0) from now on, so start_timeout and
// the slot's accounting apply as to any worker.
func (s *Supervisor) fork(z *worker, i int, now time.Time) {
	c := s.cfg
	s.nextID++
	w := &worker{id: s.nextID, slot: i, gen: s.gen, cfg: c, kind: forked, zygote: z, state: Starting, started: now,
		startDeadline: now.Add(c.Workers.StartTimeout.D()), watchdog: c.Workers.Timeout.D()}
	if s.tree != nil {
		leaf, err := s.tree.NewLeaf(fmt.Sprintf("w%d-%d", i, w.id), limitsOf(c, s.tree.Controllers()))
		if err != nil {
			s.spawnFailed(w, fmt.Errorf("creating its cgroup leaf: %w", err), now)
			return
		}
		w.leaf = leaf
	}
	msg := fmt.Sprintf("fork id=%d slot=%d gen=%d", w.id, i, w.gen)
	var fds []int
	var outW *os.File
	if c.App.Output != "inherit" {
		r, wr, err := os.Pipe()
		if err != nil {
			s.abandonFork(w, fmt.Errorf("making the output pipe: %w", err), now)
			return
		}
		w.outR, outW = r, wr
		msg += " fds=output"
		fds = append(fds, int(outW.Fd()))
	}
	err := z.ctl.send(msg, fds...)
	if outW != nil {
		outW.Close()
	}
	if err != nil {
		s.abandonFork(w, fmt.Errorf("asking zygote pid %d to fork: %w", z.pid, err), now)
		s.log.Error("zygote does not take requests, killing it", "pid", z.pid, "gen", z.gen, "err", err)
		z.failure = "stopped taking fork requests"
		s.kill(z)
		return
	}
	s.workers[w.id] = w
	s.log.Debug("worker requested from the zygote", "worker", wname(w), "gen", w.gen, "zygote", z.pid)
}

// abandonFork undoes a fork request that could not be made.
func (s *Supervisor) abandonFork(w *worker, err error, now time.Time) {
	if w.outR != nil {
		w.outR.Close()
	}
	if w.leaf != nil {
		w.leaf.Remove()
	}
	s.spawnFailed(w, err, now)
}

// handleZygote applies one message of a zygote.
func (s *Supervisor) handleZygote(e zygoteEvent, now time.Time) {
	z := s.workers[e.id]
	if z == nil || z.kind != zygote {
		closeFDs(e.fds)
		return
	}
	if e.closed {
		if !z.exited && z.state != Draining && !s.stopping {
			s.log.Warn("zygote closed its connection", "pid", z.pid, "gen", z.gen)
		}
		return
	}
	switch e.verb {
	case "ready":
		closeFDs(e.fds)
		s.markReady(z, "ready", now)
	case "forked":
		s.forked(z, e, now)
	case "exited":
		closeFDs(e.fds)
		pid, _ := strconv.Atoi(e.fields["pid"])
		w := s.byPid[pid]
		if w == nil || w.zygote != z {
			return // aborted before appd knew it, or already reaped
		}
		s.reap(w, zygoteExitString(e.fields), now)
	default:
		closeFDs(e.fds)
		s.log.Warn("zygote sent an unknown message, ignored", "pid", z.pid, "message", e.verb)
	}
}

// forked is a fork request fulfilled: appd learns the pid, places the
// child in its leaf and lets it go.
func (s *Supervisor) forked(z *worker, e zygoteEvent, now time.Time) {
	id, _ := strconv.Atoi(e.fields["id"])
	pid, _ := strconv.Atoi(e.fields["pid"])
	w := s.workers[id]
	if w == nil || w.kind != forked || w.zygote != z || w.pid != 0 || w.killed || pid <= 0 {
		// Given up on meanwhile (start_timeout, reload, stop).
		closeFDs(e.fds)
		if err := z.ctl.send(fmt.Sprintf("abort id=%d", id)); err != nil {
			s.log.Warn("cannot tell the zygote to abort a fork", "pid", z.pid, "err", err)
		}
		return
	}
	w.pid = pid
	s.byPid[pid] = w
	var pidfd *os.File
	if len(e.fds) > 0 {
		unix.SetNonblock(e.fds[0], true)
		pidfd = os.NewFile(uintptr(e.fds[0]), "pidfd")
		closeFDs(e.fds[1:])
	} else if fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK); err == nil {
		pidfd = os.NewFile(uintptr(fd), "pidfd")
	}
	w.pidfd = pidfd
	if pidfd != nil {
		go func() {
			waitPidfd(pidfd)
			s.waitNotify()
			s.post(forkGoneEvent{id: id})
		}()
	}
	if w.outR != nil {
		s.copyOutput(w.outR, w)
		w.outR = nil
	}
	if w.leaf != nil {
		if err := w.leaf.Add(pid); err != nil {
			w.failure = "cannot place it in its cgroup leaf: " + err.Error()
			s.log.Error("cannot move a forked worker into its cgroup leaf, aborting it", "worker", wname(w), "pid", pid, "err", err)
			z.ctl.send(fmt.Sprintf("abort id=%d", id))
			return
		}
	}
	if err := z.ctl.send(fmt.Sprintf("go id=%d", id)); err != nil {
		w.failure = "the zygote did not take its go-ahead: " + err.Error()
		s.kill(w)
		return
	}
	w.placed = true
	leaf := "-"
	if w.leaf != nil {
		leaf = w.leaf.Path()
	}
	s.log.Info("worker forked", "worker", wname(w), "pid", pid, "gen", w.gen, "zygote", z.pid, "cgroup", leaf)
	switch w.cfg.App.Readiness {
	case "exec":
		s.markReady(w, "fork", now)
	case "probe":
		s.startProbe(w)
	}
}

// forkGone: a fork's pidfd says it exited. Its zygote reports the status
// (a moment later); without a zygote there is none to wait for.
func (s *Supervisor) forkGone(e forkGoneEvent, now time.Time) {
	w := s.workers[e.id]
	if w == nil || !w.goneAt.IsZero() {
		return
	}
	w.goneAt = now
	if w.zygote.exited {
		s.reap(w, unknownStatus, now)
	}
}

// zygoteGone settles the forks of a zygote that exited: those it never
// forked, and those that already exited without a status, are reaped; the
// others live on and are watched through their pidfd.
func (s *Supervisor) zygoteGone(z *worker, now time.Time) {
	z.exited = true
	z.ctl.Close()
	for _, w := range s.workers {
		if w.zygote != z {
			continue
		}
		switch {
		case w.pid == 0:
			if w.failure == "" && w.planned == "" {
				w.failure = "its zygote exited before forking it"
			}
			s.reap(w, "never forked", now)
		case !w.goneAt.IsZero() || w.pidfd == nil:
			s.reap(w, unknownStatus, now)
		}
	}
}

// manageZygotes keeps the current generation's zygote running (restarted
// with the slots' backoff when it died) and drains every other zygote
// once no worker of it is left; the stable generation's stays while a
// reload may roll back to it.
func (s *Supervisor) manageZygotes(now time.Time) {
	if !s.stopping && s.cfg.App.Zygote && s.zygoteOf(s.gen) == nil {
		s.spawnZygote(now)
	}
	for _, z := range s.workers {
		if z.kind != zygote || z.state == Draining || z.killed {
			continue
		}
		if !s.stopping && (z.gens[s.gen] || z.gens[s.stableGen]) {
			continue
		}
		busy := false
		for _, w := range s.workers {
			if w.zygote == z {
				busy = true
				break
			}
		}
		if !busy {
			reason := fmt.Sprintf("generation %d is not serving", z.gen)
			if s.stopping {
				reason = "appd stopping"
			}
			s.drain(z, reason, now)
		}
	}
}

// zygoteExitString renders an "exited" report like exitString does.
func zygoteExitString(f map[string]string) string {
	if sig, ok := f["signal"]; ok {
		n, _ := strconv.Atoi(sig)
		out := "killed by signal " + unixSignalName(syscall.Signal(n))
		if f["core"] == "1" {
			out += " (core dumped)"
		}
		return out
	}
	if code, ok := f["code"]; ok {
		return "exit status " + code
	}
	return "exited"
}

// waitPidfd returns once the process behind the pidfd has exited (or the
// file was closed).
func waitPidfd(f *os.File) {
	exited := func(fd uintptr) bool {
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 0)
		return err == nil && n > 0
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	if err := rc.Read(exited); err == nil || errors.Is(err, os.ErrClosed) {
		return
	}
	// Not pollable through the runtime: block a thread on it instead.
	rc.Control(func(fd uintptr) {
		for {
			n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, -1)
			if n > 0 || err != nil && err != unix.EINTR {
				return
			}
		}
	})
}

// pidfdSignal sends sig through a pidfd.
func pidfdSignal(f *os.File, sig syscall.Signal) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.PidfdSendSignal(int(fd), sig, nil, 0) }); err != nil {
		return err
	}
	if errors.Is(serr, unix.ESRCH) {
		return os.ErrProcessDone
	}
	return serr
}
