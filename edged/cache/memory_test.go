package cache

import (
	"container/list"
	"fmt"
	"math/rand/v2"
	"testing"
)

// lru is the baseline the memory tier is measured against: plain LRU over
// the same byte budget.
type lru struct {
	max, bytes int64
	ll         *list.List
	idx        map[uint64]*list.Element
}

type lruEnt struct {
	key  uint64
	cost int64
}

func newLRU(max int64) *lru { return &lru{max: max, ll: list.New(), idx: map[uint64]*list.Element{}} }

func (l *lru) get(k uint64) bool {
	if e, ok := l.idx[k]; ok {
		l.ll.MoveToFront(e)
		return true
	}
	return false
}

func (l *lru) add(k uint64, cost int64) {
	l.idx[k] = l.ll.PushFront(&lruEnt{k, cost})
	l.bytes += cost
	for l.bytes > l.max {
		e := l.ll.Back()
		ent := e.Value.(*lruEnt)
		l.ll.Remove(e)
		delete(l.idx, ent.key)
		l.bytes -= ent.cost
	}
}

// s3sim drives the real memTier with synthetic objects.
type s3sim struct {
	t   *memTier
	idx map[uint64]*object
}

func newS3(max int64) *s3sim { return &s3sim{t: newMemTier(max), idx: map[uint64]*object{}} }

func (s *s3sim) get(k uint64) bool {
	if o, ok := s.idx[k]; ok {
		s.t.hit(o)
		return true
	}
	return false
}

func (s *s3sim) add(k uint64, cost int64) {
	o := &object{hash: k, mcost: cost}
	s.idx[k] = o
	for _, v := range s.t.add(o) {
		delete(s.idx, v.hash)
	}
}

type policy interface {
	get(uint64) bool
	add(uint64, int64)
}

// workload: Zipf-distributed requests over a key space, with a one-off
// scan of never-repeated keys mixed into the middle third. Hit ratio is
// measured over all requests.
func hitRatio(p policy, seed uint64, requests, keys int, scanLen int, cost int64) float64 {
	r := rand.New(rand.NewPCG(seed, 1))
	z := rand.NewZipf(r, 1.05, 1, uint64(keys-1))
	hits := 0
	scanKey := uint64(1 << 40)
	for i := range requests {
		var k uint64
		if i >= requests/3 && i < requests/3+2*scanLen && i%2 == 0 {
			scanKey++
			k = scanKey // the scan: each key once, interleaved with normal traffic
		} else {
			k = z.Uint64()
		}
		if p.get(k) {
			hits++
		} else {
			p.add(k, cost)
		}
	}
	return float64(hits) / float64(requests)
}

func TestS3FIFOResistsScans(t *testing.T) {
	const cost = 1024
	capacity := int64(1000 * cost) // 1000 objects
	for _, scan := range []int{0, 50000} {
		l := hitRatio(newLRU(capacity), 42, 300000, 100000, scan, cost)
		s := hitRatio(newS3(capacity), 42, 300000, 100000, scan, cost)
		t.Logf("scan %d: LRU %.4f, S3-FIFO %.4f", scan, l, s)
		if s <= l {
			t.Errorf("scan %d: S3-FIFO hit ratio %.4f not above LRU %.4f", scan, s, l)
		}
	}
}

func TestMemTierBoundedInBytes(t *testing.T) {
	m := newMemTier(100 << 10)
	r := rand.New(rand.NewPCG(1, 2))
	live := map[*object]bool{}
	for i := range 5000 {
		o := &object{hash: uint64(i), mcost: int64(100 + r.IntN(4000))}
		live[o] = true
		for _, v := range m.add(o) {
			delete(live, v)
		}
		if i%7 == 0 {
			for o := range live {
				m.hit(o)
				break
			}
		}
		if b, _ := m.usage(); b > 100<<10 {
			t.Fatalf("memory tier holds %d bytes, bound %d", b, 100<<10)
		}
	}
	var sum int64
	for o := range live {
		sum += o.mcost
	}
	if b, n := m.usage(); b != sum || n != len(live) {
		t.Fatalf("accounting: tier says %d bytes/%d objects, live set %d/%d", b, n, sum, len(live))
	}
	for o := range live {
		if !m.remove(o) {
			t.Fatal("remove of a live object failed")
		}
	}
	if b, n := m.usage(); b != 0 || n != 0 {
		t.Fatalf("after removing all: %d bytes, %d objects", b, n)
	}
}

// BenchmarkHitRatio reports the memory tier's hit ratio against LRU under
// a Zipf load with a one-off scan (make bench prints it).
func BenchmarkHitRatio(b *testing.B) {
	for _, scan := range []int{0, 50000} {
		for _, pc := range []struct {
			name string
			mk   func(int64) policy
		}{{"lru", func(n int64) policy { return newLRU(n) }}, {"s3fifo", func(n int64) policy { return newS3(n) }}} {
			b.Run(fmt.Sprintf("scan=%d/%s", scan, pc.name), func(b *testing.B) {
				var ratio float64
				for b.Loop() {
					ratio = hitRatio(pc.mk(1000*1024), 42, 300000, 100000, scan, 1024)
				}
				b.ReportMetric(ratio*100, "hit%")
			})
		}
	}
}
