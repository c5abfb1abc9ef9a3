package cache

import "sync"

// S3-FIFO (Yang et al., SOSP 2023) over the memory tier: new objects enter
// a small FIFO (10% of the bytes); those hit again before they reach its end
// move to the main FIFO, the rest are evicted and remembered in a ghost
// FIFO so that a quick return goes straight to main. Main evicts in FIFO
// order but gives objects with hits another round. One-off scans therefore
// pass through the small queue without displacing the working set, and a hit
// only bumps an atomic counter: no lock, no list move.

const (
	queueNone  = 0
	queueSmall = 1
	queueMain  = 2
	maxFreq    = 3
)

// fifo is an intrusive doubly linked list; push at head, pop at tail.
type fifo struct {
	head, tail *object
	bytes      int64
	n          int
}

func (q *fifo) push(o *object) {
	o.mprev, o.mnext = nil, q.head
	if q.head != nil {
		q.head.mprev = o
	} else {
		q.tail = o
	}
	q.head = o
	q.bytes += o.mcost
	q.n++
}

func (q *fifo) unlink(o *object) {
	if o.mprev != nil {
		o.mprev.mnext = o.mnext
	} else {
		q.head = o.mnext
	}
	if o.mnext != nil {
		o.mnext.mprev = o.mprev
	} else {
		q.tail = o.mprev
	}
	o.mprev, o.mnext = nil, nil
	q.bytes -= o.mcost
	q.n--
}

// ghost remembers the hashes of objects recently evicted from the small
// queue, FIFO-bounded in count.
type ghost struct {
	set  map[uint64]int32
	ring []uint64
	pos  int
	full bool
}

func (g *ghost) add(h uint64, limit int) {
	if limit < 16 {
		limit = 16
	}
	if g.set == nil {
		g.set = make(map[uint64]int32)
	}
	if len(g.ring) < limit && !g.full {
		g.ring = append(g.ring, h)
	} else {
		if g.pos >= len(g.ring) {
			g.pos = 0
		}
		old := g.ring[g.pos]
		if n := g.set[old] - 1; n <= 0 {
			delete(g.set, old)
		} else {
			g.set[old] = n
		}
		g.ring[g.pos] = h
		g.pos++
		g.full = true
	}
	g.set[h]++
}

func (g *ghost) take(h uint64) bool {
	if _, ok := g.set[h]; ok {
		delete(g.set, h)
		return true
	}
	return false
}

// memTier is the byte-bounded S3-FIFO.
type memTier struct {
	mu    sync.Mutex
	max   int64
	small fifo
	main  fifo
	ghost ghost
}

func newMemTier(max int64) *memTier { return &memTier{max: max} }

// hit records an access; called on every memory hit, lock-free.
func (t *memTier) hit(o *object) {
	if f := o.freq.Load(); f < maxFreq {
		o.freq.Store(f + 1)
	}
}

// add inserts o (whose mcost is set) and returns the objects evicted to
// make room. An object larger than the whole tier is refused (returned).
func (t *memTier) add(o *object) (evicted []*object) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if o.mq != queueNone {
		return nil
	}
	if o.mcost > t.max {
		return []*object{o}
	}
	o.freq.Store(0)
	if t.ghost.take(o.hash) {
		o.mq = queueMain
		t.main.push(o)
	} else {
		o.mq = queueSmall
		t.small.push(o)
	}
	for t.small.bytes+t.main.bytes > t.max {
		if v := t.evictOne(); v != nil {
			evicted = append(evicted, v)
		}
	}
	return evicted
}

func (t *memTier) evictOne() *object {
	if t.small.tail != nil && (t.small.bytes >= t.max/10 || t.main.tail == nil) {
		o := t.small.tail
		t.small.unlink(o)
		if o.freq.Load() > 0 {
			o.freq.Store(0)
			o.mq = queueMain
			t.main.push(o)
			return nil
		}
		o.mq = queueNone
		t.ghost.add(o.hash, t.main.n+t.small.n)
		return o
	}
	o := t.main.tail
	t.main.unlink(o)
	if f := o.freq.Load(); f > 0 {
		o.freq.Store(f - 1)
		t.main.push(o)
		return nil
	}
	o.mq = queueNone
	return o
}

// remove takes o out of the tier if it is there.
func (t *memTier) remove(o *object) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch o.mq {
	case queueSmall:
		t.small.unlink(o)
	case queueMain:
		t.main.unlink(o)
	default:
		return false
	}
	o.mq = queueNone
	return true
}

// usage returns the bytes and objects held.
func (t *memTier) usage() (int64, int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.small.bytes + t.main.bytes, t.small.n + t.main.n
}
