package h2

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
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// conn is one HTTP/2 connection. Everything below mu is shared between
// the reader, the writer and the handlers and is only touched with mu held.
type conn struct {
	s        *Server
	nc       net.Conn
	tlsState *tls.ConnectionState
	remote   string
	ctx      context.Context // parent of the requests' contexts
	fr       *http2.Framer   // reads: the reader only; writes: with mu held
	br       io.Reader       // nc, or a bufio.Reader over it on plain connections

	mu      sync.Mutex
	out     []byte // frames queued for the writer
	spare   []byte // the other output buffer, while the writer sends one
	writing bool   // a writer runs (see write)
	henc    *hpack.Encoder
	hbuf    bytes.Buffer
	streams map[uint32]*stream
	// blocked are streams waiting for connection-level flow-control
	// credit or room in the output buffer.
	blocked []*stream
	// maxID is the largest client stream ID seen; open counts streams
	// open from the protocol's point of view, handlers the handler
	// goroutines still running (a reset stream's handler may run on).
	maxID    uint32
	open     int
	handlers int
	// Flow control: what edged may send (connection level; per stream
	// in stream), what the client may still send, and what the handlers
	// consumed and edged has not yet given back.
	sendWindow     int64
	recvWindow     int64
	recvUnacked    int64
	peerInitWindow int64
	peerMaxFrame   uint32
	// Shutdown: goAway 1 after the first GOAWAY (with the largest
	// stream ID) and its PING, 2 after the final one; after it no new
	// stream starts and the connection closes when none is left.
	goAway   int
	goAwayID uint32
	closing  bool  // close once the output is written
	broken   error // the connection failed; nothing more is written
	// resetIDs are the last streams edged reset: frames the client sent
	// before it saw the RST_STREAM are ignored, not errors.
	resetIDs   [16]uint32
	resetPos   int
	writerDone chan struct{} // closed when the writer has finished or failed for good
	writerEnd  bool
	idleTimer  *time.Timer
	idleSince  time.Time
	writeArmed time.Time // when the write deadline was last moved
}

var goAwayPing = [8]byte{'e', 'd', 'g', 'e', 'd', 'b', 'y', 'e'}

func newConn(s *Server, nc net.Conn, st *tls.ConnectionState) *conn {
	c := &conn{
		s: s, nc: nc, tlsState: st, remote: nc.RemoteAddr().String(),
		writerDone:     make(chan struct{}),
		streams:        map[uint32]*stream{},
		sendWindow:     65535,
		recvWindow:     65535,
		peerInitWindow: 65535,
		peerMaxFrame:   16384,
	}
	c.ctx = context.WithValue(s.o.BaseContext, http.LocalAddrContextKey, nc.LocalAddr())
	// A TLS connection buffers a decrypted record already: reading frames
	// straight from it saves an idle connection 4 KiB. A plain one would
	// make a system call per frame header without a buffer.
	c.br = nc
	if st == nil {
		c.br = bufio.NewReaderSize(nc, 4096)
	}
	c.fr = http2.NewFramer(outWriter{c}, c.br)
	c.fr.SetMaxReadFrameSize(maxFrameSize)
	// Header lists up to MaxHeaderBytes are served, larger ones up to
	// twice that answered 431 (SETTINGS_MAX_HEADER_LIST_SIZE is not
	// sent: a client that knew it would fail the request itself, with
	// no answer to show); beyond that the Framer stops decoding.
	c.fr.MaxHeaderListSize = uint32(2 * s.o.MaxHeaderBytes)
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.henc = hpack.NewEncoder(&c.hbuf)
	return c
}

// outWriter is what the Framer writes to: the output queue. Always
// called with c.mu held.
type outWriter struct{ c *conn }

func (w outWriter) Write(p []byte) (int, error) {
	c := w.c
	c.kick()
	c.out = append(c.out, p...)
	return len(p), nil
}

// errConnClosed is what handlers see once the connection is gone.
var errConnClosed = errors.New("h2: client connection closed")

func (c *conn) serve() {
	defer c.closeAll()
	defer c.linger()
	if d := c.s.o.PrefaceTimeout; d > 0 {
		c.nc.SetReadDeadline(time.Now().Add(d))
	}
	var preface [len(http2.ClientPreface)]byte
	if _, err := io.ReadFull(c.br, preface[:]); err != nil || string(preface[:]) != http2.ClientPreface {
		c.s.o.Log.Debug("HTTP/2: no client preface; closing the connection", "client", c.remote)
		return
	}
	c.mu.Lock()
	c.fr.WriteSettings(
		http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: c.s.o.MaxConcurrentStreams},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: streamWindow},
	)
	c.fr.WriteWindowUpdate(0, connWindow-65535)
	c.recvWindow = connWindow
	c.mu.Unlock()
	if c.s.register(c) {
		c.goAwayGracefully()
	}
	first := true
	for {
		f, err := c.fr.ReadFrame()
		if first {
			// RFC 9113 3.4: the preface ends with a SETTINGS frame.
			if _, ok := f.(*http2.SettingsFrame); !ok && err == nil {
				err = http2.ConnectionError(http2.ErrCodeProtocol)
			}
			if err == nil {
				first = false
				c.nc.SetReadDeadline(time.Time{})
				c.idle()
			}
		}
		if err != nil {
			if !c.readError(err) {
				return
			}
			continue
		}
		if err := c.process(f); err != nil {
			if !c.readError(err) {
				return
			}
		}
	}
}

// readError handles an error from reading or processing a frame and says
// whether the connection goes on.
func (c *conn) readError(err error) bool {
	var se http2.StreamError
	var ce http2.ConnectionError
	switch {
	case errors.As(err, &se):
		c.mu.Lock()
		if se.StreamID > c.maxID && se.StreamID%2 == 1 {
			c.maxID = se.StreamID // a refused new stream is closed, not idle
		}
		if st := c.streams[se.StreamID]; st != nil {
			c.resetLocked(st, se.Code, true, errStreamReset(se.Code))
		} else {
			c.sendResetLocked(se.StreamID, se.Code)
		}
		ok := c.checkBacklogLocked()
		c.mu.Unlock()
		return ok
	case errors.As(err, &ce):
		c.fail(http2.ErrCode(ce), err)
	case errors.Is(err, http2.ErrFrameTooLarge):
		c.fail(http2.ErrCodeFrameSize, err)
	default:
		// The client closed or the network failed: nothing to tell it.
		c.mu.Lock()
		c.breakLocked(err)
		c.mu.Unlock()
	}
	return false
}

// fail ends the connection with a GOAWAY carrying code, written before
// the connection closes.
func (c *conn) fail(code http2.ErrCode, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.broken != nil || c.closing {
		return
	}
	c.s.o.Log.Debug("HTTP/2 connection error; closing the connection", "client", c.remote, "code", code, "err", err)
	c.fr.WriteGoAway(c.maxID, code, nil)
	c.goAway = 2
	c.closing = true
	c.cancelStreamsLocked(errConnClosed)
	c.kick()
}

// breakLocked marks the connection failed: handlers get errConnClosed.
func (c *conn) breakLocked(err error) {
	if c.broken != nil {
		return
	}
	if err == nil {
		err = errConnClosed
	}
	c.broken = err
	c.cancelStreamsLocked(errConnClosed)
	c.kick()
}

func (c *conn) cancelStreamsLocked(err error) {
	for id, st := range c.streams {
		st.resetErr = err
		st.remoteDone, st.localDone = true, true
		st.wakeBothLocked()
		st.ctx.cancel(context.Canceled)
		delete(c.streams, id)
	}
	c.open = 0
	c.wakeBlockedLocked()
}

// wakeBlockedLocked wakes the writers waiting for the connection
// (credit, room in the output buffer); each is listed once.
func (c *conn) wakeBlockedLocked() {
	for _, st := range c.blocked {
		st.blocked = false
		st.wakeLocked(writing)
	}
	clear(c.blocked)
	c.blocked = c.blocked[:0]
}

// linger lets a connection that edged ends (GOAWAY after an error, or
// after the last stream of a graceful shutdown) deliver its last frames:
// closing a socket with unread input would reset it and the client could
// lose them. It waits for the writer, then reads and drops what the
// client still sends until it closes, for up to a second.
func (c *conn) linger() {
	c.mu.Lock()
	closing := c.closing
	c.mu.Unlock()
	if !closing {
		return
	}
	select {
	case <-c.writerDone:
	case <-time.After(time.Second + c.s.o.SendTimeout):
		return
	}
	c.nc.SetReadDeadline(time.Now().Add(time.Second))
	io.Copy(io.Discard, io.LimitReader(c.br, 1<<20))
}

// closeAll runs when the reader stops: the connection is over.
func (c *conn) closeAll() {
	c.mu.Lock()
	c.breakLocked(nil)
	if c.idleTimer != nil {
		c.idleTimer.Stop()
	}
	c.mu.Unlock()
	c.nc.Close()
}

// kick makes sure a writer runs; with mu held.
func (c *conn) kick() {
	if !c.writing {
		c.writing = true
		c.s.start(writer{c})
	}
}

// checkBacklogLocked closes a connection whose client makes it queue
// control frames it does not read.
func (c *conn) checkBacklogLocked() bool {
	if len(c.out) <= maxControlBacklog {
		return true
	}
	c.breakLocked(errors.New("h2: client does not read its control frames"))
	return false
}

// writer sends what is queued until the queue is empty, on a goroutine
// from the server's pool: an idle connection holds no writer goroutine
// (nor its stack), and a busy one keeps its writer as long as there is
// output. It runs on a pooled goroutine, like the handlers.
type writer struct{ c *conn }

func (w writer) run() {
	c := w.c
	for {
		// A goroutine handed work runs next, ahead of the other
		// handlers that are ready; yielding once lets them queue their
		// frames too, so that one write carries them all.
		runtime.Gosched()
		c.mu.Lock()
		if c.broken != nil {
			c.endWriterLocked()
			c.mu.Unlock()
			c.nc.Close() // wakes the reader
			return
		}
		buf := c.out
		if len(buf) == 0 {
			if c.closing {
				c.endWriterLocked()
				c.mu.Unlock()
				c.finish()
				return
			}
			c.writing = false
			c.mu.Unlock()
			return
		}
		c.out, c.spare = c.spare[:0], nil
		c.mu.Unlock()
		c.armWrite()
		_, err := c.nc.Write(buf)
		c.mu.Lock()
		if err != nil {
			c.breakLocked(err)
			c.endWriterLocked()
			c.mu.Unlock()
			c.nc.Close()
			return
		}
		// Keep the buffer for the next write, unless it grew large or
		// the connection has nothing in progress (an idle connection
		// holds as little as it can).
		if cap(buf) <= 4*outBufferLimit && (c.open > 0 || cap(buf) <= 4<<10) {
			c.spare = buf[:0]
		}
		if c.open == 0 && cap(c.out) > 4<<10 && len(c.out) == 0 {
			c.out = nil
		}
		c.wakeBlockedLocked()
		c.mu.Unlock()
	}
}

// endWriterLocked notes that no writer will run again.
func (c *conn) endWriterLocked() {
	c.writing = true // nothing starts another
	if !c.writerEnd {
		c.writerEnd = true
		close(c.writerDone)
	}
}

// armWrite keeps a write deadline send_timeout ahead, moving it only when
// a tenth of it has passed.
func (c *conn) armWrite() {
	d := c.s.o.SendTimeout
	if d <= 0 {
		return
	}
	now := time.Now()
	if now.Sub(c.writeArmed) < d/10 {
		return
	}
	c.writeArmed = now
	c.nc.SetWriteDeadline(now.Add(d))
}

// finish ends a connection whose last frames are written: half-close, so
// that the client reads them all, then let the reader see the client's
// close (or give up after a second, see linger).
func (c *conn) finish() {
	if cw, ok := c.nc.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	c.nc.SetReadDeadline(time.Now().Add(time.Second))
}

// goAwayGracefully starts the two-step GOAWAY.
func (c *conn) goAwayGracefully() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.goAway > 0 || c.broken != nil {
		return
	}
	c.goAway = 1
	c.fr.WriteGoAway(1<<31-1, http2.ErrCodeNo, nil)
	c.fr.WritePing(false, goAwayPing)
	// A client that never answers the PING still gets the final GOAWAY.
	time.AfterFunc(time.Second, c.finalGoAway)
}

// finalGoAway sends the GOAWAY with the last stream edged took; the
// connection closes once those streams are done.
func (c *conn) finalGoAway() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.goAway != 1 || c.broken != nil {
		return
	}
	c.goAway = 2
	c.goAwayID = c.maxID
	c.fr.WriteGoAway(c.maxID, http2.ErrCodeNo, nil)
	c.closeIfDoneLocked()
}

func (c *conn) closeIfDoneLocked() {
	if c.goAway == 2 && c.open == 0 && !c.closing {
		c.closing = true
		c.kick()
	}
}

// idle notes that the connection has no open stream and arms the idle
// timer; with or without mu held by the caller as marked.
func (c *conn) idle() {
	c.mu.Lock()
	c.idleLocked()
	c.mu.Unlock()
}

func (c *conn) idleLocked() {
	d := c.s.o.IdleTimeout
	if d <= 0 || c.open > 0 {
		return
	}
	c.idleSince = time.Now()
	if c.idleTimer == nil {
		c.idleTimer = time.AfterFunc(d, c.idleCheck)
	} else {
		c.idleTimer.Reset(d)
	}
}

func (c *conn) idleCheck() {
	c.mu.Lock()
	idle := c.open == 0 && c.handlers == 0 && time.Since(c.idleSince) >= c.s.o.IdleTimeout
	c.mu.Unlock()
	if idle {
		c.goAwayGracefully()
	}
}

// process handles one frame from the client.
func (c *conn) process(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.MetaHeadersFrame:
		return c.processHeaders(f)
	case *http2.DataFrame:
		return c.processData(f)
	case *http2.SettingsFrame:
		return c.processSettings(f)
	case *http2.WindowUpdateFrame:
		return c.processWindowUpdate(f)
	case *http2.PingFrame:
		c.mu.Lock()
		defer c.mu.Unlock()
		if f.IsAck() {
			if f.Data == goAwayPing && c.goAway == 1 {
				c.mu.Unlock()
				c.finalGoAway()
				c.mu.Lock()
			}
			return nil
		}
		c.fr.WritePing(true, f.Data)
		if !c.checkBacklogLocked() {
			return http2.ConnectionError(http2.ErrCodeEnhanceYourCalm)
		}
		return nil
	case *http2.RSTStreamFrame:
		c.mu.Lock()
		defer c.mu.Unlock()
		if f.StreamID > c.maxID {
			return http2.ConnectionError(http2.ErrCodeProtocol) // idle stream
		}
		if st := c.streams[f.StreamID]; st != nil {
			c.resetLocked(st, f.ErrCode, false, errStreamReset(f.ErrCode))
		}
		return nil
	case *http2.PriorityFrame:
		if f.StreamDep == f.StreamID {
			return http2.StreamError{StreamID: f.StreamID, Code: http2.ErrCodeProtocol}
		}
		return nil
	case *http2.GoAwayFrame:
		// The client will open no more streams; those it has finish.
		c.mu.Lock()
		if c.goAway == 0 {
			c.goAway = 2
			c.goAwayID = c.maxID
		}
		c.closeIfDoneLocked()
		c.mu.Unlock()
		return nil
	case *http2.PushPromiseFrame:
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	return nil // unknown frame types are ignored
}

func (c *conn) processSettings(f *http2.SettingsFrame) error {
	if f.IsAck() {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	err := f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			return err
		}
		switch s.ID {
		case http2.SettingInitialWindowSize:
			// RFC 9113 6.9.2: every stream's window moves by the
			// difference, possibly below zero.
			delta := int64(s.Val) - c.peerInitWindow
			c.peerInitWindow = int64(s.Val)
			for _, st := range c.streams {
				st.sendWindow += delta
				if st.sendWindow > 1<<31-1 {
					return http2.ConnectionError(http2.ErrCodeFlowControl)
				}
				if delta > 0 {
					st.wakeLocked(writing)
				}
			}
		case http2.SettingMaxFrameSize:
			c.peerMaxFrame = s.Val
		case http2.SettingHeaderTableSize:
			c.henc.SetMaxDynamicTableSize(s.Val)
		}
		return nil
	})
	if err != nil {
		return err
	}
	c.fr.WriteSettingsAck()
	if !c.checkBacklogLocked() {
		return http2.ConnectionError(http2.ErrCodeEnhanceYourCalm)
	}
	return nil
}

func (c *conn) processWindowUpdate(f *http2.WindowUpdateFrame) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	inc := int64(f.Increment)
	if f.StreamID == 0 {
		c.sendWindow += inc
		if c.sendWindow > 1<<31-1 {
			return http2.ConnectionError(http2.ErrCodeFlowControl)
		}
		c.wakeBlockedLocked()
		return nil
	}
	if f.StreamID > c.maxID {
		return http2.ConnectionError(http2.ErrCodeProtocol) // idle stream
	}
	st := c.streams[f.StreamID]
	if st == nil {
		return nil // closed: WINDOW_UPDATE may still arrive
	}
	st.sendWindow += inc
	if st.sendWindow > 1<<31-1 {
		return http2.StreamError{StreamID: f.StreamID, Code: http2.ErrCodeFlowControl}
	}
	st.wakeLocked(writing)
	return nil
}

func (c *conn) processData(f *http2.DataFrame) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	id := f.StreamID
	n := int64(f.Length)
	if n > c.recvWindow {
		return http2.ConnectionError(http2.ErrCodeFlowControl)
	}
	c.recvWindow -= n
	st := c.streams[id]
	if st == nil || st.remoteDone {
		// Nobody reads it: give the connection-level credit back now.
		c.creditLocked(nil, n)
		if id > c.maxID {
			return http2.ConnectionError(http2.ErrCodeProtocol) // idle stream
		}
		if st == nil && c.wasReset(id) {
			return nil // sent before the client saw edged's RST_STREAM
		}
		return http2.StreamError{StreamID: id, Code: http2.ErrCodeStreamClosed}
	}
	if n > st.recvWindow {
		c.creditLocked(nil, n)
		return http2.StreamError{StreamID: id, Code: http2.ErrCodeFlowControl}
	}
	st.recvWindow -= n
	data := f.Data()
	if pad := n - int64(len(data)); pad > 0 {
		c.creditLocked(st, pad) // padding is nobody's to read
	}
	st.received += int64(len(data))
	if st.declared >= 0 && st.received > st.declared {
		c.creditLocked(nil, int64(len(data)))
		return http2.StreamError{StreamID: id, Code: http2.ErrCodeProtocol}
	}
	if len(data) > 0 {
		if st.bodyClosed {
			c.creditLocked(nil, int64(len(data))) // the handler is done with the body
		} else {
			st.appendBodyLocked(data)
		}
	}
	if f.StreamEnded() {
		return c.endRequestLocked(st)
	}
	st.wakeLocked(reading)
	return nil
}

// endRequestLocked marks the request body complete (END_STREAM).
func (c *conn) endRequestLocked(st *stream) error {
	if st.declared >= 0 && st.received != st.declared {
		return http2.StreamError{StreamID: st.id, Code: http2.ErrCodeProtocol}
	}
	st.remoteDone = true
	st.wakeLocked(reading)
	if st.localDone {
		c.closeStreamLocked(st)
	}
	return nil
}

// creditLocked gives flow-control credit back for n bytes the client may
// send again: on the connection, and on st unless st is nil or its
// request is complete. WINDOW_UPDATEs go out once a quarter of a window
// is owed, so that a stream of small bodies does not cost one each.
func (c *conn) creditLocked(st *stream, n int64) {
	if n <= 0 {
		return
	}
	c.recvUnacked += n
	if c.recvUnacked >= connWindow/4 {
		c.fr.WriteWindowUpdate(0, uint32(c.recvUnacked))
		c.recvWindow += c.recvUnacked
		c.recvUnacked = 0
	}
	if st == nil || st.remoteDone || st.resetErr != nil {
		return
	}
	st.recvUnacked += n
	if st.recvUnacked >= streamWindow/4 || st.recvWindow == 0 {
		c.fr.WriteWindowUpdate(st.id, uint32(st.recvUnacked))
		st.recvWindow += st.recvUnacked
		st.recvUnacked = 0
	}
}

// resetLocked ends a stream early: RST_STREAM with code if send (not
// when the client reset it), the handler's context cancelled and its
// waits woken with err.
func (c *conn) resetLocked(st *stream, code http2.ErrCode, send bool, err error) {
	if st.resetErr == nil {
		st.resetErr = err
	}
	if send {
		c.sendResetLocked(st.id, code)
	}
	// Body bytes nobody will read return to the connection window.
	st.closeBodyLocked()
	st.remoteDone, st.localDone = true, true
	st.wakeBothLocked()
	st.ctx.cancel(context.Canceled)
	c.closeStreamLocked(st)
}

// sendResetLocked queues RST_STREAM and remembers the stream for a while.
func (c *conn) sendResetLocked(id uint32, code http2.ErrCode) {
	c.fr.WriteRSTStream(id, code)
	c.resetIDs[c.resetPos%len(c.resetIDs)] = id
	c.resetPos++
}

// wasReset says whether edged reset stream id lately.
func (c *conn) wasReset(id uint32) bool {
	for _, r := range c.resetIDs {
		if r == id {
			return true
		}
	}
	return false
}

// closeStreamLocked forgets a stream that is closed both ways.
func (c *conn) closeStreamLocked(st *stream) {
	if c.streams[st.id] != st {
		return
	}
	delete(c.streams, st.id)
	c.open--
	if c.open == 0 {
		c.idleLocked()
		c.closeIfDoneLocked()
	}
}

type errStreamReset http2.ErrCode

func (e errStreamReset) Error() string {
	return "h2: stream reset (" + http2.ErrCode(e).String() + ")"
}

// errBodyTimeout is what a handler's Read returns after
// client_body_timeout: a net.Error whose Timeout() is true.
var errBodyTimeout = os.ErrDeadlineExceeded

// errSendTimeout is what a handler's Write returns after send_timeout
// without flow-control credit; the stream is reset.
var errSendTimeout = os.ErrDeadlineExceeded
