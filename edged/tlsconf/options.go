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
}

// Options are the process-wide TLS settings ([tls] in edged.toml).
type Options struct {
	Email string
	// CA is an ACME directory URL, or "production" (default, Let's Encrypt)
	// or "staging" (Let's Encrypt's staging CA).
	CA string
	// CARoot is a PEM file of roots trusted for the CA's own HTTPS (a
	// private ACME CA such as step-ca, or Pebble).
	CARoot string
	// Challenges enabled: "http-01", "tls-alpn-01". Default both.
	Challenges []string
	// Storage directory for certificates, keys, locks and the internal CA.
	// Default $STATE_DIRECTORY, else /var/lib/edged.
	Storage string
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

// ValidateSites checks sites without side effects (for `edged -t`): modes,
// host names, wildcards (an ACME wildcard needs DNS-01, which edged does
// not do), duplicate hosts, and that manual files load and match their key.
// Errors are *SiteError values joined with errors.Join. It cannot check
// that on-demand sites have an ask URL: use Validate for that.
func ValidateSites(sites []Site) error {
	_, err := checkSites(sites)
	return err
}

// Validate checks the options and the sites together, without side
// effects.
func Validate(o Options, sites []Site) error {
	errs := []error{}
	if _, err := o.normalize(); err != nil {
		errs = append(errs, err)
	}
	if err := ValidateSites(sites); err != nil {
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
func checkSites(sites []Site) (map[int]*manualCert, error) {
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
			if err := checkHost(h, mode, s.OnDemand); err != nil {
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

func checkHost(h, mode string, onDemand bool) error {
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
		if mode == ModeACME && !onDemand {
			return fmt.Errorf("host %q: a wildcard certificate from an ACME CA needs the DNS-01 challenge, which edged does not support yet; use on_demand = true (one certificate per name, behind an ask URL), tls = \"internal\", or a manual cert", h)
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
		n.http01, n.tlsalpn01 = true, true
	}
	for _, c := range o.Challenges {
		switch strings.ToLower(c) {
		case ChallengeHTTP01:
			n.http01 = true
		case ChallengeTLSALPN01:
			n.tlsalpn01 = true
		case "dns-01":
			errs = append(errs, errors.New("tls.challenges: dns-01 is not supported yet (it needs a DNS provider); use http-01 and/or tls-alpn-01"))
		default:
			errs = append(errs, fmt.Errorf("tls.challenges: unknown challenge %q: want http-01 or tls-alpn-01", c))
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
		// systemd's StateDirectory= sets this; it may list several.
		if sd := os.Getenv("STATE_DIRECTORY"); sd != "" {
			n.storageDir = strings.Split(sd, ":")[0]
		} else {
			n.storageDir = DefaultStorage
		}
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
