package config

import (
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"time"

	"github.com/edgeapp/edgeapp/edged/mail"
	"github.com/edgeapp/edgeapp/edged/proxyproto"
	"github.com/edgeapp/edgeapp/edged/stream"
	"github.com/edgeapp/edgeapp/internal/systemd"
	"github.com/edgeapp/edgeapp/internal/tomlconf"
)

// ProxyProtocol is [server.proxy_protocol]: listeners that take HAProxy's
// PROXY protocol (v1 and v2) from the load balancers in front.
type ProxyProtocol struct {
	// From lists the senders (addresses or CIDRs). A connection from one
	// of them must open with a PROXY header; any other peer is refused.
	From []tomlconf.Prefix `toml:"from"`
	// Listeners names the listeners that take the header: "http",
	// "https". Default both, once From is set.
	Listeners []string          `toml:"listeners"`
	Timeout   tomlconf.Duration `toml:"timeout"` // for the header to arrive; default 5s
}

// Enabled reports whether PROXY headers are taken on the listener kind.
func (p *ProxyProtocol) Enabled(kind string) bool {
	for _, l := range p.Listeners {
		if l == kind {
			return true
		}
	}
	return false
}

// Trusted is From as the proxyproto package takes it.
func (p *ProxyProtocol) Trusted() []netip.Prefix { return tomlconf.Prefixes(p.From) }

// Stream is one [[stream]]: a TCP listener joined to an upstream pool,
// optionally terminating TLS, and for mail ports speaking STARTTLS.
type Stream struct {
	// Name names the socket systemd passes (FileDescriptorName=, e.g.
	// the template edged-stream@NAME.socket) and the stream in logs and
	// metrics.
	Name     string   `toml:"name"`
	Listen   []string `toml:"listen"`   // bound when systemd passes no socket named Name
	Upstream string   `toml:"upstream"` // an [upstream.NAME]
	// Protocol: "tcp" (default), or "imap", "pop3", "smtp" for mail.
	Protocol string `toml:"protocol"`
	// StartTLS: edged speaks the mail protocol up to STARTTLS (143, 110,
	// 587) and then TLS; without it TLS starts at once (993, 995, 465).
	StartTLS bool     `toml:"starttls"`
	TLS      SiteTLS  `toml:"tls"`   // "off" (default), "acme", "internal" or { cert, key }
	Hosts    []string `toml:"hosts"` // names on the certificate; the first is the one without SNI, and the mail greeting's

	ProxyProtocol     bool   `toml:"proxy_protocol"`      // take PROXY headers from [server.proxy_protocol] from
	SendProxyProtocol string `toml:"send_proxy_protocol"` // "v1", "v2" or "off" (default)

	UpstreamTLS     bool   `toml:"upstream_tls"`      // TLS to the servers
	UpstreamTLSCA   string `toml:"upstream_tls_ca"`   // PEM roots for them; default the system's
	UpstreamTLSName string `toml:"upstream_tls_name"` // name to verify and send as SNI; default the server's host

	IdleTimeout      tomlconf.Duration `toml:"idle_timeout"`      // default 10m (nginx proxy_timeout)
	HandshakeTimeout tomlconf.Duration `toml:"handshake_timeout"` // TLS and pre-STARTTLS commands; default 10s
}

var streamName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

func (c *Config) applyStreamDefaults() {
	for i := range c.Streams {
		st := &c.Streams[i]
		if st.Protocol == "" {
			st.Protocol = "tcp"
		}
		if st.TLS.Mode == "" {
			st.TLS.Mode = "off"
		}
		setDur(&st.IdleTimeout, st.IdleTimeout != 0, stream.DefaultIdleTimeout)
		setDur(&st.HandshakeTimeout, st.HandshakeTimeout != 0, stream.DefaultHandshakeTimeout)
	}
	pp := &c.Server.ProxyProtocol
	if len(pp.From) > 0 && !c.Doc.IsDefined("server", "proxy_protocol", "listeners") {
		pp.Listeners = []string{"http", "https"}
	}
	setDur(&pp.Timeout, pp.Timeout != 0, proxyproto.DefaultTimeout)
	if c.Server.HTTP3 == nil {
		on := true
		c.Server.HTTP3 = &on
	}
	if !c.Doc.IsDefined("server", "quic") {
		c.Server.QUIC = append([]string(nil), c.Server.HTTPS...)
	}
}

func (c *Config) validateStreams(bad func(string, string, ...any)) {
	pp := c.Server.ProxyProtocol
	for i, l := range pp.Listeners {
		if l != "http" && l != "https" {
			bad(fmt.Sprintf("server.proxy_protocol.listeners[%d]", i), "%q: want \"http\" or \"https\" (a [[stream]] says proxy_protocol = true)", l)
		}
	}
	if len(pp.Listeners) > 0 && len(pp.From) == 0 {
		bad("server.proxy_protocol.from", "listeners take PROXY headers but no sender is trusted: list the load balancers' addresses in from")
	}
	for i, a := range c.Server.QUIC {
		if n, _, err := systemd.SplitAddr(a); err != nil {
			bad(fmt.Sprintf("server.quic[%d]", i), "%v", err)
		} else if n != "tcp" {
			bad(fmt.Sprintf("server.quic[%d]", i), "%q: QUIC listens on UDP host:port", a)
		}
	}
	if pp.Timeout.D() < 0 || pp.Timeout.D() > time.Minute {
		bad("server.proxy_protocol.timeout", "%v: want up to 1m", pp.Timeout)
	}
	for name, u := range c.Upstreams {
		if u == nil {
			continue
		}
		if _, err := proxyproto.ParseVersion(u.SendProxy); err != nil {
			bad("upstream."+name+".send_proxy_protocol", "%v", err)
		}
	}
	names := map[string]int{}
	for i, st := range c.Streams {
		key := fmt.Sprintf("stream[%d]", i)
		switch {
		case !streamName.MatchString(st.Name):
			bad(key+".name", "%q: want a name of lower-case letters, digits, - and _ (it names the systemd socket)", st.Name)
		case st.Name == "http" || st.Name == "https" || st.Name == "quic" || st.Name == "admin":
			bad(key+".name", "%q is one of edged's own socket names", st.Name)
		}
		if prev, ok := names[st.Name]; ok {
			bad(key+".name", "%q is already the name of stream[%d]", st.Name, prev)
		}
		names[st.Name] = i
		for j, a := range st.Listen {
			if n, _, err := systemd.SplitAddr(a); err != nil {
				bad(fmt.Sprintf("%s.listen[%d]", key, j), "%v", err)
			} else if n != "tcp" {
				bad(fmt.Sprintf("%s.listen[%d]", key, j), "%q: a stream listens on TCP host:port", a)
			}
		}
		if st.Upstream == "" {
			bad(key+".upstream", "a stream needs an upstream")
		} else if _, ok := c.Upstreams[st.Upstream]; !ok {
			bad(key+".upstream", "no [upstream.%s] is defined", st.Upstream)
		}
		if st.Protocol != "tcp" && !mail.Known(st.Protocol) {
			bad(key+".protocol", "%q: want \"tcp\", \"imap\", \"pop3\" or \"smtp\"", st.Protocol)
		}
		if st.StartTLS {
			if !mail.Known(st.Protocol) {
				bad(key+".starttls", "STARTTLS is spoken for protocol = \"imap\", \"pop3\" or \"smtp\"")
			}
			if st.TLS.Mode == "off" {
				bad(key+".tls", "starttls needs a certificate: tls = \"acme\", \"internal\" or { cert, key }")
			}
		}
		switch st.TLS.Mode {
		case "acme", "internal":
			if len(st.Hosts) == 0 {
				bad(key+".hosts", "tls = %q needs the names to put on the certificate", st.TLS.Mode)
			}
		case "manual":
			for _, f := range [][2]string{{"cert", st.TLS.Cert}, {"key", st.TLS.Key}} {
				if _, err := os.Stat(f[1]); err != nil {
					bad(key+".tls", "%s file: %v", f[0], err)
				}
			}
		}
		for j, h := range st.Hosts {
			if err := checkHost(h); err != nil || h == "*" {
				bad(fmt.Sprintf("%s.hosts[%d]", key, j), "%q: want a host name", h)
			}
		}
		if _, err := proxyproto.ParseVersion(st.SendProxyProtocol); err != nil {
			bad(key+".send_proxy_protocol", "%v", err)
		}
		if st.ProxyProtocol && len(pp.From) == 0 {
			bad(key+".proxy_protocol", "no sender is trusted: list the load balancers in [server.proxy_protocol] from")
		}
		if st.UpstreamTLSCA != "" {
			if _, err := os.Stat(st.UpstreamTLSCA); err != nil {
				bad(key+".upstream_tls_ca", "%v", err)
			}
		}
		if (st.UpstreamTLSCA != "" || st.UpstreamTLSName != "") && !st.UpstreamTLS {
			bad(key+".upstream_tls", "upstream_tls_ca and upstream_tls_name go with upstream_tls = true")
		}
	}
}
