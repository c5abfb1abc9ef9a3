package server

import (
	"context"
	"errors"
	"net"
	"net/http"
	"reflect"

	"github.com/edgeapp/edgeapp/edged/config"
	"github.com/edgeapp/edgeapp/edged/h3"
	"github.com/edgeapp/edgeapp/internal/systemd"
)

// quicListeners is HTTP/3: the UDP sockets (systemd's "quic", or bound by
// hand), the server on them, and the Alt-Svc value the TLS listener
// advertises. The server lives as long as the process; reloads change the
// route chain behind it, so QUIC connections stay up.
type quicListeners struct {
	pcs    []net.PacketConn
	srv    *h3.Server
	altSvc []string
}

// openQUIC takes the "quic" sockets systemd passed or, when edged was not
// socket-activated at all, binds [server] quic. Under systemd without a
// quic socket HTTP/3 is off: binding UDP 443 needs the privilege edged
// runs without.
func (s *Server) openQUIC(cfg *config.Config) error {
	if err := s.takeQUIC(cfg); err != nil || len(s.quic.pcs) == 0 {
		return err
	}
	// Fixed before anything serves: the TLS listener reads it unlocked.
	if u, ok := s.quic.pcs[0].LocalAddr().(*net.UDPAddr); ok {
		s.quic.altSvc = []string{h3.AltSvc(u.Port)}
	}
	return nil
}

func (s *Server) takeQUIC(cfg *config.Config) error {
	if !*cfg.Server.HTTP3 || len(s.httpsLns) == 0 {
		return nil
	}
	act := systemd.TakeActivated()
	if len(act.Files("quic")) > 0 {
		pcs, err := act.PacketConns("quic")
		if err != nil {
			return err
		}
		s.quic.pcs = pcs
		for _, pc := range pcs {
			s.log.Info("listening", "listener", "quic", "addr", pc.LocalAddr().String(), "socket", "from systemd")
		}
		return nil
	}
	if !act.Empty() {
		s.log.Info("HTTP/3 is off: systemd passed no socket named quic (systemctl enable --now edged-quic.socket)")
		return nil
	}
	for _, addr := range cfg.Server.QUIC {
		pc, err := systemd.BindUDP(addr)
		if err != nil {
			for _, p := range s.quic.pcs {
				p.Close()
			}
			s.quic.pcs = nil
			return err
		}
		s.quic.pcs = append(s.quic.pcs, pc)
		s.log.Info("listening", "listener", "quic", "addr", pc.LocalAddr().String(), "socket", "bound")
	}
	return nil
}

// startQUIC serves HTTP/3 on the sockets openQUIC found, with the same
// route chain and certificates as the TLS listener.
func (s *Server) startQUIC(cfg *config.Config, h http.Handler) {
	if len(s.quic.pcs) == 0 {
		return
	}
	allow0RTT := anyEarlyData(cfg)
	gauge := s.metrics.connections.WithLabelValues("quic")
	s.quic.srv = h3.New(h3.Options{
		Handler:        h,
		TLSConfig:      s.tls.TLSConfig(),
		IdleTimeout:    cfg.Server.IdleTimeout.D(),
		MaxHeaderBytes: int(cfg.Server.MaxHeaderBytes),
		Allow0RTT:      allow0RTT,
		EarlyOK:        s.earlyDataAllowed,
		Conns:          func(d int) { gauge.Add(float64(d)) },
		Log:            s.log.With("listener", "quic"),
	})
	for _, pc := range s.quic.pcs {
		go func() {
			if err := s.quic.srv.Serve(pc); err != nil && !errors.Is(err, http.ErrServerClosed) && !s.stopping.Load() {
				s.serveErr <- err
			}
		}()
	}
	s.log.Info("serving HTTP/3", "sockets", len(s.quic.pcs), "0-RTT", allow0RTT)
}

// withAltSvc advertises HTTP/3 on the TLS listener's responses.
func (s *Server) withAltSvc(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.quic.altSvc != nil && r.ProtoMajor < 3 {
			w.Header()["Alt-Svc"] = s.quic.altSvc
		}
		h.ServeHTTP(w, r)
	})
}

// stopQUIC drains HTTP/3 connections until ctx's deadline.
func (s *Server) stopQUIC(ctx context.Context) {
	if s.quic.srv == nil {
		return
	}
	if err := s.quic.srv.Shutdown(ctx); err != nil {
		s.log.Warn("HTTP/3: shutdown deadline passed; closing the remaining connections", "err", err)
	}
}

// earlyDataAllowed reports whether r's route allows 0-RTT requests.
func (s *Server) earlyDataAllowed(r *http.Request) bool {
	site := s.current.Load().router.Site(r.Host)
	if site == nil {
		return false
	}
	route := site.Route(r.URL.Path)
	return route != nil && route.Data.(*routeData).earlyData
}

func anyEarlyData(cfg *config.Config) bool {
	for _, sc := range cfg.Sites {
		for _, rc := range sc.Routes {
			if rc.EarlyData {
				return true
			}
		}
	}
	return false
}

// warnQUICRestart names the HTTP/3 settings only a restart applies.
func (s *Server) warnQUICRestart(old, cur *config.Config) {
	if *old.Server.HTTP3 != *cur.Server.HTTP3 || !reflect.DeepEqual(old.Server.QUIC, cur.Server.QUIC) {
		s.log.Warn("setting changed; it takes effect at the next restart (systemctl restart edged)", "setting", "server.http3, server.quic")
	}
	if s.quic.srv != nil && anyEarlyData(cur) && !anyEarlyData(old) {
		s.log.Warn("setting changed; it takes effect at the next restart (systemctl restart edged)", "setting", "early_data (0-RTT is off for QUIC connections until then)")
	}
}
