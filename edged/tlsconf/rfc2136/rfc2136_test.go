package rfc2136

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeapp/edgeapp/edged/tlsconf/rfc2136/knottest"
	"github.com/libdns/libdns"
	"github.com/miekg/dns"
)

func provider(k *knottest.Server) *Provider {
	return &Provider{Server: k.Addr, KeyName: k.KeyName, SecretFile: k.KeyFile, Timeout: 3 * time.Second}
}

// TestAppendDelete adds two TXT records at one name (as DNS-01 does for
// example.test and *.example.test together) and deletes them one at a
// time against a real Knot server.
func TestAppendDelete(t *testing.T) {
	k := knottest.Start(t, "example.test", false)
	p := provider(k)
	if err := p.Check(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	name := "_acme-challenge.example.test"
	long := strings.Repeat("y", 300) // more than one TXT string
	recs := []libdns.Record{libdns.TXT{Name: "_acme-challenge", Text: "token-a"}}
	got, err := p.AppendRecords(ctx, "example.test.", recs)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].RR().Data != "token-a" || got[0].RR().TTL != DefaultTTL || got[0].RR().Name != "_acme-challenge" {
		t.Fatalf("appended %+v", got)
	}
	if _, err := p.AppendRecords(ctx, "example.test.", []libdns.Record{libdns.TXT{Name: "_acme-challenge", Text: long, TTL: 30 * time.Second}}); err != nil {
		t.Fatal(err)
	}
	txt := k.TXT(name)
	if len(txt) != 2 || !contains(txt, "token-a") || !contains(txt, long) {
		t.Fatalf("TXT %s = %q, want both records", name, txt)
	}
	if _, err := p.DeleteRecords(ctx, "example.test.", got); err != nil {
		t.Fatal(err)
	}
	if txt := k.TXT(name); len(txt) != 1 || txt[0] != long {
		t.Fatalf("after deleting one: TXT = %q, want only the other", txt)
	}
	if _, err := p.DeleteRecords(ctx, "example.test.", []libdns.Record{libdns.TXT{Name: "_acme-challenge", Text: long, TTL: 30 * time.Second}}); err != nil {
		t.Fatal(err)
	}
	if txt := k.TXT(name); len(txt) != 0 {
		t.Fatalf("after deleting both: TXT = %q", txt)
	}
	// Deleting what is not there is no error (RFC 2136 3.4.2.4).
	if _, err := p.DeleteRecords(ctx, "example.test.", got); err != nil {
		t.Fatalf("deleting a missing record: %v", err)
	}
}

// TestConfiguredZone: with Zone set, a name given relative to another
// zone (certmagic's SOA guess) is placed in the configured zone, and a
// name outside it is refused before anything is sent.
func TestConfiguredZone(t *testing.T) {
	k := knottest.Start(t, "example.test", false)
	p := provider(k)
	p.Zone = "example.test"
	ctx := context.Background()
	if _, err := p.AppendRecords(ctx, "sub.example.test.", []libdns.Record{libdns.TXT{Name: "_acme-challenge", Text: "t"}}); err != nil {
		t.Fatal(err)
	}
	if txt := k.TXT("_acme-challenge.sub.example.test"); len(txt) != 1 || txt[0] != "t" {
		t.Fatalf("TXT = %q", txt)
	}
	_, err := p.AppendRecords(ctx, "other.test.", []libdns.Record{libdns.TXT{Name: "_acme-challenge", Text: "t"}})
	if err == nil || !strings.Contains(err.Error(), "not in zone example.test.") {
		t.Fatalf("name outside the zone: err = %v", err)
	}
}

// TestRefused: the server's refusals come back as errors that say why.
func TestRefused(t *testing.T) {
	k := knottest.Start(t, "example.test", true)
	ctx := context.Background()
	rec := []libdns.Record{libdns.TXT{Name: "_acme-challenge", Text: "t"}}
	var ue *UpdateError

	_, err := provider(k).AppendRecords(ctx, "example.test.", rec)
	if !errors.As(err, &ue) || ue.Rcode == dns.RcodeSuccess {
		t.Fatalf("locked zone: err = %v, want an UpdateError", err)
	}
	t.Logf("locked zone: %v", err)
	if !strings.Contains(err.Error(), "refused the update") || !strings.Contains(err.Error(), k.Addr) {
		t.Fatalf("locked zone: unclear error %q", err)
	}

	// A wrong secret: BADSIG.
	bad := filepath.Join(t.TempDir(), "bad.key")
	os.WriteFile(bad, []byte("hmac-sha256:edged-acme:"+"c2VjcmV0LXRoYXQtaXMtd3Jvbmctc2VjcmV0LXRoYXQ="+"\n"), 0o600)
	k.SetLocked(false)
	p := provider(k)
	p.SecretFile = bad
	_, err = p.AppendRecords(ctx, "example.test.", rec)
	if !errors.As(err, &ue) || ue.TSIGError != dns.RcodeBadSig || !strings.Contains(err.Error(), "BADSIG") {
		t.Fatalf("wrong secret: err = %v, want BADSIG", err)
	}
	if strings.Contains(err.Error(), "c2VjcmV0") {
		t.Fatal("the error shows the secret")
	}
	// An unknown key name: BADKEY.
	bare := filepath.Join(t.TempDir(), "bare.key")
	os.WriteFile(bare, []byte(k.Secret+"\n"), 0o600)
	p = provider(k)
	p.KeyName = "nobody"
	p.SecretFile = bare
	_, err = p.AppendRecords(ctx, "example.test.", rec)
	if !errors.As(err, &ue) || ue.TSIGError != dns.RcodeBadKey {
		t.Fatalf("unknown key: err = %v, want BADKEY", err)
	}
	if txt := k.TXT("_acme-challenge.example.test"); len(txt) != 0 {
		t.Fatalf("refused updates changed the zone: TXT = %q", txt)
	}
	// Unlocked with the right key, the same update goes through.
	if _, err := provider(k).AppendRecords(ctx, "example.test.", rec); err != nil {
		t.Fatalf("after unlocking: %v", err)
	}
}

func TestNoServer(t *testing.T) {
	dir := t.TempDir()
	kf := filepath.Join(dir, "k")
	os.WriteFile(kf, []byte("c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA==\n"), 0o600)
	// A closed port: no answer within the timeout, and the error says so.
	p := &Provider{Server: "127.0.0.1:9", KeyName: "k", SecretFile: kf, Timeout: 300 * time.Millisecond}
	_, err := p.AppendRecords(context.Background(), "example.test.", []libdns.Record{libdns.TXT{Name: "x", Text: "t"}})
	if err == nil || !strings.Contains(err.Error(), "127.0.0.1:9") {
		t.Fatalf("err = %v", err)
	}
}

func TestKeyFiles(t *testing.T) {
	const sec = "Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmE="
	for _, tc := range []struct {
		name, file string
		want       []Key
		err        string
	}{
		{"bare", sec + "\n", []Key{{Secret: sec}}, ""},
		{"colon form", "hmac-sha512:upd.example.:" + sec, []Key{{Name: "upd.example.", Algorithm: "hmac-sha512", Secret: sec}}, ""},
		{"bind", "# made by tsig-keygen\nkey \"edged-acme\" {\n\talgorithm hmac-sha256;\n\tsecret \"" + sec + "\";\n};\n",
			[]Key{{Name: "edged-acme", Algorithm: "hmac-sha256", Secret: sec}}, ""},
		{"bind two", "key a { algorithm hmac-sha1; secret \"" + sec + "\"; };\nkey \"b\" { algorithm \"hmac-sha384\"; secret \"" + sec + "\"; };",
			[]Key{{Name: "a", Algorithm: "hmac-sha1", Secret: sec}, {Name: "b", Algorithm: "hmac-sha384", Secret: sec}}, ""},
		{"knot", "# hmac-sha256:edged-acme:" + sec + "\nkey:\n  - id: edged-acme\n    algorithm: hmac-sha256\n    secret: " + sec + "\n",
			[]Key{{Name: "edged-acme", Algorithm: "hmac-sha256", Secret: sec}}, ""},
		{"empty", "\n# nothing\n", nil, "empty"},
		{"not base64", "key x { algorithm hmac-sha256; secret \"not base64!\"; };", nil, "not base64"},
		{"prose", "this is not a key", nil, "not a TSIG key"},
		{"no secret", "key x { algorithm hmac-sha256; };", nil, "no secret"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseKeys([]byte(tc.file))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				if strings.Contains(err.Error(), sec) {
					t.Fatal("the error shows the secret")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("key %d = %+v, want %+v", i, got[i], tc.want[i])
				}
			}
		})
	}
}

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	two := filepath.Join(dir, "two")
	os.WriteFile(two, []byte("key a { algorithm hmac-sha256; secret \"Zm9v\"; };\nkey b { algorithm hmac-sha512; secret \"Zm9v\"; };\n"), 0o600)
	bare := filepath.Join(dir, "bare")
	os.WriteFile(bare, []byte("Zm9v\n"), 0o600)
	for _, tc := range []struct {
		p    Provider
		want string
	}{
		{Provider{Server: "ns:53", SecretFile: two, KeyName: "b"}, ""},
		{Provider{Server: "ns", SecretFile: bare, KeyName: "k", Algorithm: "HMAC-SHA384"}, ""},
		{Provider{SecretFile: bare, KeyName: "k"}, "no server"},
		{Provider{Server: "ns:53", KeyName: "k"}, "no TSIG secret file"},
		{Provider{Server: "ns:53", SecretFile: two}, "holds 2 keys"},
		{Provider{Server: "ns:53", SecretFile: two, KeyName: "c"}, `no key "c"`},
		{Provider{Server: "ns:53", SecretFile: two, KeyName: "a", Algorithm: "hmac-sha512"}, "for algorithm hmac-sha256"},
		{Provider{Server: "ns:53", SecretFile: bare}, "bare secret"},
		{Provider{Server: "ns:53", SecretFile: bare, KeyName: "k", Algorithm: "hmac-md5"}, "hmac-md5"},
		{Provider{Server: "ns:53", SecretFile: filepath.Join(dir, "missing"), KeyName: "k"}, "no such file"},
		{Provider{Server: "ns:53", SecretFile: bare, KeyName: "k", Zone: "bad..zone"}, "not a domain name"},
	} {
		err := tc.p.Check()
		if tc.want == "" {
			if err != nil {
				t.Errorf("%+v: %v", tc.p, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: err = %v, want %q", tc.p, err, tc.want)
		}
	}
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}
