package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/edgeapp/edgeapp/internal/systemd"
)

// An upstream connection is used by one request at a time, in that
// request's goroutine: the request is written, the response read, and the
// connection goes back to its server's idle list once the response has
// been read to its end. There is no goroutine per connection and no read
// while a connection is idle; a connection the server closed while it was
// idle shows as a write error or as EOF before the first byte of the
// response (staleError), which the retry rules treat as "not answered".

// readBufSize is an upstream connection's read buffer, taken from a pool
// for one exchange and given back when the connection goes idle, so idle
// connections hold no buffer. A response head must fit in maxHeadSize.
const (
	readBufSize = 16 << 10
	maxHeadSize = 64 << 10
)

var readBufs = sync.Pool{New: func() any { b := make([]byte, readBufSize); return &b }}

// upConn is one connection to an upstream server.
type upConn struct {
	nc   net.Conn
	pool *connPool

	buf  *[]byte // read buffer while in use; nil while idle
	r, w int     // buf[r:w] is read but not consumed

	reused   bool  // it served an exchange before this one
	private  bool  // opened with a PROXY header: never reused (sendproxy.go)
	idleAt   int64 // nanotime it went idle
	expires  int64 // nanotime the server said it would close it (Keep-Alive: timeout); 0: never said
	written  int64 // bytes of the current request written
	received int64 // bytes of the current response read
	deadline int64 // nanotime of the armed read/write deadline; 0: none
}

// rb is the read buffer, taken from the pool on first use.
func (c *upConn) rb() []byte {
	if c.buf == nil {
		c.buf = readBufs.Get().(*[]byte)
		c.r, c.w = 0, 0
	}
	return *c.buf
}

// buffered returns the bytes read and not consumed yet.
func (c *upConn) buffered() []byte {
	if c.buf == nil {
		return nil
	}
	return (*c.buf)[c.r:c.w]
}

// fill reads once more from the connection into the free end of the
// buffer, moving unconsumed bytes to its start first when it is full and
// growing it (up to maxHeadSize) when a head does not fit.
func (c *upConn) fill(wt *waiter) error {
	b := c.rb()
	if c.r == c.w {
		c.r, c.w = 0, 0
	} else if c.w == len(b) && c.r > 0 {
		c.w = copy(b, b[c.r:c.w])
		c.r = 0
	}
	if c.w == len(b) {
		if len(b) >= maxHeadSize {
			return errHeadTooLarge
		}
		nb := make([]byte, min(2*len(b), maxHeadSize)) // rare: not pooled
		copy(nb, b[c.r:c.w])
		w := c.w - c.r
		c.releaseBuf()
		c.buf, c.r, c.w = &nb, 0, w
		b = nb
	}
	n, err := c.read(b[c.w:], wt)
	c.w += n
	return err
}

// consume marks n buffered bytes as used.
func (c *upConn) consume(n int) {
	c.r += n
}

// waiter is how long a read or write may wait for the server: the request
// goroutine does the I/O itself, so instead of a goroutine watching the
// client, the connection's deadline comes back every poll interval to look
// whether the client has gone (its request's context is done).
type waiter struct {
	ctx  context.Context
	poll time.Duration
	hard int64 // nanotime after which waiting ends with timeout; 0: none
	// idle, when set, replaces hard by a limit on each read or write: the
	// longest silence between two of them. It is counted from the first
	// time the deadline comes back during the read or write (at most poll
	// after it began), so that a read that does not wait costs no clock.
	idle    time.Duration
	started int64
	// kind and limit make the error for passing the limit (see timeout),
	// err when kind is 0.
	kind  uint8
	limit time.Duration
	err   error
}

// Kinds of waits, for their timeout errors.
const (
	waitHead uint8 = iota + 1
	waitSend
	waitBody
	waitExpect
)

// timeout is the error for a wait that went past its limit, made only then.
func (wt *waiter) timeout() error {
	switch wt.kind {
	case waitHead:
		return &timeoutError{wt.limit}
	case waitSend:
		return &sendTimeoutError{wt.limit}
	case waitBody:
		return &bodyTimeoutError{wt.limit}
	case waitExpect:
		return errExpectTimeout
	}
	return wt.err
}

// errClientGone ends an exchange whose client went away.
var errClientGone = errors.New("the client went away")

// read reads into p, waiting as wt allows.
func (c *upConn) read(p []byte, wt *waiter) (int, error) {
	if wt != nil {
		wt.started = 0
	}
	for {
		n, err := c.nc.Read(p)
		if n > 0 {
			c.received += int64(n)
			return n, nil
		}
		if err == nil {
			continue
		}
		if !isDeadline(err) || wt == nil {
			return 0, err
		}
		if err := c.rearm(wt); err != nil {
			return 0, err
		}
	}
}

// write writes all of p, waiting as wt allows.
func (c *upConn) write(p []byte, wt *waiter) error {
	if wt != nil {
		wt.started = 0
	}
	c.writeDeadline(wt)
	for len(p) > 0 {
		n, err := c.Write(p)
		p = p[n:]
		if err == nil {
			continue
		}
		if !isDeadline(err) || wt == nil {
			return err
		}
		if c.pool.isTLS {
			return wt.timeout()
		}
		if err := c.rearm(wt); err != nil {
			return err
		}
	}
	return nil
}

// rearm runs when the deadline passed: it ends the wait if the client left
// or wt's limit passed, else sets the next deadline.
func (c *upConn) rearm(wt *waiter) error {
	if wt.ctx != nil {
		// Done, not Err: asking for Done is what makes edged's engine
		// start watching the client connection for a departure, which
		// only a wait as long as this one needs.
		select {
		case <-wt.ctx.Done():
			return errClientGone
		default:
		}
	}
	now := nanotime()
	d := int64(wt.poll)
	if wt.idle > 0 {
		if wt.started == 0 {
			wt.started = now
		}
		wt.hard = wt.started + int64(wt.idle)
	}
	if wt.hard != 0 {
		if now >= wt.hard {
			return wt.timeout()
		}
		d = min(d, wt.hard-now)
	}
	c.deadline = now + d
	c.setDeadline(c.deadline)
	return nil
}

// setDeadline moves the polling deadline. On TLS it is the read deadline
// alone: a TLS connection whose write timed out cannot be written again,
// so its writes get their whole limit instead (writeDeadline).
func (c *upConn) setDeadline(at int64) {
	t := time.Time{}
	if at != 0 {
		t = epoch.Add(time.Duration(at))
	}
	if c.pool.isTLS {
		_ = c.nc.SetReadDeadline(t)
		return
	}
	_ = c.nc.SetDeadline(t)
}

// writeDeadline gives a write on a TLS connection the whole of what wt
// allows, since it cannot come back to look at the client in between.
func (c *upConn) writeDeadline(wt *waiter) {
	if !c.pool.isTLS || wt == nil {
		return
	}
	at := wt.hard
	if wt.idle > 0 {
		at = nanotime() + int64(wt.idle)
	}
	t := time.Time{}
	if at != 0 {
		t = epoch.Add(time.Duration(at))
	}
	_ = c.nc.SetWriteDeadline(t)
}

// releaseBuf gives the read buffer back; only when nothing is buffered.
func (c *upConn) releaseBuf() {
	if c.buf != nil && len(*c.buf) == readBufSize {
		readBufs.Put(c.buf)
	}
	c.buf = nil
	c.r, c.w = 0, 0
}

// Write counts the request bytes that left, to tell a request nothing of
// which reached the server.
func (c *upConn) Write(p []byte) (int, error) {
	n, err := c.nc.Write(p)
	c.written += int64(n)
	return n, err
}

// ReadFrom lets a spooled request body reach the connection's ReadFrom
// (sendfile for a file on TCP), still counting bytes.
func (c *upConn) ReadFrom(r io.Reader) (int64, error) {
	var n int64
	var err error
	if rf, ok := c.nc.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(r)
	} else {
		n, err = io.Copy(struct{ io.Writer }{c.nc}, r)
	}
	c.written += n
	return n, err
}

// arm sets the connection's read and write deadline to now+d, unless the
// one already set is no later and within a quarter of d of it: moving a
// deadline costs a timer update, so on a busy connection it moves a few
// times a second, not once per request. A deadline that comes early only
// makes rearm look at the client and the limit once more.
func (c *upConn) arm(now int64, d time.Duration) {
	at := now + int64(d)
	if c.deadline != 0 && c.deadline <= at && at-c.deadline < int64(d)/4 {
		return
	}
	c.deadline = at
	c.setDeadline(at)
}

// disarm lifts the deadline (for tunnels, which outlive the exchange).
func (c *upConn) disarm() {
	if c.deadline != 0 {
		c.deadline = 0
		_ = c.nc.SetDeadline(time.Time{})
	}
}

// close drops the connection.
func (c *upConn) close() {
	c.releaseBuf()
	_ = c.nc.Close()
	c.pool.open.Add(-1)
}

// release ends an exchange that read its whole response: the connection
// goes back to the idle list if keep is true and nothing unexpected
// follows the response, else it is closed.
func (c *upConn) release(keep bool) {
	if keep && c.r == c.w {
		c.releaseBuf()
		c.pool.put(c)
		return
	}
	if tc, ok := netConn(c.nc).(*net.TCPConn); ok && c.r == c.w {
		// The exchange is complete and the server is done with the
		// connection (it said close): end it with a reset rather than a
		// FIN handshake. That spares both kernels a round of packets and
		// the server a TIME_WAIT socket per request, which at thousands
		// of new connections a second is what makes ports collide.
		_ = tc.SetLinger(0)
	}
	c.close()
}

// alive reports whether an idle connection looks usable: the server has
// not closed it and has sent nothing unasked. One non-blocking peek,
// made only before a request that cannot be sent twice, since for that
// request a connection closed while idle would be a failed request rather
// than one to send again.
func (c *upConn) alive() bool {
	sc, ok := netConn(c.nc).(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return true
	}
	ok = true
	var b [1]byte
	_ = rc.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		ok = n < 0 && (err == syscall.EAGAIN || err == syscall.EWOULDBLOCK)
		return true // never wait
	})
	return ok
}

// connPool holds the idle keep-alive connections to one server and dials
// new ones. It is shared by the pools of successive configurations while
// its settings stay the same (poolKey), so a reload keeps them.
type connPool struct {
	key  poolKey
	dial func(ctx context.Context) (net.Conn, error)
	// rawDial connects without the upstream's TLS, for TCP streams.
	rawDial func(ctx context.Context) (net.Conn, error)
	refs    atomic.Int32 // pools holding it
	isTLS   bool         // its connections are *tls.Conn
	open    atomic.Int64 // connections open, idle or in use
	// h2: the server speaks HTTP/2 (protocol h2 or h2c); its connections
	// are there, shared by many requests, and the idle list is unused.
	h2 *h2Pool

	mu      sync.Mutex
	idle    []*upConn // most recently used last
	closed  bool
	reaper  *time.Timer
	reaping bool
}

type poolKey struct {
	addr          string
	connect, idle time.Duration
	maxIdle       int
	tls           string // digest of the TLS settings; "" for plain connections
	proto         string // UpstreamConfig.Protocol
}

// MaxIdleCeiling bounds the idle connections kept per server when max_idle
// is 0 (automatic): the idle list then follows the load, keeping as many
// connections as were in use at once during the last idle_timeout.
const MaxIdleCeiling = 4096

func newConnPool(k poolKey, ut *upstreamTLS) *connPool {
	// No SO_KEEPALIVE on upstream connections (nginx's
	// proxy_socket_keepalive off): it costs four setsockopt calls per
	// dial, which the new-connection-per-request case pays on every
	// request; idle connections are closed by idle_timeout.
	d := &net.Dialer{KeepAlive: -1}
	network, address, _ := systemd.SplitDialAddr(k.addr) // checked by Validate
	p := &connPool{key: k, dial: dialer(d, k.connect, k.addr, network, address)}
	p.rawDial = p.dial
	h2 := k.proto == ProtoH2 || k.proto == ProtoH2C
	if ut != nil {
		p.isTLS = true
		tc := ut.clientConfig(k.addr)
		if h2 {
			tc.NextProtos = []string{"h2"}
		}
		p.dial = tlsDialer(p.dial, tc, k.addr, k.connect)
	}
	if h2 {
		p.h2 = newH2Pool(p, k.idle)
	}
	return p
}

func (p *connPool) maxIdle() int {
	if p.key.maxIdle > 0 {
		return p.key.maxIdle
	}
	return MaxIdleCeiling
}

// get returns an idle connection (the most recently used one that has not
// expired) or nil.
func (p *connPool) get(now int64) *upConn {
	p.mu.Lock()
	for n := len(p.idle); n > 0; n = len(p.idle) {
		c := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		if !c.expired(now, p.key.idle) {
			p.mu.Unlock()
			return c
		}
		p.mu.Unlock()
		c.close()
		p.mu.Lock()
	}
	p.mu.Unlock()
	return nil
}

// expired: idle longer than idle_timeout, or past what the server said.
func (c *upConn) expired(now int64, idle time.Duration) bool {
	return now-c.idleAt >= int64(idle) || (c.expires != 0 && now >= c.expires)
}

// newConn dials a new connection.
func (p *connPool) newConn(ctx context.Context) (*upConn, error) {
	nc, err := p.dial(ctx)
	if err != nil {
		return nil, err
	}
	p.open.Add(1)
	return &upConn{nc: nc, pool: p}, nil
}

// put makes c idle, or closes it when the list is full or the pool closed.
func (p *connPool) put(c *upConn) {
	if c.private {
		c.close() // it named one client in its PROXY header
		return
	}
	now := nanotime()
	c.idleAt, c.reused, c.written, c.received = now, true, 0, 0
	p.mu.Lock()
	if p.closed || len(p.idle) >= p.maxIdle() {
		p.mu.Unlock()
		c.close()
		return
	}
	p.idle = append(p.idle, c)
	if !p.reaping {
		p.reaping = true
		p.armReaper(p.key.idle)
	}
	p.mu.Unlock()
}

// armReaper runs reap after d; p.mu is held. One timer per server, not
// per connection, closes connections that stay idle past idle_timeout.
func (p *connPool) armReaper(d time.Duration) {
	if p.reaper == nil {
		p.reaper = time.AfterFunc(d, p.reap)
	} else {
		p.reaper.Reset(d)
	}
}

// reap closes the connections idle for too long (the oldest are first in
// the list) and comes back when the next one will be.
func (p *connPool) reap() {
	now := nanotime()
	p.mu.Lock()
	i := 0
	for i < len(p.idle) && p.idle[i].expired(now, p.key.idle) {
		i++
	}
	stale := make([]*upConn, i)
	copy(stale, p.idle[:i])
	// Also those the server said it would have closed by now.
	kept := p.idle[:0]
	for _, c := range p.idle[i:] {
		if c.expires != 0 && now >= c.expires {
			stale = append(stale, c)
			continue
		}
		kept = append(kept, c)
	}
	clear(p.idle[len(kept):])
	p.idle = kept
	if len(p.idle) == 0 || p.closed {
		p.reaping = false
	} else {
		next := p.idle[0].idleAt + int64(p.key.idle) - now
		for _, c := range p.idle {
			if c.expires != 0 && c.expires-now < next {
				next = c.expires - now
			}
		}
		p.armReaper(max(time.Duration(next), 10*time.Millisecond))
	}
	p.mu.Unlock()
	for _, c := range stale {
		c.close()
	}
}

// reopen undoes a final closeIdle when a new pool takes the connection
// pool over again.
func (p *connPool) reopen() {
	p.mu.Lock()
	p.closed = false
	p.mu.Unlock()
}

// closeIdle closes the idle connections; with final, connections that
// come back later are closed too.
func (p *connPool) closeIdle(final bool) {
	if p.h2 != nil {
		p.h2.closeIdle(final)
	}
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	if final {
		p.closed = true
		if p.reaper != nil {
			p.reaper.Stop()
		}
		p.reaping = false
	}
	p.mu.Unlock()
	for _, c := range idle {
		c.close()
	}
}

// idleCount is the number of idle connections (tests, status).
func (p *connPool) idleCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.idle)
}

var errHeadTooLarge = errors.New("response header larger than 64 KiB")

func isDeadline(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }
