package server

import (
	"net"
	"reflect"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgeapp/edgeapp/edged/config"
	"github.com/edgeapp/edgeapp/edged/proxyproto"
)

// proxyProtocol puts a PROXY protocol reader under the listeners that
// [server.proxy_protocol] names, before anything else wraps them (TLS,
// connection caps, the engines), so that all of them see the client's
// address. Which listeners take headers is fixed until a restart; the
// trusted senders follow reloads.
type proxyProtocol struct {
	lns     []*proxyproto.Listener
	refused *prometheus.CounterVec
}

func (s *Server) wrapProxyProtocol(cfg *config.Config) {
	pc := cfg.Server.ProxyProtocol
	if len(pc.Listeners) == 0 {
		return
	}
	if s.pp.refused == nil {
		s.pp.refused = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edged_proxy_protocol_refused_total",
			Help: "Connections refused by a PROXY protocol listener, by listener and reason (untrusted, no_header, bad_header).",
		}, []string{"listener", "reason"})
		s.registry.MustRegister(s.pp.refused)
	}
	for _, kind := range []string{"http", "https"} {
		if !pc.Enabled(kind) {
			continue
		}
		lns := &s.httpLns
		if kind == "https" {
			lns = &s.httpsLns
		}
		for i, ln := range *lns {
			pl := s.NewProxyProtocolListener(ln, kind, pc)
			(*lns)[i] = pl
		}
		s.log.Info("listeners take the PROXY protocol (v1, v2) from trusted senders only", "listener", kind, "from", pc.From)
	}
}

// NewProxyProtocolListener wraps ln for the listener (or stream) named name.
func (s *Server) NewProxyProtocolListener(ln net.Listener, name string, pc config.ProxyProtocol) *proxyproto.Listener {
	refused := s.pp.refused
	pl := proxyproto.NewListener(ln, proxyproto.Options{
		Trusted: pc.Trusted(), Timeout: pc.Timeout.D(), Log: s.log, Name: name,
		Refused: func(reason string) {
			if refused != nil {
				refused.WithLabelValues(name, reason).Inc()
			}
		},
	})
	s.pp.lns = append(s.pp.lns, pl)
	return pl
}

// reloadProxyProtocol applies new trusted senders to the listeners.
func (s *Server) reloadProxyProtocol(old, cur *config.Config) {
	if !reflect.DeepEqual(old.Server.ProxyProtocol.Listeners, cur.Server.ProxyProtocol.Listeners) {
		s.log.Warn("setting changed; it takes effect at the next restart (systemctl restart edged)", "setting", "server.proxy_protocol.listeners")
	}
	trusted := cur.Server.ProxyProtocol.Trusted()
	for _, pl := range s.pp.lns {
		pl.SetTrusted(trusted)
	}
}
