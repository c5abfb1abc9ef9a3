// Package limit holds back clients that ask too much: request rate per key
// (nginx's limit_req: a leaky bucket with burst, delay and nodelay) and
// requests in flight per key (nginx's limit_conn, counted per request so
// that HTTP/2 streams count too).
//
// A Zone is one named policy compiled from [limit.NAME]; routes list the
// zones they use. A key is the client address after trusted_proxies (IPv6
// grouped by /64 by default, so one host cannot hop through its prefix),
// or the value of a header or cookie; a request without a key is not
// limited, as in nginx.
//
// Rate state lives in a Store: sharded maps with an LRU per shard, bounded
// by max_keys, no global lock. A reload hands the Store to the zone of the
// same name and key, so buckets survive it; new rates apply to each key at
// its next request. The rate decision is behind RateLimiter, the seam where
// a cluster-wide limiter (shared through etcd) can take a zone's place.
//
// Choices an nginx user should know:
//   - rate "10r/s", burst 20, delay 0: the first request passes, the next
//     20 wait their turn at 10 per second, more are refused. nodelay serves
//     the 20 at once; delay = N serves N at once and queues the rest.
//   - Refusals answer 429 (nginx's default is 503; status = 503 restores
//     it) with Retry-After: the seconds until a request would pass.
//   - A client that leaves while its request waits is not served.
package limit

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"golang.org/x/time/rate"

	"github.com/edgeapp/edgeapp/edged/reqinfo"
)

// Defaults for a zone's keys.
const (
	DefaultMaxKeys    = 100_000
	DefaultIPv6Prefix = 64
	DefaultStatus     = http.StatusTooManyRequests
)

// Config is one [limit.NAME].
type Config struct {
	Name string
	// Key is "client_ip" (default), "header:NAME" or "cookie:NAME".
	Key string
	// Rate is "N r/s", "N r/m" or "N r/h" ("" = no rate limit).
	Rate string
	// Burst requests may exceed the rate; Delay of them pass at once,
	// the rest wait. NoDelay means Delay = Burst.
	Burst   int
	Delay   int
	NoDelay bool
	// Concurrent caps the requests in flight per key (0 = no cap).
	Concurrent int
	// MaxKeys bounds the keys remembered; the least recently seen go first.
	MaxKeys int
	// Status answers a refused request: 429 (default) or 503.
	Status int
	// IPv6Prefix groups IPv6 clients by this prefix length (default 64).
	IPv6Prefix int
	// DryRun counts and logs what would be refused, and refuses nothing.
	DryRun bool
}

// WithDefaults fills what c leaves out.
func (c Config) WithDefaults() Config {
	if c.Key == "" {
		c.Key = "client_ip"
	}
	if c.MaxKeys == 0 {
		c.MaxKeys = DefaultMaxKeys
	}
	if c.Status == 0 {
		c.Status = DefaultStatus
	}
	if c.IPv6Prefix == 0 {
		c.IPv6Prefix = DefaultIPv6Prefix
	}
	if c.NoDelay {
		c.Delay = c.Burst
	}
	return c
}

// Check validates c (after WithDefaults); errors name the key at fault.
func (c Config) Check() error {
	var errs []error
	if _, err := ParseKey(c.Key, c.IPv6Prefix); err != nil {
		errs = append(errs, err)
	}
	if c.Rate != "" {
		if _, err := ParseRate(c.Rate); err != nil {
			errs = append(errs, err)
		}
	} else if c.Burst != 0 || c.Delay != 0 || c.NoDelay {
		errs = append(errs, errors.New("burst, delay and nodelay need a rate"))
	}
	if c.Rate == "" && c.Concurrent == 0 {
		errs = append(errs, errors.New("set a rate, concurrent, or both"))
	}
	if c.Burst < 0 || c.Delay < 0 || c.Concurrent < 0 || c.MaxKeys < 0 {
		errs = append(errs, errors.New("burst, delay, concurrent and max_keys must not be negative"))
	}
	if c.Delay > c.Burst && c.Burst >= 0 {
		errs = append(errs, fmt.Errorf("delay %d is more than burst %d", c.Delay, c.Burst))
	}
	if c.NoDelay && c.Delay != c.Burst {
		errs = append(errs, errors.New("nodelay and delay are exclusive"))
	}
	if c.Status != http.StatusTooManyRequests && c.Status != http.StatusServiceUnavailable && (c.Status < 400 || c.Status > 599) {
		errs = append(errs, fmt.Errorf("status %d: want 429, 503 or another 4xx/5xx", c.Status))
	}
	if c.IPv6Prefix < 1 || c.IPv6Prefix > 128 {
		errs = append(errs, fmt.Errorf("ipv6_prefix %d: want 1 to 128", c.IPv6Prefix))
	}
	return errors.Join(errs...)
}

// ParseRate reads "10r/s", "600r/m" or "3600r/h" (spaces allowed) into
// requests per second.
func ParseRate(s string) (float64, error) {
	t := strings.ReplaceAll(s, " ", "")
	num, unit, ok := strings.Cut(t, "r/")
	n, err := strconv.ParseFloat(num, 64)
	if !ok || err != nil || n <= 0 || math.IsInf(n, 0) || math.IsNaN(n) {
		return 0, fmt.Errorf("rate %q: want a positive number of requests per s, m or h, like \"10r/s\" or \"30r/m\"", s)
	}
	switch unit {
	case "s":
		return n, nil
	case "m":
		return n / 60, nil
	case "h":
		return n / 3600, nil
	}
	return 0, fmt.Errorf("rate %q: the unit is r/s, r/m or r/h", s)
}

// Key identifies a client within a zone. It is comparable, so it is a map
// key as is, and making one allocates nothing.
type Key struct {
	Addr netip.Addr
	Str  string
}

// KeySource takes a request's key.
type KeySource struct {
	kind   int // keyClient, keyHeader, keyCookie
	name   string
	v6bits int
}

const (
	keyClient = iota
	keyHeader
	keyCookie
)

// ParseKey reads "client_ip", "header:NAME" or "cookie:NAME".
func ParseKey(s string, ipv6Prefix int) (KeySource, error) {
	switch {
	case s == "client_ip":
		return KeySource{kind: keyClient, v6bits: ipv6Prefix}, nil
	case strings.HasPrefix(s, "header:") && len(s) > len("header:"):
		return KeySource{kind: keyHeader, name: http.CanonicalHeaderKey(s[len("header:"):])}, nil
	case strings.HasPrefix(s, "cookie:") && len(s) > len("cookie:"):
		return KeySource{kind: keyCookie, name: s[len("cookie:"):]}, nil
	}
	return KeySource{}, fmt.Errorf("key %q: want client_ip, header:NAME or cookie:NAME", s)
}

func (k KeySource) String() string {
	switch k.kind {
	case keyHeader:
		return "header:" + k.name
	case keyCookie:
		return "cookie:" + k.name
	}
	return "client_ip/" + strconv.Itoa(k.v6bits)
}

// Key returns r's key; ok is false when r has none (no client address,
// an empty header or cookie).
func (k KeySource) Key(r *http.Request) (Key, bool) {
	switch k.kind {
	case keyHeader:
		v := r.Header[k.name]
		if len(v) == 0 || v[0] == "" {
			return Key{}, false
		}
		return Key{Str: v[0]}, true
	case keyCookie:
		v, ok := cookieValue(r.Header["Cookie"], k.name)
		if !ok || v == "" {
			return Key{}, false
		}
		return Key{Str: v}, true
	}
	a := ClientAddr(r)
	if !a.IsValid() {
		return Key{}, false
	}
	if a.Is6() && k.v6bits < 128 {
		p, _ := a.Prefix(k.v6bits)
		a = p.Addr()
	}
	return Key{Addr: a}, true
}

// ClientAddr is the client address edged's server recorded for r, or r's
// peer address when r carries no record.
func ClientAddr(r *http.Request) netip.Addr {
	if info := reqinfo.From(r.Context()); info != nil {
		return info.Client
	}
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// cookieValue finds name's value in Cookie headers without allocating.
func cookieValue(lines []string, name string) (string, bool) {
	for _, line := range lines {
		for line != "" {
			var part string
			part, line, _ = strings.Cut(line, ";")
			part = strings.TrimSpace(part)
			n, v, ok := strings.Cut(part, "=")
			if ok && n == name {
				return strings.Trim(v, `"`), true
			}
		}
	}
	return "", false
}

// params are a zone's rate settings in the form x/time/rate takes.
type params struct {
	limit   rate.Limit
	burst   int           // bucket size: requests served at once (Delay + 1)
	maxWait time.Duration // longest a request may be queued
}

// Decision is a rate limiter's answer for one request.
type Decision struct {
	OK bool
	// Delay is how long to hold the request before serving it (OK).
	Delay time.Duration
	// RetryAfter is when a refused request would pass (not OK).
	RetryAfter time.Duration

	undo canceler // gives an admitted request's place back
	at   time.Time
}

type canceler interface{ CancelAt(time.Time) }

// Cancel gives an admitted request's place back, when a later zone refused
// the request after this one admitted it.
func (d Decision) Cancel() {
	if d.undo != nil {
		d.undo.CancelAt(d.at)
	}
}

// RateLimiter decides a zone's request rate per key: the seam where a
// cluster-wide limiter can stand in for the local one.
type RateLimiter interface {
	Reserve(key Key, now time.Time) Decision
}
