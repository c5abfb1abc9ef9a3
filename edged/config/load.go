package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/edgeapp/edgeapp/edged/accesslog"
	"github.com/edgeapp/edgeapp/edged/cache"
	"github.com/edgeapp/edgeapp/edged/compress"
	"github.com/edgeapp/edgeapp/edged/connlimit"
	"github.com/edgeapp/edgeapp/edged/engine"
	"github.com/edgeapp/edgeapp/edged/proxy"
	"github.com/edgeapp/edgeapp/edged/static"
	"github.com/edgeapp/edgeapp/edged/tlsconf"
	"github.com/edgeapp/edgeapp/internal/logging"
	"github.com/edgeapp/edgeapp/internal/systemd"
	"github.com/edgeapp/edgeapp/internal/tomlconf"
	"golang.org/x/net/http/httpguts"
)

// Load reads, decodes, defaults and validates path. The error lists every
// problem found, each with file, line and key.
func Load(path string) (*Config, error) {
	var c Config
	doc, err := tomlconf.Load(path, &c)
	if err != nil {
		return nil, err
	}
	c.Doc = doc
	return c.finish()
}

// finish reads the drop-ins, applies defaults and validates: the error
// lists every problem of every file, each in its file, at its line.
func (c *Config) finish() (*Config, error) {
	var errs tomlconf.Errors
	collect := func(err error) {
		var es tomlconf.Errors
		if errors.As(err, &es) {
			errs = append(errs, es...)
		} else if err != nil {
			errs = append(errs, &tomlconf.Error{File: c.Doc.File, Msg: err.Error()})
		}
	}
	collect(c.loadIncludes())
	c.ApplyDefaults()
	collect(c.Validate())
	if err := errs.Err(); err != nil {
		return nil, err
	}
	return c, nil
}

// Parse is Load for configuration text already in memory.
func Parse(file string, data []byte) (*Config, error) {
	var c Config
	doc, err := tomlconf.Decode(file, data, &c)
	if err != nil {
		return nil, err
	}
	c.Doc = doc
	return c.finish()
}

// DefaultRuntimeDir holds the admin socket when systemd gave no
// RUNTIME_DIRECTORY.
const DefaultRuntimeDir = "/run/edged"

// Defaults of [server] client_body_timeout and send_timeout, nginx's.
// Every engine reads the values from Server.
const (
	DefaultClientBodyTimeout = 60 * time.Second
	DefaultSendTimeout       = 60 * time.Second
)

// ApplyDefaults fills every value the file left out.
func (c *Config) ApplyDefaults() {
	s := &c.Server
	if !c.Doc.IsDefined("server", "http") {
		s.HTTP = []string{":80"}
	}
	if !c.Doc.IsDefined("server", "https") {
		s.HTTPS = []string{":443"}
	}
	c.dashboardDefaults()
	if !c.Doc.IsDefined("server", "admin") {
		s.Admin = "unix:" + filepath.Join(systemd.RuntimeDir(DefaultRuntimeDir), "admin.sock")
	}
	setDur(&s.ReadHeaderTimeout, c.Doc.IsDefined("server", "read_header_timeout"), 10*time.Second)
	setDur(&s.IdleTimeout, c.Doc.IsDefined("server", "idle_timeout"), 75*time.Second)
	setDur(&s.ShutdownTimeout, c.Doc.IsDefined("server", "shutdown_timeout"), 30*time.Second)
	setDur(&s.ClientBodyTimeout, c.Doc.IsDefined("server", "client_body_timeout"), DefaultClientBodyTimeout)
	setDur(&s.SendTimeout, c.Doc.IsDefined("server", "send_timeout"), DefaultSendTimeout)
	if !c.Doc.IsDefined("server", "max_connections") {
		s.MaxConnections = connlimit.DefaultMax
	}
	if !c.Doc.IsDefined("server", "max_connections_per_ip") {
		s.MaxConnectionsPerIP = connlimit.DefaultPerIP
	}
	if !c.Doc.IsDefined("server", "max_header_bytes") {
		s.MaxHeaderBytes = 64 << 10
	}
	if !c.Doc.IsDefined("server", "max_body") {
		s.MaxBody = 64 << 20
	}
	if !c.Doc.IsDefined("server", "client_body_buffer_size") {
		s.ClientBodyBufferSize = proxy.DefaultRequestMemory
	}
	if !c.Doc.IsDefined("server", "response_buffer_size") {
		s.ResponseBufferSize = proxy.DefaultResponseMemory
	}
	if !c.Doc.IsDefined("server", "response_temp_max") {
		s.ResponseTempMax = proxy.DefaultResponseFileMax
	}
	if s.TempDir == "" {
		s.TempDir = systemd.CacheDir(systemd.RuntimeDir(os.TempDir()))
	}
	if s.RequestIDHeader == "" {
		s.RequestIDHeader = "X-Request-ID"
	}
	if s.Engine == "" {
		s.Engine = engine.Default
	}
	if s.LogLevel == "" {
		s.LogLevel = "info"
	}
	if c.AccessLog.Output == "" {
		c.AccessLog.Output = "off"
	}
	if c.AccessLog.Format == "" {
		c.AccessLog.Format = "combined"
	}
	if !c.Doc.IsDefined("compress", "min_size") {
		c.Compress.MinSize = compress.DefaultMinSize
	}
	if c.Compress.Encodings == nil {
		c.Compress.Encodings = compress.DefaultEncodings
	}
	t := &c.TLS
	switch t.CA {
	case "", "letsencrypt":
		t.CA = "https://acme-v02.api.letsencrypt.org/directory"
	case "letsencrypt-staging", "staging":
		t.CA = "https://acme-staging-v02.api.letsencrypt.org/directory"
	}
	if t.Challenges == nil {
		t.Challenges = []string{"http-01", "tls-alpn-01"}
		if t.DNS.IsSet() {
			t.Challenges = append(t.Challenges, "dns-01")
		}
	}
	if t.Storage == "" {
		t.Storage = systemd.StateDir(tlsconf.DefaultStorage)
	}
	if t.KeyType == "" {
		t.KeyType = "p256"
	}
	if t.OnDemand.Rate == 0 {
		t.OnDemand.Rate = 10
	}
	if t.OnDemand.Interval == 0 {
		t.OnDemand.Interval = tomlconf.Duration(time.Minute)
	}
	if t.OnDemand.AskRate == 0 {
		t.OnDemand.AskRate = tlsconf.DefaultAskRate
	}
	if t.OnDemand.AskConcurrency == 0 {
		t.OnDemand.AskConcurrency = tlsconf.DefaultAskConcurrency
	}
	for i := range c.Sites {
		site := &c.Sites[i]
		if site.TLS.Mode == "" {
			site.TLS.Mode = defaultTLSMode(site.Hosts)
		}
		if site.RedirectHTTP == nil {
			on := true
			site.RedirectHTTP = &on
		}
		for j := range site.Routes {
			r := &site.Routes[j]
			if r.Status == 0 {
				switch {
				case r.Redirect != "":
					r.Status = 308
				case r.Respond != "":
					r.Status = 200
				}
			}
			if r.Static != "" {
				if r.Index == nil {
					r.Index = static.DefaultIndex
				}
				if r.Precompressed == nil {
					r.Precompressed = static.DefaultPrecompressed
				}
			}
		}
	}
	for _, u := range c.Upstreams {
		if u != nil {
			u.applyDefaults()
		}
	}
	for _, k := range c.Caches {
		if k == nil {
			continue
		}
		if k.Memory == 0 {
			k.Memory = 64 << 20
		}
		if k.DiskMax == 0 {
			k.DiskMax = 1 << 30
		}
		if k.MaxObject == 0 {
			k.MaxObject = 16 << 20
		}
		setDur(&k.LockTimeout, k.LockTimeout != 0, 5*time.Second)
	}
	c.applyStreamDefaults()
}

func setDur(d *tomlconf.Duration, set bool, def time.Duration) {
	if !set {
		*d = tomlconf.Duration(def)
	}
}

// defaultTLSMode is "off" where no public CA could issue (no names, IPs,
// localhost), else "acme".
func defaultTLSMode(hosts []string) string {
	for _, h := range hosts {
		if h == "*" || isLocalName(h) {
			continue
		}
		return "acme"
	}
	return "off"
}

// publicCA reports whether the ACME CA is a public one, which can only
// validate public names; a private CA (step-ca, Pebble) may well issue for
// .internal or .test names. tlsconf owns the rule.
func publicCA(t TLS) bool { return tlsconf.PublicCA(t.CA, t.CARoot) }

// isLocalName reports a name no public CA issues for (tlsconf's rule).
func isLocalName(h string) bool { return !tlsconf.PublicName(h) }

// Validate checks everything that can be checked without side effects and
// returns all problems at once.
func (c *Config) Validate() error {
	var errs tomlconf.Errors
	bad := func(key, format string, args ...any) {
		errs = append(errs, c.Doc.Errorf(key, format, args...))
	}
	s := c.Server
	for i, a := range s.HTTP {
		if _, _, err := systemd.SplitAddr(a); err != nil {
			bad(fmt.Sprintf("server.http[%d]", i), "%v", err)
		}
	}
	for i, a := range s.HTTPS {
		if _, _, err := systemd.SplitAddr(a); err != nil {
			bad(fmt.Sprintf("server.https[%d]", i), "%v", err)
		}
	}
	if s.Admin != "" {
		if network, address, err := systemd.SplitAddr(s.Admin); err != nil {
			bad("server.admin", "%v", err)
		} else if network == "tcp" && !isLoopback(address) && s.AdminTokenFile == "" {
			bad("server.admin", "%q is reachable from other machines and the admin API can purge caches and reload: set admin_token_file, or use a loopback or unix: address", s.Admin)
		}
	}
	c.validateDashboard(bad)
	if f := s.AdminTokenFile; f != "" && !filepath.IsAbs(f) {
		bad("server.admin_token_file", "%q: want an absolute path", f)
	}
	if s.RequestIDHeader != "-" && !validHeaderName(s.RequestIDHeader) {
		bad("server.request_id_header", "%q is not a valid header name", s.RequestIDHeader)
	}
	if _, err := logging.ParseLevel(s.LogLevel); err != nil {
		bad("server.log_level", "%v", err)
	}
	for _, d := range []struct {
		key string
		v   tomlconf.Duration
	}{
		{"read_header_timeout", s.ReadHeaderTimeout}, {"idle_timeout", s.IdleTimeout},
		{"client_body_timeout", s.ClientBodyTimeout}, {"send_timeout", s.SendTimeout},
	} {
		if d.v == 0 {
			bad("server."+d.key, "0s would let a stalled client hold its connection forever; give a duration such as \"60s\"")
		}
	}
	if s.MaxConnections < 0 {
		bad("server.max_connections", "%d is negative (0 means no cap)", s.MaxConnections)
	}
	if s.MaxConnectionsPerIP < 0 {
		bad("server.max_connections_per_ip", "%d is negative (0 means no cap)", s.MaxConnectionsPerIP)
	}
	if s.ResponseBufferSize < 1024 {
		bad("server.response_buffer_size", "%v is too small (at least 1KiB)", s.ResponseBufferSize)
	}
	if s.TempDir != "" && !filepath.IsAbs(s.TempDir) {
		bad("server.temp_dir", "%q: want an absolute directory", s.TempDir)
	} else if c.Doc.IsDefined("server", "temp_dir") {
		// Only a directory the file names is tried here: the default one
		// is systemd's, which exists when edged runs as the service.
		if err := proxy.CheckBuffering(proxy.Buffering{Dir: s.TempDir}); err != nil {
			bad("server.temp_dir", "%v", err)
		}
	}
	if err := engine.CheckName(s.Engine); err != nil {
		bad("server.engine", "%v", err)
	}
	if s.MaxHeaderBytes < 1024 {
		bad("server.max_header_bytes", "%v is too small to hold a request's headers (at least 1KiB)", s.MaxHeaderBytes)
	}
	if err := accesslog.Check(accesslog.Options{Output: c.AccessLog.Output, Format: c.AccessLog.Format, Fields: c.AccessLog.Fields}); err != nil {
		bad("access_log", "%v", err)
	}
	c.Compress.Options().Check(func(field string, err error) { bad("compress."+field, "%v", err) })
	c.validateTLS(bad)
	c.validateSites(bad)
	c.validateUpstreams(bad)
	c.validateCaches(bad)
	c.validateLimits(bad)
	c.validateStreams(bad)
	c.validateCluster(bad)
	return errs.Err()
}

func (c *Config) validateTLS(bad func(string, string, ...any)) {
	t := c.TLS
	if u, err := url.Parse(t.CA); err != nil || u.Scheme != "https" && u.Scheme != "http" || u.Host == "" {
		bad("tls.ca", "%q: want an ACME directory URL or \"letsencrypt\" / \"letsencrypt-staging\"", t.CA)
	}
	if t.Email != "" && !strings.Contains(t.Email, "@") {
		bad("tls.email", "%q is not an email address", t.Email)
	}
	if t.CARoot != "" {
		if _, err := os.Stat(t.CARoot); err != nil {
			bad("tls.ca_root", "%v", err)
		}
	}
	for i, ch := range t.Challenges {
		if ch != "http-01" && ch != "tls-alpn-01" && ch != "dns-01" {
			bad(fmt.Sprintf("tls.challenges[%d]", i), "%q: want \"http-01\", \"tls-alpn-01\" or \"dns-01\"", ch)
		}
	}
	switch t.KeyType {
	case "p256", "p384", "rsa2048", "rsa4096", "ed25519":
	default:
		bad("tls.key_type", "%q: want p256, p384, rsa2048, rsa4096 or ed25519", t.KeyType)
	}
	if t.RenewalRatio < 0 || t.RenewalRatio >= 1 {
		bad("tls.renew_ratio", "%v: want a fraction between 0 and 1", t.RenewalRatio)
	}
	if t.Storage != StorageEtcd && !filepath.IsAbs(t.Storage) {
		bad("tls.storage", "%q: want an absolute directory, or \"etcd\" ([cluster])", t.Storage)
	}
	if t.OnDemand.AskRate < 0 {
		bad("tls.on_demand.ask_rate", "%d is negative", t.OnDemand.AskRate)
	}
	if t.OnDemand.AskConcurrency < 0 {
		bad("tls.on_demand.ask_concurrency", "%d is negative", t.OnDemand.AskConcurrency)
	}
	if a := t.OnDemand.Ask; a != "" {
		if u, err := url.Parse(a); err != nil || u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
			bad("tls.on_demand.ask", "%q: want an http(s) URL", a)
		}
	}
}

func (c *Config) validateSites(bad func(string, string, ...any)) {
	if len(c.Sites) == 0 {
		bad("site", "no [[site]] is defined: edged would answer every request with 404")
	}
	owner := map[string]int{}
	defaults := 0
	for i, site := range c.Sites {
		key := fmt.Sprintf("site[%d]", i)
		isDefault := len(site.Hosts) == 0
		for j, h := range site.Hosts {
			hk := fmt.Sprintf("%s.hosts[%d]", key, j)
			if h == "*" {
				isDefault = true
				continue
			}
			if err := checkHost(h); err != nil {
				bad(hk, "%v", err)
				continue
			}
			lh := strings.ToLower(h)
			if prev, ok := owner[lh]; ok {
				bad(hk, "host %q is already served by %s", h, c.Doc.Where(fmt.Sprintf("site[%d]", prev)))
			}
			owner[lh] = i
		}
		if isDefault {
			defaults++
			if defaults > 1 {
				bad(key+".hosts", "a second default site (no hosts or \"*\"): only one site may catch unknown hosts")
			}
		}
		switch site.TLS.Mode {
		case "acme":
			if isDefault && !site.OnDemand {
				bad(key+".tls", "tls = \"acme\" needs host names (or on_demand = true for a catch-all site)")
			}
			for j, h := range site.Hosts {
				if strings.HasPrefix(h, "*.") && !site.OnDemand && !c.TLS.DNS.IsSet() {
					bad(fmt.Sprintf("%s.hosts[%d]", key, j), "wildcard %q can get an ACME certificate only through the DNS-01 challenge: configure [tls.dns] (an RFC 2136 server and TSIG key), or list the names, use on_demand = true, or tls = { cert, key }", h)
				} else if h != "*" && isLocalName(h) && publicCA(c.TLS) {
					bad(fmt.Sprintf("%s.hosts[%d]", key, j), "%q is not a public name a CA can validate; use tls = \"internal\" or \"off\" for it", h)
				}
			}
		case "manual":
			for _, f := range [][2]string{{"cert", site.TLS.Cert}, {"key", site.TLS.Key}} {
				if _, err := os.Stat(f[1]); err != nil {
					bad(key+".tls", "%s file: %v", f[0], err)
				}
			}
		}
		if site.OnDemand && c.TLS.OnDemand.Ask == "" {
			bad(key+".on_demand", "on-demand TLS needs [tls.on_demand] ask = URL, so strangers cannot make edged order certificates")
		}
		if len(site.Routes) == 0 {
			bad(key, "site has no [[site.route]]")
		}
		c.validateShield(bad, key, site.Shield, false)
		paths := map[string]int{}
		for j, r := range site.Routes {
			c.validateRoute(bad, fmt.Sprintf("%s.route[%d]", key, j), r)
			c.validateShield(bad, fmt.Sprintf("%s.route[%d]", key, j), r.Shield, true)
			c.validateStatusPage(bad, fmt.Sprintf("%s.route[%d]", key, j), site.Shield, r)
			pk := r.Path
			if r.Exact {
				pk = "=" + pk
			}
			if prev, ok := paths[pk]; ok {
				bad(fmt.Sprintf("%s.route[%d].path", key, j), "path %q is already routed by route[%d]", r.Path, prev)
			}
			paths[pk] = j
		}
	}
}

func (c *Config) validateRoute(bad func(string, string, ...any), key string, r Route) {
	if !strings.HasPrefix(r.Path, "/") {
		bad(key+".path", "%q: a route path starts with /", r.Path)
	}
	var handlers []string
	for name, set := range map[string]bool{"upstream": r.Upstream != "", "static": r.Static != "", "redirect": r.Redirect != "", "respond": r.Respond != "" || r.Status != 0 && r.Redirect == "", "status_page": r.StatusPage} {
		if set {
			handlers = append(handlers, name)
		}
	}
	sort.Strings(handlers)
	if len(handlers) == 2 && handlers[0] == "static" && handlers[1] == "upstream" {
		// try_files: a file under static if there is one, else the upstream.
		handlers = handlers[1:]
		if r.Fallback != "" {
			bad(key+".fallback", "a route with static and upstream sends missing files to the upstream; fallback does not apply")
		}
	}
	switch len(handlers) {
	case 0:
		bad(key, "route has no handler: set one of upstream, static, redirect, respond or status_page")
	case 1:
	default:
		bad(key, "route has several handlers (%s): set exactly one", strings.Join(handlers, ", "))
	}
	if r.Upstream != "" {
		if _, ok := c.Upstreams[r.Upstream]; !ok {
			bad(key+".upstream", "no [upstream.%s] is defined", r.Upstream)
		}
	}
	if r.CacheSetCookie != "" {
		if r.Cache == "" {
			bad(key+".cache_set_cookie", "goes with cache = NAME")
		} else if _, ok := cache.SetCookieModes[r.CacheSetCookie]; !ok {
			bad(key+".cache_set_cookie", "%q: want \"pass\", \"store\" or \"strip\"", r.CacheSetCookie)
		}
	}
	if r.Cache != "" {
		if r.Upstream == "" {
			bad(key+".cache", "cache goes with an upstream route")
		}
		if _, ok := c.Caches[r.Cache]; !ok {
			bad(key+".cache", "no [cache.%s] is defined", r.Cache)
		}
	}
	if r.StripPrefix && r.Upstream == "" {
		bad(key+".strip_prefix", "strip_prefix goes with an upstream route")
	}
	if r.Upgrades != nil && r.Upstream == "" {
		bad(key+".upgrades", "upgrades goes with an upstream route")
	}
	if r.RequestBuffering != nil && r.Upstream == "" {
		bad(key+".request_buffering", "request_buffering goes with an upstream route")
	}
	if r.ResponseBuffering != nil && r.Upstream == "" {
		bad(key+".response_buffering", "response_buffering goes with an upstream route")
	}
	for i, u := range r.Upgrades {
		if err := proxy.CheckUpgrade(u); err != nil {
			bad(fmt.Sprintf("%s.upgrades[%d]", key, i), "%v", err)
		}
	}
	if r.Static != "" {
		if !filepath.IsAbs(r.Static) {
			bad(key+".static", "%q: want an absolute directory", r.Static)
		} else if fi, err := os.Stat(r.Static); err != nil {
			bad(key+".static", "%v", err)
		} else if !fi.IsDir() {
			bad(key+".static", "%s is not a directory", r.Static)
		}
		r.StaticOptions().Check(func(field string, err error) { bad(key+"."+field, "%v", err) })
	}
	if r.Redirect != "" && (r.Status < 300 || r.Status > 308) {
		bad(key+".status", "%d is not a redirect status (301, 302, 303, 307, 308)", r.Status)
	}
	if r.Redirect == "" && r.Status != 0 && (r.Status < 100 || r.Status > 599) {
		bad(key+".status", "%d is not an HTTP status", r.Status)
	}
	for _, ops := range []struct {
		name string
		h    HeaderOps
	}{{"request_headers", r.RequestHeaders}, {"response_headers", r.ResponseHeaders}} {
		for op, m := range map[string]map[string]string{"set": ops.h.Set, "add": ops.h.Add} {
			for n, v := range m {
				if !validHeaderName(n) {
					bad(key+"."+ops.name+"."+op, "%q is not a valid header name", n)
				} else if !httpguts.ValidHeaderFieldValue(v) {
					bad(key+"."+ops.name+"."+op, "%s: the value has a control character (a line break would start a header of its own)", n)
				}
			}
		}
		for _, n := range ops.h.Remove {
			if !validHeaderName(n) {
				bad(key+"."+ops.name+".remove", "%q is not a valid header name", n)
			}
		}
	}
}

func (c *Config) validateCaches(bad func(string, string, ...any)) {
	for name, k := range c.Caches {
		key := "cache." + name
		if k == nil {
			continue
		}
		if k.Disk != "" && !filepath.IsAbs(k.Disk) {
			bad(key+".disk", "%q: want an absolute directory", k.Disk)
		}
		if k.MaxObject > k.Memory && k.Disk == "" {
			bad(key+".max_object", "%v is larger than the memory tier (%v) and there is no disk tier", k.MaxObject, k.Memory)
		}
		if f := k.TargetedCacheControl; f != "" && f != "-" && !httpguts.ValidHeaderFieldName(f) {
			bad(key+".targeted_cache_control", "%q is not a header field name", f)
		}
	}
}

func checkHost(h string) error {
	name := strings.TrimPrefix(h, "*.")
	if strings.Contains(name, "*") {
		return fmt.Errorf("host %q: a wildcard is allowed only as the whole first label (*.example.com)", h)
	}
	if _, err := netip.ParseAddr(strings.Trim(name, "[]")); err == nil {
		return nil
	}
	if strings.Contains(name, ":") {
		return fmt.Errorf("host %q: write host names without a port", h)
	}
	if len(name) == 0 || len(name) > 253 {
		return fmt.Errorf("host %q: not a host name", h)
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("host %q: not a host name", h)
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return fmt.Errorf("host %q: not a host name (write internationalised names in punycode)", h)
			}
		}
	}
	return nil
}

// isLoopback reports whether a TCP host:port is reachable only from this
// machine: a loopback address or "localhost". An empty host (every
// address) or another name is not.
func isLoopback(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.Unmap().IsLoopback()
}

// ParsePrefix accepts a CIDR or a single address (tomlconf's rule).
func ParsePrefix(s string) (netip.Prefix, error) { return tomlconf.ParsePrefix(s) }

func validHeaderName(n string) bool {
	if n == "" {
		return false
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte("\"(),/:;<=>?@[\\]{}", c) >= 0 {
			return false
		}
	}
	return true
}
