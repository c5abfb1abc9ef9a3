package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Cluster is this node's connection to etcd and what it shares through
// it. One lives for the whole process: reloads keep it (a change of
// [cluster] takes a restart), so leases, watches and counters survive.
type Cluster struct {
	o   Options
	cli *clientv3.Client
	log *slog.Logger
	met *Metrics

	ctx    context.Context // until Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	up        atomic.Bool
	probed    atomic.Bool // the first health probe has answered
	mu        sync.Mutex  // guards the fields below
	since     time.Time
	lastErr   string
	upChanged []chan struct{} // closed at the next change of up (tests, waiters)

	storage *Storage
	purger  *Purger // nil until StartPurger
	limits  *Limits // nil until Limits
}

// Metrics are the cluster's Prometheus series.
type Metrics struct {
	up        prometheus.Gauge
	errors    *prometheus.CounterVec
	fallbacks prometheus.Counter
	purges    *prometheus.CounterVec
	limitSync prometheus.Counter
	discover  *prometheus.GaugeVec
}

// NewMetrics registers the series in reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		up: prometheus.NewGauge(prometheus.GaugeOpts{Name: "edged_cluster_etcd_up",
			Help: "1 while this node reaches a quorum of the etcd cluster, 0 while it serves on what it has."}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edged_cluster_etcd_errors_total",
			Help: "Requests to etcd that failed, by operation."}, []string{"op"}),
		fallbacks: prometheus.NewCounter(prometheus.CounterOpts{Name: "edged_cluster_storage_local_reads_total",
			Help: "Certificate storage reads answered from the local copy because etcd was unreachable."}),
		purges: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edged_cluster_purges_total",
			Help: "Purges by origin: sent (from this node), applied (from another node), dropped_all (history lost: every cache emptied)."}, []string{"event"}),
		limitSync: prometheus.NewCounter(prometheus.CounterOpts{Name: "edged_cluster_limit_syncs_total",
			Help: "Batches of rate-limit counts this node published."}),
		discover: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "edged_upstream_discovered_servers",
			Help: "Servers an upstream currently has from discovery, by upstream and source (dns, srv, etcd)."}, []string{"upstream", "source"}),
	}
	if reg != nil {
		reg.MustRegister(m.up, m.errors, m.fallbacks, m.purges, m.limitSync, m.discover)
	}
	return m
}

// Open connects to etcd (without waiting for it: a node starts and serves
// while etcd is down) and starts watching its health.
func Open(o Options, met *Metrics) (*Cluster, error) {
	o = o.WithDefaults()
	if err := o.Check(); err != nil {
		return nil, err
	}
	tlsCfg, _ := o.tlsConfig()
	cfg := clientv3.Config{
		Endpoints:            o.Endpoints,
		DialTimeout:          o.DialTimeout,
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 5 * time.Second,
		TLS:                  tlsCfg,
		Logger:               zap.NewNop(),
		Username:             o.Username,
		// A follower that lost its leader answers linearizable requests
		// with an error at once; retrying those inside the client would
		// only hide an outage the node should serve through.
		MaxUnaryRetries: 2,
	}
	if o.PasswordFile != "" {
		pw, err := os.ReadFile(o.PasswordFile)
		if err != nil {
			return nil, &OptionError{"password_file", err}
		}
		cfg.Password = strings.TrimSpace(string(pw))
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("etcd client for %v: %w", o.Endpoints, err)
	}
	if met == nil {
		met = NewMetrics(nil)
	}
	c := &Cluster{o: o, cli: cli, log: o.Log, met: met, since: time.Now()}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.storage = newStorage(c)
	c.wg.Add(1)
	go c.watchHealth()
	return c, nil
}

// Metrics are the cluster's metric series.
func (c *Cluster) Metrics() *Metrics { return c.met }

// Node is this node's name.
func (c *Cluster) Node() string { return c.o.Node }

// Options are the options the cluster runs with (defaults filled in).
func (c *Cluster) Options() Options { return c.o }

// Client is the etcd client, for the parts of edged that share state.
func (c *Cluster) Client() *clientv3.Client { return c.cli }

// key is a key of this cluster: the prefix, then parts joined by "/".
func (c *Cluster) key(parts ...string) string { return c.o.Prefix + strings.Join(parts, "/") }

// opCtx bounds one request to etcd.
func (c *Cluster) opCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, c.o.OpTimeout)
}

// Up reports whether etcd answered the last health probe.
func (c *Cluster) Up() bool { return c.up.Load() }

// downBriefly reports whether etcd counts as unreachable since less than
// an election takes: the local copy's "not found" may then only mean it
// never saw a key another node wrote, and etcd is asked again.
func (c *Cluster) downBriefly() bool {
	if c.up.Load() {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Since(c.since) < electionWait
}

// healthEvery is how often etcd is probed (faster while it is down, so a
// node notices the recovery soon).
const (
	healthEvery     = 2 * time.Second
	healthEveryDown = time.Second
	probesDown      = 2
)

// watchHealth probes etcd with a linearizable read (which needs a quorum)
// and logs each change of state once.
func (c *Cluster) watchHealth() {
	defer c.wg.Done()
	first := true
	fails := 0
	for {
		ctx, cancel := context.WithTimeout(c.ctx, c.o.OpTimeout)
		_, err := c.cli.Get(ctx, c.key("health"), clientv3.WithCountOnly())
		cancel()
		if c.ctx.Err() != nil {
			return
		}
		// One failed probe may be a leader election (seconds): the node
		// counts as cut off after probesDown failures in a row.
		if err != nil {
			fails++
		} else {
			fails = 0
		}
		if err == nil || fails >= probesDown || first {
			c.setUp(err == nil, err, first)
		}
		first = false
		wait := healthEvery
		if err != nil {
			wait = healthEveryDown
		}
		select {
		case <-c.ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// noteError counts a failed request to etcd; whether the node is cut off
// is the health probe's to say (a single failure is often an election).
func (c *Cluster) noteError(op string, err error) {
	c.met.errors.WithLabelValues(op).Inc()
}

func (c *Cluster) setUp(up bool, err error, first bool) {
	was := c.up.Swap(up)
	c.probed.Store(true)
	if was == up && !first {
		return
	}
	c.mu.Lock()
	c.since = time.Now()
	if err != nil {
		c.lastErr = err.Error()
	} else {
		c.lastErr = ""
	}
	waiters := c.upChanged
	c.upChanged = nil
	c.mu.Unlock()
	for _, ch := range waiters {
		close(ch)
	}
	if up {
		c.met.up.Set(1)
		c.log.Info("cluster: etcd reachable; certificates, purges, limits and discovered upstreams are shared again", "endpoints", strings.Join(c.o.Endpoints, ","), "node", c.o.Node)
	} else {
		c.met.up.Set(0)
		c.log.Warn("cluster: etcd unreachable; serving with the certificates, cache and upstreams this node has, and retrying by itself", "endpoints", strings.Join(c.o.Endpoints, ","), "err", err)
	}
}

// upChange returns a channel closed at the next change of Up.
func (c *Cluster) upChange() <-chan struct{} {
	ch := make(chan struct{})
	c.mu.Lock()
	c.upChanged = append(c.upChanged, ch)
	c.mu.Unlock()
	return ch
}

// Status is the cluster as `edged status` shows it.
type Status struct {
	Node      string    `json:"node"`
	Endpoints []string  `json:"endpoints"`
	Prefix    string    `json:"prefix"`
	EtcdUp    bool      `json:"etcd_up"`
	Since     time.Time `json:"since"`
	LastError string    `json:"last_error,omitempty"`
	// PurgeRevision is the last purge this node applied (etcd revision).
	PurgeRevision int64 `json:"purge_revision,omitempty"`
	PurgesQueued  int   `json:"purges_queued,omitempty"`
}

// Status reports the connection's state.
func (c *Cluster) Status() Status {
	c.mu.Lock()
	st := Status{Node: c.o.Node, Endpoints: c.o.Endpoints, Prefix: c.o.Prefix, EtcdUp: c.up.Load(), Since: c.since, LastError: c.lastErr}
	p := c.purger
	c.mu.Unlock()
	if p != nil {
		st.PurgeRevision = p.applied.Load()
		st.PurgesQueued = p.Queued()
	}
	return st
}

// Summary is a few words for systemd's STATUS= line, "" while all is well.
func (c *Cluster) Summary() string {
	if c.up.Load() {
		return ""
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return "etcd unreachable since " + c.since.Format(time.TimeOnly) + ", serving on local state"
}

// Close stops watches, syncs and leases (a node that stops gives up its
// registrations and locks at once rather than at their TTL).
func (c *Cluster) Close() {
	// Leases first, while the client can still revoke them.
	c.storage.close()
	c.cancel()
	c.wg.Wait()
	c.cli.Close()
}
