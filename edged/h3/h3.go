// Package h3 serves HTTP/3 (QUIC, RFC 9114) with quic-go, in front of the
// same http.Handler as edged's TCP listeners.
//
// The server outlives reloads like the TCP listeners do: a reload swaps
// the route chain behind the handler, so QUIC connections stay up;
// Shutdown sends GOAWAY and waits for requests in flight, up to its
// context's deadline, then closes what remains.
//
// 0-RTT (early data, RFC 8470) is off unless Options.Allow0RTT is set, and
// even then a request that arrives before the handshake is complete is
// served at once only if it is safe (GET, HEAD, OPTIONS) and EarlyOK
// allows it; any other waits for the handshake to complete, so that a
// replayed request can never change anything. Requests served early
// carry "Early-Data: 1" upstream so the application can answer 425.
package h3

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// Options configure a Server.
type Options struct {
	Handler   http.Handler
	TLSConfig *tls.Config // certificates; NextProtos are set to h3 here
	// IdleTimeout closes a connection without requests for that long.
	IdleTimeout    time.Duration
	MaxHeaderBytes int
	// Allow0RTT accepts early data at the QUIC level; EarlyOK then decides
	// per request (nil: no request is served early).
	Allow0RTT bool
	EarlyOK   func(*http.Request) bool
	// Conns, if set, is told +1 when a QUIC connection opens and -1 when
	// it closes.
	Conns func(delta int)
	Log   *slog.Logger
}

// Server is one HTTP/3 server over any number of UDP sockets.
type Server struct {
	srv     *http3.Server
	earlyOK func(*http.Request) bool
	log     *slog.Logger

	mu   sync.Mutex
	pcs  []net.PacketConn
	port int
}

type connKey struct{}

// New builds a server; Serve starts it on a socket.
func New(o Options) *Server {
	s := &Server{earlyOK: o.EarlyOK, log: o.Log}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	qc := &quic.Config{
		Allow0RTT:             o.Allow0RTT,
		MaxIdleTimeout:        o.IdleTimeout,
		KeepAlivePeriod:       0,
		MaxIncomingStreams:    256,
		MaxIncomingUniStreams: 16,
	}
	s.srv = &http3.Server{
		Handler:        http.HandlerFunc(s.serveHTTP(o.Handler)),
		TLSConfig:      o.TLSConfig,
		QUICConfig:     qc,
		MaxHeaderBytes: o.MaxHeaderBytes,
		IdleTimeout:    o.IdleTimeout,
		Logger:         s.log,
		ConnContext: func(ctx context.Context, c *quic.Conn) context.Context {
			if o.Conns != nil {
				o.Conns(1)
				go func() { <-c.Context().Done(); o.Conns(-1) }()
			}
			return context.WithValue(ctx, connKey{}, c)
		},
	}
	return s
}

// Serve serves HTTP/3 on pc until Shutdown; it returns http.ErrServerClosed
// after Shutdown.
func (s *Server) Serve(pc net.PacketConn) error {
	s.mu.Lock()
	s.pcs = append(s.pcs, pc)
	if u, ok := pc.LocalAddr().(*net.UDPAddr); ok && s.port == 0 {
		s.port = u.Port
	}
	s.mu.Unlock()
	err := s.srv.Serve(pc)
	if errors.Is(err, quic.ErrServerClosed) {
		err = http.ErrServerClosed
	}
	return err
}

// Shutdown stops taking connections, tells clients to go away and waits
// for requests in flight until ctx is done; then it closes everything,
// the UDP sockets included.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	s.mu.Lock()
	for _, pc := range s.pcs {
		pc.Close()
	}
	s.mu.Unlock()
	return err
}

// Close closes every connection at once.
func (s *Server) Close() error { return s.srv.Close() }

// AltSvc is the Alt-Svc field value that advertises HTTP/3 on port: the
// UDP port clients should use, usually the same as the TLS listener's.
func AltSvc(port int) string {
	return `h3=":` + strconv.Itoa(port) + `"; ma=86400`
}

// Early reports whether r arrived in 0-RTT data, before the handshake was
// complete.
func Early(r *http.Request) bool {
	return r.TLS != nil && !r.TLS.HandshakeComplete
}

// safe are the methods RFC 9110 calls safe: their replay changes nothing.
func safe(method string) bool {
	return method == http.MethodGet || method == http.MethodHead || method == http.MethodOptions
}

func (s *Server) serveHTTP(next http.Handler) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		if Early(r) {
			if safe(r.Method) && s.earlyOK != nil && s.earlyOK(r) {
				r.Header["Early-Data"] = []string{"1"}
			} else if err := waitHandshake(r); err != nil {
				// The client went away or the handshake failed; nothing
				// of the request was acted on.
				s.log.Debug("HTTP/3: early request dropped: the handshake did not complete", "err", err)
				w.WriteHeader(http.StatusTooEarly)
				return
			}
		} else {
			// Whatever the client said, only edged marks early data.
			delete(r.Header, "Early-Data")
		}
		next.ServeHTTP(w, r)
	}
}

// waitHandshake blocks until the request's connection has completed its
// handshake, and updates r.TLS.
func waitHandshake(r *http.Request) error {
	c, ok := r.Context().Value(connKey{}).(*quic.Conn)
	if !ok {
		return fmt.Errorf("no QUIC connection in the request context")
	}
	select {
	case <-c.HandshakeComplete():
	case <-r.Context().Done():
		return r.Context().Err()
	}
	st := c.ConnectionState().TLS
	r.TLS = &st
	delete(r.Header, "Early-Data")
	return nil
}
