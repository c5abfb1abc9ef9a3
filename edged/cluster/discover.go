package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Server is one discovered upstream server.
type Server struct {
	Addr   string `json:"addr"`
	Weight int    `json:"weight,omitempty"`
}

// DiscoverSpec says where an upstream's servers come from besides its
// static list.
type DiscoverSpec struct {
	Upstream  string
	Resolve   []string // "name:port", A and AAAA records
	SRV       []string // SRV names
	Registry  string   // name under <prefix>upstreams/ (needs a cluster)
	Resolvers []string // DNS servers "host[:port]"; default /etc/resolv.conf's
}

func (s DiscoverSpec) key() string {
	return fmt.Sprint(s.Upstream, s.Resolve, s.SRV, s.Registry, s.Resolvers)
}

// Discovery time limits: a record's TTL is honoured within these bounds,
// and a failed lookup is retried from RetryMin, doubling.
const (
	minTTL        = time.Second
	maxTTL        = time.Hour
	retryMin      = time.Second
	retryMax      = 30 * time.Second
	dnsTimeout    = 5 * time.Second
	resolvConf    = "/etc/resolv.conf"
	registryLease = 10 // seconds: an app node that dies leaves the pools within this
)

// Discoverer keeps one upstream's discovered servers current: DNS names
// re-resolved at their TTL (nginx's resolve), SRV records, and servers
// registered in etcd. Each source's last good answer is kept while the
// source fails (a DNS outage or etcd out of reach changes nothing), and
// every change of the whole set is handed to the sink.
type Discoverer struct {
	spec DiscoverSpec
	c    *Cluster // nil without a cluster (DNS only)
	log  *slog.Logger
	met  *Metrics

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	sources map[string][]Server // source ("dns:name", "srv:name", "etcd") -> its servers
	sink    func([]Server)
	last    []Server
	down    map[string]bool // sources whose failure was logged
}

// NewDiscoverer starts discovering spec's servers; c may be nil when the
// spec has no Registry. Bind gives it where to send them.
func NewDiscoverer(spec DiscoverSpec, c *Cluster, log *slog.Logger, met *Metrics) (*Discoverer, error) {
	if spec.Registry != "" && c == nil {
		return nil, errors.New("registry needs [cluster]")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if met == nil {
		met = NewMetrics(nil)
	}
	d := &Discoverer{spec: spec, c: c, log: log.With("upstream", spec.Upstream), met: met,
		sources: map[string][]Server{}, down: map[string]bool{}}
	d.ctx, d.cancel = context.WithCancel(context.Background())
	servers, err := d.resolvers()
	if err != nil && (len(spec.Resolve) > 0 || len(spec.SRV) > 0) {
		d.cancel()
		return nil, err
	}
	for _, name := range spec.Resolve {
		d.wg.Add(1)
		go d.loop("dns:"+name, func(ctx context.Context) ([]Server, time.Duration, error) {
			return resolveHost(ctx, servers, name)
		})
	}
	for _, name := range spec.SRV {
		d.wg.Add(1)
		go d.loop("srv:"+name, func(ctx context.Context) ([]Server, time.Duration, error) {
			return resolveSRV(ctx, servers, name)
		})
	}
	if spec.Registry != "" {
		d.wg.Add(1)
		go d.watchRegistry()
	}
	return d, nil
}

// Spec is what d discovers.
func (d *Discoverer) Spec() DiscoverSpec { return d.spec }

// Matches reports whether d discovers exactly spec.
func (d *Discoverer) Matches(spec DiscoverSpec) bool { return d.spec.key() == spec.key() }

// Servers are the servers discovered now (every source's last good answer).
func (d *Discoverer) Servers() []Server {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.last)
}

// Bind sends the current servers to sink now and every change from then
// on (a reload binds the new configuration's pool).
func (d *Discoverer) Bind(sink func([]Server)) {
	d.mu.Lock()
	d.sink = sink
	cur := slices.Clone(d.last)
	d.mu.Unlock()
	sink(cur)
}

// Stop ends discovery.
func (d *Discoverer) Stop() {
	d.cancel()
	d.wg.Wait()
	for _, src := range []string{"dns", "srv", "etcd"} {
		d.met.discover.DeleteLabelValues(d.spec.Upstream, src)
	}
}

// set records source's servers and sends the whole set on if it changed.
func (d *Discoverer) set(source string, servers []Server) {
	sort.Slice(servers, func(i, j int) bool { return servers[i].Addr < servers[j].Addr })
	d.mu.Lock()
	if d.down[source] {
		d.down[source] = false
		d.log.Info("upstream discovery answers again", "source", source, "servers", len(servers))
	}
	if slices.Equal(d.sources[source], servers) {
		d.mu.Unlock()
		return
	}
	d.sources[source] = servers
	var all []Server
	seen := map[string]bool{}
	counts := map[string]int{}
	keys := make([]string, 0, len(d.sources))
	for k := range d.sources {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		kind, _, _ := strings.Cut(k, ":")
		for _, s := range d.sources[k] {
			if !seen[s.Addr] {
				seen[s.Addr] = true
				all = append(all, s)
				counts[kind]++
			}
		}
	}
	d.last = all
	sink := d.sink
	d.mu.Unlock()
	for _, kind := range []string{"dns", "srv", "etcd"} {
		d.met.discover.WithLabelValues(d.spec.Upstream, kind).Set(float64(counts[kind]))
	}
	d.log.Info("upstream servers discovered", "source", source, "servers", len(servers), "total", len(all))
	if sink != nil {
		sink(slices.Clone(all))
	}
}

// failed logs a source's failure once; its last answer stays.
func (d *Discoverer) failed(source string, err error) {
	d.mu.Lock()
	logIt := !d.down[source]
	d.down[source] = true
	kept := len(d.sources[source])
	d.mu.Unlock()
	if logIt {
		d.log.Warn("upstream discovery failed; keeping the servers it last gave, and retrying", "source", source, "kept", kept, "err", err)
	}
}

// loop runs a DNS lookup again at its TTL, or sooner with backoff after a
// failure.
func (d *Discoverer) loop(source string, lookup func(context.Context) ([]Server, time.Duration, error)) {
	defer d.wg.Done()
	retry := retryMin
	for {
		ctx, cancel := context.WithTimeout(d.ctx, dnsTimeout)
		servers, ttl, err := lookup(ctx)
		cancel()
		if d.ctx.Err() != nil {
			return
		}
		wait := min(max(ttl, minTTL), maxTTL)
		if err != nil {
			d.failed(source, err)
			wait = retry
			retry = min(retry*2, retryMax)
		} else {
			retry = retryMin
			d.set(source, servers)
		}
		select {
		case <-d.ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// resolvers are the DNS servers to ask.
func (d *Discoverer) resolvers() ([]string, error) {
	var out []string
	for _, r := range d.spec.Resolvers {
		if _, _, err := net.SplitHostPort(r); err != nil {
			r = net.JoinHostPort(strings.Trim(r, "[]"), "53")
		}
		out = append(out, r)
	}
	if len(out) > 0 {
		return out, nil
	}
	cc, err := dns.ClientConfigFromFile(resolvConf)
	if err != nil {
		return nil, fmt.Errorf("reading %s for upstream %s's DNS servers (or set resolvers): %w", resolvConf, d.spec.Upstream, err)
	}
	for _, s := range cc.Servers {
		out = append(out, net.JoinHostPort(s, cc.Port))
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s names no DNS server (set resolvers for upstream %s)", resolvConf, d.spec.Upstream)
	}
	return out, nil
}

// exchange asks the servers in turn until one answers.
func exchange(ctx context.Context, servers []string, name string, qtype uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	m.RecursionDesired = true
	var lastErr error
	for _, s := range servers {
		c := &dns.Client{Timeout: dnsTimeout}
		r, _, err := c.ExchangeContext(ctx, m, s)
		if err == nil && r.Truncated {
			c.Net = "tcp"
			r, _, err = c.ExchangeContext(ctx, m, s)
		}
		if err != nil {
			lastErr = err
			continue
		}
		switch r.Rcode {
		case dns.RcodeSuccess:
			return r, nil
		case dns.RcodeNameError:
			return r, nil // an answer: the name does not exist (no servers)
		}
		lastErr = fmt.Errorf("%s answered %s for %s", s, dns.RcodeToString[r.Rcode], name)
	}
	return nil, lastErr
}

// resolveHost finds name's A and AAAA records; the TTL is the smallest.
func resolveHost(ctx context.Context, servers []string, hostport string) ([]Server, time.Duration, error) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return nil, 0, err
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return []Server{{Addr: netip.AddrPortFrom(a, mustPort(port)).String()}}, maxTTL, nil
	}
	var out []Server
	ttl := maxTTL
	answered := false
	for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA} {
		r, err := exchange(ctx, servers, host, qt)
		if err != nil {
			continue
		}
		answered = true
		for _, rr := range r.Answer {
			var ip net.IP
			switch v := rr.(type) {
			case *dns.A:
				ip = v.A
			case *dns.AAAA:
				ip = v.AAAA
			default:
				continue
			}
			ttl = min(ttl, time.Duration(rr.Header().Ttl)*time.Second)
			out = append(out, Server{Addr: net.JoinHostPort(ip.String(), port)})
		}
		if len(r.Answer) == 0 {
			ttl = min(ttl, negativeTTL(r))
		}
	}
	if !answered {
		return nil, 0, fmt.Errorf("no DNS server answered for %s", host)
	}
	return out, ttl, nil
}

// resolveSRV finds name's SRV records and their targets' addresses.
func resolveSRV(ctx context.Context, servers []string, name string) ([]Server, time.Duration, error) {
	r, err := exchange(ctx, servers, name, dns.TypeSRV)
	if err != nil {
		return nil, 0, err
	}
	ttl := maxTTL
	if len(r.Answer) == 0 {
		return nil, negativeTTL(r), nil
	}
	var out []Server
	for _, rr := range r.Answer {
		srv, ok := rr.(*dns.SRV)
		if !ok || srv.Target == "." {
			continue
		}
		ttl = min(ttl, time.Duration(srv.Hdr.Ttl)*time.Second)
		hs, hostTTL, err := resolveHost(ctx, servers, net.JoinHostPort(strings.TrimSuffix(srv.Target, "."), strconv.Itoa(int(srv.Port))))
		if err != nil {
			return nil, 0, err
		}
		ttl = min(ttl, hostTTL)
		for _, h := range hs {
			h.Weight = max(int(srv.Weight), 1)
			out = append(out, h)
		}
	}
	return out, ttl, nil
}

// negativeTTL is how long "no such records" may be believed (RFC 2308: the
// SOA's minimum), 30 s when the answer carries no SOA.
func negativeTTL(r *dns.Msg) time.Duration {
	for _, rr := range r.Ns {
		if soa, ok := rr.(*dns.SOA); ok {
			return time.Duration(min(soa.Minttl, soa.Hdr.Ttl)) * time.Second
		}
	}
	return 30 * time.Second
}

func mustPort(p string) uint16 {
	n, _ := strconv.ParseUint(p, 10, 16)
	return uint16(n)
}

// RegistryKey is where an app node registers addr for upstream: the key's
// value is the server as JSON ({"addr": ..., "weight": ...}) or the bare
// address, on a lease the app node keeps alive.
func (c *Cluster) RegistryKey(upstream, addr string) string {
	return c.key("upstreams", upstream, addr)
}

// watchRegistry follows <prefix>upstreams/NAME/: the servers registered
// now, then each change; after a lost watch it reads the whole set again.
func (d *Discoverer) watchRegistry() {
	defer d.wg.Done()
	pfx := d.c.key("upstreams", d.spec.Registry) + "/"
	for d.ctx.Err() == nil {
		ctx, cancel := d.c.opCtx(d.ctx)
		resp, err := d.c.cli.Get(ctx, pfx, clientv3.WithPrefix())
		cancel()
		if err != nil {
			d.failed("etcd", err)
			select {
			case <-d.ctx.Done():
				return
			case <-time.After(retryMin):
			}
			continue
		}
		cur := map[string]Server{}
		for _, kv := range resp.Kvs {
			if s, ok := parseRegistration(strings.TrimPrefix(string(kv.Key), pfx), kv.Value); ok {
				cur[string(kv.Key)] = s
			}
		}
		d.set("etcd", registryList(cur))
		wctx, wcancel := context.WithCancel(clientv3.WithRequireLeader(d.ctx))
		for wr := range d.c.cli.Watch(wctx, pfx, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1)) {
			if wr.Err() != nil {
				d.failed("etcd", wr.Err())
				break
			}
			for _, ev := range wr.Events {
				k := string(ev.Kv.Key)
				if ev.Type == clientv3.EventTypeDelete {
					delete(cur, k)
				} else if s, ok := parseRegistration(strings.TrimPrefix(k, pfx), ev.Kv.Value); ok {
					cur[k] = s
				}
			}
			d.set("etcd", registryList(cur))
		}
		wcancel()
		select {
		case <-d.ctx.Done():
			return
		case <-time.After(retryMin):
		}
	}
}

func registryList(cur map[string]Server) []Server {
	out := make([]Server, 0, len(cur))
	for _, s := range cur {
		out = append(out, s)
	}
	return out
}

// parseRegistration reads a registration's value: JSON or a bare address;
// the key's last part is the address when the value gives none.
func parseRegistration(rel string, val []byte) (Server, bool) {
	var s Server
	v := strings.TrimSpace(string(val))
	if strings.HasPrefix(v, "{") {
		if json.Unmarshal([]byte(v), &s) != nil {
			return Server{}, false
		}
	} else {
		s.Addr = v
	}
	if s.Addr == "" {
		s.Addr = rel
	}
	if _, _, err := net.SplitHostPort(s.Addr); err != nil && !strings.HasPrefix(s.Addr, "unix:") {
		return Server{}, false
	}
	if s.Weight < 0 {
		s.Weight = 0
	}
	return s, true
}

// Register keeps addr registered for upstream on a lease of ttl (an app
// node that dies leaves every edged's pools within it) until ctx ends,
// then withdraws it. A lost lease (etcd out of reach longer than ttl) is
// registered again when etcd is back.
func (c *Cluster) Register(ctx context.Context, upstream string, s Server, ttl time.Duration) error {
	if ttl <= 0 {
		ttl = registryLease * time.Second
	}
	val, _ := json.Marshal(s)
	key := c.RegistryKey(upstream, s.Addr)
	for {
		gctx, cancel := c.opCtx(ctx)
		lease, err := c.cli.Grant(gctx, int64((ttl+time.Second-1)/time.Second))
		if err == nil {
			_, err = c.cli.Put(gctx, key, string(val), clientv3.WithLease(lease.ID))
		}
		cancel()
		if err == nil {
			c.log.Info("registered", "upstream", upstream, "addr", s.Addr, "key", key, "ttl", ttl)
			ka, kerr := c.cli.KeepAlive(ctx, lease.ID)
			if kerr == nil {
				for range ka {
				}
			}
			if ctx.Err() != nil {
				rctx, cancel := c.opCtx(context.Background())
				c.cli.Revoke(rctx, lease.ID)
				cancel()
				c.log.Info("withdrawn", "upstream", upstream, "addr", s.Addr)
				return nil
			}
			c.log.Warn("registration lease lost; registering again", "upstream", upstream, "addr", s.Addr)
		} else {
			c.log.Warn("registering failed; retrying", "upstream", upstream, "addr", s.Addr, "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(retryMin):
		}
	}
}
