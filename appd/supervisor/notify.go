package supervisor

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/edgeapp/edgeapp/appd/config"
	"github.com/edgeapp/edgeapp/appd/plainhttp"
	"golang.org/x/sys/unix"
)

// notifyEvent is one sd_notify datagram from a process.
type notifyEvent struct {
	pid    int
	fields []string // KEY=VALUE lines
}

// listenNotify opens the NOTIFY_SOCKET the workers report to: an abstract
// unix datagram socket (reachable by workers running as another user, with
// nothing on disk to clean up) with SO_PASSCRED, so each message carries
// its sender's pid.
func (s *Supervisor) listenNotify() (*net.UnixConn, error) {
	name := fmt.Sprintf("@appd/%d/%d/notify", os.Getpid(), time.Now().UnixNano())
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("opening the workers' notify socket: %w", err)
	}
	raw, err := conn.SyscallConn()
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("opening the workers' notify socket: %w", err)
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1)
	}); err != nil || serr != nil {
		conn.Close()
		return nil, fmt.Errorf("setting SO_PASSCRED on the notify socket: %v %v", err, serr)
	}
	s.notifyPath = name
	return conn, nil
}

// readNotify posts every datagram with its sender's pid until conn closes.
func (s *Supervisor) readNotify(conn *net.UnixConn) {
	buf := make([]byte, notifyBuf)
	oob := make([]byte, unix.CmsgSpace(unix.SizeofUcred)+unix.CmsgSpace(4*16))
	for {
		n, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
		if err != nil {
			return
		}
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil {
			continue
		}
		pid := 0
		for i := range msgs {
			if cred, err := unix.ParseUnixCredentials(&msgs[i]); err == nil {
				pid = int(cred.Pid)
			}
			// Descriptors (FDSTORE=1) are not kept: close them.
			if fds, err := unix.ParseUnixRights(&msgs[i]); err == nil {
				for _, fd := range fds {
					unix.Close(fd)
				}
			}
		}
		if pid == 0 {
			continue
		}
		if pid == s.self && s.flush.reached(buf[:n]) {
			continue
		}
		lines := strings.Split(strings.TrimSpace(string(buf[:n])), "\n")
		s.post(notifyEvent{pid: pid, fields: lines})
	}
}

// notifyFlush is a barrier on the notify socket. A process's last
// datagrams (appd-python's STATUS= with the import error it dies of) are
// queued on the socket before it exits, but the reader may not have
// posted them yet when the exit is seen: under load the exit reached the
// loop first, and the failure (or a reload's rollback) lost what the
// process said. Whoever saw an exit calls waitNotify before posting it:
// it sends a marker from appd itself through the same socket and returns
// once the reader, which posts in arrival order, has posted everything
// queued before the marker.
type notifyFlush struct {
	conn    *net.UnixConn // connected to the notify socket
	mu      sync.Mutex
	next    uint64
	waiting map[uint64]chan struct{}
}

const flushPrefix = "APPD_FLUSH="

func (f *notifyFlush) open(path string) error {
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("connecting to the workers' notify socket: %w", err)
	}
	f.conn, f.waiting = c, map[uint64]chan struct{}{}
	return nil
}

func (f *notifyFlush) close() { f.conn.Close() }

// waitNotify returns once the notify messages sent before the call have
// been posted to the loop, or at once when the supervisor is done;
// flushWait bounds it only for a reader that is gone (appd is stopping).
func (s *Supervisor) waitNotify() {
	f := &s.flush
	if f.conn == nil {
		return
	}
	ch := make(chan struct{})
	f.mu.Lock()
	f.next++
	tok := f.next
	f.waiting[tok] = ch
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		delete(f.waiting, tok)
		f.mu.Unlock()
	}()
	f.conn.SetWriteDeadline(time.Now().Add(flushWait))
	if _, err := f.conn.Write([]byte(flushPrefix + strconv.FormatUint(tok, 10))); err != nil {
		return
	}
	t := time.NewTimer(flushWait)
	defer t.Stop()
	select {
	case <-ch:
	case <-s.done:
	case <-t.C:
	}
}

// reached releases the waiter of a marker; false for anything else.
func (f *notifyFlush) reached(msg []byte) bool {
	tok, ok := bytes.CutPrefix(msg, []byte(flushPrefix))
	if !ok {
		return false
	}
	n, err := strconv.ParseUint(string(tok), 10, 64)
	if err != nil {
		return false
	}
	f.mu.Lock()
	if ch := f.waiting[n]; ch != nil {
		close(ch)
		delete(f.waiting, n)
	}
	f.mu.Unlock()
	return true
}

// handleNotify applies a worker's READY=1, STATUS=, WATCHDOG=1,
// WATCHDOG=trigger, WATCHDOG_USEC=, EXTEND_TIMEOUT_USEC=, STOPPING=1 and
// appd's own APPD_RECYCLE=reason.
func (s *Supervisor) handleNotify(e notifyEvent, now time.Time) {
	w := s.workerOf(e.pid)
	if w == nil {
		s.log.Debug("notify message from a process that is not a worker, ignored", "pid", e.pid)
		return
	}
	for _, f := range e.fields {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "READY":
			if v == "1" && w.cfg.App.Readiness == "notify" && w.kind != zygote {
				s.markReady(w, "READY=1", now)
			}
		case "STATUS":
			w.status = v
		case "WATCHDOG":
			switch v {
			case "1":
				w.lastPing = now
			case "trigger":
				if w.state != Draining && w.abortedAt.IsZero() && !w.killed {
					if w.lastPing.IsZero() {
						w.lastPing = w.started
					}
					s.watchdogExpired(w, now)
				}
			}
		case "WATCHDOG_USEC":
			if us, err := strconv.ParseInt(v, 10, 64); err == nil && us > 0 {
				w.watchdog = time.Duration(us) * time.Microsecond
			}
		case "EXTEND_TIMEOUT_USEC":
			if us, err := strconv.ParseInt(v, 10, 64); err == nil && w.state == Starting {
				if d := now.Add(time.Duration(us) * time.Microsecond); d.After(w.startDeadline) {
					w.startDeadline = d
				}
			}
		case "APPD_RECYCLE":
			// The worker asks to be replaced (appd-python: gunicorn's
			// max_requests): gracefully, one slot at a time, in checkTimers.
			if w.kind != zygote && w.askedRecycle == "" {
				w.askedRecycle = v
			}
		case "STOPPING":
			if v == "1" && w.state != Draining {
				s.log.Info("worker says it is stopping", "worker", wname(w), "pid", w.pid)
			}
		}
	}
}

// workerOf maps a sender pid to its worker: the worker's own pid (the
// trampoline's, as it execs in place), or a descendant of it (a
// pre-forking program's own workers), found through the parent chain.
func (s *Supervisor) workerOf(pid int) *worker {
	for range 8 {
		if w := s.byPid[pid]; w != nil {
			return w
		}
		pp := parentPid(pid)
		if pp <= 1 {
			return nil
		}
		pid = pp
	}
	return nil
}

func parentPid(pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return 0
	}
	pp, _ := strconv.Atoi(f[1])
	return pp
}

// probeAddr is the shared socket's address, from the first listener.
func (s *Supervisor) probeAddr() net.Addr {
	f := s.opts.Listeners[0]
	sa, err := unix.Getsockname(int(f.Fd()))
	if err != nil {
		return nil
	}
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		ip := net.IP(a.Addr[:])
		if ip.IsUnspecified() {
			ip = net.IPv4(127, 0, 0, 1)
		}
		return &net.TCPAddr{IP: ip, Port: a.Port}
	case *unix.SockaddrInet6:
		ip := net.IP(a.Addr[:])
		if ip.IsUnspecified() {
			ip = net.IPv6loopback
		}
		return &net.TCPAddr{IP: ip, Port: a.Port}
	case *unix.SockaddrUnix:
		return &net.UnixAddr{Name: a.Name, Net: "unix"}
	}
	return nil
}

// probe makes one readiness attempt.
func probe(ctx context.Context, addr net.Addr, p config.Probe) bool {
	if addr == nil {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, max(p.Interval.D(), time.Second))
	defer cancel()
	if p.TCP {
		var d net.Dialer
		c, err := d.DialContext(ctx, addr.Network(), addr.String())
		if err != nil {
			return false
		}
		c.Close()
		return true
	}
	code, err := plainhttp.Probe(ctx, addr.Network(), addr.String(), p.Host, p.HTTP)
	return err == nil && code >= 200 && code < 400
}
