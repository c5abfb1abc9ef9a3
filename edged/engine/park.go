package engine

import (
	"net/http"
	"runtime/debug"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// parkAfter is how long (to five times that) a kept-alive plain connection
// waits for its next request with a goroutine of its own before it is
// parked: its descriptor goes into the parker's epoll set and the
// goroutine (and its stack) goes away, as nginx keeps an idle connection
// as an event registration and a small struct. A busy connection does not
// wait that long; one that does pays an epoll_ctl and a new goroutine when
// its next request comes (a few µs), and no goroutine waits meanwhile.
const parkAfter = 100 * time.Millisecond

// parker holds parked connections. One goroutine waits on the epoll set;
// a readable connection (a request, or the client's close) is resumed in
// a new goroutine, and one idle past idle_timeout is closed.
type parker struct {
	s      *Server
	epfd   int
	mu     sync.Mutex
	conns  map[int]*conn // by descriptor
	fifo   []parkedConn  // in parking order, for the idle timeout; may hold stale entries
	closed bool

	// Goroutines that end leave their stacks in Go's heap, which an idle
	// server (no allocation, so no GC) never gives back: after many
	// connections parked, the memory goes back to the kernel at once.
	sinceFree int       // connections parked since the last release
	lastFree  time.Time // when
}

const (
	freeAfterParked = 512
	freeInterval    = 10 * time.Second
)

type parkedConn struct {
	c   *conn
	seq uint32
}

func newParker(s *Server) *parker {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		s.o.Log.Warn("cannot create an epoll set; idle connections keep their goroutines", "err", err)
		return nil
	}
	p := &parker{s: s, epfd: epfd, conns: map[int]*conn{}}
	go p.run()
	return p
}

// parker returns the server's parker, started on first use.
func (s *Server) parker() *parker {
	s.parkOnce.Do(func() { s.park.Store(newParker(s)) })
	return s.park.Load()
}

// park registers c, whose goroutine returns right after a true result and
// must not touch c again. It sheds what an idle connection need not keep.
func (p *parker) park(c *conn) bool {
	if c.fd < 0 {
		c.raw.Control(func(fd uintptr) { c.fd = int(fd) })
		if c.fd < 0 {
			return false
		}
	}
	c.deactivate()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: int32(c.fd)}
	op := unix.EPOLL_CTL_ADD
	if c.inEpoll {
		op = unix.EPOLL_CTL_MOD // armed again: one-shot registrations stay in the set
	}
	if err := unix.EpollCtl(p.epfd, op, c.fd, &ev); err != nil {
		return false
	}
	c.inEpoll, c.parked = true, true
	c.parkSeq++
	p.sinceFree++
	p.conns[c.fd] = c
	p.fifo = append(p.fifo, parkedConn{c, c.parkSeq})
	return true
}

// take unparks c for a caller that closes it (Shutdown, Close); false if
// c is not parked (its goroutine, running or resuming, closes it).
func (p *parker) take(c *conn) bool {
	if p == nil {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !c.parked {
		return false
	}
	c.parked = false
	delete(p.conns, c.fd)
	return true
}

func (p *parker) run() {
	events := make([]unix.EpollEvent, 128)
	var resume, expired []*conn
	for {
		n, err := unix.EpollWait(p.epfd, events, 250)
		if err != nil && err != unix.EINTR {
			p.s.o.Log.Error("waiting on parked connections failed; they are closed", "err", err)
			p.closeAll()
			return
		}
		now := time.Now().UnixNano()
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			unix.Close(p.epfd)
			return
		}
		for _, ev := range events[:max(n, 0)] {
			if c := p.conns[int(ev.Fd)]; c != nil {
				delete(p.conns, c.fd)
				c.parked = false
				resume = append(resume, c)
			}
		}
		expired = p.sweep(now, expired)
		release := false
		if p.sinceFree >= freeAfterParked && time.Since(p.lastFree) >= freeInterval && n <= 0 {
			// A quiet moment after a wave of parking.
			p.sinceFree, p.lastFree, release = 0, time.Now(), true
		}
		p.mu.Unlock()
		if release {
			debug.FreeOSMemory()
		}
		for i, c := range resume {
			// A request is on its way: the connection is no longer quiet,
			// so a drain that began meanwhile leaves it to be served.
			c.since.Store(now)
			go c.loop()
			resume[i] = nil
		}
		for i, c := range expired {
			c.closeParked()
			expired[i] = nil
		}
		resume, expired = resume[:0], expired[:0]
	}
}

// sweep takes the connections idle past idle_timeout off the front of
// the queue; called with mu held.
func (p *parker) sweep(now int64, out []*conn) []*conn {
	idle := int64(p.s.o.IdleTimeout)
	i := 0
	for ; i < len(p.fifo); i++ {
		e := p.fifo[i]
		if !e.c.parked || e.c.parkSeq != e.seq {
			continue // resumed or closed since
		}
		if idle <= 0 || now-e.c.since.Load() < idle {
			break
		}
		e.c.parked = false
		delete(p.conns, e.c.fd)
		out = append(out, e.c)
	}
	if i > 0 {
		clear(p.fifo[:i])
		p.fifo = p.fifo[i:]
		if cap(p.fifo) > 1024 && len(p.fifo) < cap(p.fifo)/4 {
			p.fifo = append([]parkedConn(nil), p.fifo...)
		}
	}
	return out
}

func (p *parker) closeAll() {
	p.mu.Lock()
	p.closed = true
	var all []*conn
	for _, c := range p.conns {
		c.parked = false
		all = append(all, c)
	}
	clear(p.conns)
	p.fifo = nil
	p.mu.Unlock()
	for _, c := range all {
		c.closeParked()
	}
}

// count returns how many connections are parked.
func (p *parker) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// stop ends the parker's goroutine (within its wait's 250ms).
func (p *parker) stop() {
	if p == nil {
		return
	}
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
}

// requestWaiting reports whether a parked connection that the caller took
// has bytes to read (a client's close alone is not a request).
func (c *conn) requestWaiting() bool {
	var b [1]byte
	for {
		n, _, err := unix.Recvfrom(c.fd, b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		if err != unix.EINTR {
			return err == nil && n > 0
		}
	}
}

// closeParked closes a connection that has no goroutine.
func (c *conn) closeParked() {
	c.rwc.Close()
	c.setState(http.StateClosed)
	c.s.forget(c)
}
