package proxyproto

import (
	"fmt"
	"io"
	"net"
	"net/netip"

	pp "github.com/pires/go-proxyproto"
)

// ParseVersion maps a config value to a protocol version: "v1" or "v2";
// "" and "off" are 0 (send nothing).
func ParseVersion(s string) (int, error) {
	switch s {
	case "", "off":
		return 0, nil
	case "v1":
		return 1, nil
	case "v2":
		return 2, nil
	}
	return 0, fmt.Errorf("%q: want \"v1\", \"v2\" or \"off\"", s)
}

// WriteHeader sends a PROXY header of version (1 or 2) that names client
// as the source and dest as the destination. Addresses that are not IP
// (a unix socket) give a LOCAL header (v2) or "PROXY UNKNOWN" (v1), which
// tell the receiver to use the connection's own addresses.
func WriteHeader(w io.Writer, version int, client, dest net.Addr) error {
	h := pp.HeaderProxyFromAddrs(byte(version), tcpAddr(client), tcpAddr(dest))
	if _, err := h.WriteTo(w); err != nil {
		return fmt.Errorf("sending the PROXY protocol header: %w", err)
	}
	return nil
}

// AddrPort turns a "host:port" string (a request's RemoteAddr) into a
// net.Addr for WriteHeader; nil when it is not an IP address and port.
func AddrPort(s string) net.Addr {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return nil
	}
	return net.TCPAddrFromAddrPort(ap)
}

// tcpAddr keeps TCP addresses (IPv4-mapped ones unmapped, so that a v4
// client on a dual-stack socket is sent as TCP4) and drops the rest.
func tcpAddr(a net.Addr) net.Addr {
	t, ok := a.(*net.TCPAddr)
	if !ok || t == nil {
		return nil
	}
	if v4 := t.IP.To4(); v4 != nil {
		return &net.TCPAddr{IP: v4, Port: t.Port}
	}
	return t
}
