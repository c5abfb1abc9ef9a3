package proxy

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
)

// policy chooses one available server of a group, or nil. The selection
// is passed by value so it stays on the caller's stack.
type policy interface {
	pick(g *group, sel selection) *server
}

func newPolicy(name string, servers []*server) policy {
	switch name {
	case "least_conn":
		return &leastConn{}
	case "random_two":
		return randomTwo{}
	case "hash":
		uniform := true
		for _, s := range servers {
			uniform = uniform && s.cfg.Weight == servers[0].cfg.Weight
		}
		return rendezvous{uniform: uniform}
	case "first":
		return first{}
	default:
		return &smoothRR{current: make([]int, len(servers))}
	}
}

// smoothRR is nginx's smooth weighted round robin: every pick raises each
// available server's current weight by its weight and takes the highest,
// which then pays the total back. Weights 5,1,1 give a a b a c a a, not
// a a a a a b c. The small mutex is per group and held for a few ns.
type smoothRR struct {
	mu      sync.Mutex
	current []int
}

func (p *smoothRR) pick(g *group, sel selection) *server {
	p.mu.Lock()
	best, total := -1, 0
	for i, s := range g.servers {
		if !s.available(&sel) {
			continue
		}
		w := s.cfg.Weight
		p.current[i] += w
		total += w
		if best < 0 || p.current[i] > p.current[best] {
			best = i
		}
	}
	if best < 0 {
		p.mu.Unlock()
		return nil
	}
	p.current[best] -= total
	p.mu.Unlock()
	return g.servers[best]
}

// lighter reports whether a carries less load per weight than b.
func lighter(a, b *server) bool {
	return a.st.active.Load()*int64(b.cfg.Weight) < b.st.active.Load()*int64(a.cfg.Weight)
}

// leastConn takes the server with the fewest in-flight requests per weight;
// the scan starts at a rotating offset so ties spread out.
type leastConn struct{ next atomic.Uint32 }

func (p *leastConn) pick(g *group, sel selection) *server {
	n := len(g.servers)
	start := int(p.next.Add(1) % uint32(n))
	var best *server
	for k := 0; k < n; k++ {
		s := g.servers[(start+k)%n]
		if !s.available(&sel) {
			continue
		}
		if best == nil || lighter(s, best) {
			best = s
		}
	}
	return best
}

// randomTwo is the power of two choices: two random servers, the less loaded
// wins. Nearly least_conn's balance without looking at every server.
type randomTwo struct{}

func (randomTwo) pick(g *group, sel selection) *server {
	n := len(g.servers)
	if n == 1 {
		if s := g.servers[0]; s.available(&sel) {
			return s
		}
		return nil
	}
	i := rand.IntN(n)
	j := rand.IntN(n - 1)
	if j >= i {
		j++
	}
	a, b := g.servers[i], g.servers[j]
	aok, bok := a.available(&sel), b.available(&sel)
	switch {
	case aok && bok:
		if lighter(b, a) {
			return b
		}
		return a
	case aok:
		return a
	case bok:
		return b
	}
	// Both out: fall back to a full scan rather than failing the request.
	var best *server
	for _, s := range g.servers {
		if s.available(&sel) && (best == nil || lighter(s, best)) {
			best = s
		}
	}
	return best
}

// first takes the first available server in config order (active/passive
// failover).
type first struct{}

func (first) pick(g *group, sel selection) *server {
	for _, s := range g.servers {
		if s.available(&sel) {
			return s
		}
	}
	return nil
}

// rendezvous is weighted rendezvous (highest random weight) hashing: each
// server scores the key, the highest available score wins. When a server
// leaves only its own keys move, each to its next-best server; weights scale
// the share of keys.
type rendezvous struct{ uniform bool }

func (p rendezvous) pick(g *group, sel selection) *server {
	if p.uniform {
		// Equal weights: the raw hash orders servers the same way as the
		// weighted score, without a logarithm per server.
		var best *server
		var bestH uint64
		for _, s := range g.servers {
			if !s.available(&sel) {
				continue
			}
			if h := mix64(sel.keyHash ^ s.hash); best == nil || h > bestH {
				best, bestH = s, h
			}
		}
		return best
	}
	var best *server
	bestScore := -1.0
	for _, s := range g.servers {
		if !s.available(&sel) {
			continue
		}
		if sc := score(sel.keyHash, s); sc > bestScore {
			best, bestScore = s, sc
		}
	}
	return best
}

func score(key uint64, s *server) float64 {
	h := mix64(key ^ s.hash)
	u := (float64(h>>11) + 0.5) / (1 << 53) // uniform in (0,1)
	return float64(s.cfg.Weight) / -math.Log(u)
}

// hashKey says what a hash policy hashes.
type hashKey struct {
	kind int // hashClientIP, hashURI, hashHeader, hashCookie
	name string
}

const (
	hashClientIP = iota
	hashURI
	hashHeader
	hashCookie
)

func parseHashKey(s string) (hashKey, string, error) {
	switch {
	case s == "" || s == "client_ip":
		return hashKey{kind: hashClientIP}, s, nil
	case s == "uri":
		return hashKey{kind: hashURI}, s, nil
	case strings.HasPrefix(s, "header:"):
		n := strings.TrimPrefix(s, "header:")
		if n == "" || strings.ContainsAny(n, " :\t") {
			return hashKey{}, s, fmt.Errorf("%q: want header:NAME", s)
		}
		return hashKey{kind: hashHeader, name: http.CanonicalHeaderKey(n)}, s, nil
	case strings.HasPrefix(s, "cookie:"):
		n := strings.TrimPrefix(s, "cookie:")
		if n == "" || strings.ContainsAny(n, " =;\t") {
			return hashKey{}, s, fmt.Errorf("%q: want cookie:NAME", s)
		}
		return hashKey{kind: hashCookie, name: n}, s, nil
	}
	return hashKey{}, s, errors.New("want client_ip, uri, header:NAME or cookie:NAME, not " + fmt.Sprintf("%q", s))
}

// hashKey hashes what the pool's hash_key names; a request without that
// header or cookie hashes its client address instead, so such clients still
// stick and spread.
func (sel *selection) hashKey() uint64 {
	r := sel.r
	switch sel.key.kind {
	case hashURI:
		return mix64(fnv(fnv(fnvOffset, r.URL.Path), r.URL.RawQuery))
	case hashHeader:
		if v := r.Header.Get(sel.key.name); v != "" {
			return hashString(v)
		}
	case hashCookie:
		if c, err := r.Cookie(sel.key.name); err == nil && c.Value != "" {
			return hashString(c.Value)
		}
	}
	return hashString(sel.client)
}

const fnvOffset = uint64(14695981039346656037)

// fnv continues an FNV-1a hash over s.
func fnv(h uint64, s string) uint64 {
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

// hashString is FNV-1a with a finalizer so similar keys spread.
func hashString(s string) uint64 { return mix64(fnv(fnvOffset, s)) }

// mix64 is splitmix64's finalizer.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
