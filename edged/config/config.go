// Package config is the schema of edged.toml: plain structs decoded strictly
// from TOML, defaults, and validation whose messages name file, line and key.
// Nothing here runs; the server package compiles a validated Config into
// the runtime objects that serve requests.
package config

import (
	"fmt"

	"github.com/edgeapp/edgeapp/internal/tomlconf"
)

// DefaultPath is where the packaged edged reads its configuration.
const DefaultPath = "/etc/edged/edged.toml"

// Config is the whole of edged.toml.
type Config struct {
	// Include lists drop-in files (glob patterns, relative to this file's
	// directory) holding more sites, upstreams, caches, limit zones and
	// streams: include = ["/etc/edged/sites.d/*.toml"] (include.go).
	Include []string `toml:"include"`

	Server    Server               `toml:"server"`
	AccessLog AccessLog            `toml:"access_log"`
	Compress  Compress             `toml:"compress"`
	TLS       TLS                  `toml:"tls"`
	Sites     []Site               `toml:"site"`
	Upstreams map[string]*Upstream `toml:"upstream"`
	Caches    map[string]*Cache    `toml:"cache"`
	Limits    map[string]*Limit    `toml:"limit"`
	Streams   []Stream             `toml:"stream"`  // TCP/TLS stream proxies, mail ports (streams.go)
	Cluster   Cluster              `toml:"cluster"` // etcd shared by several edged nodes (cluster.go)

	Dashboard Dashboard `toml:"dashboard"` // the status page (dashboard.go)

	// Doc locates keys for error messages; nil for configs built in code.
	Doc *tomlconf.Doc `toml:"-"`
}

// Server holds listeners, limits and timeouts shared by every site.
type Server struct {
	// HTTP and HTTPS are bound only when systemd passed no socket of that
	// name ("http", "https"). Defaults: [":80"] and [":443"]; an empty list
	// means no listener of that kind.
	HTTP  []string `toml:"http"`
	HTTPS []string `toml:"https"`
	// Admin serves /metrics, /status and the purge API. "" disables it.
	// Default: unix:$RUNTIME_DIRECTORY/admin.sock, else unix:/run/edged/admin.sock.
	Admin string `toml:"admin"`
	// AdminTokenFile holds a bearer token the admin API then requires
	// (Authorization: Bearer TOKEN). Needed for an admin address that is
	// not loopback.
	AdminTokenFile string `toml:"admin_token_file"`

	ReadHeaderTimeout tomlconf.Duration `toml:"read_header_timeout"` // default 10s (slowloris)
	ReadTimeout       tomlconf.Duration `toml:"read_timeout"`        // whole request incl. body; default 0 = none (uploads may be slow)
	WriteTimeout      tomlconf.Duration `toml:"write_timeout"`       // default 0 = none (streams, SSE)
	IdleTimeout       tomlconf.Duration `toml:"idle_timeout"`        // keep-alive; default 75s
	ShutdownTimeout   tomlconf.Duration `toml:"shutdown_timeout"`    // drain on SIGTERM; default 30s
	MaxHeaderBytes    tomlconf.Size     `toml:"max_header_bytes"`    // default 64KiB; larger -> 431
	MaxBody           tomlconf.Size     `toml:"max_body"`            // default 64MiB; larger -> 413; 0 = unlimited
	H2C               bool              `toml:"h2c"`                 // HTTP/2 over cleartext on the http listener; default false
	// Engine serves client connections: "edged" (edged's own HTTP/1.1
	// engine) or "net/http" (Go's server, kept as a fallback).
	Engine string `toml:"engine"`

	// ClientBodyTimeout and SendTimeout bound the time between two reads of
	// a request body and between two writes to a client (nginx's
	// client_body_timeout and send_timeout), not the whole transfer.
	ClientBodyTimeout tomlconf.Duration `toml:"client_body_timeout"` // default 60s
	SendTimeout       tomlconf.Duration `toml:"send_timeout"`        // default 60s

	// Buffering between clients and upstreams (routes turn it on and off;
	// edged/proxy owns the defaults): a request body is kept in memory up
	// to client_body_buffer_size, a response up to response_buffer_size,
	// the rest in nameless files in temp_dir, at most response_temp_max
	// of a response ahead of its client.
	ClientBodyBufferSize tomlconf.Size `toml:"client_body_buffer_size"` // default 16KiB (nginx client_body_buffer_size)
	ResponseBufferSize   tomlconf.Size `toml:"response_buffer_size"`    // default 64KiB (nginx proxy_buffers)
	ResponseTempMax      tomlconf.Size `toml:"response_temp_max"`       // default 1GiB; 0 = memory only (nginx proxy_max_temp_file_size)
	TempDir              string        `toml:"temp_dir"`                // default $CACHE_DIRECTORY, else $RUNTIME_DIRECTORY, else /tmp
	// MaxConnections caps client connections held at once; past it a
	// connection gets a short 503 (plain HTTP) or is closed. Default
	// connlimit.DefaultMax; 0 = no cap.
	MaxConnections int `toml:"max_connections"`
	// MaxConnectionsPerIP caps the connections of one client address;
	// trusted_proxies are exempt. Default connlimit.DefaultPerIP; 0 = no cap.
	MaxConnectionsPerIP int `toml:"max_connections_per_ip"`

	// TrustedProxies lists the CIDRs whose X-Forwarded-* and Forwarded
	// headers are believed. Default: none.
	TrustedProxies []tomlconf.Prefix `toml:"trusted_proxies"`
	// RequestIDHeader is set on every request (kept from trusted proxies)
	// and echoed on the response. Default "X-Request-ID"; "-" disables it.
	RequestIDHeader string `toml:"request_id_header"`
	// LogLevel: debug, info, warn, error. Default info.
	LogLevel string `toml:"log_level"`

	ProxyProtocol ProxyProtocol `toml:"proxy_protocol"` // PROXY protocol from load balancers (streams.go)
	// HTTP3 serves HTTP/3 on the UDP sockets systemd passes as "quic" or,
	// without socket activation, on QUIC (default: the https addresses).
	HTTP3 *bool    `toml:"http3"` // default true
	QUIC  []string `toml:"quic"`
}

// AccessLog configures the per-request log.
type AccessLog struct {
	Output string   `toml:"output"` // "off" (default), "stdout", "stderr", "journal" or a file path; reopened on SIGUSR1
	Format string   `toml:"format"` // "combined" (default), "json" or a template with $variables (nginx log_format)
	Fields []string `toml:"fields"` // JSON keys and journal fields; default accesslog.DefaultFields
}

// Compress configures dynamic compression for routes that allow it.
type Compress struct {
	Types     []string      `toml:"types"`      // MIME type prefixes; default text/*, JSON, JavaScript, XML, SVG, wasm
	MinSize   tomlconf.Size `toml:"min_size"`   // default 1KiB
	Encodings []string      `toml:"encodings"`  // preference order; default ["zstd", "gzip"]
	GzipLevel int           `toml:"gzip_level"` // 1 (fast) to 9 (small); default 5
	ZstdLevel int           `toml:"zstd_level"` // 1 to 22; default 3
}

// TLS is the ACME account and certificate policy shared by all sites.
type TLS struct {
	Email        string   `toml:"email"`
	CA           string   `toml:"ca"`            // ACME directory URL, or "letsencrypt" (default) / "letsencrypt-staging"
	CARoot       string   `toml:"ca_root"`       // PEM file trusted for a private ACME CA
	Challenges   []string `toml:"challenges"`    // "http-01", "tls-alpn-01", "dns-01"; default all that are configured
	Storage      string   `toml:"storage"`       // directory (default $STATE_DIRECTORY, else /var/lib/edged), or "etcd" ([cluster])
	KeyType      string   `toml:"key_type"`      // p256 (default), p384, rsa2048, rsa4096
	RenewalRatio float64  `toml:"renew_ratio"`   // renew when this fraction of the lifetime is left; default 1/3
	Profile      string   `toml:"profile"`       // ACME profile, if the CA offers profiles
	HSTS         string   `toml:"hsts"`          // Strict-Transport-Security value for TLS sites; "" = none
	AltHTTPPort  int      `toml:"alt_http_port"` // port the CA validates HTTP-01 on, if not 80 (tests)
	AltTLSPort   int      `toml:"alt_tls_port"`  // port the CA validates TLS-ALPN-01 on, if not 443 (tests)
	OnDemand     OnDemand `toml:"on_demand"`
	DNS          TLSDNS   `toml:"dns"`
}

// TLSDNS publishes ACME DNS-01 challenge records by RFC 2136 dynamic
// update signed with TSIG; wildcard names need it. The secret is only ever
// in a file (tsig_secret_file), never in edged.toml.
type TLSDNS struct {
	Server             string            `toml:"server"`              // primary accepting updates, host:port
	Zone               string            `toml:"zone"`                // default: found by SOA lookup
	TSIGKey            string            `toml:"tsig_key"`            // key name; default: as the key file says
	TSIGAlgorithm      string            `toml:"tsig_algorithm"`      // default: as the key file says, else hmac-sha256
	TSIGSecretFile     string            `toml:"tsig_secret_file"`    // base64 secret, BIND or Knot key file
	TTL                tomlconf.Duration `toml:"ttl"`                 // of the TXT records; default 60s
	Resolvers          []string          `toml:"resolvers"`           // for zone lookup and propagation checks
	PropagationTimeout tomlconf.Duration `toml:"propagation_timeout"` // default 2m
	PropagationDelay   tomlconf.Duration `toml:"propagation_delay"`   // default 0
}

// IsSet reports whether [tls.dns] has any setting (then it must be
// complete: a partial one is an error, never silently ignored).
func (d *TLSDNS) IsSet() bool {
	return d.Server != "" || d.Zone != "" || d.TSIGKey != "" || d.TSIGAlgorithm != "" || d.TSIGSecretFile != "" ||
		d.TTL != 0 || len(d.Resolvers) > 0 || d.PropagationTimeout != 0 || d.PropagationDelay != 0
}

// OnDemand allows certificates for names not known in advance. It is off
// unless Ask is set: without a decision hook anyone could make edged order
// certificates for names they point at it.
type OnDemand struct {
	Ask      string            `toml:"ask"`      // URL asked GET ?domain=NAME; 200 allows
	Rate     int               `toml:"rate"`     // issuances allowed per Interval; default 10
	Interval tomlconf.Duration `toml:"interval"` // default 1m
	// AskRate caps calls to the ask hook per second, AskConcurrency those
	// in flight; defaults tlsconf.DefaultAskRate, DefaultAskConcurrency.
	AskRate        int `toml:"ask_rate"`
	AskConcurrency int `toml:"ask_concurrency"`
}

// Site is one virtual host.
type Site struct {
	Hosts []string `toml:"hosts"` // exact names and *.example.com wildcards; "*" or none = the default site
	// TLS is "acme", "internal", "off", or a table {cert = "...", key = "..."}.
	// Default: "off" for sites without hosts or with only IP/localhost names,
	// otherwise "acme".
	TLS          SiteTLS `toml:"tls"`
	RedirectHTTP *bool   `toml:"redirect_http"` // TLS sites redirect plain HTTP with 308; default true
	OnDemand     bool    `toml:"on_demand"`     // issue at first handshake (needs [tls.on_demand] ask)
	Routes       []Route `toml:"route"`
	Shield               // limits, access control, auth, error pages, maintenance (shield.go)
}

// SiteTLS is the tls key of a site: a mode string or manual files.
type SiteTLS struct {
	Mode string // acme, internal, off, manual ("" = default)
	Cert string
	Key  string
}

// UnmarshalTOML accepts `tls = "acme"` and `tls = { cert = "...", key = "..." }`.
func (t *SiteTLS) UnmarshalTOML(v any) error {
	switch x := v.(type) {
	case string:
		switch x {
		case "acme", "internal", "off":
			t.Mode = x
			return nil
		}
		return fmt.Errorf("tls %q: want \"acme\", \"internal\", \"off\" or { cert = \"...\", key = \"...\" }", x)
	case map[string]any:
		for k, val := range x {
			s, ok := val.(string)
			if !ok {
				return fmt.Errorf("tls.%s: want a file path string", k)
			}
			switch k {
			case "cert":
				t.Cert = s
			case "key":
				t.Key = s
			default:
				return fmt.Errorf("tls.%s: unknown key (want cert and key)", k)
			}
		}
		if t.Cert == "" || t.Key == "" {
			return fmt.Errorf("tls: manual certificates need both cert and key")
		}
		t.Mode = "manual"
		return nil
	}
	return fmt.Errorf("tls: want a string or a table, not %T", v)
}

// Route maps a path to exactly one handler: upstream, static, redirect or
// respond.
type Route struct {
	Path  string `toml:"path"`  // prefix ("/api/"), or the exact path when exact = true
	Exact bool   `toml:"exact"` // match Path exactly instead of as a prefix

	Upstream    string `toml:"upstream"`     // name of an [upstream.NAME]
	StripPrefix bool   `toml:"strip_prefix"` // remove Path from the request path before proxying
	// RequestBuffering reads a request's whole body before choosing a
	// server (nginx proxy_request_buffering); ResponseBuffering reads
	// responses as fast as the upstream sends them (nginx proxy_buffering).
	// Both default to true.
	RequestBuffering  *bool  `toml:"request_buffering"`
	ResponseBuffering *bool  `toml:"response_buffering"`
	Cache             string `toml:"cache"` // name of a [cache.NAME] in front of the upstream
	// CacheSetCookie: what the cache does with responses carrying
	// Set-Cookie: "pass" (default: not stored), "store" (stored and
	// replayed, RFC 9111), "strip" (stored without it).
	CacheSetCookie string `toml:"cache_set_cookie"`
	// Upgrades lists the protocols a request may switch to (Upgrade
	// header); default ["websocket"]. Others go upstream without Upgrade.
	Upgrades []string `toml:"upgrades"`

	Static        string   `toml:"static"`          // directory the Path prefix maps onto (nginx alias)
	Index         []string `toml:"index"`           // default ["index.html"]
	Browse        bool     `toml:"browse"`          // directory listings; default false
	Fallback      string   `toml:"fallback"`        // file under the root served when missing (SPA), e.g. "/index.html"
	Precompressed []string `toml:"precompressed"`   // sidecars to look for; default ["br", "zstd", "gzip"]; [] disables
	FollowSymlink bool     `toml:"follow_symlinks"` // allow symlinks that lead outside the root; default false
	CacheControl  string   `toml:"cache_control"`   // Cache-Control for static responses
	ServeHidden   bool     `toml:"serve_hidden"`    // serve dotfiles (.env, .git); default false: 404

	Redirect string `toml:"redirect"` // target; "{path}" and "{query}" are replaced, "{uri}" is both
	Respond  string `toml:"respond"`  // fixed body
	Status   int    `toml:"status"`   // for redirect (default 308) and respond (default 200)

	RequestHeaders  HeaderOps     `toml:"request_headers"`
	ResponseHeaders HeaderOps     `toml:"response_headers"`
	MaxBody         tomlconf.Size `toml:"max_body"`   // overrides [server] max_body for this route
	Compress        *bool         `toml:"compress"`   // dynamic compression; default true
	AccessLog       *bool         `toml:"access_log"` // log this route's requests; default true (nginx access_log off)
	EarlyData       bool          `toml:"early_data"` // serve safe HTTP/3 requests from 0-RTT data; default false
	Shield                        // limits, access control, auth, error pages, maintenance (shield.go)

	// StatusPage serves edged's live status page under Path; it must be
	// behind allow/deny or authentication (dashboard.go).
	StatusPage bool `toml:"status_page"`
}

// HeaderOps edits headers: Set replaces, Add appends, Remove deletes.
type HeaderOps struct {
	Set    map[string]string `toml:"set"`
	Add    map[string]string `toml:"add"`
	Remove []string          `toml:"remove"`
}

// Upstream is a named pool of servers.
type Upstream struct {
	Servers []ServerEntry `toml:"servers"`
	// Policy: round_robin (default, smooth weighted), least_conn,
	// random_two, hash, first.
	Policy  string `toml:"policy"`
	HashKey string `toml:"hash_key"` // for policy hash: client_ip (default), uri, header:NAME, cookie:NAME

	MaxFails    *int              `toml:"max_fails"`    // passive health; default 1; 0 disables
	FailTimeout tomlconf.Duration `toml:"fail_timeout"` // window and time out; default 10s

	ConnectTimeout        tomlconf.Duration `toml:"connect_timeout"`         // default 5s
	ResponseHeaderTimeout tomlconf.Duration `toml:"response_header_timeout"` // default 60s (504 after)
	IdleTimeout           tomlconf.Duration `toml:"idle_timeout"`            // idle upstream keep-alive; default 90s
	MaxIdle               int               `toml:"max_idle"`                // idle keep-alive connections per server; default 0 = as the load needs

	Retries         *int              `toml:"retries"`             // tries on another server when connecting failed; default 2
	RetryIdempotent bool              `toml:"retry_idempotent"`    // also retry idempotent requests that failed after sending
	RetryBodyMax    tomlconf.Size     `toml:"retry_body_max"`      // body bytes buffered for such retries; default 64KiB
	HostHeader      string            `toml:"host_header"`         // Host sent upstream; default the client's
	SendProxy       string            `toml:"send_proxy_protocol"` // "v1", "v2": a PROXY header opens each connection (then not reused)
	FlushInterval   tomlconf.Duration `toml:"flush_interval"`      // 0 = automatic (SSE and unknown length flush at once)

	// TLS to the servers (nginx: proxy_pass https://), verified against
	// the system's roots or tls_ca for tls_name (default each server's
	// host); tls_cert and tls_key answer servers that ask for a client
	// certificate.
	TLS     bool   `toml:"tls"`
	TLSName string `toml:"tls_name"` // nginx proxy_ssl_name
	TLSCA   string `toml:"tls_ca"`   // nginx proxy_ssl_trusted_certificate
	TLSCert string `toml:"tls_cert"` // nginx proxy_ssl_certificate
	TLSKey  string `toml:"tls_key"`  // nginx proxy_ssl_certificate_key
	// Protocol spoken to the servers: "http/1.1" (default), "h2" (HTTP/2
	// over TLS, by ALPN; needs tls = true) or "h2c" (HTTP/2 in cleartext);
	// gRPC needs h2 or h2c (nginx: grpc_pass grpcs:// and grpc://).
	Protocol string `toml:"protocol"`

	Health Health `toml:"health"`

	// Discovery (cluster.go): servers from DNS, re-resolved at the TTL
	// (nginx's server ... resolve), and from the cluster's etcd, where app
	// nodes register under a lease. They join the static servers.
	Resolve    []string `toml:"resolve"`     // "name:port": A and AAAA records
	ResolveSRV []string `toml:"resolve_srv"` // SRV names: targets, ports and weights
	Registry   string   `toml:"registry"`    // servers registered under <prefix>upstreams/NAME/
	Resolvers  []string `toml:"resolvers"`   // DNS servers; default /etc/resolv.conf's
}

// Discovers reports whether u finds servers at run time.
func (u *Upstream) Discovers() bool {
	return len(u.Resolve) > 0 || len(u.ResolveSRV) > 0 || u.Registry != ""
}

// ServerEntry is "addr" or { addr = "...", weight = 3, backup = true }.
type ServerEntry struct {
	Addr     string
	Weight   int
	Backup   bool
	MaxConns int
}

// UnmarshalTOML accepts a string or an inline table.
func (s *ServerEntry) UnmarshalTOML(v any) error {
	switch x := v.(type) {
	case string:
		s.Addr = x
		return nil
	case map[string]any:
		for k, val := range x {
			switch k {
			case "addr":
				a, ok := val.(string)
				if !ok {
					return fmt.Errorf("servers.addr: want a string")
				}
				s.Addr = a
			case "weight", "max_conns":
				n, ok := val.(int64)
				if !ok || n < 0 {
					return fmt.Errorf("servers.%s: want a non-negative integer", k)
				}
				if k == "weight" {
					s.Weight = int(n)
				} else {
					s.MaxConns = int(n)
				}
			case "backup":
				b, ok := val.(bool)
				if !ok {
					return fmt.Errorf("servers.backup: want true or false")
				}
				s.Backup = b
			default:
				return fmt.Errorf("servers.%s: unknown key (want addr, weight, backup, max_conns)", k)
			}
		}
		if s.Addr == "" {
			return fmt.Errorf("servers: a server table needs addr")
		}
		return nil
	}
	return fmt.Errorf("servers: want \"host:port\", \"unix:/path\" or { addr = ..., weight = ... }, not %T", v)
}

// Health configures active health checks; off unless Path is set.
type Health struct {
	Path     string            `toml:"path"`
	TCP      bool              `toml:"tcp"`      // without path: a check is a TCP connect (stream upstreams)
	Interval tomlconf.Duration `toml:"interval"` // default 5s
	Timeout  tomlconf.Duration `toml:"timeout"`  // default 2s
	Status   int               `toml:"status"`   // expected status; default any 2xx or 3xx
	Rise     int               `toml:"rise"`     // passes to come back up; default 2
	Fall     int               `toml:"fall"`     // failures to go down; default 3
	Host     string            `toml:"host"`     // Host header for checks
	// gRPC health checking protocol instead of a GET of path (h2 and h2c
	// upstreams): grpc.health.v1.Health/Check for grpc_service.
	GRPC        bool   `toml:"grpc"`
	GRPCService string `toml:"grpc_service"` // default "": the server as a whole
}

// Cache is a named HTTP cache routes can use.
type Cache struct {
	Memory               tomlconf.Size     `toml:"memory"`                 // memory tier; default 64MiB
	Disk                 string            `toml:"disk"`                   // directory; "" = memory only
	DiskMax              tomlconf.Size     `toml:"disk_max"`               // default 1GiB
	MaxObject            tomlconf.Size     `toml:"max_object"`             // default 16MiB
	Heuristic            bool              `toml:"heuristic"`              // heuristic freshness; default false
	StaleWhileRevalidate tomlconf.Duration `toml:"stale_while_revalidate"` // default when the origin says nothing; default 0
	StaleIfError         tomlconf.Duration `toml:"stale_if_error"`         // default 0
	LockTimeout          tomlconf.Duration `toml:"lock_timeout"`           // coalesced waiters give up after; default 5s
	IgnoreQuery          []string          `toml:"ignore_query"`           // query parameters left out of the key
	SortQuery            bool              `toml:"sort_query"`             // sort query parameters in the key
	// TargetedCacheControl is the RFC 9213 field meant for edged alone,
	// obeyed before CDN-Cache-Control and Cache-Control and never passed
	// on; default "Edged-Cache-Control", "-" for none.
	TargetedCacheControl string `toml:"targeted_cache_control"`
	CDNCacheControl      *bool  `toml:"cdn_cache_control"` // obey CDN-Cache-Control; default true
}
