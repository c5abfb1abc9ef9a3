package config

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/edgeapp/edgeapp/edged/proxyproto"
	"github.com/edgeapp/edgeapp/internal/systemd"
	"github.com/edgeapp/edgeapp/internal/tomlconf"
)

// ProxyProtocol is [server.proxy_protocol]: listeners that take HAProxy's
// PROXY protocol (v1 and v2) from the load balancers in front.
type ProxyProtocol struct {
	// From lists the senders (addresses or CIDRs). A connection from one
	// of them must open with a PROXY header; any other peer is refused.
	From []string `toml:"from"`
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

// Trusted is From parsed (validated already).
func (p *ProxyProtocol) Trusted() []netip.Prefix {
	var out []netip.Prefix
	for _, s := range p.From {
		if pfx, err := ParsePrefix(s); err == nil {
			out = append(out, pfx)
		}
	}
	return out
}

func (c *Config) applyStreamDefaults() {
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
	for i, s := range pp.From {
		if _, err := ParsePrefix(s); err != nil {
			bad(fmt.Sprintf("server.proxy_protocol.from[%d]", i), "%v", err)
		}
	}
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
}
