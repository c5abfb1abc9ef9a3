package proxy

import (
	"fmt"
	"github.com/prometheus/client_golang/prometheus"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// epoch anchors nanotime to the monotonic clock.
var epoch = time.Now()

// nanotime is monotonic nanoseconds since process start; 0 is never "now",
// so a zero deadline means "none".
func nanotime() int64 { return int64(time.Since(epoch)) + 1 }

// Pool is the compiled, immutable form of an UpstreamConfig plus the live
// state of its servers. Requests pick a server without a pool-wide lock.
type Pool struct {
	name   string
	cfg    UpstreamConfig           // with defaults
	mem    atomic.Pointer[members]  // replaced whole by SetServers (members.go)
	memMu  sync.Mutex               // serialises SetServers, Start and Close
	checks map[string]chan struct{} // server address -> stops its health checks; under memMu
	// ut and tlsDigest are the upstream's TLS, for the connection pools
	// of servers added later (members.go).
	ut        *upstreamTLS
	tlsDigest string
	hashKey   hashKey
	m         *Metrics
	log       *slog.Logger

	waitC    waitCounters // edged_proxy_wait_seconds_total
	inflight atomic.Int64 // requests routed through this pool right now
	closed   atomic.Bool
	started  atomic.Bool
	h2       bool // the servers speak HTTP/2 (h2.go)

	startOnce, closeOnce sync.Once
	stop                 chan struct{}
	checkers             sync.WaitGroup
	removed              []string // servers of prev not in this pool
}

// server is one entry of a pool: its config, its (possibly inherited) state
// and its connection pool.
type server struct {
	cfg  ServerConfig
	idx  int // position in its members' servers, for the tried set
	st   *serverState
	cp   *connPool // its keep-alive connections
	hash uint64    // of Addr, for rendezvous hashing
	// fresh: this pool made the state (no earlier pool had the server), so
	// if the pool is closed without ever starting, its series go too
	fresh bool

	sendProxy int // PROXY protocol version sent on its connections, 0: none (sendproxy.go)
}

// serverState is what survives a reload for a server whose address did not
// change: health, counters, in-flight count.
type serverState struct {
	addr    string
	active  atomic.Int64  // requests in flight (all pools sharing this state)
	total   atomic.Uint64 // requests sent
	fails   atomic.Int32  // passive failures in the current window
	downEnd atomic.Int64  // nanotime until which passive health keeps it out
	sick    atomic.Bool   // active health checks say down
	metrics *serverMetrics

	mu          sync.Mutex // guards the fields below; not taken on healthy requests
	windowStart int64
	passiveDown bool   // logged as down by passive health
	lastErr     string // last failure, for Status
	rises, fall int    // consecutive active check passes and failures
	lastCheck   time.Time
	checkReason string // why active checks failed last
}

func (st *serverState) healthy(now int64) bool {
	return !st.sick.Load() && st.downEnd.Load() <= now
}

// group is the primary or the backup servers with their selection policy.
type group struct {
	servers []*server
	policy  policy
}

// NewPool compiles cfg. prev, the pool of the same upstream from the previous
// configuration (or nil), hands over the state of servers whose Addr is
// unchanged: passive and active health, counters, in-flight counts and, if
// the connection settings are the same, idle keep-alive connections.
func NewPool(cfg UpstreamConfig, prev *Pool, m *Metrics, log *slog.Logger) (*Pool, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("upstream %q: %w", cfg.Name, err)
	}
	if m == nil {
		m = NewMetrics(nil)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg = cfg.withDefaults()
	ut, err := loadTLS(cfg.TLS)
	if err != nil {
		return nil, fmt.Errorf("upstream %q: %w", cfg.Name, err)
	}
	tlsDigest := ""
	if ut != nil {
		tlsDigest = ut.digest
	}
	p := &Pool{
		name:      cfg.Name,
		cfg:       cfg,
		m:         m,
		log:       log.With("upstream", cfg.Name),
		stop:      make(chan struct{}),
		ut:        ut,
		tlsDigest: tlsDigest,
		h2:        cfg.isH2(),
	}
	p.waitC = m.waitsFor(cfg.Name)
	if cfg.Policy == "hash" {
		p.hashKey, _, _ = parseHashKey(cfg.HashKey)
	}
	if prev != nil && prev.name != cfg.Name {
		prev = nil // state is per upstream; a renamed upstream starts fresh
	}
	old := map[string]*server{}
	if prev != nil {
		for _, s := range prev.servers() {
			old[s.cfg.Addr] = s
		}
	}
	p.mem.Store(p.build(cfg.Servers, old))
	for addr := range old {
		p.removed = append(p.removed, addr)
	}
	return p, nil
}

// Name is the upstream's name.
func (p *Pool) Name() string { return p.name }

// Start puts the pool in service: its gauges replace the previous pool's in
// /metrics, the series of servers that left are dropped, and the active
// health checkers (if configured) run. Call it once the pool takes traffic;
// a pool built for a configuration that is then rejected is only Closed.
func (p *Pool) Start() {
	p.startOnce.Do(func() {
		p.memMu.Lock()
		defer p.memMu.Unlock()
		if p.closed.Load() {
			return
		}
		p.started.Store(true)
		p.m.publish(p)
		for _, addr := range p.removed {
			p.m.forget(p.name, addr)
		}
		if p.cfg.MaxFails == 0 || len(p.servers()) == 1 {
			// Passive health is off now; a time-out it set no longer holds.
			for _, s := range p.servers() {
				s.st.mu.Lock()
				s.st.downEnd.Store(0)
				s.st.fails.Store(0)
				s.st.passiveDown = false
				s.st.mu.Unlock()
			}
		}
		if !p.cfg.Health.Active() {
			// Checks were turned off: what they last said no longer holds.
			for _, s := range p.servers() {
				st := s.st
				st.mu.Lock()
				wasSick := st.sick.Swap(false)
				st.rises, st.fall, st.checkReason = 0, 0, ""
				st.mu.Unlock()
				if wasSick {
					p.log.Info("active health checks are off; upstream server takes requests again", "server", st.addr)
				}
			}
			return
		}
		for _, s := range p.servers() {
			p.startCheck(s)
		}
	})
}

// Close stops the health checkers and lets go of the connection pools that no
// newer pool took over. Requests already routed through p continue; idle
// connections of released pools are closed now and again once the last of
// those requests finishes.
func (p *Pool) Close() {
	p.closeOnce.Do(func() {
		p.memMu.Lock()
		p.closed.Store(true)
		p.memMu.Unlock()
		close(p.stop)
		p.checkers.Wait()
		for _, s := range p.servers() {
			if s.cp.refs.Add(-1) == 0 {
				s.cp.closeIdle(false)
			}
		}
		if p.m.retire(p) {
			for _, s := range p.servers() {
				p.m.forget(p.name, s.cfg.Addr)
			}
			p.m.waits.DeletePartialMatch(prometheus.Labels{"upstream": p.name})
		} else if !p.started.Load() {
			// Built for a configuration that was refused: the series it
			// made for servers new to this upstream go with it.
			for _, s := range p.servers() {
				if s.fresh {
					p.m.forget(p.name, s.cfg.Addr)
				}
			}
			p.m.mu.Lock()
			_, running := p.m.pools[p.name]
			p.m.mu.Unlock()
			if !running {
				p.m.waits.DeletePartialMatch(prometheus.Labels{"upstream": p.name})
			}
		}
		if p.inflight.Load() == 0 {
			p.releaseIdle()
		}
	})
}

// releaseIdle closes the connection pools no pool holds any more, once
// the requests routed through p are done: connections that come back
// later are closed too.
func (p *Pool) releaseIdle() {
	for _, s := range p.servers() {
		if s.cp.refs.Load() == 0 {
			s.cp.closeIdle(true)
		}
	}
}

// done ends a request routed through p.
func (p *Pool) done() {
	if p.inflight.Add(-1) == 0 && p.closed.Load() {
		p.releaseIdle()
	}
}

// ServerStatus is one server's state as /status shows it.
type ServerStatus struct {
	Addr      string    `json:"addr"`
	State     string    `json:"state"` // "up", "down", "backup" (a backup server that is up)
	Reason    string    `json:"reason,omitempty"`
	Weight    int       `json:"weight"`
	Backup    bool      `json:"backup"`
	Active    int64     `json:"active"`
	Fails     int       `json:"fails"`
	Requests  uint64    `json:"requests"`
	LastCheck time.Time `json:"last_check,omitzero"`
}

// Status reports every server in config order.
func (p *Pool) Status() []ServerStatus {
	now := nanotime()
	servers := p.servers()
	out := make([]ServerStatus, 0, len(servers))
	for _, s := range servers {
		st := s.st
		ss := ServerStatus{
			Addr: s.cfg.Addr, Weight: s.cfg.Weight, Backup: s.cfg.Backup,
			Active: st.active.Load(), Fails: int(st.fails.Load()), Requests: st.total.Load(),
		}
		st.mu.Lock()
		ss.LastCheck = st.lastCheck
		switch {
		case st.sick.Load():
			ss.State, ss.Reason = "down", "health check: "+st.checkReason
		case st.downEnd.Load() > now:
			ss.State = "down"
			noun := "failures"
			if ss.Fails == 1 {
				noun = "failure"
			}
			ss.Reason = fmt.Sprintf("%d %s in %v: %s", ss.Fails, noun, p.cfg.FailTimeout, st.lastErr)
		case s.cfg.Backup:
			ss.State = "backup"
		default:
			ss.State = "up"
		}
		if ss.State != "down" && s.cfg.MaxConns > 0 && ss.Active >= int64(s.cfg.MaxConns) {
			ss.Reason = fmt.Sprintf("at max_conns %d", s.cfg.MaxConns)
		}
		st.mu.Unlock()
		out = append(out, ss)
	}
	return out
}

// acquire counts a request against s, refusing it if s is at MaxConns.
func (s *server) acquire() bool {
	n := s.st.active.Add(1)
	if s.cfg.MaxConns > 0 && n > int64(s.cfg.MaxConns) {
		s.st.active.Add(-1)
		return false
	}
	return true
}

func (s *server) release() { s.st.active.Add(-1) }

// available reports whether s may take a request in this selection.
func (s *server) available(sel *selection) bool {
	if sel.tried&(1<<(uint(s.idx)&63)) != 0 && s.idx < 64 {
		return false
	}
	if !s.st.healthy(sel.now) {
		return false
	}
	return s.cfg.MaxConns == 0 || s.st.active.Load() < int64(s.cfg.MaxConns)
}

// selection is one request's pick: what was tried, the hash key, the time.
type selection struct {
	r       *http.Request
	now     int64
	tried   uint64   // bit i: servers[i] of m was tried (first 64 servers)
	m       *members // the pool's servers when the request first picked
	key     hashKey
	client  string // client address, for hash_key client_ip
	keyHash uint64 // for the hash policy, computed once per request
}

// pick chooses a server: a primary if any is available, else a backup.
func (p *Pool) pick(sel *selection) *server {
	if sel.m == nil {
		sel.m = p.mem.Load()
	}
	m := sel.m
	if len(m.primary.servers) > 0 {
		if s := m.primary.policy.pick(m.primary, *sel); s != nil {
			return s
		}
	}
	if m.backup != nil {
		return m.backup.policy.pick(m.backup, *sel)
	}
	return nil
}
