package proxy

import (
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/edgeapp/edgeapp/edged/httpwire"
	"github.com/edgeapp/edgeapp/edged/reqinfo"
)

var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// copyBody streams src to w. mode < 0 flushes after every write, 0 leaves
// flushing to the server, > 0 flushes at most mode after a write. rerr is a
// failure reading the upstream, werr one writing to the client.
func copyBody(w io.Writer, rc *http.ResponseController, src io.Reader, mode time.Duration) (rerr, werr error) {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	var df *delayedFlush
	if mode > 0 {
		df = &delayedFlush{w: w, rc: rc, d: mode}
		defer df.stop()
		w = df
	}
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr = w.Write(buf[:n]); werr != nil {
				return nil, werr
			}
			if mode < 0 {
				if werr = rc.Flush(); werr != nil && !errors.Is(werr, http.ErrNotSupported) {
					return nil, werr
				}
				werr = nil
			}
		}
		if err == io.EOF {
			return nil, nil
		}
		if err != nil {
			return err, nil
		}
	}
}

// delayedFlush flushes at most d after a write, so a slow trickle still
// reaches the client while a fast stream is not flushed per write.
type delayedFlush struct {
	mu      sync.Mutex
	w       io.Writer
	rc      *http.ResponseController
	d       time.Duration
	t       *time.Timer
	pending bool
	stopped bool
}

func (f *delayedFlush) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, err := f.w.Write(p)
	if !f.pending {
		f.pending = true
		if f.t == nil {
			f.t = time.AfterFunc(f.d, f.flush)
		} else {
			f.t.Reset(f.d)
		}
	}
	return n, err
}

func (f *delayedFlush) flush() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped || !f.pending {
		return
	}
	f.pending = false
	_ = f.rc.Flush()
}

func (f *delayedFlush) stop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stopped = true
	if f.t != nil {
		f.t.Stop()
	}
}

// serveUpgrade proxies a request that asks for a protocol upgrade (WebSocket
// and others) on a connection of its own, so that after 101 both directions
// can be copied and half-closed independently. done is false when nothing
// reached the client and the attempt may be retried elsewhere.
func (h *handler) serveUpgrade(w http.ResponseWriter, r *http.Request, ex *exchange, s *server, info *reqinfo.Info) (done bool, err error) {
	ctx := r.Context()
	start := time.Now()
	c, err := s.conn(ctx, 0, true, false)
	if err != nil {
		return false, err
	}
	var none outBody
	if err := ex.roundTrip(ctx, nanotime(), c, w, r, info, &none, h.p.cfg.ResponseHeaderTimeout); err != nil {
		return false, err
	}
	s.st.total.Add(1)
	s.st.metrics.latency.Observe(time.Since(start).Seconds())
	info.Upstream, info.UpstreamStatus, info.UpstreamTime = s.cfg.Addr, ex.resp.Status, time.Since(start)

	if ex.resp.Status != http.StatusSwitchingProtocols {
		// Refused (401, 426, ...): an ordinary response on a connection
		// nobody else will use.
		ex.unsent = true
		h.serveResponse(w, r, ex, c, s)
		return true, nil
	}
	defer c.close()
	upgv, _ := httpwire.Get(ex.resp.Fields, "upgrade")
	upg := string(upgv)
	if !strings.EqualFold(upg, ex.oh.upgrade) {
		err := errors.New("answered 101 with Upgrade " + upg + " to a request for " + ex.oh.upgrade)
		h.p.recordFailure(s, causeProtocol, err)
		s.st.metrics.requests[classError].Inc()
		h.fail(w, r, s, causeProtocol, err, 1)
		return true, nil
	}
	s.st.metrics.requests[0].Inc()
	h.p.recordSuccess(s)

	resh := make(http.Header, len(ex.resp.Fields)+2)
	ex.snap.take(c.buffered()[:ex.headLen], ex.resp.Fields)
	copyResponseHeader(resh, &ex.snap, nil)
	c.consume(ex.headLen)

	cconn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		h.log.Error("cannot take over the client connection for an upgrade", "server", s.cfg.Addr, "cause", err.Error())
		writeError(w, http.StatusInternalServerError, "500 Internal Server Error: this connection cannot be upgraded\n")
		return true, nil
	}
	defer cconn.Close()
	_ = cconn.SetDeadline(time.Time{}) // the server's read/write timeouts end with HTTP
	c.disarm()

	for k, vv := range w.Header() { // e.g. the request ID set before us
		if _, ok := resh[k]; !ok {
			resh[k] = vv
		}
	}
	resh["Connection"] = []string{"Upgrade"}
	resh["Upgrade"] = []string{upg}
	_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\n")
	_ = resh.Write(brw)
	_, _ = brw.WriteString("\r\n")
	// What the server sent right after its 101 is the new protocol's.
	if rest := c.buffered(); len(rest) > 0 {
		_, _ = brw.Write(rest)
		c.consume(len(rest))
	}
	if err := brw.Flush(); err != nil {
		return true, nil
	}
	tunnel(cconn, brw.Reader, c.nc, c.nc)
	return true, nil
}

// tunnel copies both ways until both sides are done. When one side finishes
// sending, the other is half-closed (a WebSocket close handshake or a TCP
// FIN passes through); an error on either side tears both down.
func tunnel(client net.Conn, fromClient io.Reader, backend net.Conn, fromBackend io.Reader) {
	errc := make(chan error, 1)
	go func() {
		_, err := io.Copy(backend, fromClient)
		endWrite(backend, client, err)
		errc <- err
	}()
	_, err := io.Copy(client, fromBackend)
	endWrite(client, backend, err)
	<-errc
}

// endWrite ends the direction that writes to dst: half-close on a clean end,
// both connections closed on an error (which also stops the other copy).
func endWrite(dst, other net.Conn, err error) {
	if err == nil {
		if cw, ok := dst.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
			return
		}
		dst.Close()
		return
	}
	dst.Close()
	other.Close()
}
