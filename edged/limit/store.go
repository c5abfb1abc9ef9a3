package limit

import (
	"hash/maphash"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// Store remembers per-key state for one zone: its rate bucket and its
// requests in flight. It is split into shards, each a map and an LRU list
// under its own lock, so requests for different keys rarely wait on each
// other. A Store outlives reloads.
type Store struct {
	keySpec string // the KeySource it was made for; another one needs a new Store
	seed    maphash.Seed
	shards  [storeShards]storeShard
}

const storeShards = 64

type storeShard struct {
	mu   sync.Mutex
	m    map[Key]*entry
	head entry // sentinel: head.next is the most recently used
	_    [40]byte
}

type entry struct {
	key        Key
	lim        *rate.Limiter          // nil for a zone with a concurrency cap only
	p          atomic.Pointer[params] // the settings lim was last set to
	active     atomic.Int32
	prev, next *entry
}

// NewStore makes an empty store for keys of spec.
func NewStore(spec KeySource) *Store {
	s := &Store{keySpec: spec.String(), seed: maphash.MakeSeed()}
	for i := range s.shards {
		sh := &s.shards[i]
		sh.m = make(map[Key]*entry)
		sh.head.next, sh.head.prev = &sh.head, &sh.head
	}
	return s
}

func (s *Store) shard(k Key) *storeShard {
	var h uint64
	if k.Addr.IsValid() {
		b := k.Addr.As16()
		h = maphash.Bytes(s.seed, b[:])
	} else {
		h = maphash.String(s.seed, k.Str)
	}
	return &s.shards[h%storeShards]
}

// get returns k's entry, creating it (and evicting the least recently used
// idle entries past maxKeys) if needed, and marks it used. The entry stays
// valid after an eviction: it is only forgotten.
func (s *Store) get(k Key, maxKeys int, p *params, now time.Time) *entry {
	sh := s.shard(k)
	sh.mu.Lock()
	e := sh.m[k]
	if e != nil {
		if sh.head.next != e {
			e.unlink()
			sh.pushFront(e)
		}
		sh.mu.Unlock()
		return e
	}
	e = &entry{key: k}
	if p != nil {
		e.lim = rate.NewLimiter(p.limit, p.burst)
		e.p.Store(p)
	}
	sh.m[k] = e
	sh.pushFront(e)
	perShard := max(1, (maxKeys+storeShards-1)/storeShards)
	for tries := 0; len(sh.m) > perShard && tries < 8; tries++ {
		old := sh.head.prev
		if old == e {
			break
		}
		old.unlink()
		if old.active.Load() > 0 {
			// Requests in flight: keep it, or its count would be lost.
			sh.pushFront(old)
			continue
		}
		delete(sh.m, old.key)
	}
	sh.mu.Unlock()
	return e
}

func (sh *storeShard) pushFront(e *entry) {
	e.prev, e.next = &sh.head, sh.head.next
	sh.head.next.prev = e
	sh.head.next = e
}

func (e *entry) unlink() {
	e.prev.next, e.next.prev = e.next, e.prev
	e.prev, e.next = nil, nil
}

// Len is the number of keys held.
func (s *Store) Len() int {
	n := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		n += len(sh.m)
		sh.mu.Unlock()
	}
	return n
}

// KeyState is one key as /status shows it.
type KeyState struct {
	Key string `json:"key"`
	// Tokens left in the bucket; negative when requests are queued.
	Tokens float64 `json:"tokens"`
	Active int     `json:"active"`
}

// Busiest returns up to n keys that are being held back now: the fewest
// tokens left, then the most requests in flight.
func (s *Store) Busiest(n int, now time.Time) []KeyState {
	var all []KeyState
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for k, e := range sh.m {
			st := KeyState{Key: keyString(k), Active: int(e.active.Load())}
			if e.lim != nil {
				st.Tokens = e.lim.TokensAt(now)
				if st.Tokens >= 1 && st.Active == 0 {
					continue
				}
			} else if st.Active == 0 {
				continue
			}
			all = append(all, st)
		}
		sh.mu.Unlock()
	}
	sort.Slice(all, func(i, j int) bool {
		if all[i].Tokens != all[j].Tokens {
			return all[i].Tokens < all[j].Tokens
		}
		return all[i].Active > all[j].Active
	})
	if len(all) > n {
		all = all[:n]
	}
	return all
}

func keyString(k Key) string {
	if k.Addr.IsValid() {
		return k.Addr.String()
	}
	return k.Str
}

// local is the in-memory RateLimiter over a Store.
type local struct {
	s       *Store
	p       *params
	maxKeys int
}

func (l *local) Reserve(k Key, now time.Time) Decision {
	e := l.s.get(k, l.maxKeys, l.p, now)
	if e.lim == nil {
		return Decision{OK: true} // made by a concurrency-only zone sharing the store
	}
	if old := e.p.Load(); old != l.p && e.p.CompareAndSwap(old, l.p) {
		// Settings changed by a reload: apply them now, keeping the bucket.
		e.lim.SetLimitAt(now, l.p.limit)
		e.lim.SetBurstAt(now, l.p.burst)
	}
	r := e.lim.ReserveN(now, 1)
	if !r.OK() {
		return Decision{RetryAfter: time.Second}
	}
	d := r.DelayFrom(now)
	if d > l.p.maxWait {
		r.CancelAt(now)
		return Decision{RetryAfter: d - l.p.maxWait}
	}
	return Decision{OK: true, Delay: d, undo: r, at: now}
}
