// Package rfc2136 adds and removes DNS records on an authoritative server
// through RFC 2136 dynamic updates signed with TSIG (RFC 8945). It is a
// libdns provider (RecordAppender, RecordDeleter), which is what
// certmagic's DNS-01 solver needs to answer ACME DNS-01 challenges, and so
// to obtain wildcard certificates.
//
// Any server that accepts signed updates works: BIND (update-policy or
// allow-update with a key), Knot DNS (an acl with action: update), PowerDNS
// (with dnsupdate=yes and a TSIG key), Windows DNS with secure updates off
// for the key's zone.
//
// The TSIG secret is read from a file at every update and never kept in
// the Provider, so it cannot end up in a log line or a status page, and a
// rotated key file takes effect at the next update. The file may be a
// bare base64 secret, a BIND key file (as written by tsig-keygen or
// ddns-confgen) or a Knot key (as written by keymgr -t); see ReadKeyFile.
package rfc2136

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/libdns/libdns"
	"github.com/miekg/dns"
)

// Defaults.
const (
	DefaultAlgorithm = "hmac-sha256"
	DefaultTTL       = 60 * time.Second
	DefaultTimeout   = 10 * time.Second
)

// Algorithms are the TSIG algorithms accepted (RFC 8945 6; hmac-md5 is
// obsolete and refused).
var Algorithms = []string{"hmac-sha1", "hmac-sha224", "hmac-sha256", "hmac-sha384", "hmac-sha512"}

// Provider sends signed dynamic updates to one server. The zero TTL,
// Timeout and Algorithm mean the defaults above. It is safe for concurrent
// use.
type Provider struct {
	// Server is the primary that accepts updates, "host:port" (port 53
	// when omitted).
	Server string
	// Zone is the zone updated (the update's zone section). Empty means
	// the zone the caller names (certmagic finds it by an SOA lookup).
	Zone string
	// KeyName, Algorithm and SecretFile make the TSIG key. KeyName and
	// Algorithm may be left empty when the key file names them.
	KeyName    string
	Algorithm  string
	SecretFile string
	// TTL of the records added (when the record itself has none).
	TTL     time.Duration
	Timeout time.Duration
}

// Key is a TSIG key as read from a key file.
type Key struct {
	Name      string // as written in the file ("" for a bare secret)
	Algorithm string // "" when the file does not say
	Secret    string // base64
}

// key resolves the provider's key: the file's secret with the configured
// name and algorithm, or the file's own where none is configured.
func (p *Provider) key() (name, alg, secret string, err error) {
	keys, err := ReadKeyFile(p.SecretFile)
	if err != nil {
		return "", "", "", err
	}
	k, err := pick(keys, p.KeyName, p.SecretFile)
	if err != nil {
		return "", "", "", err
	}
	name, alg = p.KeyName, p.Algorithm
	if name == "" {
		name = k.Name
	}
	if alg == "" {
		alg = k.Algorithm
	}
	if alg == "" {
		alg = DefaultAlgorithm
	}
	if name == "" {
		return "", "", "", fmt.Errorf("TSIG key file %s holds a bare secret: set the key's name (tsig_key)", p.SecretFile)
	}
	if k.Algorithm != "" && !strings.EqualFold(k.Algorithm, alg) {
		return "", "", "", fmt.Errorf("TSIG key file %s has key %s for algorithm %s, not %s", p.SecretFile, name, k.Algorithm, alg)
	}
	if _, err := tsigAlgorithm(alg); err != nil {
		return "", "", "", err
	}
	return dns.CanonicalName(name), alg, k.Secret, nil
}

func tsigAlgorithm(alg string) (string, error) {
	for _, a := range Algorithms {
		if strings.EqualFold(alg, a) {
			return dns.Fqdn(a), nil
		}
	}
	return "", fmt.Errorf("TSIG algorithm %q: want one of %s", alg, strings.Join(Algorithms, ", "))
}

// Setting names a Provider field in a CheckError.
const (
	SettingServer     = "server"
	SettingZone       = "zone"
	SettingKeyName    = "key_name"
	SettingAlgorithm  = "algorithm"
	SettingSecretFile = "secret_file"
	SettingTTL        = "ttl"
)

// CheckError is a problem with one setting of a Provider.
type CheckError struct {
	Setting string // one of the Setting constants
	Err     error
}

func (e *CheckError) Error() string { return e.Err.Error() }

func (e *CheckError) Unwrap() error { return e.Err }

// Check validates the settings and reads the key file, without touching
// the network (for `edged -t`). Errors are *CheckError values joined with
// errors.Join; none of them shows the secret.
func (p *Provider) Check() error {
	var errs []error
	bad := func(setting string, err error) { errs = append(errs, &CheckError{setting, err}) }
	if p.Server == "" {
		bad(SettingServer, errors.New("no server: want the host:port of the primary that accepts updates"))
	} else if _, err := serverAddr(p.Server); err != nil {
		bad(SettingServer, err)
	}
	if p.Zone != "" {
		if _, ok := dns.IsDomainName(p.Zone); !ok || strings.Contains(p.Zone, "..") {
			bad(SettingZone, fmt.Errorf("zone %q is not a domain name", p.Zone))
		}
	}
	if p.KeyName != "" {
		if _, ok := dns.IsDomainName(p.KeyName); !ok || strings.Contains(p.KeyName, "..") {
			bad(SettingKeyName, fmt.Errorf("TSIG key name %q is not a domain name", p.KeyName))
		}
	}
	if p.Algorithm != "" {
		if _, err := tsigAlgorithm(p.Algorithm); err != nil {
			bad(SettingAlgorithm, err)
		}
	}
	if p.SecretFile == "" {
		bad(SettingSecretFile, errors.New("no TSIG secret file: updates must be signed"))
	} else if len(errs) == 0 {
		if _, _, _, err := p.key(); err != nil {
			bad(SettingSecretFile, err)
		}
	}
	if p.TTL < 0 || p.Timeout < 0 {
		bad(SettingTTL, errors.New("ttl and timeout must not be negative"))
	}
	return errors.Join(errs...)
}

func serverAddr(s string) (string, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		// No port: the whole string is the host.
		host, port = strings.Trim(s, "[]"), "53"
	}
	if host == "" || strings.ContainsAny(host, "/ ") {
		return "", fmt.Errorf("server %q: want host:port of the primary that accepts updates", s)
	}
	return net.JoinHostPort(host, port), nil
}

// AppendRecords adds recs to the zone (RFC 2136 2.5.1: add to an RRset;
// existing records of the same name are kept).
func (p *Provider) AppendRecords(ctx context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	return p.update(ctx, zone, recs, true)
}

// DeleteRecords removes exactly recs from the zone (RFC 2136 2.5.4:
// delete an RR from an RRset), so another challenge's record at the same
// name (example.com and *.example.com share one) stays. Deleting a record
// that is not there succeeds.
func (p *Provider) DeleteRecords(ctx context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	return p.update(ctx, zone, recs, false)
}

func (p *Provider) update(ctx context.Context, zone string, recs []libdns.Record, add bool) ([]libdns.Record, error) {
	updZone := dns.CanonicalName(zone)
	if p.Zone != "" {
		updZone = dns.CanonicalName(p.Zone)
	}
	what := "adding"
	if !add {
		what = "deleting"
	}
	rrs := make([]dns.RR, 0, len(recs))
	done := make([]libdns.Record, 0, len(recs))
	for _, rec := range recs {
		r := rec.RR()
		name := dns.CanonicalName(libdns.AbsoluteName(r.Name, dns.Fqdn(zone)))
		if !dns.IsSubDomain(updZone, name) {
			return nil, fmt.Errorf("rfc2136: %s %s %s: the name is not in zone %s", what, name, r.Type, updZone)
		}
		ttl := r.TTL
		if ttl <= 0 {
			ttl = p.TTL
		}
		if ttl <= 0 {
			ttl = DefaultTTL
		}
		rr, err := toRR(name, r.Type, r.Data, ttl)
		if err != nil {
			return nil, fmt.Errorf("rfc2136: %s %s: %w", what, name, err)
		}
		rrs = append(rrs, rr)
		r.TTL = ttl
		r.Name = libdns.RelativeName(name, dns.Fqdn(zone))
		parsed, err := r.Parse()
		if err != nil {
			return nil, fmt.Errorf("rfc2136: %s %s: %w", what, name, err)
		}
		done = append(done, parsed)
	}
	if len(rrs) == 0 {
		return nil, nil
	}
	m := new(dns.Msg)
	m.SetUpdate(updZone)
	if add {
		m.Insert(rrs)
	} else {
		m.Remove(rrs)
	}
	if err := p.exchange(ctx, m); err != nil {
		return nil, fmt.Errorf("rfc2136: %s %s %s in zone %s at %s: %w", what, rrs[0].Header().Name, dns.TypeToString[rrs[0].Header().Rrtype], updZone, p.Server, err)
	}
	return done, nil
}

// toRR builds a record from libdns's presentation-format data.
func toRR(name, typ, data string, ttl time.Duration) (dns.RR, error) {
	hdr := dns.RR_Header{Name: name, Class: dns.ClassINET, Ttl: uint32(ttl / time.Second)}
	if strings.EqualFold(typ, "TXT") {
		hdr.Rrtype = dns.TypeTXT
		return &dns.TXT{Hdr: hdr, Txt: splitTXT(data)}, nil
	}
	rr, err := dns.NewRR(fmt.Sprintf("%s %d IN %s %s", name, hdr.Ttl, typ, data))
	if err != nil {
		return nil, fmt.Errorf("record %s %q: %w", typ, data, err)
	}
	if rr == nil {
		return nil, fmt.Errorf("record %s %q: empty", typ, data)
	}
	return rr, nil
}

// splitTXT cuts a long text into the 255-byte strings a TXT record is made
// of (RFC 1035 3.3.14); resolvers join them again.
func splitTXT(s string) []string {
	var out []string
	for len(s) > 255 {
		out = append(out, s[:255])
		s = s[255:]
	}
	return append(out, s)
}

// exchange sends a signed update and checks the answer; over UDP first,
// TCP when the answer is truncated.
func (p *Provider) exchange(ctx context.Context, m *dns.Msg) error {
	name, alg, secret, err := p.key()
	if err != nil {
		return err
	}
	addr, err := serverAddr(p.Server)
	if err != nil {
		return err
	}
	algFQDN, _ := tsigAlgorithm(alg)
	timeout := p.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	m.SetTsig(name, algFQDN, 300, time.Now().Unix())
	var r *dns.Msg
	for _, network := range []string{"udp", "tcp"} {
		c := &dns.Client{Net: network, Timeout: timeout, TsigSecret: map[string]string{name: secret}}
		r, _, err = c.ExchangeContext(ctx, m, addr)
		if r != nil && r.Truncated && network == "udp" {
			continue
		}
		break
	}
	if r == nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("no answer: %w", err)
	}
	if r.Rcode != dns.RcodeSuccess {
		return rcodeError(r, name)
	}
	if err != nil {
		// The server said yes, but its answer failed our TSIG check:
		// the update was probably made, yet the answer is not trusted.
		return fmt.Errorf("the server's answer failed TSIG verification with key %s: %w", strings.TrimSuffix(name, "."), err)
	}
	if r.IsTsig() == nil {
		return fmt.Errorf("the server answered without a TSIG signature; is key %s known to it?", strings.TrimSuffix(name, "."))
	}
	return nil
}

// UpdateError is a server's refusal of an update.
type UpdateError struct {
	Rcode     int // the response code (REFUSED, NOTAUTH, ...)
	TSIGError int // the TSIG error (BADSIG, BADKEY, BADTIME) when the server gave one
	Key       string
}

func (e *UpdateError) Error() string {
	code := dns.RcodeToString[e.Rcode]
	if code == "" {
		code = fmt.Sprintf("rcode %d", e.Rcode)
	}
	key := strings.TrimSuffix(e.Key, ".")
	switch {
	case e.TSIGError == dns.RcodeBadKey:
		return fmt.Sprintf("the server refused the update (%s, BADKEY): it does not accept TSIG key %s for this zone (unknown key, another algorithm, or no update permission for it)", code, key)
	case e.TSIGError == dns.RcodeBadSig:
		return fmt.Sprintf("the server refused the update (%s, BADSIG): the signature with key %s does not verify; the secret differs from the server's", code, key)
	case e.TSIGError == dns.RcodeBadTime:
		return fmt.Sprintf("the server refused the update (%s, BADTIME): this machine's clock and the server's differ by more than 5 minutes", code)
	case e.Rcode == dns.RcodeRefused:
		return fmt.Sprintf("the server refused the update (REFUSED): key %s is not allowed to update this zone (BIND: update-policy/allow-update; Knot: an acl with action update)", key)
	case e.Rcode == dns.RcodeNotAuth:
		return "the server refused the update (NOTAUTH): it is not authoritative for this zone, or the key is not allowed to update it"
	case e.Rcode == dns.RcodeNotZone:
		return "the server refused the update (NOTZONE): the name is not inside the zone"
	}
	return fmt.Sprintf("the server refused the update (%s)", code)
}

func rcodeError(r *dns.Msg, key string) error {
	e := &UpdateError{Rcode: r.Rcode, Key: key}
	if t := r.IsTsig(); t != nil {
		e.TSIGError = int(t.Error)
	}
	return e
}
