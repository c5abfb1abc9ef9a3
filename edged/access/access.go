// Package access allows and denies clients by address (nginx's allow and
// deny), on the client address after trusted_proxies.
//
// Unlike nginx, where the first matching rule in file order wins, the most
// specific rule wins (the longest prefix), so the order of the lists does
// not matter: deny = ["10.0.0.0/8"] with allow = ["10.1.2.3"] lets that one
// host in, and allow = ["10.0.0.0/8"] with deny = ["10.6.0.0/16"] keeps that
// subnet out. A prefix in both lists is denied. A client no rule matches is
// denied when there are allow rules, and allowed otherwise; "all" stands for
// every address. A client whose address is unknown (a unix-socket peer)
// matches no rule.
package access

import (
	"fmt"
	"net/http"
	"net/netip"
	"sort"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgeapp/edgeapp/edged/reqinfo"
)

// List is a compiled set of allow and deny rules.
type List struct {
	rules      map[netip.Prefix]bool // true = allow
	v4, v6     []int                 // prefix lengths present, longest first
	allowFirst bool                  // a client no rule matches is denied
}

// New compiles the lists; entries are addresses, CIDRs or "all".
func New(allow, deny []string) (*List, error) {
	l := &List{rules: map[netip.Prefix]bool{}, allowFirst: len(allow) > 0}
	add := func(s string, allowed bool) error {
		var ps []netip.Prefix
		if s == "all" {
			ps = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}
		} else {
			p, err := parsePrefix(s)
			if err != nil {
				return err
			}
			ps = []netip.Prefix{p}
		}
		for _, p := range ps {
			if prev, ok := l.rules[p]; ok && !prev {
				continue // denied in both: deny
			}
			l.rules[p] = allowed
		}
		return nil
	}
	for _, s := range deny {
		if err := add(s, false); err != nil {
			return nil, fmt.Errorf("deny: %w", err)
		}
	}
	for _, s := range allow {
		if err := add(s, true); err != nil {
			return nil, fmt.Errorf("allow: %w", err)
		}
	}
	seen4, seen6 := map[int]bool{}, map[int]bool{}
	for p := range l.rules {
		if p.Addr().Is4() && !seen4[p.Bits()] {
			seen4[p.Bits()] = true
			l.v4 = append(l.v4, p.Bits())
		} else if p.Addr().Is6() && !seen6[p.Bits()] {
			seen6[p.Bits()] = true
			l.v6 = append(l.v6, p.Bits())
		}
	}
	sort.Sort(sort.Reverse(sort.IntSlice(l.v4)))
	sort.Sort(sort.Reverse(sort.IntSlice(l.v6)))
	return l, nil
}

func parsePrefix(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q: want an address, a CIDR such as 10.0.0.0/8, or \"all\"", s)
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// Allowed decides for a client address. It allocates nothing: one map
// lookup per prefix length in use, longest first.
func (l *List) Allowed(a netip.Addr) bool {
	if a.IsValid() {
		a = a.Unmap()
		lengths := l.v6
		if a.Is4() {
			lengths = l.v4
		}
		for _, bits := range lengths {
			p, _ := a.Prefix(bits)
			if allowed, ok := l.rules[p]; ok {
				return allowed
			}
		}
	}
	return !l.allowFirst
}

// String lists the rules, most specific first, for logs.
func (l *List) String() string {
	var parts []string
	for p, allowed := range l.rules {
		verb := "deny "
		if allowed {
			verb = "allow "
		}
		parts = append(parts, verb+p.String())
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

// Metrics count refusals.
type Metrics struct {
	denied *prometheus.CounterVec
}

// ForgetRoute drops the series of a route that is not in service: it left
// the configuration, or the configuration that had it was refused.
func (m *Metrics) ForgetRoute(site, route string) {
	m.denied.DeletePartialMatch(prometheus.Labels{"site": site, "route": route})
}

// NewMetrics registers edged_access_denied_total.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{denied: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "edged_access_denied_total", Help: "Requests refused by allow/deny lists, by site and route.",
	}, []string{"site", "route"})}
	reg.MustRegister(m.denied)
	return m
}

// Handler answers 403 to clients l does not allow.
func Handler(l *List, m *Metrics, site, route string, next http.Handler) http.Handler {
	h := &handler{l: l, next: next}
	if m != nil {
		h.denied = m.denied.WithLabelValues(site, route)
	}
	return h
}

// Either sends the clients l allows to next and the others to otherwise
// (an authentication check in front of next: nginx's satisfy any).
func Either(l *List, next, otherwise http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if l.Allowed(clientAddr(r)) {
			next.ServeHTTP(w, r)
			return
		}
		otherwise.ServeHTTP(w, r)
	})
}

type handler struct {
	l      *List
	denied prometheus.Counter
	next   http.Handler
}

var forbidden = []byte("403 Forbidden\n")

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.l.Allowed(clientAddr(r)) {
		h.next.ServeHTTP(w, r)
		return
	}
	if h.denied != nil {
		h.denied.Inc()
	}
	hd := w.Header()
	hd["Content-Type"] = []string{"text/plain; charset=utf-8"}
	hd["X-Content-Type-Options"] = []string{"nosniff"}
	hd["Content-Length"] = []string{"14"}
	w.WriteHeader(http.StatusForbidden)
	w.Write(forbidden)
}

// clientAddr is the client address edged's server recorded for r, or r's
// peer when r carries no record.
func clientAddr(r *http.Request) netip.Addr {
	if info := reqinfo.From(r.Context()); info != nil {
		return info.Client
	}
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}
