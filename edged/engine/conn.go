package engine

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edgeapp/edgeapp/edged/httpwire"
	"github.com/edgeapp/edgeapp/edged/reqinfo"
)

// conn is one client connection and everything reused from one request to
// the next on it.
type conn struct {
	s   *Server
	rwc net.Conn // reads, writes and Close go through it
	// raw waits for readability without a buffer, tcp sends files with
	// sendfile(2); both nil on TLS and behind wrappers that do not expose
	// the TCP connection (see unwrapTCP).
	raw syscall.RawConn
	tcp *net.TCPConn
	tls *tls.Conn

	remoteAddr string
	tlsState   *tls.ConnectionState

	state atomic.Int32 // http.ConnState
	since atomic.Int64 // unix nanoseconds of the last state change, or of a parked connection's wake

	// active holds what only a connection with a goroutine needs (its
	// fields are promoted: c.rbuf is c.active.rbuf); nil while parked,
	// so that a parked connection is this struct and Go's socket alone.
	*active
	// rctx is the current request's context; another goroutine (Close)
	// may cancel it.
	rctx atomic.Pointer[reqCtx]

	readDL, writeDL time.Time // deadlines set on rwc
	served          int       // requests served

	// Parking (park.go): fd is the TCP descriptor (-1 until known);
	// parked, inEpoll and parkSeq are guarded by the parker's mutex.
	fd              int
	parked, inEpoll bool
	parkSeq         uint32
}

func newConn(s *Server, rwc net.Conn) *conn {
	c := &conn{s: s, rwc: rwc, remoteAddr: rwc.RemoteAddr().String(), fd: -1}
	if t, ok := rwc.(*tls.Conn); ok {
		c.tls = t
	} else if tcp := unwrapTCP(rwc); tcp != nil {
		c.tcp = tcp
		c.raw, _ = tcp.SyscallConn()
	}
	return c
}

// active is the part of a connection that only one being served needs:
// a parked connection gives it back to a pool, which keeps an idle
// connection small (its reqinfo record, parsed head, response writer and
// header map, and the context holding the record).
type active struct {
	ioState
	info reqinfo.Info
	wire httpwire.Request
	resp response
	ctx  context.Context // server values and info
}

// ioState is the part of active that starts from zero each time a
// connection gets it.
type ioState struct {
	// The read buffer holds rbuf[r:w] unread; nil while idle.
	rbufp *[]byte
	rbuf  []byte
	r, w  int
	bw    *bufio.Writer // nil while idle
	out   connWriter

	headStart, headEnd int // the current request's head in rbuf

	userDL       bool // the handler set deadlines itself
	reqStart     time.Time
	closeAfter   bool // close once the current response is complete
	hijacked     bool
	expect100    bool // the current request expects 100-continue
	continueSent bool
	bodyBroken   bool // the request body could not be read to its end
	watchDone    chan struct{}
	readReady    func(uintptr) bool // readWhenReady
	rn           int
	rerr         error
}

var activePool = sync.Pool{New: func() any {
	a := new(active)
	a.resp.header = make(http.Header, 8)
	return a
}}

// activate gives c its active part.
func (c *conn) activate() {
	if c.active != nil {
		return
	}
	a := activePool.Get().(*active)
	a.resp.c = c
	a.out.c = c
	ctx := context.WithValue(c.s.baseCtx, http.LocalAddrContextKey, c.rwc.LocalAddr())
	a.ctx = reqinfo.NewContext(ctx, &a.info)
	c.active = a
}

// deactivate returns c's active part to the pool.
func (c *conn) deactivate() {
	a := c.active
	if a == nil {
		return
	}
	c.releaseBuffers()
	c.active = nil
	c.rctx.Store(nil)
	a.ioState = ioState{}
	a.info.Reset()
	a.wire = httpwire.Request{Fields: a.wire.Fields[:0]}
	if cap(a.wire.Fields) > 64 {
		a.wire.Fields = nil
	}
	clear(a.resp.header)
	a.resp = response{header: a.resp.header}
	a.ctx = nil
	activePool.Put(a)
}

// unwrapTCP finds the *net.TCPConn under listener wrappers that expose it
// with NetConn() (connection caps, the PROXY protocol). After the
// connection's first read, which goes through the wrappers, the engine
// waits for readability on the TCP connection itself, so a wrapper may
// read ahead only what that first read returns (the PROXY reader keeps at
// most 512 bytes read with the header; the first read takes 4 KiB).
func unwrapTCP(c net.Conn) *net.TCPConn {
	for range 8 {
		switch v := c.(type) {
		case *net.TCPConn:
			return v
		case *tls.Conn:
			return nil
		case interface{ NetConn() net.Conn }:
			c = v.NetConn()
		default:
			return nil
		}
	}
	return nil
}

func (c *conn) setState(st http.ConnState) { c.setStateAt(st, time.Now()) }

// setStateAt is setState with the time already read.
func (c *conn) setStateAt(st http.ConnState, now time.Time) {
	c.state.Store(int32(st))
	c.since.Store(now.UnixNano())
	if h := c.s.o.ConnState; h != nil {
		h(c.rwc, st)
	}
}

// serve runs the connection until it closes, is handed over or parked.
func (c *conn) serve() {
	if c.tls != nil {
		if !c.handshake() {
			c.end()
			return
		}
		if c.tlsState.NegotiatedProtocol == "h2" {
			defer c.end()
			c.serveH2(c.rwc)
			return
		}
	}
	c.loop()
}

// loop serves requests; a parked connection's goroutine returns from it
// and a new one enters it when the connection is readable again.
func (c *conn) loop() {
	c.activate() // a new connection's, or a parked one's that woke
	parked := false
	defer func() {
		if !parked {
			c.end()
		}
	}()
	for {
		if c.r == c.w {
			c.release()
			// One clock read for the state change and the wait's deadline
			// (the clock is a tenth of a µs on this kind of VM, and a
			// request read it a dozen times).
			now := time.Now()
			if c.served > 0 && http.ConnState(c.state.Load()) != http.StateIdle {
				c.setStateAt(http.StateIdle, now)
			}
			ok, park := c.awaitRequest(now)
			if park {
				if p := c.s.parker(); p != nil && p.park(c) {
					parked = true
					return
				}
				c.activate() // parking failed after it gave it back
				continue
			}
			if !ok {
				return
			}
		}
		c.activate()
		if c.s.o.H2C && c.served == 0 {
			if h2, ok := c.priorKnowledge(); !ok {
				return
			} else if h2 {
				c.serveH2(&replayConn{Conn: c.rwc, buf: c.unread()})
				return
			}
		}
		if err := c.readHead(); err != nil {
			c.refuse(err)
			return
		}
		now := time.Now()
		c.setStateAt(http.StateActive, now)
		c.serveRequest(now)
		c.served++
		if c.hijacked || c.closeAfter {
			return
		}
		if c.r == c.w || c.s.closing.Load() {
			if c.out.flush() != nil {
				return
			}
		}
	}
}

func (c *conn) handshake() bool {
	d := c.s.o.ReadHeaderTimeout
	if d <= 0 {
		d = c.s.o.IdleTimeout
	}
	ctx := context.Background()
	if d > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d)
		defer cancel()
	}
	if err := c.tls.HandshakeContext(ctx); err != nil {
		c.s.o.Log.Debug("TLS handshake failed; closing the connection", "client", c.remoteAddr, "err", err)
		return false
	}
	c.tlsState = tlsState(c.tls)
	return true
}

// end closes the connection (unless handed over) and returns its buffers.
func (c *conn) end() {
	if c.active == nil { // served HTTP/2, or was never served
		c.rwc.Close()
		c.setState(http.StateClosed)
		c.s.forget(c)
		return
	}
	if c.hijacked {
		// The handler may still hold the writer, which looks at c's
		// active part: it stays, and does not go back to the pool.
		c.releaseBuffers()
		c.s.forget(c)
		return
	}
	if c.bw != nil {
		c.out.flush()
	}
	if c.closeAfter && c.tcp != nil {
		// Let the client read the response before the close resets the
		// connection over unread request bytes (net/http does the same).
		c.tcp.CloseWrite()
		c.rwc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		if c.rbuf != nil {
			io.CopyBuffer(io.Discard, io.LimitReader(c.rwc, 256<<10), c.rbuf)
		} else {
			io.Copy(io.Discard, io.LimitReader(c.rwc, 256<<10))
		}
	}
	c.rwc.Close()
	c.releaseBuffers()
	c.deactivate()
	c.setState(http.StateClosed)
	c.s.forget(c)
}

// release returns the buffers while the connection waits; a flushed
// writer has nothing left in it.
func (c *conn) release() {
	if c.bw != nil && c.bw.Buffered() > 0 {
		return
	}
	c.releaseBuffers()
}

func (c *conn) releaseBuffers() {
	if c.rbufp != nil {
		c.s.bufs.putRead(c.rbufp)
		c.rbufp, c.rbuf, c.r, c.w = nil, nil, 0, 0
	}
	if c.bw != nil {
		c.s.bufs.putWriter(c.bw)
		c.bw = nil
	}
}

func (c *conn) acquire() {
	if c.rbufp == nil {
		c.rbufp = c.s.bufs.getRead(false)
		c.rbuf, c.r, c.w = *c.rbufp, 0, 0
	}
	if c.bw == nil {
		c.bw = c.s.bufs.getWriter(&c.out)
	}
}

// awaitRequest waits for the next request's first bytes, up to the idle
// timeout; park says the connection has waited parkAfter and should be
// parked. On plain TCP the read is made inside the poller's readiness
// callback with a buffer taken from the pool for that syscall only, so a
// waiting connection holds no buffer, and a read is attempted before
// every wait, so no readiness edge is missed.
func (c *conn) awaitRequest(now time.Time) (ok, park bool) {
	idle := c.s.o.IdleTimeout
	if c.raw == nil || c.served == 0 {
		// A connection's first read goes through its wrappers, which may
		// hold bytes read ahead (a PROXY protocol header's reader).
		c.setReadDeadlineAt(now, idle, idle/10)
		c.acquire()
		n, err := c.rwc.Read(c.rbuf)
		c.w = n
		return n > 0 || err == nil, false
	}
	canPark := !c.s.closing.Load() && (idle <= 0 || idle > 10*c.s.o.parkAfter)
	if canPark {
		// When exactly a connection parks does not matter: a wide window
		// keeps busy connections from moving their timer per request.
		c.setReadDeadlineAt(now, c.s.o.parkAfter, 4*c.s.o.parkAfter)
	} else {
		c.setReadDeadlineAt(now, idle, idle/10)
	}
	if c.readReady == nil {
		c.readReady = c.readWhenReady // one method value per connection, not per wait
	}
	err := c.raw.Read(c.readReady)
	if err != nil {
		return false, canPark && errors.Is(err, os.ErrDeadlineExceeded)
	}
	if c.rerr != nil || c.rn <= 0 {
		c.rerr = nil
		return false, false
	}
	c.r, c.w = 0, c.rn
	c.acquire()
	return true, false
}

// readWhenReady is awaitRequest's readiness callback: a read into a pooled
// buffer, which goes back to the pool if there is nothing to read yet.
// Results in c.rn and c.rerr.
func (c *conn) readWhenReady(fd uintptr) bool {
	if c.rbufp == nil {
		c.rbufp = c.s.bufs.getRead(false)
		c.rbuf = *c.rbufp
	}
	for {
		c.rn, c.rerr = syscall.Read(int(fd), c.rbuf) // syscall's Read tells the race detector about the I/O
		if c.rerr != syscall.EINTR {
			break
		}
	}
	if c.rerr == syscall.EAGAIN {
		c.s.bufs.putRead(c.rbufp)
		c.rbufp, c.rbuf = nil, nil
		return false
	}
	return true
}

// readHead reads until the buffer holds a complete request head and
// parses it into c.active.wire; the head's bytes are c.rbuf[c.r-len:c.r] after.
func (c *conn) readHead() error {
	deadlineSet := false
	for {
		n, err := httpwire.ParseRequest(c.rbuf[c.r:c.w], &c.active.wire)
		if err == nil && n > c.s.o.MaxHeaderBytes {
			return errHeadTooLarge
		}
		if err == nil {
			c.headStart, c.headEnd = c.r, c.r+n
			c.r += n
			return nil
		}
		if err != httpwire.ErrIncomplete {
			return err
		}
		if c.w-c.r >= c.s.o.MaxHeaderBytes {
			return errHeadTooLarge
		}
		if !deadlineSet {
			// A head split across reads: from now on it must arrive
			// within read_header_timeout.
			c.setReadDeadline(c.s.o.ReadHeaderTimeout)
			deadlineSet = true
		}
		c.makeRoom()
		k, err := c.rwc.Read(c.rbuf[c.w:])
		c.w += k
		if k == 0 && err != nil {
			return errClientGone
		}
	}
}

// makeRoom moves unread bytes to the front or to a larger buffer so that a
// read has space.
func (c *conn) makeRoom() {
	if c.w < len(c.rbuf) {
		return
	}
	unread := c.w - c.r
	if c.r > 0 && unread < len(c.rbuf)/2 {
		copy(c.rbuf, c.rbuf[c.r:c.w])
		c.r, c.w = 0, unread
		return
	}
	if len(c.rbuf) == smallBuf {
		p := c.s.bufs.getRead(true)
		copy(*p, c.rbuf[c.r:c.w])
		c.s.bufs.putRead(c.rbufp)
		c.rbufp, c.rbuf, c.r, c.w = p, *p, 0, unread
		return
	}
	copy(c.rbuf, c.rbuf[c.r:c.w])
	c.r, c.w = 0, unread
}

// unread returns a copy of what is buffered and not yet consumed.
func (c *conn) unread() []byte {
	if c.r == c.w {
		return nil
	}
	return bytes.Clone(c.rbuf[c.r:c.w])
}

var (
	errHeadTooLarge = &httpwire.Error{Status: http.StatusRequestHeaderFieldsTooLarge, Reason: "request header fields too large"}
	errClientGone   = errors.New("client closed the connection")
	errBadURL       = &httpwire.Error{Status: http.StatusBadRequest, Reason: "invalid request target"}
	errExpectation  = &httpwire.Error{Status: http.StatusExpectationFailed, Reason: "unsupported expectation"}
)

// refuse answers a request that cannot be served with its status and
// closes the connection.
func (c *conn) refuse(err error) {
	var we *httpwire.Error
	if !errors.As(err, &we) {
		return // the client went away or timed out
	}
	c.s.o.Log.Debug("refused a malformed request; closing the connection", "client", c.remoteAddr, "status", we.Status, "reason", we.Reason)
	msg := http.StatusText(we.Status)
	body := make([]byte, 0, 128)
	body = append(body, msg...)
	body = append(body, ": "...)
	body = append(body, we.Reason...)
	body = append(body, '\n')
	b := httpwire.AppendStatusLine(nil, we.Status)
	b = append(b, "Content-Type: text/plain; charset=utf-8\r\nConnection: close\r\nContent-Length: "...)
	b = appendInt(b, int64(len(body)))
	b = append(b, "\r\n\r\n"...)
	b = append(b, body...)
	c.closeAfter = true
	c.bw.Write(b) // after any pipelined responses still buffered
	c.bw.Flush()
}

// priorKnowledge tells an HTTP/2 client's preface from HTTP/1.1, reading
// until the buffer can tell.
func (c *conn) priorKnowledge() (h2, ok bool) {
	const preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
	for {
		got := c.rbuf[c.r:c.w]
		n := min(len(got), len(preface))
		if string(got[:n]) != preface[:n] {
			return false, true
		}
		if n == len(preface) {
			return true, true
		}
		c.makeRoom()
		k, err := c.rwc.Read(c.rbuf[c.w:])
		c.w += k
		if k == 0 && err != nil {
			return false, false
		}
	}
}

// watchGone watches the connection while a handler runs and its request
// body is done, for the client closing it: the request's context is then
// cancelled (the proxy stops waiting for its upstream). It runs only when
// someone waits on the context, and peeks, so a pipelined request stays
// in the socket. TLS connections are not watched.
func (c *conn) watchGone() bool {
	if c.raw == nil || c.r != c.w {
		return false
	}
	if c.watchDone == nil {
		c.watchDone = make(chan struct{}, 1)
	}
	go func() {
		gone := false
		c.raw.Read(func(fd uintptr) bool {
			var b [1]byte
			n, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
			switch err {
			case unix.EAGAIN, unix.EINTR:
				return false
			case nil:
				gone = n == 0
			default:
				gone = true
			}
			return true
		})
		if gone {
			c.rctx.Load().cancel(context.Canceled)
		}
		c.watchDone <- struct{}{}
	}()
	return true
}

// unwatch stops watchGone's goroutine and waits for it.
func (c *conn) unwatch() {
	if c.raw == nil || c.watchDone == nil {
		return
	}
	c.rwc.SetReadDeadline(aLongTimeAgo)
	<-c.watchDone
	c.readDL = aLongTimeAgo // whatever is set next replaces it
}

var aLongTimeAgo = time.Unix(1, 0)

// setReadDeadline keeps the read deadline between d and 1.1·d from now
// without touching the connection's timer at every request: a deadline
// already in that window stays.
func (c *conn) setReadDeadline(d time.Duration) { c.setReadDeadlineAt(time.Time{}, d, d/10) }

// setReadDeadlineAt keeps the read deadline in [now+d, now+d+slack]; a
// zero now reads the clock.
func (c *conn) setReadDeadlineAt(now time.Time, d, slack time.Duration) {
	if c.userDL {
		return
	}
	dl := c.deadline(now, d, slack, c.s.o.ReadTimeout, c.readDL)
	if !dl.Equal(c.readDL) {
		c.readDL = dl
		c.rwc.SetReadDeadline(dl)
	}
}

func (c *conn) setWriteDeadline(d time.Duration) {
	if c.userDL {
		return
	}
	dl := c.deadline(time.Time{}, d, d/10, c.s.o.WriteTimeout, c.writeDL)
	if !dl.Equal(c.writeDL) {
		c.writeDL = dl
		c.rwc.SetWriteDeadline(dl)
	}
}

// deadline returns cur if it lies in [now+d, now+d+slack], otherwise a
// new one in the middle of that window; a whole-exchange limit
// (read_timeout, write_timeout) caps it.
func (c *conn) deadline(now time.Time, d, slack, whole time.Duration, cur time.Time) time.Time {
	var want time.Time
	if d > 0 {
		if now.IsZero() {
			now = time.Now()
		}
		lo := now.Add(d)
		if !cur.Before(lo) && !cur.After(lo.Add(slack)) {
			want = cur
		} else {
			want = lo.Add(slack / 2)
		}
	}
	if whole > 0 && !c.reqStart.IsZero() {
		if end := c.reqStart.Add(whole); want.IsZero() || end.Before(want) {
			want = end
		}
	}
	return want
}

// connWriter is what the buffered writer writes to: the connection, with
// send_timeout between two writes. With more set (a head before sendfile)
// it writes with MSG_MORE on plain TCP.
type connWriter struct {
	c    *conn
	more bool
}

func (w *connWriter) Write(p []byte) (int, error) {
	c := w.c
	c.setWriteDeadline(c.s.o.SendTimeout)
	if w.more && c.raw != nil {
		return w.writeMore(p)
	}
	n, err := c.rwc.Write(p)
	if err != nil {
		c.closeAfter = true
	}
	return n, err
}

func (w *connWriter) writeMore(p []byte) (int, error) {
	var n int
	var serr error
	err := w.c.raw.Write(func(fd uintptr) bool {
		for n < len(p) {
			k, err := unix.SendmsgN(int(fd), p[n:], nil, nil, unix.MSG_MORE)
			n += max(k, 0)
			switch err {
			case nil:
			case unix.EINTR:
			case unix.EAGAIN:
				return false
			default:
				serr = err
				return true
			}
		}
		return true
	})
	if serr == nil {
		serr = err
	}
	if serr != nil {
		w.c.closeAfter = true
	}
	return n, serr
}

func (w *connWriter) flush() error {
	if w.c.bw == nil {
		return nil
	}
	return w.c.bw.Flush()
}

// replayConn gives back bytes already read from a connection before
// reading more (the HTTP/2 preface read while telling protocols apart).
type replayConn struct {
	net.Conn
	buf []byte
}

func (r *replayConn) Read(p []byte) (int, error) {
	if len(r.buf) > 0 {
		n := copy(p, r.buf)
		r.buf = r.buf[n:]
		return n, nil
	}
	return r.Conn.Read(p)
}

func appendInt(b []byte, n int64) []byte {
	if n == 0 {
		return append(b, '0')
	}
	var d [20]byte
	i := len(d)
	for n > 0 {
		i--
		d[i] = byte('0' + n%10)
		n /= 10
	}
	return append(b, d[i:]...)
}

// stack returns the calling goroutine's stack for a panic report.
func stack() []byte {
	buf := make([]byte, 64<<10)
	return buf[:runtime.Stack(buf, false)]
}
