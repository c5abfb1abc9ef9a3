package server

import (
	"context"
	"net/url"

	"github.com/edgeapp/edgeapp/edged/cluster"
	"github.com/edgeapp/edgeapp/edged/config"
	"github.com/edgeapp/edgeapp/edged/proxy"
)

// openCluster connects this node to the etcd cluster of [cluster], if
// any. It does not wait for etcd: a node starts and serves while etcd is
// down. [cluster] is read at start only (a change takes a restart).
func (s *Server) openCluster(cfg *config.Config) error {
	if !cfg.Cluster.Enabled() {
		return nil
	}
	o := cfg.ClusterOptions()
	o.Log = s.log
	c, err := cluster.Open(o, cluster.NewMetrics(s.registry))
	if err != nil {
		return cfg.Doc.Errorf("cluster", "%v", err)
	}
	s.cluster = c
	s.log.Info("cluster: joining", "node", o.Node, "etcd", o.Endpoints, "prefix", o.Prefix, "certificates_in_etcd", cfg.TLS.Storage == config.StorageEtcd)
	return nil
}

// startClusterPurges lets purges made on other nodes reach this node's
// caches, once they are in service.
func (s *Server) startClusterPurges() {
	if s.cluster == nil {
		return
	}
	s.purger = s.cluster.StartPurger(cluster.PurgeHandlers{
		Apply: func(pg cluster.Purge) {
			n, _ := s.purgeLocal(pg)
			s.log.Info("cache purged by another node", "node", pg.Node, "url", pg.URL, "prefix", pg.Prefix, "all", pg.All, "cache", pg.Cache, "entries", n)
		},
		DropAll: func(reason string) {
			n, _ := s.purgeLocal(cluster.Purge{All: true})
			s.log.Warn("cluster: emptied every cache, since purges made elsewhere may have been missed", "reason", reason, "entries", n)
		},
	})
}

// purgeLocal applies pg to this node's caches; ok is false when it names
// a cache this node does not have.
func (s *Server) purgeLocal(pg cluster.Purge) (total int, ok bool) {
	var target *url.URL
	for _, v := range []string{pg.URL, pg.Prefix} {
		if v != "" {
			u, err := url.Parse(v)
			if err != nil || u.Host == "" {
				return 0, false
			}
			target = u
		}
	}
	s.cacheMu.Lock()
	defer s.cacheMu.Unlock()
	if pg.Cache != "" {
		if _, found := s.caches[pg.Cache]; !found {
			return 0, false
		}
	}
	for name, c := range s.caches {
		if pg.Cache != "" && pg.Cache != name {
			continue
		}
		switch {
		case pg.URL != "":
			total += c.PurgeURL(target)
		case pg.Prefix != "":
			total += c.PurgePrefix(target.Scheme, target.Host, target.Path)
		case pg.All:
			total += c.PurgeAll()
		}
	}
	return total, true
}

// publishPurge sends a purge made here to the other nodes; it says what
// happened in words for the admin API's answer ("" without a cluster).
func (s *Server) publishPurge(pg cluster.Purge) string {
	if s.purger == nil {
		return ""
	}
	if err := s.purger.Publish(context.Background(), pg); err != nil {
		s.log.Warn("cluster: purge not sent to the other nodes yet", "err", err)
		return err.Error()
	}
	return "sent to every node"
}

func (s *Server) closeCluster() {
	if s.cluster != nil {
		s.cluster.Close()
	}
}

// attachClusterLimits makes the zones marked cluster = true hold for the
// whole cluster. In check mode (edged -t) there is no cluster and the
// zones stay local.
func (s *Server) attachClusterLimits(cfg *config.Config, rt *runtime) {
	if s.cluster == nil {
		return
	}
	for name, z := range rt.zones {
		if zc := cfg.Limits[name]; zc != nil && zc.Cluster {
			s.cluster.Limits().Attach(z)
		}
	}
}

// discoverSpec is what upstream name finds at run time.
func discoverSpec(name string, u *config.Upstream) cluster.DiscoverSpec {
	return cluster.DiscoverSpec{Upstream: name, Resolve: u.Resolve, SRV: u.ResolveSRV, Registry: u.Registry, Resolvers: u.Resolvers}
}

// withDiscovered lets an upstream that finds servers at run time start
// with none, and with the servers its running discovery knows now (a
// reload keeps them, and their state, in the new pool).
func (s *Server) withDiscovered(name string, u *config.Upstream, pc *proxy.UpstreamConfig) {
	if !u.Discovers() {
		return
	}
	pc.Dynamic = true
	if d := s.discoverers[name]; d != nil && d.Matches(discoverSpec(name, u)) {
		pc.Servers = mergeServers(pc.Servers, d.Servers())
	}
}

// mergeServers is the static servers, then the discovered ones not
// already listed.
func mergeServers(static []proxy.ServerConfig, found []cluster.Server) []proxy.ServerConfig {
	out := append([]proxy.ServerConfig(nil), static...)
	seen := map[string]bool{}
	for _, sc := range static {
		seen[sc.Addr] = true
	}
	for _, f := range found {
		if !seen[f.Addr] {
			seen[f.Addr] = true
			out = append(out, proxy.ServerConfig{Addr: f.Addr, Weight: max(f.Weight, 1)})
		}
	}
	return out
}

// commitDiscovery points each upstream's discovery at its pool in rt,
// starting discovery for upstreams new to it and stopping what rt no
// longer has. It runs in commit and cannot fail: a discovery that cannot
// start is logged, and the upstream serves its static servers.
func (s *Server) commitDiscovery(rt *runtime) {
	if s.discoverers == nil {
		s.discoverers = map[string]*cluster.Discoverer{}
	}
	for name, d := range s.discoverers {
		u := rt.cfg.Upstreams[name]
		if u == nil || !u.Discovers() || !d.Matches(discoverSpec(name, u)) {
			d.Stop()
			delete(s.discoverers, name)
		}
	}
	var met *cluster.Metrics
	if s.cluster != nil {
		met = s.cluster.Metrics()
	}
	for name, u := range rt.cfg.Upstreams {
		pool := rt.pools[name]
		if u == nil || !u.Discovers() || pool == nil {
			continue
		}
		d := s.discoverers[name]
		if d == nil {
			var err error
			d, err = cluster.NewDiscoverer(discoverSpec(name, u), s.cluster, s.log, met)
			if err != nil {
				s.log.Error("upstream discovery cannot start; the upstream has its static servers only", "upstream", name, "err", err)
				continue
			}
			s.discoverers[name] = d
		}
		static := u.ProxyConfig(name).Servers
		d.Bind(func(found []cluster.Server) {
			if err := pool.SetServers(mergeServers(static, found)); err != nil {
				s.log.Warn("discovered servers not used", "upstream", name, "err", err)
			}
		})
	}
}

func (s *Server) stopDiscovery() {
	for name, d := range s.discoverers {
		d.Stop()
		delete(s.discoverers, name)
	}
}
