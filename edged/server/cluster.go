package server

import (
	"context"
	"net/url"

	"github.com/edgeapp/edgeapp/edged/cluster"
	"github.com/edgeapp/edgeapp/edged/config"
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
