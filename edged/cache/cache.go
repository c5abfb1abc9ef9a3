package cache

import (
	"fmt"
	"hash/maphash"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

const nShards = 64

// Cache is one named cache.
type Cache struct {
	o    Options
	log  *slog.Logger
	seed maphash.Seed
	sh   [nShards]shard
	mem  *memTier
	disk *diskTier // nil without a disk tier
	met  cacheMetrics
	mets *Metrics
	// ownCC is edged's own targeted field, canonical ("" = none); cdnCC
	// whether CDN-Cache-Control is obeyed.
	ownCC string
	cdnCC bool
	ae    aeTable

	closed     atomic.Bool
	spillFails failLog // spill files cannot be written: logged once
	// purges made while the disk index is still loading, so the loader
	// does not bring back what was purged.
	loadMu     sync.Mutex
	loadPurges []purgeRecord
}

type purgeRecord struct {
	key    string // exact key, or prefix when prefix is true
	prefix bool
	at     time.Time
}

// shard is one slice of the index: primary key -> variants, and the origin
// fetches in flight by coalescing key.
type shard struct {
	mu    sync.RWMutex
	nodes map[string]*node
	fills map[string]*fill
}

// node holds the stored variants of one URL, oldest first. The slice is
// copied on write so readers can use it after dropping the lock.
type node struct {
	variants  []*object
	passUntil time.Time // hit-for-miss: recently uncacheable, skip coalescing
	tooBig    bool      // ... because it outgrew MaxObjectSize: pass straight through
}

// object is one stored response (one variant of one URL).
type object struct {
	key      string
	varyVals []string // the request's values for meta.vary, in order
	hash     uint64   // of key and varyVals, for the ghost queue and file names
	size     int64    // body bytes
	m        atomic.Pointer[meta]
	mem      atomic.Pointer[[]byte]
	disk     atomic.Pointer[diskFile]
	gone     atomic.Bool // removed from the index
	hh       atomic.Pointer[hitHdr]

	// memory tier state, guarded by memTier.mu; freq is bumped lock-free.
	freq         atomic.Int32
	mprev, mnext *object
	mq           int8
	mcost        int64

	// disk tier state, guarded by diskTier.mu.
	dprev, dnext *object
	dlisted      bool
	dref         atomic.Bool
}

// Open creates a cache. With a disk tier, the existing entries are indexed
// in the background while the cache already serves.
func Open(o Options, m *Metrics) (*Cache, error) {
	o.setDefaults()
	if m == nil {
		m = NewMetrics(nil)
	}
	c := &Cache{o: o, log: o.Log.With("cache", o.Name), seed: maphash.MakeSeed(), mem: newMemTier(o.MemoryBytes), mets: m,
		cdnCC: !o.IgnoreCDNCacheControl}
	c.ae.seed = c.seed
	if o.OwnCacheControl != "-" {
		c.ownCC = http.CanonicalHeaderKey(o.OwnCacheControl)
	}
	for i := range c.sh {
		c.sh[i].nodes = make(map[string]*node)
		c.sh[i].fills = make(map[string]*fill)
	}
	c.met = m.attach(c)
	if o.DiskDir != "" {
		d, err := openDisk(c, o.DiskDir, o.DiskMaxBytes)
		if err != nil {
			return nil, fmt.Errorf("opening disk tier of cache %q: %w", o.Name, err)
		}
		c.disk = d
		d.start()
	}
	return c, nil
}

// Close stops the disk tier's background work after writing what is queued.
// Requests still in flight finish without storing to disk.
func (c *Cache) Close() error {
	if !c.closed.CompareAndSwap(false, true) {
		return nil
	}
	c.mets.detach(c)
	if c.disk != nil {
		c.disk.close()
	}
	return nil
}

func (c *Cache) shard(key string) *shard {
	return &c.sh[maphash.String(c.seed, key)%nShards]
}

func (c *Cache) objHash(key string, varyVals []string) uint64 {
	var h maphash.Hash
	h.SetSeed(c.seed)
	h.WriteString(key)
	for _, v := range varyVals {
		h.WriteByte(0)
		h.WriteString(v)
	}
	return h.Sum64()
}

// lookup returns the newest stored variant of key that matches r, and
// whether the URL had variants at all (to tell a vary-miss from a uri-miss).
func (c *Cache) lookup(key string, h http.Header) (*object, bool) {
	return c.lookupBytes([]byte(key), h)
}

// lookupBytes is lookup for a key still in a buffer: the map lookup with
// string(key) does not allocate.
func (c *Cache) lookupBytes(key []byte, h http.Header) (*object, bool) {
	sh := &c.sh[maphash.Bytes(c.seed, key)%nShards]
	sh.mu.RLock()
	n := sh.nodes[string(key)]
	var vs []*object
	if n != nil {
		vs = n.variants
	}
	sh.mu.RUnlock()
	for i := len(vs) - 1; i >= 0; i-- {
		if o := vs[i]; c.matches(o, h) {
			return o, true
		}
	}
	return nil, len(vs) > 0
}

// matches reports whether a request with header h selects the variant o
// (RFC 9111 4.1).
func (c *Cache) matches(o *object, h http.Header) bool {
	names := o.m.Load().vary
	if len(names) != len(o.varyVals) {
		return false
	}
	for i, name := range names {
		if c.varyValue(h, name) != o.varyVals[i] {
			return false
		}
	}
	return true
}

// insert makes o the newest variant of its URL, replacing the variants the
// same request would have selected, and unregisters the fill f (if any) in
// the same critical section so no request sees neither.
func (c *Cache) insert(o *object, reqHeader http.Header, f *fill) (replaced []*object) {
	sh := c.shard(o.key)
	sh.mu.Lock()
	if f != nil && f.ck != "" && sh.fills[f.ck] == f {
		delete(sh.fills, f.ck)
	}
	n := sh.nodes[o.key]
	if n == nil {
		n = &node{}
		sh.nodes[o.key] = n
	}
	vs := make([]*object, 0, len(n.variants)+1)
	for _, v := range n.variants {
		if c.matches(v, reqHeader) {
			replaced = append(replaced, v)
		} else {
			vs = append(vs, v)
		}
	}
	for len(vs) >= maxVariants {
		replaced = append(replaced, vs[0])
		vs = vs[1:]
	}
	n.variants = append(vs, o)
	n.passUntil, n.tooBig = time.Time{}, false
	sh.mu.Unlock()
	for _, v := range replaced {
		c.drop(v)
	}
	return replaced
}

// unindex removes exactly o from the index.
func (c *Cache) unindex(o *object) {
	if o.gone.Swap(true) {
		return
	}
	sh := c.shard(o.key)
	sh.mu.Lock()
	if n := sh.nodes[o.key]; n != nil {
		vs := make([]*object, 0, len(n.variants))
		for _, v := range n.variants {
			if v != o {
				vs = append(vs, v)
			}
		}
		if len(vs) == 0 && n.passUntil.IsZero() {
			delete(sh.nodes, o.key)
		} else {
			n.variants = vs
		}
	}
	sh.mu.Unlock()
}

// drop removes o from the index and from both tiers.
func (c *Cache) drop(o *object) {
	c.unindex(o)
	c.mem.remove(o)
	o.mem.Store(nil)
	if c.disk != nil {
		c.disk.remove(o)
	}
}

// removeKeys drops every variant of the keys selected by match; it returns
// how many objects it removed.
func (c *Cache) removeKeys(match func(key string) bool) int {
	var victims []*object
	for i := range c.sh {
		sh := &c.sh[i]
		sh.mu.Lock()
		for k, n := range sh.nodes {
			if match(k) {
				victims = append(victims, n.variants...)
				delete(sh.nodes, k)
			}
		}
		for _, f := range sh.fills {
			if match(f.key) {
				f.purged.Store(true)
			}
		}
		sh.mu.Unlock()
	}
	for _, o := range victims {
		o.gone.Store(true)
		c.drop(o)
	}
	return len(victims)
}

// removeKey drops every variant of one key.
func (c *Cache) removeKey(key string) int {
	sh := c.shard(key)
	sh.mu.Lock()
	n := sh.nodes[key]
	delete(sh.nodes, key)
	// A response being fetched now may predate the purge or the unsafe
	// request that invalidated it: serve it, but do not store it.
	for _, f := range sh.fills {
		if f.key == key {
			f.purged.Store(true)
		}
	}
	sh.mu.Unlock()
	if n == nil {
		return 0
	}
	for _, o := range n.variants {
		o.gone.Store(true)
		c.drop(o)
	}
	return len(n.variants)
}

// addToMemory puts o (whose body is in o.mem) under the memory policy and
// forgets what it evicts.
func (c *Cache) addToMemory(o *object) {
	if o.mcost == 0 {
		o.mcost = memCost(o)
	}
	for _, v := range c.mem.add(o) {
		v.mem.Store(nil)
		if v != o {
			c.met.memEvict.Inc()
		}
		if v.disk.Load() == nil {
			c.unindex(v)
		}
	}
	if o.gone.Load() { // purged while being added
		c.mem.remove(o)
		o.mem.Store(nil)
	}
}

// memCost estimates the memory an object holds: body, key, header.
func memCost(o *object) int64 {
	n := o.size + int64(len(o.key)) + 256
	for k, vs := range o.m.Load().header {
		n += int64(len(k)) + 16
		for _, v := range vs {
			n += int64(len(v)) + 16
		}
	}
	return n
}

// logOnce logs a storage failure once until storage works again.
type failLog struct{ failing atomic.Bool }

func (f *failLog) fail(log *slog.Logger, msg string, args ...any) {
	if !f.failing.Swap(true) {
		log.Error(msg, args...)
	}
}

func (f *failLog) ok(log *slog.Logger, msg string) {
	if f.failing.Swap(false) {
		log.Info(msg)
	}
}
