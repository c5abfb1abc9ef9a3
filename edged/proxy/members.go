package proxy

import (
	"fmt"
)

// members are a pool's servers at one moment: all of them in order, and
// the primary and backup groups with their policies. A request picks from
// one members value for all its tries; SetServers replaces it whole.
type members struct {
	servers []*server
	primary *group
	backup  *group // nil without backup servers
}

// servers are the pool's servers now.
func (p *Pool) servers() []*server { return p.mem.Load().servers }

// build makes the members for list. A server whose address is in old (and
// is taken out of it) carries on that server's state: health, counters,
// in-flight count, and its idle connections when the connection settings
// are the same.
func (p *Pool) build(list []ServerConfig, old map[string]*server) *members {
	cfg := p.cfg
	mem := &members{}
	var prim, back []*server
	for i, sc := range list {
		if sc.Weight == 0 {
			sc.Weight = 1
		}
		s := &server{cfg: sc, idx: i, hash: hashString(sc.Addr), sendProxy: cfg.SendProxy}
		key := poolKey{sc.Addr, cfg.ConnectTimeout, cfg.IdleConnTimeout, cfg.MaxIdleConnsPerServer, p.tlsDigest, cfg.Protocol}
		if o := old[sc.Addr]; o != nil {
			s.st = o.st
			if o.cp.key == key {
				s.cp = o.cp
			}
			delete(old, sc.Addr)
		} else {
			s.st = &serverState{addr: sc.Addr, metrics: p.m.forServer(cfg.Name, sc.Addr)}
			s.fresh = true
		}
		if s.cp == nil {
			s.cp = newConnPool(key, p.ut)
		}
		if s.cp.refs.Add(1) == 1 {
			s.cp.reopen()
		}
		mem.servers = append(mem.servers, s)
		if sc.Backup {
			back = append(back, s)
		} else {
			prim = append(prim, s)
		}
	}
	mem.primary = &group{servers: prim, policy: newPolicy(cfg.Policy, prim)}
	if len(back) > 0 {
		mem.backup = &group{servers: back, policy: newPolicy(cfg.Policy, back)}
	}
	return mem
}

// SetServers replaces the pool's servers while it serves (servers found by
// DNS or registered in a cluster come and go). Servers that stay keep
// their state and connections; new ones start with none and, when the
// pool has active checks, are checked as the others; those that left are
// no longer picked, their checks stop, and their idle connections close
// (requests already on them finish). An empty list is allowed for an
// upstream that finds its servers at run time (UpstreamConfig.Dynamic):
// its requests get 503 until servers appear.
func (p *Pool) SetServers(list []ServerConfig) error {
	seen := make(map[string]bool, len(list))
	for i, s := range list {
		if err := checkAddr(s.Addr); err != nil {
			return fmt.Errorf("upstream %q: server %d: %w", p.name, i, err)
		}
		if seen[s.Addr] {
			return fmt.Errorf("upstream %q: %q is listed twice", p.name, s.Addr)
		}
		seen[s.Addr] = true
		if s.Weight < 0 || s.MaxConns < 0 {
			return fmt.Errorf("upstream %q: %q: weight and max_conns must not be negative", p.name, s.Addr)
		}
	}
	p.memMu.Lock()
	defer p.memMu.Unlock()
	if p.closed.Load() {
		return nil
	}
	prev := p.mem.Load()
	old := make(map[string]*server, len(prev.servers))
	for _, s := range prev.servers {
		old[s.cfg.Addr] = s
	}
	mem := p.build(list, old)
	p.mem.Store(mem)
	started := p.started.Load()
	for addr, s := range old { // the servers that left
		if s.cp.refs.Add(-1) == 0 {
			s.cp.closeIdle(p.inflight.Load() == 0)
		}
		if started {
			p.m.forget(p.name, addr)
		}
		if stop := p.checks[addr]; stop != nil {
			close(stop)
			delete(p.checks, addr)
		}
	}
	if started && p.cfg.Health.Active() {
		for _, s := range mem.servers {
			if p.checks[s.cfg.Addr] == nil {
				p.startCheck(s)
			}
		}
	}
	return nil
}

// startCheck runs s's active health checks until the pool closes or s
// leaves it. Callers hold memMu.
func (p *Pool) startCheck(s *server) {
	if p.checks == nil {
		p.checks = map[string]chan struct{}{}
	}
	stop := make(chan struct{})
	p.checks[s.cfg.Addr] = stop
	p.checkers.Add(1)
	go p.checkLoop(s, stop)
}
