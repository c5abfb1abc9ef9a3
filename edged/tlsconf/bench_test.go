package tlsconf

import (
	"context"
	"crypto/tls"
	"net"
	"testing"
	"time"
)

// benchManager serves an internal ECDSA P-256 certificate for bench.lan.
func benchManager(b *testing.B) (*Manager, *tls.Config) {
	m := newTestManager(b, Options{Storage: b.TempDir()}, nil)
	if err := m.Apply(context.Background(), []Site{
		{Hosts: []string{"bench.lan", "other.lan"}, Mode: ModeInternal},
		{Hosts: []string{"*.wild.lan"}, Mode: ModeInternal},
	}); err != nil {
		b.Fatal(err)
	}
	waitState(b, m, "bench.lan", "valid", 30*time.Second)
	return m, &tls.Config{ServerName: "bench.lan", RootCAs: poolFromFile(b, m.InternalRoot())}
}

// BenchmarkHandshake: one full handshake (no resumption) per iteration on
// a new loopback TCP connection through TLSConfig; client and server cost
// together, as a load generator would see it.
func BenchmarkHandshake(b *testing.B) {
	for _, v := range []struct {
		name string
		max  uint16
	}{{"TLS13", tls.VersionTLS13}, {"TLS12", tls.VersionTLS12}} {
		b.Run(v.name, func(b *testing.B) {
			m, client := benchManager(b)
			client.MaxVersion = v.max
			client.ClientSessionCache = nil
			ln := tls.NewListener(listen(b), m.TLSConfig())
			defer ln.Close()
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					go func() {
						c.(*tls.Conn).Handshake()
						c.Close()
					}()
				}
			}()
			addr := ln.Addr().String()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				raw, err := net.Dial("tcp", addr)
				if err != nil {
					b.Fatal(err)
				}
				c := tls.Client(raw, client)
				if err := c.Handshake(); err != nil {
					b.Fatal(err)
				}
				c.Close()
			}
		})
	}
}

// BenchmarkGetCertificate: the per-handshake certificate choice alone.
func BenchmarkGetCertificate(b *testing.B) {
	m, _ := benchManager(b)
	waitState(b, m, "*.wild.lan", "valid", 30*time.Second)
	gc := m.TLSConfig().GetCertificate
	conn, peer := net.Pipe()
	defer conn.Close()
	defer peer.Close()
	for _, name := range []string{"bench.lan", "x.wild.lan"} {
		b.Run(name, func(b *testing.B) {
			hello := &tls.ClientHelloInfo{
				ServerName:        name,
				SupportedProtos:   []string{"h2", "http/1.1"},
				SignatureSchemes:  []tls.SignatureScheme{tls.ECDSAWithP256AndSHA256},
				SupportedVersions: []uint16{tls.VersionTLS13},
				Conn:              conn,
			}
			b.ReportAllocs()
			for b.Loop() {
				if c, err := gc(hello); err != nil || c == nil {
					b.Fatal(err)
				}
			}
		})
	}
}
