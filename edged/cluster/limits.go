package cluster

import (
	"context"
	"encoding/json"
	"hash/maphash"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/edgeapp/edgeapp/edged/limit"
)

// Limits makes the rate of zones marked cluster = true hold for the whole
// cluster, approximately: each node decides locally, from its own bucket
// per key, and every SyncInterval publishes how many requests it admitted
// per key since the last time (one etcd write per node and zone, only
// when there were some). Every node charges what the others admitted to
// its own buckets. So each bucket follows the cluster's admissions, late by
// at most one interval plus etcd's latency: over any window the cluster
// admits the rate plus the burst, plus what the other nodes admitted in
// the last interval before they heard of each other.
//
// While etcd is unreachable the counts are dropped and each node limits on
// its own (the zone's rate per node), which errs on the side of serving.
type Limits struct {
	c     *Cluster
	seed  maphash.Seed
	mu    sync.Mutex
	zones map[string]*zoneSync // by zone name; outlive reloads

	startOnce sync.Once
	lease     atomic.Int64
}

// maxBatchKeys bounds one published batch (etcd refuses requests over
// 1.5 MiB); past it the busiest keys are sent, which are the ones near
// their limit.
const maxBatchKeys = 20000

const countShards = 32

type zoneSync struct {
	name   string
	zone   atomic.Pointer[limit.Zone] // the zone serving now, charged with others' counts
	shards [countShards]countShard
}

type countShard struct {
	mu sync.Mutex
	n  map[limit.Key]int
	_  [40]byte
}

// Limits is the cluster's rate-limit sharing; it starts when the first
// zone attaches.
func (c *Cluster) Limits() *Limits {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.limits == nil {
		c.limits = &Limits{c: c, seed: maphash.MakeSeed(), zones: map[string]*zoneSync{}}
	}
	return c.limits
}

// Attach makes z's rate cluster-wide. Call it while preparing a
// configuration, before z serves; the zone of the same name in the next
// configuration attaches again and takes over the sharing.
func (l *Limits) Attach(z *limit.Zone) {
	inner := z.RateLimiter()
	if inner == nil {
		return
	}
	l.mu.Lock()
	zs := l.zones[z.Name()]
	if zs == nil {
		zs = &zoneSync{name: z.Name()}
		for i := range zs.shards {
			zs.shards[i].n = map[limit.Key]int{}
		}
		l.zones[z.Name()] = zs
	}
	l.mu.Unlock()
	zs.zone.CompareAndSwap(nil, z)
	z.UseRateLimiter(&counting{inner: inner, zs: zs, z: z, seed: l.seed})
	l.startOnce.Do(func() {
		l.c.wg.Add(2)
		go l.publish()
		go l.watch()
	})
}

// counting decides with the zone's own limiter and counts what it admits.
type counting struct {
	inner limit.RateLimiter
	zs    *zoneSync
	z     *limit.Zone
	seed  maphash.Seed
}

func (c *counting) Reserve(k limit.Key, now time.Time) limit.Decision {
	if c.zs.zone.Load() != c.z {
		c.zs.zone.Store(c.z) // this configuration serves now
	}
	d := c.inner.Reserve(k, now)
	if d.OK {
		var h uint64
		if k.Addr.IsValid() {
			b := k.Addr.As16()
			h = maphash.Bytes(c.seed, b[:])
		} else {
			h = maphash.String(c.seed, k.Str)
		}
		sh := &c.zs.shards[h%countShards]
		sh.mu.Lock()
		sh.n[k]++
		sh.mu.Unlock()
	}
	return d
}

// batch is one node's admissions in one zone since its previous batch.
type batch struct {
	Node   string         `json:"node"`
	Counts map[string]int `json:"counts"`
}

func (l *Limits) zoneList() []*zoneSync {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]*zoneSync, 0, len(l.zones))
	for _, zs := range l.zones {
		out = append(out, zs)
	}
	return out
}

// take empties zs's counts and returns them.
func (zs *zoneSync) take() map[limit.Key]int {
	var out map[limit.Key]int
	for i := range zs.shards {
		sh := &zs.shards[i]
		sh.mu.Lock()
		if len(sh.n) > 0 {
			if out == nil {
				out = map[limit.Key]int{}
			}
			for k, n := range sh.n {
				out[k] += n
			}
			sh.n = map[limit.Key]int{}
		}
		sh.mu.Unlock()
	}
	return out
}

// publish sends each zone's counts every SyncInterval.
func (l *Limits) publish() {
	defer l.c.wg.Done()
	t := time.NewTicker(l.c.o.SyncInterval)
	defer t.Stop()
	for {
		select {
		case <-l.c.ctx.Done():
			return
		case <-t.C:
		}
		for _, zs := range l.zoneList() {
			counts := zs.take()
			if len(counts) == 0 || !l.c.Up() {
				continue // cut off: counts cannot be shared, so each node limits alone
			}
			l.send(zs.name, counts)
		}
	}
}

func (l *Limits) send(zone string, counts map[limit.Key]int) {
	b := batch{Node: l.c.o.Node, Counts: make(map[string]int, min(len(counts), maxBatchKeys))}
	if len(counts) > maxBatchKeys {
		type kn struct {
			k limit.Key
			n int
		}
		all := make([]kn, 0, len(counts))
		for k, n := range counts {
			all = append(all, kn{k, n})
		}
		sort.Slice(all, func(i, j int) bool { return all[i].n > all[j].n })
		for _, e := range all[:maxBatchKeys] {
			b.Counts[limit.EncodeKey(e.k)] = e.n
		}
	} else {
		for k, n := range counts {
			b.Counts[limit.EncodeKey(k)] = n
		}
	}
	val, _ := json.Marshal(b)
	lease, err := l.ensureLease()
	if err == nil {
		ctx, cancel := l.c.opCtx(l.c.ctx)
		_, err = l.c.cli.Put(ctx, l.c.key("limits", zone, l.c.o.Node), string(val), clientv3.WithLease(clientv3.LeaseID(lease)))
		cancel()
	}
	if err != nil {
		l.c.noteError("limits", err)
		l.lease.Store(0)
		return
	}
	l.c.met.limitSync.Inc()
}

// ensureLease is the lease this node's batches hang on (so a node that
// stops leaves no keys behind), kept alive by the client.
func (l *Limits) ensureLease() (int64, error) {
	if id := l.lease.Load(); id != 0 {
		return id, nil
	}
	ctx, cancel := l.c.opCtx(l.c.ctx)
	defer cancel()
	resp, err := l.c.cli.Grant(ctx, 30)
	if err != nil {
		return 0, err
	}
	ka, err := l.c.cli.KeepAlive(l.c.ctx, resp.ID)
	if err != nil {
		return 0, err
	}
	go func() {
		for range ka {
		}
		l.lease.CompareAndSwap(int64(resp.ID), 0) // expired or closed: grant anew
	}()
	l.lease.Store(int64(resp.ID))
	return int64(resp.ID), nil
}

// watch charges the other nodes' batches to this node's buckets.
func (l *Limits) watch() {
	defer l.c.wg.Done()
	pfx := l.c.key("limits") + "/"
	for l.c.ctx.Err() == nil {
		ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(l.c.ctx))
		// From now: counts are only worth their interval, so nothing is
		// replayed after a disconnect.
		for resp := range l.c.cli.Watch(ctx, pfx, clientv3.WithPrefix(), clientv3.WithFilterDelete()) {
			if resp.Err() != nil {
				l.c.noteError("limits-watch", resp.Err())
				break
			}
			now := time.Now()
			for _, ev := range resp.Events {
				l.charge(strings.TrimPrefix(string(ev.Kv.Key), pfx), ev.Kv.Value, now)
			}
		}
		cancel()
		select {
		case <-l.c.ctx.Done():
			return
		case <-time.After(healthEveryDown):
		}
	}
}

func (l *Limits) charge(rel string, val []byte, now time.Time) {
	zone, _, ok := strings.Cut(rel, "/")
	if !ok {
		return
	}
	var b batch
	if json.Unmarshal(val, &b) != nil || b.Node == l.c.o.Node {
		return
	}
	l.mu.Lock()
	zs := l.zones[zone]
	l.mu.Unlock()
	if zs == nil {
		return // a zone this node does not share
	}
	z := zs.zone.Load()
	if z == nil {
		return // not served here yet: nothing to charge
	}
	for ks, n := range b.Counts {
		if k, ok := limit.DecodeKey(ks); ok {
			z.Charge(k, n, now)
		}
	}
}
