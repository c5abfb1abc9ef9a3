package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/edgeapp/edgeapp/edged/tlsconf/rfc2136"
	"github.com/edgeapp/edgeapp/internal/systemd"
)

// Modes of a site's TLS.
const (
	ModeACME     = "acme"
	ModeInternal = "internal"
	ModeOff      = "off"
	ModeManual   = "manual"
)

// Challenge names.
const (
	ChallengeHTTP01    = "http-01"
	ChallengeTLSALPN01 = "tls-alpn-01"
	ChallengeDNS01     = "dns-01"
)

// CA presets accepted in Options.CA besides a directory URL.
const (
	CAProduction = "production"
	CAStaging    = "staging"
)

// DefaultStorage is where certificates live when Options.Storage is empty
// and systemd gave no STATE_DIRECTORY.
const DefaultStorage = "/var/lib/edged"

// OnDemand configures certificates obtained at the first handshake for a
// name that is not known in advance.
type OnDemand struct {
	// Ask is a URL; GET Ask?domain=NAME must answer 200 for NAME to get a
	// certificate. Required: on-demand without it lets anyone who can point
	// DNS at us make us order certificates.
	Ask string
	// RateLimit certificates may be ordered per RateInterval (all names
	// together). 0 means 10 per minute.
	RateLimit    int
	RateInterval time.Duration
	// RefuseCacheFor is how long a name the ask hook refused is refused
	// again without asking. 0 means 1 minute.
	RefuseCacheFor time.Duration
	// AskRate caps ask calls per second and AskConcurrency those in
	// flight; 0 means DefaultAskRate, DefaultAskConcurrency.
	AskRate, AskConcurrency int
}

// DNS configures the DNS-01 challenge: TXT records are added and removed
// on the zone's primary server through RFC 2136 dynamic updates signed
// with a TSIG key ([tls.dns] in edged.toml). It is what wildcard names
// (*.example.com) need.
type DNS struct {
	// Server is the primary accepting updates, host:port.
	Server string
	// Zone updated; "" = found by an SOA lookup of each name.
	Zone string
	// KeyName and Algorithm of the TSIG key ("" = as the key file says;
	// the algorithm defaults to hmac-sha256). SecretFile holds the secret
	// (a bare base64 secret, or a BIND or Knot key file); it is read at
	// every update and never kept in memory, logged or shown.
	KeyName, Algorithm, SecretFile string
	// TTL of the challenge records (default 60s).
	TTL time.Duration
	// Resolvers used to find the zone and to check that the record is
	// visible before the CA is asked to look ("host:port"; default: the
	// system's resolvers, then the zone's authoritative servers).
	Resolvers []string
	// PropagationTimeout bounds that check (default 2 min; -1 skips it);
	// PropagationDelay waits before the first check (default 0).
	PropagationTimeout, PropagationDelay time.Duration
}

// provider is the RFC 2136 client for these settings.
func (d *DNS) provider() *rfc2136.Provider {
	return &rfc2136.Provider{Server: d.Server, Zone: d.Zone, KeyName: d.KeyName, Algorithm: d.Algorithm,
		SecretFile: d.SecretFile, TTL: d.TTL}
}

// dnsKeys are the edged.toml keys under [tls.dns] of the provider's settings.
var dnsKeys = map[string]string{
	rfc2136.SettingServer:     "server",
	rfc2136.SettingZone:       "zone",
	rfc2136.SettingKeyName:    "tsig_key",
	rfc2136.SettingAlgorithm:  "tsig_algorithm",
	rfc2136.SettingSecretFile: "tsig_secret_file",
	rfc2136.SettingTTL:        "ttl",
}

func checkDNSProvider(d *DNS) []error {
	err := d.provider().Check()
	if err == nil {
		return nil
	}
	var out []error
	for _, e := range unjoinErr(err) {
		field := "dns"
		var ce *rfc2136.CheckError
		if errors.As(e, &ce) && dnsKeys[ce.Setting] != "" {
			field = "dns." + dnsKeys[ce.Setting]
		}
		out = append(out, &OptionError{field, e})
	}
	return out
}

func unjoinErr(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// OptionError is a problem with one [tls] setting; Field is its key under
// [tls] ("dns.server"), so config can point at its line.
type OptionError struct {
	Field string
	Err   error
}

func (e *OptionError) Error() string { return "tls." + e.Field + ": " + e.Err.Error() }

func (e *OptionError) Unwrap() error { return e.Err }

// Options are the process-wide TLS settings ([tls] in edged.toml).
type Options struct {
	Email string
	// CA is an ACME directory URL, or "production" (default, Let's Encrypt)
	// or "staging" (Let's Encrypt's staging CA).
	CA string
	// CARoot is a PEM file of roots trusted for the CA's own HTTPS (a
	// private ACME CA such as step-ca, or Pebble).
	CARoot string
	// Challenges enabled: "http-01", "tls-alpn-01", "dns-01". Default
	// all that are possible (dns-01 needs DNS). With dns-01 and another,
	// wildcard names are validated by DNS-01 and the others by HTTP-01
	// or TLS-ALPN-01; with dns-01 alone every name is.
	Challenges []string
	// DNS is how DNS-01 records are published; nil disables DNS-01.
	DNS *DNS
	// Storage directory for certificates, keys, locks and the internal CA.
	// Default $STATE_DIRECTORY, else /var/lib/edged.
	Storage string
	// Backend, when set, holds certificates, keys, locks, the internal CA
	// and on-demand decisions in place of the Storage directory (a
	// cluster's etcd); the directory then holds only the internal CA's
	// exported root.
	Backend certmagic.Storage
	// KeyType of certificate keys: "p256" (default), "p384", "rsa2048",
	// "rsa4096", "ed25519".
	KeyType string
	// RenewalWindowRatio is the part of a certificate's lifetime, at its
	// end, in which it is renewed (certmagic's default 1/3 when 0); ACME
	// renewal information from the CA (ARI) takes precedence.
	RenewalWindowRatio float64
	// Profile is the ACME profile to ask for ("" lets the CA choose).
	Profile string
	// AltHTTPPort and AltTLSALPNPort are the ports the challenges are
	// answered on when they are not 80 and 443 (the CA still connects to
	// 80/443 in production, so these are for port forwards and tests).
	AltHTTPPort, AltTLSALPNPort int
	// RenewCheckInterval is how often certificates are checked for renewal
	// and expiry (default 10 min). Tests with short-lived certificates
	// lower it.
	RenewCheckInterval time.Duration
	// RetryMin is the wait after the first failed attempt to obtain a
	// certificate; it doubles after each failure up to 6 h (default 1 min).
	RetryMin time.Duration
	// InternalLifetime is the validity of leaf certificates from the
	// internal CA (default 7 days; renewed at RenewalWindowRatio).
	InternalLifetime time.Duration
	OnDemand         *OnDemand
	Log              *slog.Logger
}

// Site is one site's TLS ([[site]] hosts and tls in edged.toml).
type Site struct {
	Hosts []string
	// Mode is "acme" (the default when empty), "internal", "off" or
	// "manual" (CertFile and KeyFile).
	Mode              string
	CertFile, KeyFile string
	// OnDemand obtains certificates at the first handshake for any name
	// matching Hosts ("*" or "*.example.com" allowed); needs Options.OnDemand.
	OnDemand bool
}

// SiteError is a problem with one site, so config can point at its line.
type SiteError struct {
	Index int    // position in the sites slice
	Field string // "hosts", "tls", "cert", "key", "on_demand"
	Err   error
}

func (e *SiteError) Error() string {
	return fmt.Sprintf("site[%d].%s: %v", e.Index, e.Field, e.Err)
}

func (e *SiteError) Unwrap() error { return e.Err }

// Validate checks the options and the sites together, without side
// effects (for `edged -t`): modes, host names, wildcards (an ACME wildcard
// needs DNS-01), duplicate hosts, that manual files load and match their
// key, that on-demand sites have an ask URL, and that the DNS-01 key file
// reads. Site problems are *SiteError values and option problems with a
// key of their own *OptionError values, joined with errors.Join.
func Validate(o Options, sites []Site) error {
	errs := []error{}
	n, err := o.normalize()
	if err != nil {
		errs = append(errs, err)
	}
	if _, err := checkSites(sites, n.dns01); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, checkOnDemandOptions(o, sites)...)
	return errors.Join(errs...)
}

func checkOnDemandOptions(o Options, sites []Site) []error {
	var errs []error
	for i, s := range sites {
		if s.OnDemand && (o.OnDemand == nil || o.OnDemand.Ask == "") {
			errs = append(errs, &SiteError{i, "on_demand", errors.New(
				"on-demand TLS needs [tls.on_demand] ask = URL, which must answer 200 for names that may get a certificate; without it anyone pointing DNS at this server could make it order certificates")})
		}
	}
	return errs
}

// manualCert is a loaded manual certificate.
type manualCert struct {
	cert *tls.Certificate
	file string
}

// checkSites validates and loads manual certificates (reads only).
func checkSites(sites []Site, dns01 bool) (map[int]*manualCert, error) {
	var errs []error
	manual := map[int]*manualCert{}
	seen := map[string]int{}
	for i, s := range sites {
		mode := s.Mode
		if mode == "" {
			mode = ModeACME
		}
		switch mode {
		case ModeACME, ModeInternal, ModeOff, ModeManual:
		default:
			errs = append(errs, &SiteError{i, "tls", fmt.Errorf("unknown tls mode %q: want acme, internal, off or a {cert, key} table", s.Mode)})
			continue
		}
		if mode == ModeOff {
			continue
		}
		if len(s.Hosts) == 0 && mode != ModeManual {
			errs = append(errs, &SiteError{i, "hosts", fmt.Errorf("tls = %q needs at least one host name", mode)})
		}
		if s.OnDemand && mode != ModeACME {
			errs = append(errs, &SiteError{i, "on_demand", fmt.Errorf("on-demand TLS works only with tls = \"acme\", not %q", mode)})
		}
		for _, h := range siteHosts(s, mode) {
			if err := checkHost(h, mode, s.OnDemand, dns01); err != nil {
				errs = append(errs, &SiteError{i, "hosts", err})
				continue
			}
			key := normHost(h)
			if j, dup := seen[key]; dup {
				errs = append(errs, &SiteError{i, "hosts", fmt.Errorf("host %q is already in site[%d]; a host can have only one certificate source", h, j)})
				continue
			}
			seen[key] = i
		}
		if mode == ModeManual {
			mc, err := loadManual(s)
			if err != nil {
				field := "cert"
				if s.CertFile != "" && s.KeyFile == "" {
					field = "key"
				}
				errs = append(errs, &SiteError{i, field, err})
				continue
			}
			manual[i] = mc
		}
	}
	return manual, errors.Join(errs...)
}

func checkHost(h, mode string, onDemand, dns01 bool) error {
	if h == "" {
		return errors.New("empty host name")
	}
	if strings.ContainsAny(h, "/: \t") && net.ParseIP(h) == nil {
		return fmt.Errorf("host %q: want a bare name (no scheme, port or path)", h)
	}
	if h == "*" {
		if !onDemand && mode != ModeManual {
			return fmt.Errorf(`host "*" (every name) needs on_demand = true with an ask URL, or a manual certificate; tls = %q cannot have a certificate for names it does not know`, mode)
		}
		return nil
	}
	if strings.Contains(h, "*") {
		if !strings.HasPrefix(h, "*.") || h[2:] == "" || strings.Contains(h[2:], "*") {
			return fmt.Errorf("host %q: a wildcard must be the whole leftmost label, as in *.example.com", h)
		}
		if mode == ModeACME && !onDemand && !dns01 {
			return fmt.Errorf("host %q: a wildcard certificate from an ACME CA needs the DNS-01 challenge: configure [tls.dns] (an RFC 2136 server and TSIG key), or use on_demand = true (one certificate per name, behind an ask URL), tls = \"internal\", or a manual cert", h)
		}
	}
	return nil
}

// loadManual reads and checks a manual certificate and key.
func loadManual(s Site) (*manualCert, error) {
	if s.CertFile == "" || s.KeyFile == "" {
		return nil, errors.New("a manual certificate needs both cert and key files")
	}
	c, err := tls.LoadX509KeyPair(s.CertFile, s.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("loading certificate %s with key %s: %w", s.CertFile, s.KeyFile, err)
	}
	if c.Leaf == nil {
		if c.Leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return nil, fmt.Errorf("parsing certificate %s: %w", s.CertFile, err)
		}
	}
	return &manualCert{cert: &c, file: s.CertFile}, nil
}

// manualWarnings are problems with a manual certificate that do not stop
// it being served: names it does not cover, expiry.
func manualWarnings(s Site, c *tls.Certificate) []string {
	var w []string
	for _, h := range s.Hosts {
		if h == "*" {
			continue
		}
		name := h
		if strings.HasPrefix(name, "*.") {
			name = "wildcard-check" + name[1:]
		}
		if c.Leaf.VerifyHostname(name) != nil {
			w = append(w, fmt.Sprintf("certificate %s does not cover host %s", s.CertFile, h))
		}
	}
	if time.Now().After(c.Leaf.NotAfter) {
		w = append(w, fmt.Sprintf("certificate %s expired on %s", s.CertFile, c.Leaf.NotAfter.UTC().Format(time.RFC3339)))
	}
	return w
}

// siteHosts: a manual certificate without hosts serves every name no other
// site claims (nginx's default_server).
func siteHosts(s Site, mode string) []string {
	if len(s.Hosts) == 0 && mode == ModeManual {
		return []string{"*"}
	}
	return s.Hosts
}

func normHost(h string) string { return strings.TrimSuffix(strings.ToLower(h), ".") }

// normalized options, with defaults filled in and files read.
type normOptions struct {
	Options
	caURL      string
	roots      *x509.CertPool
	keyType    certmagic.KeyType
	http01     bool
	tlsalpn01  bool
	dns01      bool
	storageDir string
}

func (o Options) normalize() (*normOptions, error) {
	n := &normOptions{Options: o}
	var errs []error
	switch o.CA {
	case "", CAProduction, "letsencrypt":
		n.caURL = certmagic.LetsEncryptProductionCA
	case CAStaging, "letsencrypt-staging":
		n.caURL = certmagic.LetsEncryptStagingCA
	default:
		u, err := url.Parse(o.CA)
		if err != nil || u.Scheme != "https" || u.Host == "" {
			errs = append(errs, fmt.Errorf("tls.ca %q: want an https:// ACME directory URL, %q or %q", o.CA, CAProduction, CAStaging))
		}
		n.caURL = o.CA
	}
	if o.CARoot != "" {
		pemBytes, err := os.ReadFile(o.CARoot)
		if err != nil {
			errs = append(errs, fmt.Errorf("tls.ca_root: reading %w", err))
		} else {
			n.roots = x509.NewCertPool()
			if !n.roots.AppendCertsFromPEM(pemBytes) {
				errs = append(errs, fmt.Errorf("tls.ca_root: %s holds no PEM certificate", o.CARoot))
			}
		}
	}
	switch strings.ToLower(o.KeyType) {
	case "", "p256":
		n.keyType = certmagic.P256
	case "p384":
		n.keyType = certmagic.P384
	case "rsa2048":
		n.keyType = certmagic.RSA2048
	case "rsa4096":
		n.keyType = certmagic.RSA4096
	case "ed25519":
		n.keyType = certmagic.ED25519
	default:
		errs = append(errs, fmt.Errorf("tls.key_type %q: want p256, p384, rsa2048, rsa4096 or ed25519", o.KeyType))
	}
	if len(o.Challenges) == 0 {
		n.http01, n.tlsalpn01, n.dns01 = true, true, o.DNS != nil
	}
	for _, c := range o.Challenges {
		switch strings.ToLower(c) {
		case ChallengeHTTP01:
			n.http01 = true
		case ChallengeTLSALPN01:
			n.tlsalpn01 = true
		case ChallengeDNS01:
			n.dns01 = true
			if o.DNS == nil {
				errs = append(errs, &OptionError{"challenges", errors.New("dns-01 needs [tls.dns]: the server that accepts RFC 2136 updates for the zone, and its TSIG key")})
			}
		default:
			errs = append(errs, &OptionError{"challenges", fmt.Errorf("unknown challenge %q: want http-01, tls-alpn-01 or dns-01", c)})
		}
	}
	if d := o.DNS; d != nil {
		if !n.dns01 {
			errs = append(errs, &OptionError{"challenges", errors.New("[tls.dns] is set but challenges does not list dns-01")})
		}
		errs = append(errs, checkDNSProvider(d)...)
		for _, r := range d.Resolvers {
			if r == "" || strings.ContainsAny(r, " /") {
				errs = append(errs, &OptionError{"dns.resolvers", fmt.Errorf("%q: want host or host:port", r)})
			}
		}
		if d.PropagationTimeout < -1 || d.PropagationDelay < 0 {
			errs = append(errs, &OptionError{"dns", errors.New("propagation_timeout and propagation_delay must not be negative")})
		}
	}
	if o.RenewalWindowRatio < 0 || o.RenewalWindowRatio >= 1 {
		errs = append(errs, fmt.Errorf("tls.renewal_window %v: want a ratio between 0 and 1 (e.g. 0.33)", o.RenewalWindowRatio))
	}
	if od := o.OnDemand; od != nil {
		if od.Ask != "" {
			u, err := url.Parse(od.Ask)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				errs = append(errs, fmt.Errorf("tls.on_demand.ask %q: want an http:// or https:// URL", od.Ask))
			}
		}
		if od.RateLimit < 0 || od.RateInterval < 0 || od.RefuseCacheFor < 0 {
			errs = append(errs, errors.New("tls.on_demand: rate limit, interval and refuse cache must not be negative"))
		}
	}
	n.storageDir = o.Storage
	if n.storageDir == "" {
		n.storageDir = systemd.StateDir(DefaultStorage)
	}
	if n.RenewCheckInterval <= 0 {
		n.RenewCheckInterval = certmagic.DefaultRenewCheckInterval
	}
	if n.RetryMin <= 0 {
		n.RetryMin = time.Minute
	}
	if n.InternalLifetime <= 0 {
		n.InternalLifetime = 7 * 24 * time.Hour
	}
	if n.Log == nil {
		n.Log = slog.New(slog.DiscardHandler)
	}
	return n, errors.Join(errs...)
}
