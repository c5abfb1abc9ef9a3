package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/edgeapp/edgeapp/edged/httpwire"
	"github.com/edgeapp/edgeapp/edged/reqinfo"
	"github.com/edgeapp/edgeapp/edged/spool"
)

// ExpectContinueTimeout is how long a request that streams its body with
// Expect: 100-continue waits for the server's 100 before sending the body
// anyway (net/http's client waits 1s too).
const ExpectContinueTimeout = time.Second

// headPoll is how often a wait for a response head looks whether the
// client is still there; bodyPoll the same while a body is read.
const (
	headPoll = time.Second
	bodyPoll = 5 * time.Second
)

// maxInterim bounds the 1xx responses accepted before the final one.
const maxInterim = 16

// errResponseHeaderTimeout words the 504's cause as net/http did.
type timeoutError struct{ d time.Duration }

func (e *timeoutError) Error() string {
	return fmt.Sprintf("timeout awaiting response headers after %v", e.d)
}
func (e *timeoutError) Timeout() bool   { return true }
func (e *timeoutError) Temporary() bool { return true }

// sendTimeoutError: the server took no request bytes for that long.
type sendTimeoutError struct{ d time.Duration }

func (e *sendTimeoutError) Error() string {
	return fmt.Sprintf("timeout sending the request: the server took nothing for %v", e.d)
}
func (e *sendTimeoutError) Timeout() bool   { return true }
func (e *sendTimeoutError) Temporary() bool { return true }

// bodyTimeoutError: a buffered response body stalled that long.
type bodyTimeoutError struct{ d time.Duration }

func (e *bodyTimeoutError) Error() string {
	return fmt.Sprintf("timeout reading the response body: nothing for %v", e.d)
}
func (e *bodyTimeoutError) Timeout() bool   { return true }
func (e *bodyTimeoutError) Temporary() bool { return true }

// staleError is a failure on a kept-alive connection before any byte of
// the response arrived: typically the server closed the connection while
// it was idle. sent says whether any of the request was written.
type staleError struct {
	err  error
	sent bool
}

func (e *staleError) Error() string { return e.err.Error() }
func (e *staleError) Unwrap() error { return e.err }

// clientBodyError is a failure reading the client's request body while
// streaming it upstream: the client's fault, not the server's.
type clientBodyError struct{ err error }

func (e *clientBodyError) Error() string { return e.err.Error() }
func (e *clientBodyError) Unwrap() error { return e.err }

// outBody is the request body of one request as every attempt sends it.
type outBody struct {
	sp     *spool.Spool // the whole body, buffered (replayable)
	mem    []byte       // the whole body in memory (replayable)
	stream io.Reader    // the client's body, streamed (sent at most once)
	n      int64        // bytes read from stream so far
	frame  framing
	length int64
	// trailer is the client's request (its Trailer is complete after its
	// body's EOF) when the body is chunked.
	trailer *http.Request
}

func (b *outBody) replayable() bool { return b.stream == nil }

func (b *outBody) close() {
	if b.sp != nil {
		b.sp.Close()
	}
}

// exchange is the per-request state of the upstream client, pooled.
type exchange struct {
	head    []byte
	resp    httpwire.Response
	body    bodyReader
	seen    []string
	scratch []string
	oh      outHead
	headLen int
	snap    headSnapshot
	info    *reqinfo.Info
	wt      waiter
	// unsent: the server answered before the body was sent
	// (Expect: 100-continue), so the connection cannot be reused.
	unsent bool
}

var exchanges = sync.Pool{New: func() any { return &exchange{head: make([]byte, 0, 2048)} }}

func getExchange() *exchange { return exchanges.Get().(*exchange) }

func putExchange(ex *exchange) {
	// Nothing of the request stays reachable from the pool.
	ex.wt, ex.info, ex.snap.s = waiter{}, nil, ""
	ex.body = bodyReader{dec: ex.body.dec}
	ex.body.dec.Reset()
	if cap(ex.head) > 64<<10 {
		ex.head = make([]byte, 0, 2048)
	}
	clear(ex.resp.Fields[:cap(ex.resp.Fields)])
	clear(ex.seen[:cap(ex.seen)])
	clear(ex.scratch[:cap(ex.scratch)])
	exchanges.Put(ex)
}

// conn returns a connection to s: an idle one unless fresh, else a new
// one. checkIdle makes it look at an idle connection first (see alive).
func (s *server) conn(ctx context.Context, now int64, fresh, checkIdle bool) (*upConn, error) {
	if s.sendProxy != 0 {
		return s.proxiedConn(ctx)
	}
	if !fresh {
		for {
			c := s.cp.get(now)
			if c == nil {
				break
			}
			if !checkIdle || c.alive() {
				return c, nil
			}
			c.close()
		}
	}
	return s.cp.newConn(ctx)
}

// roundTrip sends the request on c and reads the final response head into
// ex.resp (1xx responses before it are passed to w). The head stays in c's
// buffer (ex.headLen bytes) for the caller to copy before consuming it.
func (ex *exchange) roundTrip(ctx context.Context, now int64, c *upConn, w http.ResponseWriter, r *http.Request, info *reqinfo.Info, body *outBody, rht time.Duration) error {
	ex.unsent = false
	oh := &ex.oh
	if body.sp != nil && body.mem == nil && body.frame == frameLength {
		body.mem = body.sp.Memory() // one block: sent with the head
	}
	oh.frame, oh.length = body.frame, body.length
	oh.expect100 = false
	if body.stream != nil && !oh.isUpgrade() {
		oh.expect100 = r.Header != nil && hasExpect100(r.Header)
	}
	ex.head = appendRequestHead(ex.head[:0], r, info, oh, ex.scratch)

	poll := min(headPoll, rht)
	c.arm(now, poll)
	// Sending: rht at most between two writes (a large body to a server
	// that stopped reading). Then rht at most for the response head.
	ex.wt = waiter{ctx: ctx, poll: poll, idle: rht, kind: waitSend, limit: rht}
	wt := &ex.wt // in the pooled exchange: taking its address costs no allocation

	var err error
	switch {
	case body.mem != nil && len(body.mem) <= 16<<10:
		ex.head = append(ex.head, body.mem...)
		err = c.write(ex.head, wt)
	case body.mem != nil:
		bufs := net.Buffers{ex.head, body.mem}
		err = c.writeBuffers(&bufs, wt)
	case body.sp != nil && body.frame == frameLength:
		if err = c.write(ex.head, wt); err == nil {
			_, err = body.sp.WriteTo(&connWriter{c, wt})
		}
	default:
		err = c.write(ex.head, wt)
	}
	if err != nil {
		return ex.sendFailed(c, err, wt)
	}
	if body.stream != nil || (body.sp != nil && body.frame == frameChunked) {
		if oh.expect100 {
			// Wait for 100 Continue (or a refusal) before the body.
			cw := *wt
			cw.hard, cw.idle, cw.kind = nanotime()+int64(ExpectContinueTimeout), 0, waitExpect
			err := ex.readHead(c, w, &cw, true)
			switch {
			case err == nil && ex.resp.Status != 100:
				ex.unsent = true // answered without the body
				return nil
			case err == nil:
				c.consume(ex.headLen)
			case err != errExpectTimeout:
				return ex.recvFailed(c, err)
			}
		}
		if err := ex.sendStream(c, body, wt); err != nil {
			return ex.sendFailed(c, err, wt)
		}
	}
	sentAt := now // a body sent with the head took no time worth a clock
	if body.stream != nil || (body.sp != nil && body.mem == nil) {
		sentAt = nanotime()
	}
	wt.hard, wt.idle, wt.kind, wt.limit = sentAt+int64(rht), 0, waitHead, rht
	if err := ex.readHead(c, w, wt, false); err != nil {
		return ex.recvFailed(c, err)
	}
	return nil
}

var errExpectTimeout = errors.New("no 100 Continue")

func (oh *outHead) isUpgrade() bool { return oh.upgrade != "" }

func hasExpect100(h http.Header) bool {
	for _, v := range h["Expect"] {
		if equalFoldB([]byte(v), "100-continue") {
			return true
		}
	}
	return false
}

// sendFailed classifies a failure to send the request. A server may answer
// before it has read the whole request (an early 413, or a refusal with a
// close) and reset the connection: what it answered is then read if it
// arrives at once.
func (ex *exchange) sendFailed(c *upConn, err error, wt *waiter) error {
	var cb *clientBodyError
	if errors.As(err, &cb) || err == errClientGone {
		c.close()
		return err
	}
	if c.written > 0 {
		early := *wt
		early.hard, early.idle, early.kind, early.limit = nanotime()+int64(50*time.Millisecond), 0, waitHead, 50*time.Millisecond
		if ex.readHead(c, nil, &early, false) == nil && ex.resp.Status >= 200 {
			ex.unsent = true
			return nil
		}
	}
	return ex.recvFailed(c, err)
}

// recvFailed closes c and says whether the failure was on a kept-alive
// connection before any of the response arrived.
func (ex *exchange) recvFailed(c *upConn, err error) error {
	stale := c.reused && c.received == 0 && err != errClientGone && !isTimeoutErr(err) && !isProtocolErr(err)
	sent := c.written > 0
	c.close()
	if stale {
		return &staleError{err: err, sent: sent}
	}
	return err
}

func isTimeoutErr(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func isProtocolErr(err error) bool {
	var we *httpwire.Error
	return errors.As(err, &we) || err == errHeadTooLarge || err == errTooManyInterim
}

var errTooManyInterim = errors.New("more than 16 interim (1xx) responses")

// readHead reads the next response head into ex.resp. Interim responses
// (1xx other than 101) are passed on to w as they come (103 Early Hints
// reach the client) and skipped, except a 100 when expecting is set.
func (ex *exchange) readHead(c *upConn, w http.ResponseWriter, wt *waiter, expecting bool) error {
	for interim := 0; ; {
		buf := c.buffered()
		if len(buf) > 0 {
			n, err := httpwire.ParseResponse(buf, &ex.resp)
			if err == nil {
				st := ex.resp.Status
				if st >= 200 || st == 101 || (st == 100 && expecting) {
					ex.headLen = n
					return nil
				}
				if interim++; interim > maxInterim {
					return errTooManyInterim
				}
				if st != 100 && w != nil {
					h := w.Header()
					names := interimHeader(h, ex.resp.Fields)
					w.WriteHeader(st)
					for _, k := range names {
						delete(h, k)
					}
				}
				c.consume(n)
				continue
			}
			if err != httpwire.ErrIncomplete {
				return err
			}
		}
		if err := c.fill(wt); err != nil {
			if err == io.EOF && len(c.buffered()) > 0 {
				return io.ErrUnexpectedEOF
			}
			return err
		}
	}
}

// sendStream copies the client's body to c, with the framing announced.
func (ex *exchange) sendStream(c *upConn, body *outBody, wt *waiter) error {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	const pre = 18 // room for a chunk-size line before the data
	chunked := body.frame == frameChunked
	data := buf
	if chunked {
		data = buf[pre : len(buf)-2]
	}
	src := body.stream
	if src == nil {
		src = io.NewSectionReader(body.sp, 0, body.sp.Size()) // replayed
	}
	for {
		n, rerr := src.Read(data)
		if body.stream != nil {
			body.n += int64(n)
		}
		if n > 0 {
			out := data[:n]
			if chunked {
				hdr := httpwire.AppendChunkHeader(buf[:0:pre], n)
				start := pre - len(hdr)
				copy(buf[start:], hdr)
				buf[pre+n], buf[pre+n+1] = '\r', '\n'
				out = buf[start : pre+n+2]
			}
			if err := c.write(out, wt); err != nil {
				return err
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return &clientBodyError{rerr}
		}
	}
	if chunked {
		var tr []httpwire.Field
		if body.trailer != nil {
			for k, vv := range body.trailer.Trailer {
				for _, v := range vv {
					tr = append(tr, httpwire.Field{Name: []byte(k), Value: []byte(v)})
				}
			}
		}
		return c.write(httpwire.AppendLastChunk(buf[:0], tr), wt)
	}
	if body.frame == frameLength && body.n != body.length {
		return &clientBodyError{io.ErrUnexpectedEOF}
	}
	return nil
}

// connWriter writes a spooled body to an upstream connection, waiting as
// its waiter allows; its ReadFrom lets the file part reach sendfile(2).
type connWriter struct {
	c  *upConn
	wt *waiter
}

func (w *connWriter) Write(p []byte) (int, error) {
	if err := w.c.write(p, w.wt); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (w *connWriter) ReadFrom(r io.Reader) (int64, error) {
	if w.c.pool.isTLS {
		// No sendfile under TLS: copy through Write and its deadlines.
		bp := bufPool.Get().(*[]byte)
		defer bufPool.Put(bp)
		return io.CopyBuffer(struct{ io.Writer }{w}, r, *bp)
	}
	var total int64
	for {
		n, err := w.c.ReadFrom(r)
		total += n
		if err == nil || !isDeadline(err) {
			return total, err
		}
		if err := w.c.rearm(w.wt); err != nil {
			return total, err
		}
	}
}

// writeBuffers writes bufs with writev, waiting as wt allows.
func (c *upConn) writeBuffers(bufs *net.Buffers, wt *waiter) error {
	if c.pool.isTLS {
		// tls.Conn has no writev: one record per buffer.
		for _, b := range *bufs {
			if err := c.write(b, wt); err != nil {
				return err
			}
		}
		return nil
	}
	for len(*bufs) > 0 {
		n, err := bufs.WriteTo(c.nc)
		c.written += n
		if err == nil {
			continue
		}
		if !isDeadline(err) {
			return err
		}
		if err := c.rearm(wt); err != nil {
			return err
		}
	}
	return nil
}
