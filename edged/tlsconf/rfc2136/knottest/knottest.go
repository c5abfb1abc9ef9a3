// Package knottest runs a real Knot DNS server (Debian's knot package) on
// loopback for tests: one zone that accepts dynamic updates signed with a
// TSIG key, which tests can lock and unlock (the server then refuses
// updates), and lookups against it.
package knottest

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeapp/edgeapp/internal/syncbuf"
	"github.com/miekg/dns"
)

// Server is one knotd process.
type Server struct {
	Addr    string // 127.0.0.1:port, UDP and TCP
	Zone    string // e.g. "example.test"
	KeyName string
	KeyFile string // BIND-format key file with KeyName and the secret
	Secret  string // base64

	dir  string
	conf string
	cmd  *exec.Cmd
	out  *syncbuf.Buffer
	t    testing.TB
}

// Start runs knotd serving zone, with an A record 127.0.0.1 for the apex
// and every name under it. Updates signed with the server's key are
// accepted unless locked is true. The test skips when knotd is missing.
func Start(t testing.TB, zone string, locked bool) *Server {
	t.Helper()
	knotd, err := exec.LookPath("knotd")
	if err != nil {
		if _, err2 := os.Stat("/usr/sbin/knotd"); err2 != nil {
			t.Skip("knotd not found: the DNS-01 tests need Debian's knot package (make deps)")
		}
		knotd = "/usr/sbin/knotd"
	}
	// knotd's control socket path must fit in sun_path: a short dir.
	dir, err := os.MkdirTemp("", "knot-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	raw := make([]byte, 32)
	rand.Read(raw)
	s := &Server{
		Addr:    fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		Zone:    strings.TrimSuffix(zone, "."),
		KeyName: "edged-acme",
		Secret:  base64.StdEncoding.EncodeToString(raw),
		dir:     dir,
		conf:    filepath.Join(dir, "knot.conf"),
		out:     &syncbuf.Buffer{},
		t:       t,
	}
	s.KeyFile = filepath.Join(dir, "edged-acme.key")
	key := fmt.Sprintf("key \"%s\" {\n\talgorithm hmac-sha256;\n\tsecret \"%s\";\n};\n", s.KeyName, s.Secret)
	if err := os.Mkdir(filepath.Join(dir, "db"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.KeyFile, []byte(key), 0o600); err != nil {
		t.Fatal(err)
	}
	zf := fmt.Sprintf("$TTL 60\n@ SOA ns1 hostmaster 1 3600 600 86400 60\n@ NS ns1\nns1 A 127.0.0.1\n@ A 127.0.0.1\n* A 127.0.0.1\n")
	if err := os.WriteFile(filepath.Join(dir, s.Zone+".zone"), []byte(zf), 0o644); err != nil {
		t.Fatal(err)
	}
	s.writeConf(locked)
	s.cmd = exec.Command(knotd, "-c", s.conf)
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("starting knotd: %v", err)
	}
	t.Cleanup(s.stop)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("knotd log:\n%s", s.out.String())
		}
	})
	// Wait until the zone answers (polling an external process).
	deadline := time.Now().Add(15 * time.Second)
	for {
		if r, err := s.Query(s.Zone, dns.TypeSOA); err == nil && r.Rcode == dns.RcodeSuccess && len(r.Answer) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("knotd did not serve %s within 15s:\n%s", s.Zone, s.out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return s
}

func (s *Server) writeConf(locked bool) {
	acl := "    acl: upd\n"
	if locked {
		acl = ""
	}
	conf := fmt.Sprintf(`server:
    rundir: %[1]s
    listen: %[2]s
log:
  - target: stderr
    any: info
database:
    storage: %[1]s/db
key:
  - id: %[3]s
    algorithm: hmac-sha256
    secret: %[4]s
acl:
  - id: upd
    key: %[3]s
    action: update
template:
  - id: default
    storage: %[1]s
    zonefile-sync: -1
    journal-content: changes
zone:
  - domain: %[5]s
%[6]s`, s.dir, strings.Replace(s.Addr, ":", "@", 1), s.KeyName, s.Secret, s.Zone, acl)
	if err := os.WriteFile(s.conf, []byte(conf), 0o600); err != nil {
		s.t.Fatal(err)
	}
}

// SetLocked makes the server refuse (true) or accept (false) updates from
// now on, by rewriting its configuration and reloading it with knotc.
func (s *Server) SetLocked(locked bool) {
	s.t.Helper()
	s.writeConf(locked)
	knotc, err := exec.LookPath("knotc")
	if err != nil {
		knotc = "/usr/sbin/knotc"
	}
	out, err := exec.Command(knotc, "-c", s.conf, "-b", "reload").CombinedOutput()
	if err != nil {
		s.t.Fatalf("knotc reload: %v\n%s", err, out)
	}
}

// Query asks the server for name's records of type qtype.
func (s *Server) Query(name string, qtype uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	c := &dns.Client{Timeout: 2 * time.Second}
	r, _, err := c.Exchange(m, s.Addr)
	return r, err
}

// TXT returns the texts of name's TXT records.
func (s *Server) TXT(name string) []string {
	s.t.Helper()
	r, err := s.Query(name, dns.TypeTXT)
	if err != nil {
		s.t.Fatalf("querying TXT %s: %v", name, err)
	}
	var out []string
	for _, rr := range r.Answer {
		if txt, ok := rr.(*dns.TXT); ok {
			out = append(out, strings.Join(txt.Txt, ""))
		}
	}
	return out
}

// Log is what knotd wrote so far.
func (s *Server) Log() string { return s.out.String() }

func (s *Server) stop() {
	if s.cmd != nil && s.cmd.Process != nil {
		s.cmd.Process.Kill()
		s.cmd.Wait()
	}
}

// freePort finds a port free for both TCP and UDP on 127.0.0.1.
func freePort(t testing.TB) int {
	t.Helper()
	for range 20 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		pc, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		ln.Close()
		if err == nil {
			pc.Close()
			return port
		}
	}
	t.Fatal("no port free for both TCP and UDP")
	return 0
}
