package tlsconf

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"net"
	"strings"

	"github.com/caddyserver/certmagic"
	"github.com/mholt/acmez/v3"
)

// The handshake path: pick the certificate source for a ClientHello from
// the routing table the latest Apply stored (lock-free), then let
// certmagic (acme, internal, on-demand) or the manual certificate answer.

// route is what the routing table says about one host pattern.
type route struct {
	mode     string
	cfg      *certmagic.Config // acme, internal or on-demand
	manual   *tls.Certificate
	onDemand bool
}

// table maps SNI names to routes; immutable once stored.
type table struct {
	exact   map[string]*route
	wild    map[string]*route // "example.com" for "*.example.com"
	any     *route            // on-demand "*"
	def     *route            // for handshakes without SNI (IP address)
	defName string
}

func (t *table) lookup(name string) *route {
	if r := t.exact[name]; r != nil {
		return r
	}
	if i := strings.IndexByte(name, '.'); i > 0 {
		if r := t.wild[name[i+1:]]; r != nil {
			return r
		}
	}
	return t.any
}

func (m *Manager) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	// A TLS-ALPN-01 validation from the CA: certmagic answers it.
	if len(hello.SupportedProtos) == 1 && hello.SupportedProtos[0] == acmez.ACMETLS1Protocol {
		return m.acme.GetCertificate(hello)
	}
	t := m.table.Load()
	name := hello.ServerName
	if needsNorm(name) {
		name = normHost(name)
	}
	var r *route
	if name == "" {
		// No SNI: clients connecting to an IP address. A site listing
		// that IP wins, else the first TLS site.
		if ta, ok := hello.Conn.LocalAddr().(*net.TCPAddr); ok {
			r = t.exact[ta.IP.String()]
		}
		if r == nil && t.def != nil {
			r = t.def
			h := *hello
			h.ServerName = t.defName
			hello = &h
		}
	} else {
		r = t.lookup(name)
	}
	if r == nil {
		return nil, fmt.Errorf("no TLS site for server name %q", name)
	}
	if r.manual != nil {
		return r.manual, nil
	}
	return r.cfg.GetCertificate(hello)
}

func needsNorm(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; 'A' <= c && c <= 'Z' {
			return true
		}
	}
	return strings.HasSuffix(s, ".")
}

// configForCert tells certmagic's maintenance which config renews a
// cached certificate: the route's, else by issuer.
func (m *Manager) configForCert(c certmagic.Certificate) (*certmagic.Config, error) {
	t := m.table.Load()
	for _, n := range c.Names {
		if r := t.lookup(n); r != nil && r.cfg != nil {
			return r.cfg, nil
		}
	}
	// No m.mu here: certmagic calls this with its cache lock held, and
	// Apply holds m.mu while it calls into the cache.
	if in := m.internalCA.Load(); in != nil && c.Leaf != nil && bytes.Equal(c.Leaf.RawIssuer, in.ca.interSubject) {
		return in.cfg, nil
	}
	return m.acme, nil
}
