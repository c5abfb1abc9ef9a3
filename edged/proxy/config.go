// Package proxy forwards requests to pools of upstream servers: connection
// pools per server (TCP and unix sockets), load-balancing policies, passive
// and active health, retries, and the HTTP/1.1 proxying rules (hop-by-hop
// headers, X-Forwarded-*, Forwarded, Upgrade, trailers, streaming).
//
// Configuration arrives as plain structs (UpstreamConfig, HandlerOptions);
// NewPool compiles one into a runtime Pool and NewHandler puts an
// http.Handler in front of it. A reload builds new pools beside the old ones,
// passing the old pool as prev so servers that did not change keep their
// health state, counters and idle connections; Start puts the new pool in
// service and Close retires the old one without disturbing its requests.
//
// Answers of its own: 502 when the server refused, failed or sent garbage
// before the response header, 503 when no server is available, 504 when
// connecting or the response header timed out; each with one log line that
// names the upstream, the server and the cause. A server that dies after the
// header was sent aborts the client connection (http.ErrAbortHandler), so
// the client sees the truncation.
//
// The upstream client is edged's own HTTP/1.1 client (not net/http's
// Transport): the request's goroutine writes the request head, straight
// from the client's request into a pooled buffer, and the body, then reads
// and parses the response head with edged/httpwire (strict RFC 9112: both
// Content-Length and Transfer-Encoding, a bad length, obs-fold and the
// like make the response invalid, a 502) and reads the body itself. 1xx
// responses are passed on (103 Early Hints) or skipped; 101 hands the two
// connections over to a tunnel. Kept-alive connections wait in a per-server
// idle list with no goroutine and no read of their own; a connection the
// server closed while idle shows up as EOF before the first byte of the
// response, and such a request goes again on a new connection to the same
// server when net/http would resend it (GET, HEAD, OPTIONS, TRACE, an
// Idempotency-Key; its body kept), without counting against the server.
// Before a request that cannot be sent twice, an idle connection is looked
// at with one non-blocking peek.
//
// Retries: a request goes to another server only if nothing of it was sent
// (connecting failed, or a kept-alive connection turned out closed), unless
// RetryIdempotent allows resending idempotent requests with small bodies.
package proxy

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/edgeapp/edgeapp/internal/systemd"
)

// Defaults applied by NewPool to zero-valued fields. MaxFails and Retries are
// taken literally (0 means off), so whoever maps a config file onto
// UpstreamConfig fills in DefaultMaxFails and DefaultRetries when the user
// said nothing.
const (
	DefaultMaxFails              = 1
	DefaultRetries               = 2
	DefaultFailTimeout           = 10 * time.Second
	DefaultConnectTimeout        = 5 * time.Second
	DefaultResponseHeaderTimeout = 60 * time.Second
	DefaultIdleConnTimeout       = 90 * time.Second
	DefaultMaxIdleConnsPerServer = 0 // automatic: see MaxIdleCeiling
	DefaultRetryBodyMax          = 64 << 10
	DefaultHealthInterval        = 5 * time.Second
	DefaultHealthTimeout         = 2 * time.Second
	DefaultHealthRise            = 2
	DefaultHealthFall            = 3
)

// ServerConfig is one upstream server.
type ServerConfig struct {
	Addr     string // "host:port", "unix:/path" or "unix:@abstract"
	Weight   int    // default 1
	Backup   bool   // used only when every primary server is unavailable
	MaxConns int    // in-flight requests at most; 0 = unlimited
}

// statusVerdict says why an HTTP health check's answer status fails the
// check ("" when it passes): the configured status, or any 2xx or 3xx.
func (h HealthConfig) statusVerdict(status int) string {
	if h.ExpectStatus != 0 {
		if status != h.ExpectStatus {
			return fmt.Sprintf("status %d, want %d", status, h.ExpectStatus)
		}
		return ""
	}
	if status < 200 || status >= 400 {
		return fmt.Sprintf("status %d", status)
	}
	return ""
}

// HealthConfig configures active health checks.
type HealthConfig struct {
	Path         string // "" = active checks off, unless Connect
	Connect      bool   // without Path: a check is a TCP connect (stream upstreams, nginx's stream health_check)
	Interval     time.Duration
	Timeout      time.Duration
	ExpectStatus int // 0 = any 2xx or 3xx
	Rise, Fall   int // consecutive passes to come up, failures to go down
	Host         string
	// GRPC: a check is a call of the gRPC health checking protocol
	// (grpc.health.v1.Health/Check) for GRPCService ("" = the whole
	// server), which passes when the answer is SERVING (h2health.go).
	GRPC        bool
	GRPCService string
}

// Active reports whether active checks run.
func (h HealthConfig) Active() bool { return h.Path != "" || h.Connect || h.GRPC }

// UpstreamConfig is a named pool of servers and how to use them.
type UpstreamConfig struct {
	Name    string
	Servers []ServerConfig
	// Policy: "round_robin" (default; smooth weighted like nginx),
	// "least_conn", "random_two", "hash", "first".
	Policy string
	// HashKey for Policy "hash": "client_ip" (default), "uri",
	// "header:NAME", "cookie:NAME".
	HashKey string

	// Passive health: MaxFails failures within FailTimeout take a server
	// out for FailTimeout. MaxFails 0 disables it; so does an upstream of
	// a single server, as in nginx (active checks still apply).
	MaxFails    int
	FailTimeout time.Duration

	ConnectTimeout        time.Duration
	ResponseHeaderTimeout time.Duration
	IdleConnTimeout       time.Duration
	// MaxIdleConnsPerServer caps the idle keep-alive connections kept per
	// server; 0 follows the load (see MaxIdleCeiling).
	MaxIdleConnsPerServer int

	// Retries is how many other servers are tried when connecting failed,
	// before any byte of the request was sent (any method).
	Retries int
	// RetryIdempotent also retries idempotent requests that failed after
	// they were sent; bodies up to RetryBodyMax bytes are buffered for it.
	RetryIdempotent bool
	RetryBodyMax    int64

	// Dynamic: the servers are found at run time (Pool.SetServers), so
	// the list may be empty at first.
	Dynamic bool

	HostHeader string // Host sent upstream; "" = the client's
	// SendProxy 1 or 2 opens every connection with a PROXY protocol
	// header of that version naming the client; such connections are
	// not reused. 0: none.
	SendProxy int
	// TLS: https to the servers (tls.go).
	TLS TLSConfig
	// Protocol spoken to the servers: "http/1.1" (the default), "h2"
	// (HTTP/2 over TLS, agreed by ALPN; needs TLS) or "h2c" (HTTP/2 over
	// cleartext with prior knowledge). HTTP/2 connections are shared by
	// many requests at once (h2.go).
	Protocol string
	Health   HealthConfig
}

// Protocols an upstream may speak (UpstreamConfig.Protocol).
const (
	ProtoHTTP1 = "http/1.1"
	ProtoH2    = "h2"
	ProtoH2C   = "h2c"
)

// isH2 reports whether the servers are spoken to in HTTP/2.
func (c UpstreamConfig) isH2() bool { return c.Protocol == ProtoH2 || c.Protocol == ProtoH2C }

var policies = map[string]bool{"": true, "round_robin": true, "least_conn": true, "random_two": true, "hash": true, "first": true}

// PolicyNames lists the policies, for messages and documentation.
const PolicyNames = "round_robin, least_conn, random_two, hash, first"

// Validate reports the first thing wrong with c, in words a person editing
// the config file understands.
func (c UpstreamConfig) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, &FieldError{Field: field, Err: fmt.Errorf(format, args...)})
	}
	if len(c.Servers) == 0 && !c.Dynamic {
		bad("servers", "an upstream needs at least one server")
	}
	for _, fe := range c.TLS.check() {
		errs = append(errs, fe)
	}
	if c.SendProxy < 0 || c.SendProxy > 2 {
		bad("send_proxy_protocol", "version %d, want 1 or 2", c.SendProxy)
	}
	switch c.Protocol {
	case "", ProtoHTTP1:
	case ProtoH2:
		if !c.TLS.Enabled {
			bad("protocol", "\"h2\" is HTTP/2 over TLS: set tls = true, or use \"h2c\" for HTTP/2 in cleartext")
		}
	case ProtoH2C:
		if c.TLS.Enabled {
			bad("protocol", "\"h2c\" is HTTP/2 in cleartext, but tls = true: use \"h2\" for HTTP/2 over TLS")
		}
	default:
		bad("protocol", "%q is not one of \"http/1.1\", \"h2\", \"h2c\"", c.Protocol)
	}
	if c.isH2() && c.SendProxy != 0 {
		bad("send_proxy_protocol", "a PROXY header names one client per connection, and an HTTP/2 connection carries many clients' requests: use protocol = \"http/1.1\"")
	}
	seen := make(map[string]bool, len(c.Servers))
	primaries := 0
	for i, s := range c.Servers {
		if err := checkAddr(s.Addr); err != nil {
			bad(fmt.Sprintf("servers[%d]", i), "%w", err)
		} else if seen[s.Addr] {
			bad(fmt.Sprintf("servers[%d]", i), "%q is listed twice", s.Addr)
		}
		seen[s.Addr] = true
		if s.Weight < 0 {
			bad(fmt.Sprintf("servers[%d].weight", i), "%d is negative", s.Weight)
		}
		if s.MaxConns < 0 {
			bad(fmt.Sprintf("servers[%d].max_conns", i), "%d is negative", s.MaxConns)
		}
		if !s.Backup {
			primaries++
		}
	}
	if len(c.Servers) > 0 && primaries == 0 {
		bad("servers", "every server is a backup; at least one must not be")
	}
	if !policies[c.Policy] {
		bad("policy", "%q is not one of %s", c.Policy, PolicyNames)
	}
	if c.HashKey != "" {
		if c.Policy != "hash" {
			bad("hash_key", "set, but policy is %q, not \"hash\"", c.Policy)
		} else if _, _, err := parseHashKey(c.HashKey); err != nil {
			bad("hash_key", "%w", err)
		}
	}
	if c.MaxFails < 0 {
		bad("max_fails", "%d is negative (0 turns passive health off)", c.MaxFails)
	}
	if c.Retries < 0 {
		bad("retries", "%d is negative", c.Retries)
	}
	if c.RetryBodyMax < 0 {
		bad("retry_body_max", "%d is negative", c.RetryBodyMax)
	}
	if c.MaxIdleConnsPerServer < 0 {
		bad("max_idle", "%d is negative", c.MaxIdleConnsPerServer)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"fail_timeout", c.FailTimeout}, {"connect_timeout", c.ConnectTimeout},
		{"response_header_timeout", c.ResponseHeaderTimeout}, {"idle_timeout", c.IdleConnTimeout},
		{"health.interval", c.Health.Interval}, {"health.timeout", c.Health.Timeout},
	} {
		if d.v < 0 {
			bad(d.name, "%v is negative", d.v)
		}
	}
	if strings.ContainsAny(c.HostHeader, " \t\r\n/") {
		bad("host_header", "%q is not a host name", c.HostHeader)
	}
	h := c.Health
	switch {
	case h.GRPC && !c.isH2():
		bad("health.grpc", "gRPC health checks need protocol = \"h2\" or \"h2c\"")
	case h.GRPC && h.Path != "":
		bad("health.grpc", "a check is either a gRPC health call or a GET of path, not both")
	case h.GRPCService != "" && !h.GRPC:
		bad("health.grpc_service", "goes with grpc = true")
	}
	if h.Path != "" && !strings.HasPrefix(h.Path, "/") {
		bad("health.path", "%q must start with /", h.Path)
	}
	if h.ExpectStatus != 0 && (h.ExpectStatus < 100 || h.ExpectStatus > 599) {
		bad("health.status", "%d is not an HTTP status", h.ExpectStatus)
	}
	if h.Rise < 0 || h.Fall < 0 {
		bad("health", "rise and fall must not be negative")
	}
	return errors.Join(errs...)
}

// FieldError is a problem with one setting of an upstream; Field is its
// key under [upstream.NAME] ("servers[1]", "health.path").
type FieldError struct {
	Field string
	Err   error
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Err.Error() }
func (e *FieldError) Unwrap() error { return e.Err }

// checkAddr accepts "unix:/abs/path" and "host:port".
func checkAddr(a string) error {
	_, _, err := systemd.SplitDialAddr(a)
	return err
}

// withDefaults fills zero values.
func (c UpstreamConfig) withDefaults() UpstreamConfig {
	if c.Policy == "" {
		c.Policy = "round_robin"
	}
	if c.Protocol == "" {
		c.Protocol = ProtoHTTP1
	}
	if c.Policy == "hash" && c.HashKey == "" {
		c.HashKey = "client_ip"
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.FailTimeout, DefaultFailTimeout)
	def(&c.ConnectTimeout, DefaultConnectTimeout)
	def(&c.ResponseHeaderTimeout, DefaultResponseHeaderTimeout)
	def(&c.IdleConnTimeout, DefaultIdleConnTimeout)
	def(&c.Health.Interval, DefaultHealthInterval)
	def(&c.Health.Timeout, DefaultHealthTimeout)
	if c.RetryBodyMax == 0 {
		c.RetryBodyMax = DefaultRetryBodyMax
	}
	if c.Health.Rise == 0 {
		c.Health.Rise = DefaultHealthRise
	}
	if c.Health.Fall == 0 {
		c.Health.Fall = DefaultHealthFall
	}
	servers := make([]ServerConfig, len(c.Servers))
	copy(servers, c.Servers)
	for i := range servers {
		if servers[i].Weight == 0 {
			servers[i].Weight = 1
		}
	}
	c.Servers = servers
	return c
}
