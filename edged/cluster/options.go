package cluster

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"time"
)

// Defaults for Options.
const (
	DefaultPrefix       = "/edged/"
	DefaultLockTTL      = 15 * time.Second
	DefaultDialTimeout  = 5 * time.Second
	DefaultOpTimeout    = 5 * time.Second
	DefaultSyncInterval = 500 * time.Millisecond
	// DefaultPurgeTTL is how long a purge stays in etcd for nodes that
	// were away; a node away longer than this that cannot replay the
	// history drops its cache tiers instead.
	DefaultPurgeTTL = 10 * time.Minute
)

// Options are [cluster] in edged.toml.
type Options struct {
	// Endpoints of the etcd cluster: "https://10.0.0.1:2379" or
	// "http://127.0.0.1:2379" (loopback only without TLS is the operator's
	// choice; plain http to another machine sends certificates' keys in
	// the clear, so Check refuses it unless InsecureTransport is set).
	Endpoints []string
	// Prefix under which every key of this edged cluster lives; several
	// clusters may share one etcd with different prefixes.
	Prefix string
	// Node is this edged's name in the cluster (default: the host name).
	Node string
	// CertFile and KeyFile are the TLS client certificate etcd asks for
	// (--client-cert-auth); CAFile the roots that sign etcd's server
	// certificates (default: the system's).
	CertFile, KeyFile, CAFile string
	// Username and PasswordFile for etcd's own authentication, if on.
	Username, PasswordFile string
	// InsecureTransport allows http:// endpoints that are not loopback.
	InsecureTransport bool
	// LockTTL is the lease of a certificate lock: a node that dies while
	// holding one blocks the others for at most this long.
	LockTTL time.Duration
	// DialTimeout bounds connecting; OpTimeout each request.
	DialTimeout, OpTimeout time.Duration
	// SyncInterval is how often cluster-wide rate limits exchange counts.
	SyncInterval time.Duration
	// PurgeTTL is how long purge records are kept for nodes that were away.
	PurgeTTL time.Duration
	// StateDir holds what this node keeps locally: the read-through copy
	// of the certificate storage and the last purge it applied.
	StateDir string
	Log      *slog.Logger
}

// Enabled reports whether a cluster is configured at all.
func (o Options) Enabled() bool { return len(o.Endpoints) > 0 }

// WithDefaults fills what o leaves out.
func (o Options) WithDefaults() Options {
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if !strings.HasSuffix(o.Prefix, "/") {
		o.Prefix += "/"
	}
	if o.Node == "" {
		o.Node, _ = os.Hostname()
	}
	if o.LockTTL == 0 {
		o.LockTTL = DefaultLockTTL
	}
	if o.DialTimeout == 0 {
		o.DialTimeout = DefaultDialTimeout
	}
	if o.OpTimeout == 0 {
		o.OpTimeout = DefaultOpTimeout
	}
	if o.SyncInterval == 0 {
		o.SyncInterval = DefaultSyncInterval
	}
	if o.PurgeTTL == 0 {
		o.PurgeTTL = DefaultPurgeTTL
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return o
}

// OptionError is a problem with one [cluster] key.
type OptionError struct {
	Key string
	Err error
}

func (e *OptionError) Error() string { return "cluster." + e.Key + ": " + e.Err.Error() }
func (e *OptionError) Unwrap() error { return e.Err }

// Check validates o (after WithDefaults) and reads its files, without
// connecting; problems are *OptionError values, joined.
func (o Options) Check() error {
	var errs []error
	bad := func(key string, format string, args ...any) {
		errs = append(errs, &OptionError{key, fmt.Errorf(format, args...)})
	}
	for i, e := range o.Endpoints {
		u, err := url.Parse(e)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
			bad(fmt.Sprintf("etcd[%d]", i), "%q: want https://host:port (or http:// on loopback)", e)
			continue
		}
		if u.Scheme == "http" && !o.InsecureTransport && !loopbackHost(u.Hostname()) {
			bad(fmt.Sprintf("etcd[%d]", i), "%q is plain http to another machine: certificates' private keys would cross the network in the clear; use https:// with a client certificate, or set insecure_transport = true on a private network", e)
		}
	}
	if !strings.HasPrefix(o.Prefix, "/") || strings.Contains(o.Prefix, "//") {
		bad("prefix", "%q: want an absolute key prefix such as /edged/", o.Prefix)
	}
	if o.Node == "" || strings.ContainsAny(o.Node, "/ \t\n") {
		bad("node", "%q: want a name without slashes or spaces", o.Node)
	}
	if (o.CertFile == "") != (o.KeyFile == "") {
		bad("cert", "a client certificate needs both cert and key")
	}
	if _, err := o.tlsConfig(); err != nil {
		bad("cert", "%v", err)
	}
	if o.PasswordFile != "" && o.Username == "" {
		bad("password_file", "goes with username")
	}
	if o.PasswordFile != "" {
		if _, err := os.ReadFile(o.PasswordFile); err != nil {
			bad("password_file", "%v", err)
		}
	}
	if o.LockTTL < 2*time.Second {
		bad("lock_ttl", "%v: want at least 2s (etcd leases are whole seconds, and a lock must outlive one keep-alive)", o.LockTTL)
	}
	if o.DialTimeout < 0 || o.OpTimeout < 0 {
		bad("timeout", "must not be negative")
	}
	if o.SyncInterval < 50*time.Millisecond || o.SyncInterval > time.Minute {
		bad("sync_interval", "%v: want 50ms to 1m", o.SyncInterval)
	}
	if o.PurgeTTL < time.Minute {
		bad("purge_ttl", "%v: want at least 1m", o.PurgeTTL)
	}
	return errors.Join(errs...)
}

func loopbackHost(h string) bool {
	return h == "localhost" || strings.HasPrefix(h, "127.") || h == "::1"
}

// tlsConfig is the client's TLS: nil when every endpoint is http.
func (o Options) tlsConfig() (*tls.Config, error) {
	anyTLS := false
	for _, e := range o.Endpoints {
		anyTLS = anyTLS || strings.HasPrefix(e, "https://")
	}
	if !anyTLS && o.CertFile == "" && o.CAFile == "" {
		return nil, nil
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	if o.CertFile != "" && o.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(o.CertFile, o.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("loading the etcd client certificate: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	if o.CAFile != "" {
		pemBytes, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("reading the etcd CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pemBytes) {
			return nil, fmt.Errorf("%s holds no PEM certificate", o.CAFile)
		}
		c.RootCAs = pool
	}
	return c, nil
}
