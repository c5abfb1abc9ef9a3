package h2

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Options configure a Server. Zero durations mean no timeout.
type Options struct {
	Handler http.Handler
	// BaseContext is the parent of every request's context.
	BaseContext context.Context
	// PrefaceTimeout bounds the wait for the client's connection preface
	// and first SETTINGS frame.
	PrefaceTimeout time.Duration
	// IdleTimeout closes a connection that has had no open stream for
	// that long (with GOAWAY).
	IdleTimeout time.Duration
	// ClientBodyTimeout bounds the wait between two reads of a request
	// body, SendTimeout the wait between two writes to the connection
	// and a stream's wait for flow-control credit (nginx's
	// client_body_timeout and send_timeout).
	ClientBodyTimeout time.Duration
	SendTimeout       time.Duration
	// ReadTimeout bounds reading a whole request body and WriteTimeout
	// writing a whole response, from the request's HEADERS on (net/http's
	// fields of the same names).
	ReadTimeout  time.Duration
	WriteTimeout time.Duration
	// MaxHeaderBytes bounds a request's header list (RFC 9113
	// SETTINGS_MAX_HEADER_LIST_SIZE); larger ones are answered 431.
	MaxHeaderBytes int
	// MaxConcurrentStreams is SETTINGS_MAX_CONCURRENT_STREAMS (default 128,
	// nginx's http2_max_concurrent_streams).
	MaxConcurrentStreams uint32
	// Log receives handler panics (error) and refused connections (debug).
	Log *slog.Logger
}

// Flow-control windows edged advertises, and how far it buffers.
const (
	streamWindow   = 256 << 10 // request body bytes a stream may send ahead of the handler
	connWindow     = 1 << 20   // the same for the whole connection
	maxFrameSize   = 16384     // SETTINGS_MAX_FRAME_SIZE edged accepts (the default; not sent)
	outBufferLimit = 128 << 10 // queued output above which handlers wait for the writer
	respBufSize    = 16 << 10  // a response's body buffered before its first frame leaves
	// A connection whose peer makes it queue this much output that is not
	// flow-controlled (SETTINGS and PING acks, resets) is closed.
	maxControlBacklog = 1 << 20
)

// Server serves HTTP/2 connections handed to ServeConn.
type Server struct {
	o       Options
	mu      sync.Mutex
	conns   map[*conn]struct{}
	closing atomic.Bool
	date    dateCache
	// work hands a new stream to an idle handler goroutine; idle counts
	// them. A goroutine that served a request keeps its grown stack, so
	// reusing it spares the next request the stack growth a new
	// goroutine goes through.
	work chan task
	idle atomic.Int32
}

// Idle handler goroutines: at most maxIdleWorkers wait, each for at most
// workerIdle.
const (
	maxIdleWorkers = 256
	workerIdle     = 10 * time.Second
)

// task is what a pooled goroutine runs: a stream's handler, or a
// connection's writer.
type task interface{ run() }

// start runs t on an idle goroutine, or a new one.
func (s *Server) start(t task) {
	select {
	case s.work <- t:
	default:
		go s.worker(t)
	}
}

func (s *Server) worker(tk task) {
	var t *time.Timer
	for {
		tk.run()
		tk = nil
		if s.idle.Add(1) > maxIdleWorkers {
			s.idle.Add(-1)
			return
		}
		if t == nil {
			t = time.NewTimer(workerIdle)
		} else {
			t.Reset(workerIdle)
		}
		select {
		case tk = <-s.work:
			s.idle.Add(-1)
			t.Stop()
		case <-t.C:
			s.idle.Add(-1)
			return
		}
	}
}

// New returns a Server with o's defaults filled in.
func New(o Options) *Server {
	if o.BaseContext == nil {
		o.BaseContext = context.Background()
	}
	if o.MaxHeaderBytes <= 0 {
		o.MaxHeaderBytes = 64 << 10
	}
	if o.MaxConcurrentStreams == 0 {
		o.MaxConcurrentStreams = 128
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return &Server{o: o, conns: map[*conn]struct{}{}, work: make(chan task)}
}

// ServeConn serves HTTP/2 on nc until the connection ends; tlsState is
// nil on plain connections (h2c with prior knowledge). The client's
// connection preface has not been read yet. ServeConn does not close nc.
func (s *Server) ServeConn(nc net.Conn, tlsState *tls.ConnectionState) {
	c := newConn(s, nc, tlsState)
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
	}()
	c.serve()
}

// register adds a connection whose SETTINGS are queued (a GOAWAY may
// follow them, never precede them), and says whether a shutdown has begun.
func (s *Server) register(c *conn) (closing bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.conns[c] = struct{}{}
	return s.closing.Load()
}

// Shutdown starts a graceful shutdown of every connection (and of those
// that arrive later): two GOAWAY frames, then the connection closes when
// its streams are done. It does not wait; ServeConn returns when a
// connection is done.
func (s *Server) Shutdown() {
	s.closing.Store(true)
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.goAwayGracefully()
	}
}

// dateCache holds the Date value, formatted once a second.
type dateCache struct {
	v atomic.Pointer[dateValue]
}

type dateValue struct {
	sec int64
	s   []string
}

func (d *dateCache) get() []string {
	now := time.Now()
	sec := now.Unix()
	if v := d.v.Load(); v != nil && v.sec == sec {
		return v.s
	}
	v := &dateValue{sec: sec, s: []string{now.UTC().Format(http.TimeFormat)}}
	d.v.Store(v)
	return v.s
}
