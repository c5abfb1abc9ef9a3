package proxy

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/edgeapp/edgeapp/internal/systemd"
)

// TLSConfig makes an upstream's connections TLS (https:// upstreams, nginx
// proxy_pass https://). The server's certificate is always verified:
// against the system's roots or CAFile, for ServerName. Sessions are
// resumed from a cache per server, so a new connection after the first
// costs an abbreviated handshake.
type TLSConfig struct {
	Enabled bool
	// ServerName is sent as SNI and verified; "" means the host of the
	// server's address (an IP address is verified against the
	// certificate's IP SANs and sends no SNI). nginx: proxy_ssl_name.
	ServerName string
	// CAFile holds the PEM roots to verify against; "" means the system's.
	// nginx: proxy_ssl_trusted_certificate.
	CAFile string
	// CertFile and KeyFile: a client certificate for servers that ask
	// for one (mTLS). nginx: proxy_ssl_certificate, proxy_ssl_certificate_key.
	CertFile, KeyFile string
}

// check reports what is wrong with c without reading any file, a
// *FieldError per key.
func (c TLSConfig) check() []error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, &FieldError{Field: field, Err: fmt.Errorf(format, args...)})
	}
	for _, f := range []struct{ key, v string }{{"tls_name", c.ServerName}, {"tls_ca", c.CAFile}, {"tls_cert", c.CertFile}, {"tls_key", c.KeyFile}} {
		switch {
		case f.v == "":
		case !c.Enabled:
			bad(f.key, "goes with tls = true")
		case f.key != "tls_name" && !filepath.IsAbs(f.v):
			bad(f.key, "%q: want an absolute path", f.v)
		}
	}
	if c.Enabled && (c.CertFile == "") != (c.KeyFile == "") {
		bad("tls_cert", "tls_cert and tls_key: give both or neither")
	}
	if strings.ContainsAny(c.ServerName, " /\t\r\n") {
		bad("tls_name", "%q is not a host name", c.ServerName)
	}
	return errs
}

// upstreamTLS is an upstream's TLS settings loaded: the roots and the
// client certificate, and a digest of everything that makes a connection
// differ, for the connection pool's key.
type upstreamTLS struct {
	cfg    TLSConfig
	roots  *x509.CertPool // nil: the system's
	cert   *tls.Certificate
	digest string
}

// loadTLS reads the files c names.
func loadTLS(c TLSConfig) (*upstreamTLS, error) {
	if !c.Enabled {
		return nil, nil
	}
	t := &upstreamTLS{cfg: c}
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00", c.ServerName)
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tls_ca: %w", err)
		}
		t.roots = x509.NewCertPool()
		if !t.roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls_ca: %s holds no PEM certificate", c.CAFile)
		}
		h.Write(pem)
	}
	h.Write([]byte{0})
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("tls_cert, tls_key: %w", err)
		}
		t.cert = &cert
		for _, der := range cert.Certificate {
			h.Write(der)
		}
	}
	t.digest = string(h.Sum(nil))
	return t, nil
}

// clientConfig is the tls.Config of one server's connections, with the
// session cache that its pool shares.
func (t *upstreamTLS) clientConfig(addr string) *tls.Config {
	name := t.cfg.ServerName
	if name == "" {
		_, address, _ := systemd.SplitDialAddr(addr)
		if host, _, err := net.SplitHostPort(address); err == nil {
			name = host
		} else {
			name = "localhost" // a unix socket
		}
	}
	c := &tls.Config{
		ServerName:         name,
		RootCAs:            t.roots,
		NextProtos:         []string{"http/1.1"},
		ClientSessionCache: tls.NewLRUClientSessionCache(256),
		MinVersion:         tls.VersionTLS12,
	}
	if t.cert != nil {
		c.Certificates = []tls.Certificate{*t.cert}
	}
	return c
}

// tlsDialer wraps dial: the TLS handshake is part of connecting (bounded
// by connect_timeout, and a failure of it is a *DialError: nothing of the
// request was sent).
func tlsDialer(dial func(context.Context) (net.Conn, error), cfg *tls.Config, addr string, timeout time.Duration) func(context.Context) (net.Conn, error) {
	return func(ctx context.Context) (net.Conn, error) {
		raw, err := dial(ctx)
		if err != nil {
			return nil, err
		}
		c := tls.Client(raw, cfg)
		_ = raw.SetDeadline(time.Now().Add(timeout))
		// The deadline bounds the handshake; a context that can be
		// cancelled would cost a goroutine per handshake (see dialContext).
		if err := c.HandshakeContext(context.WithoutCancel(ctx)); err != nil {
			raw.Close()
			return nil, &DialError{Addr: addr, Err: fmt.Errorf("TLS handshake with %s: %w", addr, err)}
		}
		_ = raw.SetDeadline(time.Time{})
		return c, nil
	}
}

// netConn is the connection under TLS, if any.
func netConn(c net.Conn) net.Conn {
	if tc, ok := c.(*tls.Conn); ok {
		return tc.NetConn()
	}
	return c
}
