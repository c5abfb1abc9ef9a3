package server

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/edgeapp/edgeapp/edged/proxyproto"
)

// The systemd watchdog (WatchdogSec=) is pinged only on evidence that
// edged serves: before each ping edged sends itself a request through its
// own http listener, so the accept loop, the HTTP server and the top of
// the handler chain all have to answer. A process whose goroutines still
// run but that no longer accepts or answers is not pinged, and systemd
// restarts it. A listener that cannot take a plain request from edged
// itself (PROXY protocol only, TLS only) is replaced by an in-memory one
// served by the same HTTP server.

// watchdogPath is answered only for a request carrying the process's
// token; for anyone else it is an ordinary path.
const watchdogPath = "/.well-known/edged-watchdog"

const watchdogHeader = "X-Edged-Watchdog"

// watchdog is the self-probe's state.
type watchdog struct {
	token string
	once  sync.Once
	pipe  *pipeListener // when no real listener can be probed
	// network and addresses of the http listener probed, tried in order;
	// "" = the pipe
	network   string
	addresses []string
}

func newWatchdogToken() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// isWatchdogProbe reports whether r is edged's own probe.
func (s *Server) isWatchdogProbe(r *http.Request) bool {
	if r.URL.Path != watchdogPath {
		return false
	}
	got := r.Header.Get(watchdogHeader)
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(s.wd.token)) == 1
}

// probeTarget picks the listener the probe goes through, once listeners
// are open: the first plain http listener edged accepts on itself.
func (s *Server) probeTarget() {
	for _, ln := range s.httpLns {
		if _, ok := ln.(*proxyproto.Listener); ok {
			continue
		}
		switch a := ln.Addr().(type) {
		case *net.TCPAddr:
			port := strconv.Itoa(a.Port)
			s.wd.network = "tcp"
			switch {
			case a.IP == nil || a.IP.IsUnspecified() && a.IP.To4() != nil:
				s.wd.addresses = []string{net.JoinHostPort("127.0.0.1", port)}
			case a.IP.IsUnspecified():
				// [::] takes IPv4 too unless it is IPv6-only (systemd's
				// BindIPv6Only=both); ::1 may not exist where IPv6 is off.
				s.wd.addresses = []string{net.JoinHostPort("127.0.0.1", port), net.JoinHostPort("::1", port)}
			default:
				s.wd.addresses = []string{net.JoinHostPort(a.IP.String(), port)}
			}
			return
		case *net.UnixAddr:
			s.wd.network, s.wd.addresses = "unix", []string{a.Name}
			return
		}
	}
	s.wd.pipe = newPipeListener()
}

// Healthy sends edged's probe through its http listener and reports
// whether edged answered it within timeout. A connection cap's 503 counts
// as an answer: the accept loop runs, and restarting edged under a flood
// would not help.
func (s *Server) Healthy(timeout time.Duration) bool {
	if s.stopping.Load() {
		return true // draining; systemd's stop timeout applies now
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var c net.Conn
	var err error
	if s.wd.network != "" {
		var d net.Dialer
		for _, addr := range s.wd.addresses {
			if c, err = d.DialContext(ctx, s.wd.network, addr); err == nil {
				break
			}
		}
	} else if s.wd.pipe != nil {
		c, err = s.wd.pipe.dial(ctx)
	} else {
		return false
	}
	if err != nil {
		return false
	}
	defer c.Close()
	deadline, _ := ctx.Deadline()
	c.SetDeadline(deadline)
	req := "GET " + watchdogPath + " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nUser-Agent: edged-watchdog\r\n" +
		watchdogHeader + ": " + s.wd.token + "\r\n\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		return false
	}
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return false
	}
	res.Body.Close()
	return res.StatusCode == http.StatusOK && res.Header.Get(watchdogHeader) == "ok" ||
		res.StatusCode == http.StatusServiceUnavailable && res.Header.Get("Retry-After") != ""
}

// answerProbe is the probe's answer, from the top of the handler chain.
func answerProbe(w http.ResponseWriter) {
	h := w.Header()
	h[watchdogHeader] = []string{"ok"}
	h["Content-Length"] = []string{"0"}
	h["Cache-Control"] = []string{"no-store"}
	w.WriteHeader(http.StatusOK)
}

// pipeListener is an in-memory listener: each dial hands the HTTP server
// one end of a net.Pipe.
type pipeListener struct {
	conns     chan net.Conn
	done      chan struct{}
	closeOnce sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return pipeAddr{} }

func (l *pipeListener) dial(ctx context.Context) (net.Conn, error) {
	client, server := net.Pipe()
	select {
	case l.conns <- server:
		return client, nil
	case <-ctx.Done():
		client.Close()
		server.Close()
		return nil, ctx.Err()
	case <-l.done:
		client.Close()
		server.Close()
		return nil, errors.New("watchdog listener closed")
	}
}

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "edged-watchdog" }
