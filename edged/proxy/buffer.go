package proxy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/edgeapp/edgeapp/edged/reqinfo"
	"github.com/edgeapp/edgeapp/edged/spool"
)

// Buffering shields the upstream from slow clients, as nginx does by
// default in front of an app: a request body is read completely before a
// server is chosen, so a worker never waits on a client's upload, and a
// response is read as fast as the upstream sends it, so the connection
// (and the worker behind it) is free while the client drains the response
// at its own pace. Streams are never buffered: text/event-stream,
// X-Accel-Buffering: no from the upstream (nginx's convention, honoured and
// removed; "yes" buffers on a route that does not), a route's
// flush_interval, upgrades.
type Buffering struct {
	// Request: read the whole request body first (nginx
	// proxy_request_buffering); bodies then are replayable, so retries
	// may resend any of them.
	Request bool
	// Response: read responses ahead of the client (nginx proxy_buffering).
	Response bool
	// Dir holds the temporary files (default spool.DefaultDir()).
	Dir string
	// RequestMemory: request body bytes kept in memory before a file
	// (nginx client_body_buffer_size).
	RequestMemory int64
	// ResponseMemory: response bytes kept in memory before a file (nginx
	// proxy_buffers); a response with a Content-Length up to this is read
	// whole before anything is sent to the client.
	ResponseMemory int64
	// ResponseFileMax: response bytes ahead of the client kept in a file
	// (nginx proxy_max_temp_file_size); beyond it the upstream waits for
	// the client. 0: no file, memory only.
	ResponseFileMax int64
}

// Defaults of Buffering's sizes (nginx: client_body_buffer_size 16k;
// proxy_buffers 8 x 8k, here one 64 KiB budget; proxy_max_temp_file_size
// 1024m).
const (
	DefaultRequestMemory   = 16 << 10
	DefaultResponseMemory  = 64 << 10
	DefaultResponseFileMax = 1 << 30
)

// DefaultBuffering is buffering on both ways with the default sizes.
func DefaultBuffering() Buffering {
	return Buffering{Request: true, Response: true, RequestMemory: DefaultRequestMemory,
		ResponseMemory: DefaultResponseMemory, ResponseFileMax: DefaultResponseFileMax}
}

// CheckBuffering reports what is wrong with b's sizes and directory.
func CheckBuffering(b Buffering) error {
	switch {
	case b.RequestMemory < 0:
		return fmt.Errorf("client_body_buffer_size: %d is negative", b.RequestMemory)
	case b.ResponseMemory < 0:
		return fmt.Errorf("response_buffer_size: %d is negative", b.ResponseMemory)
	case b.ResponseFileMax < 0:
		return fmt.Errorf("response_temp_max: %d is negative", b.ResponseFileMax)
	}
	if b.Dir != "" {
		if err := spool.CheckDir(b.Dir); err != nil {
			return err
		}
	}
	return nil
}

func (b *Buffering) dir() string {
	if b.Dir != "" {
		return b.Dir
	}
	return spool.DefaultDir()
}

// bufferRequest reads the client's whole body into a spool before any
// server is chosen. The time it takes is the client's (ClientWait).
func (h *handler) bufferRequest(r *http.Request, info *reqinfo.Info, body *outBody) error {
	sp := spool.New(spool.Options{Dir: h.buf.dir(), Memory: h.buf.RequestMemory})
	start := time.Now()
	n, err := sp.ReadFrom(r.Body)
	d := time.Since(start)
	info.ClientWait += d
	h.p.spooled(dirRequest, sp, d, 0)
	if err != nil {
		sp.Close()
		return err
	}
	body.sp, body.frame, body.length = sp, frameLength, n
	if len(r.Trailer) > 0 {
		// Trailers need the chunked coding; the spool replays the body.
		body.frame, body.trailer = frameChunked, r
	}
	return nil
}

// buffers decides whether this response is read ahead of the client.
func (h *handler) buffers(fm fieldMeta) bool {
	switch fm.accel {
	case -1:
		return false
	case 1:
		return true
	}
	return h.buf.Response && h.flush == 0 && !fm.eventStream
}

// respBufs pools the buffers that hold a whole response body of up to
// ResponseMemory bytes, one pool per size.
var respBufs sync.Map // int64 -> *sync.Pool

func respBuf(size int64) (*[]byte, *sync.Pool) {
	pv, ok := respBufs.Load(size)
	if !ok {
		pv, _ = respBufs.LoadOrStore(size, &sync.Pool{New: func() any { b := make([]byte, size); return &b }})
	}
	pool := pv.(*sync.Pool)
	return pool.Get().(*[]byte), pool
}

// serveSmall serves a response whose Content-Length fits in memory: the
// whole body is read, the connection goes back to the pool, and only then
// does anything go to the client, so a server that dies mid-body is a 502
// rather than a truncated response.
func (h *handler) serveSmall(w http.ResponseWriter, r *http.Request, ex *exchange, s *server, length int64) {
	bp, pool := respBuf(h.buf.ResponseMemory)
	defer pool.Put(bp)
	buf := (*bp)[:length]
	start := time.Now()
	_, err := io.ReadFull(&ex.body, buf)
	upWait := time.Since(start)
	ex.info.UpstreamWait += upWait
	if err != nil {
		ex.body.Close()
		if err == errClientGone || r.Context().Err() != nil {
			h.clientGone(w, r, "reading the upstream response body", err)
			return
		}
		h.p.recordFailure(s, causeBody, err)
		h.fail(w, r, s, causeBody, fmt.Errorf("reading the response body: %w", err), 1)
		return
	}
	wh := w.Header()
	var meta respMeta
	meta, ex.seen = copyResponseHeader(wh, &ex.snap, ex.seen)
	if meta.trailerNames != "" {
		wh["Trailer"] = []string{meta.trailerNames}
	}
	start = time.Now()
	w.WriteHeader(ex.resp.Status)
	_, _ = w.Write(buf)
	d := time.Since(start)
	ex.info.ClientWait += d
	h.p.waited(d, upWait)
}

// respPipe carries a response body from the goroutine that reads it off the
// upstream connection to the request's goroutine, which writes it to the
// client, through a spool: memory, then a file. The upstream connection is
// released as soon as the body is complete, however far behind the client
// is. When the spool is full the reader waits until the client has taken
// all of it, then starts the spool again.
type respPipe struct {
	mu   sync.Mutex
	cond sync.Cond
	sp   *spool.Spool
	base int64 // stream offset of the spool's first byte
	end  int64 // stream offset after the last byte spooled
	read int64 // stream offset the writer has reached
	done bool  // the reader is finished (rerr says how)
	rerr error
	gone bool     // the writer stopped: the reader stops too
	nc   net.Conn // closed to stop a reader blocked on the upstream

	upWait  time.Duration
	trailer http.Header
	exited  chan struct{}
}

// servePiped serves a response that is larger than memory or of unknown
// length: the head goes to the client at once, the body follows as it
// arrives, and whatever the client is not ready for waits in the spool.
func (h *handler) servePiped(w http.ResponseWriter, r *http.Request, ex *exchange, s *server, c *upConn) {
	p := &respPipe{
		sp: spool.New(spool.Options{Dir: h.buf.dir(), Memory: h.buf.ResponseMemory,
			Max: max(h.buf.ResponseMemory+h.buf.ResponseFileMax, readChunk)}),
		nc:     c.nc,
		exited: make(chan struct{}),
	}
	p.cond.L = &p.mu
	ex.body.hold = true
	go p.fill(&ex.body)

	rc := http.NewResponseController(w)
	rerr, werr, clientWait := p.drain(w, rc)
	p.stop()
	<-p.exited
	ex.info.ClientWait += clientWait
	ex.info.UpstreamWait += p.upWait
	h.p.spooled(dirResponse, p.sp, clientWait, p.upWait)
	p.sp.Close()
	switch {
	case werr != nil || (rerr != nil && (rerr == errClientGone || r.Context().Err() != nil)):
		return
	case rerr != nil:
		h.bodyFailed(r, s, ex.resp.Status, rerr)
	}
	for k, vv := range p.trailer {
		w.Header()[http.TrailerPrefix+k] = vv
	}
}

// fill is the reader: it spools the body until its end, a failure, or the
// writer's stop.
func (p *respPipe) fill(b *bodyReader) {
	defer close(p.exited)
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	var blocked time.Duration
	start := time.Now()
	for {
		n, err := b.Read(buf)
		if n > 0 {
			p.mu.Lock()
			for !p.gone {
				_, werr := p.sp.Write(buf[:n])
				if werr == nil {
					p.end += int64(n)
					break
				}
				if !errors.Is(werr, spool.ErrFull) {
					err = werr // the disk failed us: end like a broken upstream
					break
				}
				if p.read == p.end {
					// The client has everything: start the spool over.
					if rerr := p.sp.Reset(); rerr != nil {
						err = rerr
						break
					}
					p.base = p.end
					continue
				}
				t := time.Now()
				p.cond.Wait()
				blocked += time.Since(t)
			}
			gone := p.gone
			p.cond.Broadcast()
			p.mu.Unlock()
			if gone {
				b.Close()
				return
			}
		}
		if err != nil {
			p.mu.Lock()
			p.done = true
			if err != io.EOF {
				p.rerr = err
			}
			p.trailer = b.trailer
			p.upWait = time.Since(start) - blocked
			p.cond.Broadcast()
			p.mu.Unlock()
			// Only now, with done set under the lock, may the connection
			// go back to the pool: stop no longer closes it after this.
			if err == io.EOF {
				b.releaseHeld()
			} else {
				b.Close()
			}
			return
		}
	}
}

// drain is the writer: it copies the spooled body to the client as it
// arrives, flushing whenever it has caught up with the upstream, so a
// response that trickles still reaches the client as it comes.
func (p *respPipe) drain(w http.ResponseWriter, rc *http.ResponseController) (rerr, werr error, clientWait time.Duration) {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	off := int64(0)
	unflushed := false
	for {
		p.mu.Lock()
		for off == p.end && !p.done {
			if unflushed {
				p.mu.Unlock()
				t := time.Now()
				if err := rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
					return nil, err, clientWait + time.Since(t)
				}
				clientWait += time.Since(t)
				unflushed = false
				p.mu.Lock()
				continue
			}
			p.cond.Wait()
		}
		end, base, done, err := p.end, p.base, p.done, p.rerr
		p.mu.Unlock()
		if off == end && done {
			return err, nil, clientWait
		}
		n, rerr := p.sp.ReadAt(buf[:min(int64(len(buf)), end-off)], off-base)
		if n == 0 && rerr != nil {
			return rerr, nil, clientWait
		}
		t := time.Now()
		_, werr := w.Write(buf[:n])
		clientWait += time.Since(t)
		if werr != nil {
			return nil, werr, clientWait
		}
		off += int64(n)
		unflushed = true
		p.mu.Lock()
		p.read = off
		if p.read == p.end {
			p.cond.Broadcast() // a reader waiting for room may start over
		}
		p.mu.Unlock()
	}
}

// stop ends the reader if it is still at work: the writer is done or gone.
func (p *respPipe) stop() {
	p.mu.Lock()
	if !p.done {
		p.gone = true
		_ = p.nc.Close()
	}
	p.cond.Broadcast()
	p.mu.Unlock()
}

// bodyFailed logs an upstream that died mid-body after the head went to
// the client, and aborts the client's connection so that it sees the
// truncation.
func (h *handler) bodyFailed(r *http.Request, s *server, status int, err error) {
	h.p.recordFailure(s, causeBody, err)
	h.log.Warn("upstream server died while sending the response body; aborting the client connection so it sees the truncation",
		"server", s.cfg.Addr, "cause", err.Error(), "status", status,
		"method", r.Method, "path", r.URL.Path, "request_id", h.requestID(r))
	s.release()
	panic(http.ErrAbortHandler)
}

// readChunk is what the reader takes off the connection at once (the size
// of bufPool's buffers).
const readChunk = 32 << 10
