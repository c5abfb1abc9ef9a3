package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"reflect"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgeapp/edgeapp/edged/config"
	"github.com/edgeapp/edgeapp/edged/proxyproto"
	"github.com/edgeapp/edgeapp/edged/stream"
	"github.com/edgeapp/edgeapp/edged/tlsconf"
	"github.com/edgeapp/edgeapp/internal/systemd"
)

// streams are the [[stream]] proxies: their servers own their listeners
// for the life of the process; each runtime carries their settings (pool,
// certificates, timeouts), swapped in on reload.
type streams struct {
	srvs     map[string]*stream.Server
	active   *prometheus.GaugeVec
	finished *prometheus.CounterVec
	bytes    *prometheus.CounterVec
}

// openStreams takes each stream's socket from systemd (by the stream's
// name) or binds its listen addresses.
func (s *Server) openStreams(cfg *config.Config) error {
	if len(cfg.Streams) == 0 {
		return nil
	}
	act := systemd.TakeActivated()
	s.streams.srvs = map[string]*stream.Server{}
	for _, sc := range cfg.Streams {
		lns, fromSystemd, err := act.ListenOrBind(sc.Name, sc.Listen)
		if err != nil {
			return fmt.Errorf("stream %s: %w", sc.Name, err)
		}
		if len(lns) == 0 {
			return fmt.Errorf("stream %s: no listener: systemd passed no socket named %q and listen is empty", sc.Name, sc.Name)
		}
		s.logListeners("stream "+sc.Name, lns, fromSystemd)
		if sc.ProxyProtocol {
			for i, ln := range lns {
				lns[i] = s.NewProxyProtocolListener(ln, sc.Name, cfg.Server.ProxyProtocol)
			}
		}
		s.streams.srvs[sc.Name] = stream.New(sc.Name, lns, &stream.Settings{}, s.streamMetrics(sc.Name))
	}
	return nil
}

func (s *Server) streamMetrics(name string) stream.Metrics {
	if s.streams.active == nil {
		s.streams.active = prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "edged_stream_connections_active", Help: "Open stream connections, by stream.",
		}, []string{"stream"})
		s.streams.finished = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edged_stream_connections_total",
			Help: "Stream connections ended, by stream and result (ok, client_quit, refused, tls_failed, upstream_failed).",
		}, []string{"stream", "result"})
		s.streams.bytes = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edged_stream_bytes_total", Help: "Bytes carried by streams, by stream and direction (in: from clients).",
		}, []string{"stream", "direction"})
		s.registry.MustRegister(s.streams.active, s.streams.finished, s.streams.bytes)
	}
	g := s.streams.active.WithLabelValues(name)
	in, out := s.streams.bytes.WithLabelValues(name, "in"), s.streams.bytes.WithLabelValues(name, "out")
	return stream.Metrics{
		Active:   func(d int) { g.Add(float64(d)) },
		Finished: func(r string) { s.streams.finished.WithLabelValues(name, r).Inc() },
		Bytes:    func(i, o int64) { in.Add(float64(i)); out.Add(float64(o)) },
		Log:      s.log,
	}
}

// compileStreams builds each stream's settings for rt (prepare: nothing
// changes until the runtime is swapped in).
func (s *Server) compileStreams(cfg *config.Config, rt *runtime) error {
	rt.streams = map[string]*stream.Settings{}
	for _, sc := range cfg.Streams {
		st := &stream.Settings{
			Pool: rt.pools[sc.Upstream], IdleTimeout: sc.IdleTimeout.D(), HandshakeTimeout: sc.HandshakeTimeout.D(),
		}
		if st.Pool == nil {
			return fmt.Errorf("stream %s: upstream %q did not start", sc.Name, sc.Upstream)
		}
		if len(sc.Hosts) > 0 {
			st.Hostname = sc.Hosts[0]
		} else if h, err := os.Hostname(); err == nil {
			st.Hostname = h
		}
		if sc.TLS.Mode != "off" && s.tls != nil {
			st.TLS = streamTLS(s.tls.TLSConfig(), st.Hostname)
		}
		if sc.StartTLS {
			st.StartTLS = sc.Protocol
		}
		st.SendProxy, _ = proxyproto.ParseVersion(sc.SendProxyProtocol)
		if st.SendProxy == 0 {
			st.SendProxy = sendProxyVersion(cfg.Upstreams[sc.Upstream].SendProxy)
		}
		if sc.UpstreamTLS {
			tc := &tls.Config{ServerName: sc.UpstreamTLSName, MinVersion: tls.VersionTLS12, ClientSessionCache: tls.NewLRUClientSessionCache(64)}
			if sc.UpstreamTLSCA != "" {
				pem, err := os.ReadFile(sc.UpstreamTLSCA)
				if err != nil {
					return fmt.Errorf("stream %s: upstream_tls_ca: %w", sc.Name, err)
				}
				tc.RootCAs = x509.NewCertPool()
				if !tc.RootCAs.AppendCertsFromPEM(pem) {
					return fmt.Errorf("stream %s: upstream_tls_ca: no PEM certificate in %s", sc.Name, sc.UpstreamTLSCA)
				}
			}
			if tc.ServerName == "" {
				if u := cfg.Upstreams[sc.Upstream]; u != nil && len(u.Servers) > 0 {
					if h, _, err := net.SplitHostPort(u.Servers[0].Addr); err == nil {
						tc.ServerName = h
					}
				}
			}
			st.UpstreamTLS = tc
		}
		rt.streams[sc.Name] = st
	}
	return nil
}

// sendProxyVersion is an upstream's send_proxy_protocol (validated).
func sendProxyVersion(s string) int {
	v, _ := proxyproto.ParseVersion(s)
	return v
}

// streamTLS is the certificate manager's configuration for a stream: no
// ALPN of edged's HTTP listeners (a mail client offering "imap" must not
// be refused), and the stream's first host for clients that send no SNI.
func streamTLS(base *tls.Config, host string) *tls.Config {
	c := base.Clone()
	c.NextProtos = nil
	get := base.GetCertificate
	if get != nil {
		c.GetCertificate = func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			if hello.ServerName == "" {
				h := *hello
				h.ServerName = host
				return get(&h)
			}
			return get(hello)
		}
	}
	return c
}

// streamTLSSites are the streams' certificate needs, as sites for the
// certificate manager; names a site already has are left to it.
func streamTLSSites(cfg *config.Config) []tlsconf.Site {
	have := map[string]bool{}
	for _, sc := range cfg.Sites {
		if sc.TLS.Mode != "off" {
			for _, h := range sc.Hosts {
				have[h] = true
			}
		}
	}
	var out []tlsconf.Site
	for _, st := range cfg.Streams {
		site := tlsconf.Site{Mode: st.TLS.Mode, CertFile: st.TLS.Cert, KeyFile: st.TLS.Key}
		for _, h := range st.Hosts {
			if !have[h] || st.TLS.Mode == "manual" {
				site.Hosts = append(site.Hosts, h)
			}
			have[h] = true
		}
		if st.TLS.Mode == "off" || len(site.Hosts) == 0 {
			site.Mode, site.Hosts = "off", nil
		}
		out = append(out, site)
	}
	return out
}

// startStreams starts accepting with the first runtime's settings.
func (s *Server) startStreams(rt *runtime) {
	for name, srv := range s.streams.srvs {
		if st := rt.streams[name]; st != nil {
			srv.Update(st)
		}
		srv.Serve(s.serveErr)
	}
}

// reloadStreams hands the new runtime's settings to the streams.
func (s *Server) reloadStreams(old, cur *config.Config, rt *runtime) {
	for name, srv := range s.streams.srvs {
		if st := rt.streams[name]; st != nil {
			srv.Update(st)
		}
	}
	oldNames := map[string]config.Stream{}
	for _, sc := range old.Streams {
		oldNames[sc.Name] = sc
	}
	for _, sc := range cur.Streams {
		o, ok := oldNames[sc.Name]
		if !ok || !reflect.DeepEqual(o.Listen, sc.Listen) || o.ProxyProtocol != sc.ProxyProtocol {
			s.log.Warn("setting changed; it takes effect at the next restart (systemctl restart edged)", "setting", "stream "+sc.Name+" (a new stream, or its listen or proxy_protocol)")
		}
		delete(oldNames, sc.Name)
	}
	for name := range oldNames {
		s.log.Warn("stream removed from the configuration; it keeps serving with its last settings until the next restart", "stream", name)
	}
}

// stopStreams closes the streams' listeners and waits for their
// connections until ctx is done.
func (s *Server) stopStreams(ctx context.Context) {
	for name, srv := range s.streams.srvs {
		if n := srv.Stop(ctx); n > 0 {
			s.log.Warn("shutdown deadline passed with stream connections open; closed them", "stream", name, "connections", n)
		}
	}
}
