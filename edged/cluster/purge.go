package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Purge is one purge as it travels between nodes: one URL, a prefix, or
// everything, in every cache or in Cache only.
type Purge struct {
	Node   string `json:"node"`
	Cache  string `json:"cache,omitempty"`
	URL    string `json:"url,omitempty"`
	Prefix string `json:"prefix,omitempty"`
	All    bool   `json:"all,omitempty"`
}

// PurgeHandlers are how the purger reaches the caches: Apply one purge
// from another node, DropAll when this node cannot know what it missed.
type PurgeHandlers struct {
	Apply   func(Purge)
	DropAll func(reason string)
}

// Purger fans purges out to every node. A purge is a key under
// <prefix>purge/ on a lease of PurgeTTL; every node watches that prefix
// from the revision after the last one it applied (kept in
// StateDir/purge-revision, so a restart resumes there too). etcd's watch
// resumes by itself after a disconnect; when etcd has compacted the history
// the node needed, the node cannot know what it missed and empties its
// caches instead.
type Purger struct {
	c       *Cluster
	h       PurgeHandlers
	applied atomic.Int64 // revision of the last purge event handled
	queue   chan Purge   // purges not yet sent (etcd was unreachable)

	leaseMu  sync.Mutex
	lease    clientv3.LeaseID
	leaseEnd time.Time

	revMu sync.Mutex // serialises writes of the revision file
}

// maxQueued bounds the purges a node keeps while etcd is unreachable.
const maxQueued = 10000

// StartPurger starts watching for other nodes' purges. Call it once, when
// the caches are in service.
func (c *Cluster) StartPurger(h PurgeHandlers) *Purger {
	p := &Purger{c: c, h: h, queue: make(chan Purge, maxQueued)}
	c.mu.Lock()
	c.purger = p
	c.mu.Unlock()
	c.wg.Add(2)
	go p.watch()
	go p.sendQueued()
	return p
}

func (p *Purger) revFile() string {
	if p.c.o.StateDir == "" {
		return ""
	}
	return filepath.Join(p.c.o.StateDir, "purge-revision")
}

func (p *Purger) loadRev() int64 {
	f := p.revFile()
	if f == "" {
		return 0
	}
	b, err := os.ReadFile(f)
	if err != nil {
		return 0
	}
	n, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return n
}

func (p *Purger) saveRev(rev int64) {
	p.applied.Store(rev)
	f := p.revFile()
	if f == "" {
		return
	}
	p.revMu.Lock()
	defer p.revMu.Unlock()
	tmp := f + ".tmp"
	if err := os.WriteFile(tmp, []byte(strconv.FormatInt(rev, 10)+"\n"), 0o600); err == nil {
		err = os.Rename(tmp, f)
	}
}

// watch follows <prefix>purge/ until the cluster closes.
func (p *Purger) watch() {
	defer p.c.wg.Done()
	from := p.loadRev()
	if from > 0 {
		from++
	}
	for p.c.ctx.Err() == nil {
		var again bool
		from, again = p.watchFrom(from)
		if p.c.ctx.Err() != nil {
			return
		}
		if again {
			continue
		}
		// The watch ended without compaction (etcd closed it): wait a
		// moment so a dead etcd is not spun on, then resume.
		select {
		case <-p.c.ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// watchFrom watches from revision rev (0: from now) and returns where the
// next watch should start, and whether at once.
func (p *Purger) watchFrom(rev int64) (int64, bool) {
	pfx := p.c.key("purge") + "/"
	opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithFilterDelete()}
	if rev > 0 {
		opts = append(opts, clientv3.WithRev(rev))
	} else {
		// Start at the current revision, known only once etcd answers.
		ctx, cancel := p.c.opCtx(p.c.ctx)
		resp, err := p.c.cli.Get(ctx, pfx, clientv3.WithPrefix(), clientv3.WithCountOnly())
		cancel()
		if err != nil {
			p.c.noteError("purge-watch", err)
			return 0, false
		}
		rev = resp.Header.Revision + 1
		p.saveRev(resp.Header.Revision)
		opts = append(opts, clientv3.WithRev(rev))
	}
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(p.c.ctx))
	defer cancel()
	for resp := range p.c.cli.Watch(ctx, pfx, opts...) {
		if resp.CompactRevision != 0 || errors.Is(resp.Err(), rpctypes.ErrCompacted) {
			// The purges between rev and the compaction are gone: the
			// caches may hold what one of them removed elsewhere.
			p.c.met.purges.WithLabelValues("dropped_all").Inc()
			p.h.DropAll(fmt.Sprintf("etcd compacted the purge history this node needed (from revision %d; compacted up to %d)", rev, resp.CompactRevision))
			// Everything still in the history is after the drop's
			// reason: replay it, so nothing published meanwhile is lost.
			p.saveRev(resp.CompactRevision - 1)
			return resp.CompactRevision, true
		}
		if err := resp.Err(); err != nil {
			// No leader and the like: the client gives up this watch;
			// resume from what was applied.
			p.c.noteError("purge-watch", err)
			return p.applied.Load() + 1, false
		}
		for _, ev := range resp.Events {
			var pg Purge
			if err := json.Unmarshal(ev.Kv.Value, &pg); err != nil {
				p.c.log.Warn("cluster: ignoring a purge record that does not parse", "key", string(ev.Kv.Key), "err", err)
				continue
			}
			if pg.Node != p.c.o.Node {
				p.h.Apply(pg)
				p.c.met.purges.WithLabelValues("applied").Inc()
			}
			rev = ev.Kv.ModRevision
		}
		if len(resp.Events) > 0 {
			p.saveRev(rev)
		}
	}
	if ctx.Err() != nil {
		return 0, false
	}
	return p.applied.Load() + 1, false
}

// Publish sends a purge this node applied to the others. When etcd does
// not answer within the request timeout the purge is queued and sent when
// it is back; the error says so.
func (p *Purger) Publish(ctx context.Context, pg Purge) error {
	pg.Node = p.c.o.Node
	if err := p.send(ctx, pg); err != nil {
		select {
		case p.queue <- pg:
			return fmt.Errorf("etcd unreachable; the purge is queued and goes to the other nodes when it is back: %w", err)
		default:
			return fmt.Errorf("etcd unreachable and %d purges are already queued; this one reached only this node: %w", maxQueued, err)
		}
	}
	p.c.met.purges.WithLabelValues("sent").Inc()
	return nil
}

func (p *Purger) send(ctx context.Context, pg Purge) error {
	lease, err := p.purgeLease(ctx)
	if err != nil {
		p.c.noteError("purge", err)
		return err
	}
	var id [6]byte
	rand.Read(id[:])
	key := p.c.key("purge", p.c.o.Node, fmt.Sprintf("%019d-%s", time.Now().UnixNano(), hex.EncodeToString(id[:])))
	val, _ := json.Marshal(pg)
	ctx, cancel := p.c.opCtx(ctx)
	defer cancel()
	if _, err := p.c.cli.Put(ctx, key, string(val), clientv3.WithLease(lease)); err != nil {
		p.c.noteError("purge", err)
		return err
	}
	return nil
}

// purgeLease is a lease of PurgeTTL shared by this node's purges for half
// of it, so a purge costs one write, not a grant and a write.
func (p *Purger) purgeLease(ctx context.Context) (clientv3.LeaseID, error) {
	p.leaseMu.Lock()
	defer p.leaseMu.Unlock()
	now := time.Now()
	if p.lease != 0 && now.Before(p.leaseEnd) {
		return p.lease, nil
	}
	ctx, cancel := p.c.opCtx(ctx)
	defer cancel()
	ttl := p.c.o.PurgeTTL
	resp, err := p.c.cli.Grant(ctx, int64(ttl/time.Second))
	if err != nil {
		return 0, err
	}
	p.lease, p.leaseEnd = resp.ID, now.Add(ttl/2)
	return p.lease, nil
}

// sendQueued sends the purges queued while etcd was unreachable, in
// order, once it answers again.
func (p *Purger) sendQueued() {
	defer p.c.wg.Done()
	for {
		var pg Purge
		select {
		case <-p.c.ctx.Done():
			return
		case pg = <-p.queue:
		}
		for {
			if p.c.Up() {
				if err := p.send(p.c.ctx, pg); err == nil {
					p.c.met.purges.WithLabelValues("sent").Inc()
					break
				}
			}
			select {
			case <-p.c.ctx.Done():
				return
			case <-time.After(healthEveryDown):
			}
		}
	}
}

// Queued is how many purges wait for etcd.
func (p *Purger) Queued() int { return len(p.queue) }
