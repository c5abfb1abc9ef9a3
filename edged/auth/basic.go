// Package auth lets a request through only when it is authenticated:
// HTTP basic authentication against bcrypt hashes (nginx's auth_basic,
// with hashes inline or in an htpasswd file), or a subrequest to an
// authentication service (nginx's auth_request, Caddy's forward_auth).
//
// Basic authentication:
//   - Only bcrypt hashes ($2y$, $2a$, $2b$; `htpasswd -B`) are accepted;
//     MD5, SHA-1 and crypt(3) hashes are refused when the file is read,
//     naming the line.
//   - Passwords are compared by bcrypt (in constant time); an unknown user
//     costs the same comparison as a known one, so timing does not tell
//     which users exist.
//   - Failed attempts are limited per client (by default 10 a minute, in a
//     burst of 10); beyond that the answer is 429 with Retry-After and no
//     password is checked. Concurrent bcrypt comparisons are capped at the
//     number of CPUs, so a flood of guesses cannot starve other routes.
//   - A verified user and password is remembered (as a keyed hash) for the
//     life of the configuration, so a browser's every request does not pay
//     for bcrypt again; a reload forgets, and rereads the htpasswd file.
//   - The Authorization header is passed on to the upstream, as nginx does.
package auth

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/bcrypt"

	"github.com/edgeapp/edgeapp/edged/limit"
	"github.com/edgeapp/edgeapp/edged/reqinfo"
)

// Defaults for failed basic-auth attempts per client.
const (
	DefaultFailRate  = "10r/m"
	DefaultFailBurst = 10
	DefaultRealm     = "restricted"
)

// BasicOptions configure basic authentication.
type BasicOptions struct {
	Realm    string
	Users    map[string]string // name -> bcrypt hash
	Htpasswd string            // file of name:hash lines; read now
	// FailRate and FailBurst bound failed attempts per client
	// (defaults DefaultFailRate, DefaultFailBurst).
	FailRate  string
	FailBurst int
	Log       *slog.Logger
}

// Basic is a compiled basic-auth check, shared by the routes that use the
// same settings.
type Basic struct {
	users     map[string][]byte
	challenge []string // WWW-Authenticate
	fails     *limit.Zone
	verified  verifiedCache
	log       *slog.Logger
}

// dummyHash is compared against when the user does not exist, at the cost
// most hashes have, so that an unknown user takes as long as a known one.
var dummyHash, _ = bcrypt.GenerateFromPassword([]byte("edged: no such user"), bcrypt.DefaultCost)

// bcryptSlots caps concurrent bcrypt comparisons process-wide.
var bcryptSlots = make(chan struct{}, runtime.GOMAXPROCS(0))

// NewBasic reads the users (and the htpasswd file) and checks every hash.
func NewBasic(o BasicOptions) (*Basic, error) {
	b := &Basic{users: map[string][]byte{}, log: o.Log}
	if b.log == nil {
		b.log = slog.Default()
	}
	realm := o.Realm
	if realm == "" {
		realm = DefaultRealm
	}
	if strings.ContainsAny(realm, "\"\\\r\n") {
		return nil, fmt.Errorf("realm %q: quotes, backslashes and line breaks are not allowed", realm)
	}
	b.challenge = []string{`Basic realm="` + realm + `", charset="UTF-8"`}
	if o.Htpasswd != "" {
		if err := b.readHtpasswd(o.Htpasswd); err != nil {
			return nil, err
		}
	}
	for name, hash := range o.Users {
		if err := checkUser(name); err != nil {
			return nil, fmt.Errorf("users: %w", err)
		}
		if err := checkHash(hash); err != nil {
			return nil, fmt.Errorf("users.%s: %w", name, err)
		}
		b.users[name] = []byte(hash)
	}
	if len(b.users) == 0 {
		return nil, errors.New("no users: every request would be refused")
	}
	rate, burst := o.FailRate, o.FailBurst
	if rate == "" {
		rate = DefaultFailRate
	}
	if burst == 0 {
		burst = DefaultFailBurst
	}
	var err error
	b.fails, err = limit.NewZone(limit.Config{Name: "basic_auth failures", Rate: rate, Burst: burst - 1, NoDelay: true, MaxKeys: 10000}, nil, b.log)
	if err != nil {
		return nil, fmt.Errorf("fail_rate: %w", err)
	}
	b.verified.init()
	return b, nil
}

func (b *Basic) readHtpasswd(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading htpasswd file: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		name, hash, ok := strings.Cut(line, ":")
		if !ok {
			return fmt.Errorf("%s:%d: want user:hash", path, n)
		}
		if err := checkUser(name); err != nil {
			return fmt.Errorf("%s:%d: %w", path, n, err)
		}
		if err := checkHash(hash); err != nil {
			return fmt.Errorf("%s:%d: user %s: %w", path, n, name, err)
		}
		if _, dup := b.users[name]; dup {
			return fmt.Errorf("%s:%d: user %s is listed twice", path, n, name)
		}
		b.users[name] = []byte(hash)
	}
	return sc.Err()
}

func checkUser(name string) error {
	if name == "" || strings.ContainsAny(name, ":\r\n") {
		return fmt.Errorf("user name %q: must be non-empty, without ':' or line breaks", name)
	}
	return nil
}

func checkHash(hash string) error {
	switch {
	case strings.HasPrefix(hash, "$2y$"), strings.HasPrefix(hash, "$2a$"), strings.HasPrefix(hash, "$2b$"):
		if _, err := bcrypt.Cost([]byte(hash)); err != nil {
			return fmt.Errorf("not a valid bcrypt hash: %w", err)
		}
		return nil
	case strings.HasPrefix(hash, "$apr1$"), strings.HasPrefix(hash, "{SHA}"), strings.HasPrefix(hash, "$1$"),
		strings.HasPrefix(hash, "$5$"), strings.HasPrefix(hash, "$6$"):
		return errors.New("only bcrypt hashes are accepted (MD5, SHA and crypt hashes are too fast to guess against); make one with htpasswd -B")
	}
	return errors.New("not a bcrypt hash ($2y$...); make one with htpasswd -B or htpasswd -nbB user password")
}

// verifiedCache remembers user:password pairs that bcrypt accepted, as
// SHA-256 of a per-process secret and the pair (never the password
// itself). Reads take no lock and allocate nothing.
type verifiedCache struct {
	key [32]byte
	m   atomic.Pointer[sync.Map]
	n   atomic.Int64
}

const verifiedMax = 10000

func (c *verifiedCache) init() {
	rand.Read(c.key[:])
	c.m.Store(new(sync.Map))
}

func (c *verifiedCache) sum(user, pass []byte) [32]byte {
	var buf [320]byte
	b := append(buf[:0], c.key[:]...)
	b = append(b, user...)
	b = append(b, 0)
	b = append(b, pass...)
	return sha256.Sum256(b)
}

func (c *verifiedCache) has(s [32]byte) bool {
	_, ok := c.m.Load().Load(s)
	return ok
}

func (c *verifiedCache) add(s [32]byte) {
	if c.n.Add(1) > verifiedMax {
		// Full: start over rather than track recency; a forgotten pair
		// costs one more bcrypt comparison.
		c.m.Store(new(sync.Map))
		c.n.Store(1)
	}
	c.m.Load().Store(s, struct{}{})
}

// check reports whether user and pass are valid, paying for bcrypt only
// when the pair has not been verified before.
func (b *Basic) check(r *http.Request, user, pass []byte) (bool, error) {
	sum := b.verified.sum(user, pass)
	if b.verified.has(sum) {
		return true, nil
	}
	hash, known := b.users[string(user)]
	if !known {
		hash = dummyHash
	}
	select {
	case bcryptSlots <- struct{}{}:
	case <-r.Context().Done():
		return false, r.Context().Err()
	}
	err := bcrypt.CompareHashAndPassword(hash, pass)
	<-bcryptSlots
	ok := err == nil && known
	if ok {
		b.verified.add(sum)
	}
	return ok, nil
}

// parseBasic reads "Authorization: Basic base64(user:pass)" into buf.
func parseBasic(h []string, buf []byte) (user, pass []byte, ok bool) {
	if len(h) != 1 {
		return nil, nil, false
	}
	v := h[0]
	const prefix = "Basic "
	if len(v) < len(prefix) || !strings.EqualFold(v[:len(prefix)], prefix) {
		return nil, nil, false
	}
	enc := strings.TrimSpace(v[len(prefix):])
	if base64.StdEncoding.DecodedLen(len(enc)) > len(buf) {
		return nil, nil, false
	}
	n, err := base64.StdEncoding.Decode(buf, []byte(enc))
	if err != nil {
		return nil, nil, false
	}
	user, pass, ok = bytes.Cut(buf[:n], []byte{':'})
	return user, pass, ok
}

// Metrics count authentication outcomes.
type Metrics struct {
	results *prometheus.CounterVec
}

// ForgetRoute drops the series of a route that is not in service: it left
// the configuration, or the configuration that had it was refused.
func (m *Metrics) ForgetRoute(site, route string) {
	m.results.DeletePartialMatch(prometheus.Labels{"site": site, "route": route})
}

// NewMetrics registers edged_auth_requests_total.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{results: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "edged_auth_requests_total",
		Help: "Requests checked by basic or forward auth, by site, route, kind and result (ok, denied, limited, error).",
	}, []string{"site", "route", "kind", "result"})}
	reg.MustRegister(m.results)
	return m
}

type outcomes struct{ ok, denied, limited, failed prometheus.Counter }

func (m *Metrics) outcomes(site, route, kind string) outcomes {
	if m == nil {
		return outcomes{}
	}
	return outcomes{
		ok:      m.results.WithLabelValues(site, route, kind, "ok"),
		denied:  m.results.WithLabelValues(site, route, kind, "denied"),
		limited: m.results.WithLabelValues(site, route, kind, "limited"),
		failed:  m.results.WithLabelValues(site, route, kind, "error"),
	}
}

func inc(c prometheus.Counter) {
	if c != nil {
		c.Inc()
	}
}

// Handler lets through requests with valid credentials and records the
// user for the access log.
func (b *Basic) Handler(m *Metrics, site, route string, next http.Handler) http.Handler {
	return &basicHandler{b: b, next: next, out: m.outcomes(site, route, "basic")}
}

type basicHandler struct {
	b    *Basic
	next http.Handler
	out  outcomes
}

func (h *basicHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b := h.b
	var buf [256]byte
	user, pass, ok := parseBasic(r.Header["Authorization"], buf[:])
	if !ok {
		inc(h.out.denied)
		b.unauthorized(w)
		return
	}
	now := time.Now()
	key, hasKey := b.fails.KeyOf(r)
	if hasKey {
		if retry, exhausted := b.fails.Exhausted(key, now); exhausted {
			inc(h.out.limited)
			w.Header()["Retry-After"] = []string{strconv.FormatInt(int64(math.Ceil(retry.Seconds())), 10)}
			plain(w, http.StatusTooManyRequests, "429 Too Many Requests: too many failed logins, retry later\n")
			return
		}
	}
	valid, err := b.check(r, user, pass)
	if err != nil {
		w.WriteHeader(499) // the client left while waiting for a bcrypt slot
		return
	}
	if !valid {
		if hasKey {
			b.fails.Spend(key, now)
		}
		inc(h.out.denied)
		b.log.Info("basic auth: wrong user or password", "user", string(user), "client", limit.ClientAddr(r).String(), "path", r.URL.Path)
		b.unauthorized(w)
		return
	}
	inc(h.out.ok)
	if info := reqinfo.From(r.Context()); info != nil {
		info.User = string(user)
	}
	h.next.ServeHTTP(w, r)
}

func (b *Basic) unauthorized(w http.ResponseWriter) {
	w.Header()["Www-Authenticate"] = b.challenge
	plain(w, http.StatusUnauthorized, "401 Unauthorized\n")
}

func plain(w http.ResponseWriter, status int, body string) {
	h := w.Header()
	h["Content-Type"] = []string{"text/plain; charset=utf-8"}
	h["X-Content-Type-Options"] = []string{"nosniff"}
	h["Cache-Control"] = []string{"no-store"}
	h["Content-Length"] = []string{strconv.Itoa(len(body))}
	w.WriteHeader(status)
	w.Write([]byte(body))
}
