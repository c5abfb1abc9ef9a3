package server

import (
	"context"
	"crypto/tls"
	"log"
	"log/slog"
	"net"
	"net/http"
	"strings"

	"github.com/edgeapp/edgeapp/edged/config"
	"github.com/edgeapp/edgeapp/edged/engine"
)

// frontend serves client connections: edged's own engine, or net/http's
// server when [server] engine = "net/http".
type frontend interface {
	Serve(net.Listener) error
	Shutdown(context.Context) error
	Close() error
}

// newFrontend builds the server for one kind of listener ("http" or
// "https") and the function that prepares its listeners.
func (s *Server) newFrontend(cfg *config.Config, kind string, h http.Handler, tlsConf *tls.Config) (frontend, func(net.Listener) net.Listener) {
	sc := cfg.Server
	gauge := s.metrics.connections.WithLabelValues(kind)
	connState := func(c net.Conn, st http.ConnState) {
		switch st {
		case http.StateNew:
			gauge.Inc()
		case http.StateClosed, http.StateHijacked:
			gauge.Dec()
		}
		s.conns.connState(c, st)
	}
	if sc.Engine == engine.NetHTTP {
		srv := s.newHTTPServer(cfg, kind, h, connState)
		srv.TLSConfig = tlsConf
		return srv, func(ln net.Listener) net.Listener {
			if tlsConf != nil {
				return tls.NewListener(trackingListener{ln}, tlsConf)
			}
			return trackingListener{ln}
		}
	}
	// The engine drains its own connections on Shutdown; it tracks them
	// without the trackingListener wrapper, which would hide the TCP
	// connection it waits on and sends files through.
	srv := engine.New(engine.Options{
		Handler:           h,
		ReadHeaderTimeout: sc.ReadHeaderTimeout.D(),
		IdleTimeout:       sc.IdleTimeout.D(),
		ClientBodyTimeout: sc.ClientBodyTimeout.D(),
		SendTimeout:       sc.SendTimeout.D(),
		ReadTimeout:       sc.ReadTimeout.D(),
		WriteTimeout:      sc.WriteTimeout.D(),
		MaxHeaderBytes:    int(sc.MaxHeaderBytes),
		H2C:               kind == "http" && sc.H2C,
		ConnState:         connState,
		Log:               s.log.With("listener", kind),
	})
	return srv, func(ln net.Listener) net.Listener {
		if tlsConf != nil {
			return tls.NewListener(ln, tlsConf)
		}
		return ln
	}
}

func (s *Server) newHTTPServer(cfg *config.Config, kind string, h http.Handler, connState func(net.Conn, http.ConnState)) *http.Server {
	sc := cfg.Server
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: sc.ReadHeaderTimeout.D(),
		ReadTimeout:       sc.ReadTimeout.D(),
		WriteTimeout:      sc.WriteTimeout.D(),
		IdleTimeout:       sc.IdleTimeout.D(),
		MaxHeaderBytes:    int(sc.MaxHeaderBytes),
		ErrorLog:          log.New(httpErrorLog{s.log.With("listener", kind)}, "", 0),
		ConnState:         connState,
	}
	var p http.Protocols
	p.SetHTTP1(true)
	if kind == "https" {
		p.SetHTTP2(true)
	} else if sc.H2C {
		p.SetUnencryptedHTTP2(true)
	}
	srv.Protocols = &p
	return srv
}

// httpErrorLog takes net/http's server log. Its accept errors (EMFILE past
// the open-file limit) are what an operator must see, as edged's engine
// logs them; the rest (TLS handshakes that clients abandon, and the like)
// is noise at debug level.
type httpErrorLog struct{ log *slog.Logger }

func (l httpErrorLog) Write(p []byte) (int, error) {
	msg := strings.TrimSuffix(string(p), "\n")
	if err, ok := strings.CutPrefix(msg, "http: Accept error: "); ok {
		l.log.Warn("accepting a connection failed; retrying", "err", err)
	} else {
		l.log.Debug(msg)
	}
	return len(p), nil
}
