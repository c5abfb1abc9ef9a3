package proxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

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
func (h *handler) serveUpgrade(w http.ResponseWriter, r *http.Request, req *http.Request, s *server, proto string) (done bool, err error) {
	ctx := r.Context()
	start := time.Now()
	conn, err := s.tr.dial(ctx)
	if err != nil {
		return false, err
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	_ = conn.SetDeadline(time.Now().Add(h.p.cfg.ResponseHeaderTimeout))
	req.Body, req.ContentLength = nil, 0
	bw := bufio.NewWriterSize(conn, 4<<10)
	err = req.Write(bw)
	if err == nil {
		err = bw.Flush()
	}
	br := bufio.NewReaderSize(conn, 16<<10)
	var res *http.Response
	if err == nil {
		res, err = http.ReadResponse(br, req)
	}
	stop()
	if err != nil {
		conn.Close()
		return false, err
	}
	_ = conn.SetDeadline(time.Time{})
	s.st.total.Add(1)
	s.st.metrics.latency.Observe(time.Since(start).Seconds())
	if info := reqinfo.From(ctx); info != nil {
		info.Upstream, info.UpstreamStatus, info.UpstreamTime = s.cfg.Addr, res.StatusCode, time.Since(start)
	}

	if res.StatusCode != http.StatusSwitchingProtocols {
		// Refused (401, 426, ...): an ordinary response on a connection
		// nobody else will use.
		res.Body = &closeConnBody{ReadCloser: res.Body, c: conn}
		h.serveResponse(w, r, res, s)
		return true, nil
	}
	defer conn.Close()
	upg := res.Header.Get("Upgrade")
	if !strings.EqualFold(upg, proto) {
		err := errors.New("answered 101 with Upgrade " + upg + " to a request for " + proto)
		h.p.recordFailure(s, causeProtocol, err)
		s.st.metrics.requests[classError].Inc()
		h.fail(w, r, s, causeProtocol, err, 1)
		return true, nil
	}
	s.st.metrics.requests[0].Inc()
	h.p.recordSuccess(s)

	cconn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		h.log.Error("cannot take over the client connection for an upgrade", "server", s.cfg.Addr, "cause", err.Error())
		writeError(w, http.StatusInternalServerError, "500 Internal Server Error: this connection cannot be upgraded\n")
		return true, nil
	}
	defer cconn.Close()
	_ = cconn.SetDeadline(time.Time{}) // the server's read/write timeouts end with HTTP

	removeHopByHop(res.Header)
	for k, vv := range w.Header() { // e.g. the request ID set before us
		if _, ok := res.Header[k]; !ok {
			res.Header[k] = vv
		}
	}
	res.Header["Connection"] = []string{"Upgrade"}
	res.Header["Upgrade"] = []string{upg}
	_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\n")
	_ = res.Header.Write(brw)
	_, _ = brw.WriteString("\r\n")
	if err := brw.Flush(); err != nil {
		return true, nil
	}
	tunnel(cconn, brw.Reader, conn, br)
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

// closeConnBody closes the upgrade attempt's connection with the body.
type closeConnBody struct {
	io.ReadCloser
	c net.Conn
}

func (b *closeConnBody) Close() error {
	err := b.ReadCloser.Close()
	b.c.Close()
	return err
}
