package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestGoodConfigDefaults(t *testing.T) {
	dir := t.TempDir()
	src := `
[server]
http = ["127.0.0.1:8080"]

[[site]]
hosts = ["example.com", "www.example.com"]
  [[site.route]]
  path = "/static/"
  static = "` + dir + `"
  [[site.route]]
  path = "/"
  upstream = "app"
  cache = "default"

[[site]]
  [[site.route]]
  path = "/"
  respond = "hello"

[upstream.app]
servers = ["unix:/run/appd/myapp.sock", { addr = "10.0.0.5:8000", weight = 3 }, { addr = "10.0.0.6:8000", backup = true }]
policy = "least_conn"
health = { path = "/healthz", interval = "5s" }

[cache.default]
memory = "256MiB"
disk = "/var/cache/edged"
`
	c, err := Parse("edged.toml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Server.HTTP; len(got) != 1 || got[0] != "127.0.0.1:8080" {
		t.Errorf("http = %v", got)
	}
	if got := c.Server.HTTPS; len(got) != 1 || got[0] != ":443" {
		t.Errorf("https default = %v", got)
	}
	if c.Sites[0].TLS.Mode != "acme" || c.Sites[1].TLS.Mode != "off" {
		t.Errorf("tls modes %q %q", c.Sites[0].TLS.Mode, c.Sites[1].TLS.Mode)
	}
	u := c.Upstreams["app"]
	if u.Servers[1].Weight != 3 || u.Servers[0].Weight != 1 || !u.Servers[2].Backup {
		t.Errorf("servers %+v", u.Servers)
	}
	if u.Health.Rise != 2 || u.Health.Fall != 3 || u.Health.Timeout.D() != 2*time.Second {
		t.Errorf("health defaults %+v", u.Health)
	}
	if *u.MaxFails != 1 || u.FailTimeout.D() != 10*time.Second || *u.Retries != 2 {
		t.Errorf("passive defaults %+v", u)
	}
	if c.Sites[1].Routes[0].Status != 200 || c.Caches["default"].Memory != 256<<20 {
		t.Errorf("respond status %d", c.Sites[1].Routes[0].Status)
	}
	if c.Server.MaxBody != 64<<20 || c.Server.ReadHeaderTimeout.D() != 10*time.Second {
		t.Errorf("server defaults %+v", c.Server)
	}
}

func TestBadConfigsNameLineAndKey(t *testing.T) {
	site := "[[site]]\nhosts = [\"a.example\"]\ntls = \"off\"\n  [[site.route]]\n  path = \"/\"\n"
	cases := []struct{ name, src, want string }{
		{"unknown key", "[server]\nlisten = [\":80\"]\n" + site + "  respond = \"x\"\n", "edged.toml:2: server.listen: unknown key"},
		{"unknown route key", site + "  proxy_pass = \"x\"\n", "edged.toml:6: site[0].route[0].proxy_pass: unknown key"},
		{"wrong type", "[server]\nh2c = \"yes\"\n" + site + "  respond = \"x\"\n", "edged.toml:2: server.h2c"},
		{"bad duration", "[server]\nidle_timeout = \"forever\"\n" + site + "  respond = \"x\"\n", "edged.toml:2: server.idle_timeout: invalid duration"},
		{"bad size", "[server]\nmax_body = \"lots\"\n" + site + "  respond = \"x\"\n", "edged.toml:2: server.max_body: invalid size"},
		{"bad listen", "[server]\nhttp = [\"80\"]\n" + site + "  respond = \"x\"\n", "edged.toml:2: server.http[0]"},
		{"no handler", site, "edged.toml:4: site[0].route[0]: route has no handler"},
		{"two handlers", site + "  respond = \"x\"\n  redirect = \"https://b/\"\n", "several handlers (redirect, respond)"},
		{"unknown upstream", site + "  upstream = \"nope\"\n", "edged.toml:6: site[0].route[0].upstream: no [upstream.nope] is defined"},
		{"unknown cache", site + "  upstream = \"a\"\n  cache = \"c\"\n[upstream.a]\nservers = [\"127.0.0.1:1\"]\n", "edged.toml:7: site[0].route[0].cache: no [cache.c]"},
		{"bad policy", site + "  upstream = \"a\"\n[upstream.a]\nservers = [\"127.0.0.1:1\"]\npolicy = \"fastest\"\n", "edged.toml:9: upstream.a.policy: \"fastest\""},
		{"bad server addr", site + "  upstream = \"a\"\n[upstream.a]\nservers = [\"localhost\"]\n", "edged.toml:8: upstream.a.servers[0]"},
		{"all backups", site + "  upstream = \"a\"\n[upstream.a]\nservers = [{ addr = \"127.0.0.1:1\", backup = true }]\n", "at least one must not be"},
		{"bad server key", site + "  upstream = \"a\"\n[upstream.a]\nservers = [{ address = \"127.0.0.1:1\" }]\n", "servers.address: unknown key"},
		{"missing static dir", site + "  static = \"/nonexistent/dir\"\n", "edged.toml:6: site[0].route[0].static: stat /nonexistent/dir"},
		{"relative static", site + "  static = \"www\"\n", "want an absolute directory"},
		{"bad redirect status", site + "  redirect = \"https://b{uri}\"\n  status = 200\n", "edged.toml:7: site[0].route[0].status: 200 is not a redirect status"},
		{"path without slash", "[[site]]\n[[site.route]]\npath = \"api\"\nrespond = \"x\"\n", "edged.toml:3: site[0].route[0].path"},
		{"duplicate host", site + "  respond = \"x\"\n" + site + "  respond = \"y\"\n", "edged.toml:8: site[1].hosts[0]: host \"a.example\" is already served by site[0]"},
		{"two defaults", "[[site]]\n[[site.route]]\npath=\"/\"\nrespond=\"a\"\n[[site]]\nhosts=[\"*\"]\n[[site.route]]\npath=\"/\"\nrespond=\"b\"\n", "edged.toml:6: site[1].hosts: a second default site"},
		{"acme wildcard", "[[site]]\nhosts = [\"*.example.com\"]\ntls = \"acme\"\n[[site.route]]\npath=\"/\"\nrespond=\"x\"\n", "edged.toml:2: site[0].hosts[0]: wildcard \"*.example.com\" can get an ACME certificate only through the DNS-01 challenge: configure [tls.dns]"},
		{"acme localhost", "[[site]]\nhosts = [\"localhost\"]\ntls = \"acme\"\n[[site.route]]\npath=\"/\"\nrespond=\"x\"\n", "use tls = \"internal\""},
		{"bad tls mode", "[[site]]\ntls = \"yes\"\n[[site.route]]\npath=\"/\"\nrespond=\"x\"\n", "edged.toml:2: site[0].tls: tls \"yes\""},
		{"on demand without ask", "[[site]]\nhosts=[\"*\"]\ntls=\"acme\"\non_demand = true\n[[site.route]]\npath=\"/\"\nrespond=\"x\"\n", "edged.toml:4: site[0].on_demand: on-demand TLS needs [tls.on_demand] ask"},
		{"no sites", "[server]\n", "no [[site]] is defined"},
		{"bad cache_set_cookie", site + "  upstream = \"a\"\n  cache = \"c\"\n  cache_set_cookie = \"keep\"\n[upstream.a]\nservers = [\"127.0.0.1:1\"]\n[cache.c]\n", "edged.toml:8: site[0].route[0].cache_set_cookie: \"keep\""},
		{"cache_set_cookie without cache", site + "  upstream = \"a\"\n  cache_set_cookie = \"store\"\n[upstream.a]\nservers = [\"127.0.0.1:1\"]\n", "edged.toml:7: site[0].route[0].cache_set_cookie: goes with cache"},
		{"bad targeted field", site + "  respond = \"x\"\n[cache.c]\ntargeted_cache_control = \"Edged Cache\"\n", "edged.toml:8: cache.c.targeted_cache_control"},
		{"proxy protocol from", "[server.proxy_protocol]\nfrom = [\"10.0.0.0/33\"]\n" + site + "  respond = \"x\"\n", "edged.toml:2: server.proxy_protocol.from[0]"},
		{"proxy protocol listener", "[server.proxy_protocol]\nfrom = [\"10.0.0.1\"]\nlisteners = [\"quic\"]\n" + site + "  respond = \"x\"\n", "edged.toml:3: server.proxy_protocol.listeners[0]: \"quic\""},
		{"stream reserved name", site + "  respond = \"x\"\n[[stream]]\nname = \"https\"\nupstream = \"u\"\nlisten = [\":993\"]\n[upstream.u]\nservers = [\"127.0.0.1:1\"]\n", "stream[0].name: \"https\" is one of edged's own socket names"},
		{"stream unknown upstream", site + "  respond = \"x\"\n[[stream]]\nname = \"imaps\"\nupstream = \"nope\"\n", "stream[0].upstream: no [upstream.nope]"},
		{"stream starttls without tls", site + "  respond = \"x\"\n[[stream]]\nname = \"imap\"\nupstream = \"u\"\nprotocol = \"imap\"\nstarttls = true\n[upstream.u]\nservers = [\"127.0.0.1:1\"]\n", "stream[0].tls: starttls needs a certificate"},
		{"stream starttls tcp", site + "  respond = \"x\"\n[[stream]]\nname = \"x\"\nupstream = \"u\"\nstarttls = true\ntls = \"internal\"\nhosts = [\"mail.test\"]\n[upstream.u]\nservers = [\"127.0.0.1:1\"]\n", "stream[0].starttls: STARTTLS is spoken for protocol"},
		{"stream bad protocol", site + "  respond = \"x\"\n[[stream]]\nname = \"x\"\nupstream = \"u\"\nprotocol = \"ftp\"\n[upstream.u]\nservers = [\"127.0.0.1:1\"]\n", "stream[0].protocol: \"ftp\""},
		{"stream acme without hosts", site + "  respond = \"x\"\n[[stream]]\nname = \"x\"\nupstream = \"u\"\ntls = \"acme\"\n[upstream.u]\nservers = [\"127.0.0.1:1\"]\n", "stream[0].hosts: tls = \"acme\" needs the names"},
		{"stream send proxy", site + "  respond = \"x\"\n[[stream]]\nname = \"x\"\nupstream = \"u\"\nsend_proxy_protocol = \"2\"\n[upstream.u]\nservers = [\"127.0.0.1:1\"]\n", "stream[0].send_proxy_protocol: \"2\""},
		{"stream proxy_protocol untrusted", site + "  respond = \"x\"\n[[stream]]\nname = \"x\"\nupstream = \"u\"\nproxy_protocol = true\n[upstream.u]\nservers = [\"127.0.0.1:1\"]\n", "stream[0].proxy_protocol: no sender is trusted"},
		{"proxy protocol nobody", "[server.proxy_protocol]\nlisteners = [\"https\"]\n" + site + "  respond = \"x\"\n", "server.proxy_protocol.from: listeners take PROXY headers but no sender is trusted"},
		{"duplicate route", site + "  respond = \"x\"\n  [[site.route]]\n  path = \"/\"\n  respond = \"y\"\n", "edged.toml:8: site[0].route[1].path: path \"/\" is already routed by route[0]"},
		{"bad header", site + "  respond = \"x\"\n  [site.route.response_headers]\n  set = { \"Bad Header\" = \"1\" }\n", "edged.toml:8: site[0].route[0].response_headers.set: \"Bad Header\""},
		{"bad protocol", site + "  upstream = \"a\"\n[upstream.a]\nservers = [\"127.0.0.1:1\"]\nprotocol = \"http/2\"\n", "edged.toml:9: upstream.a.protocol: \"http/2\" is not one of"},
		{"h2 without tls", site + "  upstream = \"a\"\n[upstream.a]\nservers = [\"127.0.0.1:1\"]\nprotocol = \"h2\"\n", "edged.toml:9: upstream.a.protocol: \"h2\" is HTTP/2 over TLS"},
		{"h2c with tls", site + "  upstream = \"a\"\n[upstream.a]\nservers = [\"127.0.0.1:1\"]\ntls = true\nprotocol = \"h2c\"\n", "edged.toml:10: upstream.a.protocol: \"h2c\" is HTTP/2 in cleartext"},
		{"grpc health over http/1.1", site + "  upstream = \"a\"\n[upstream.a]\nservers = [\"127.0.0.1:1\"]\nhealth = { grpc = true }\n", "upstream.a.health.grpc: gRPC health checks need protocol"},
		{"h2 with send_proxy_protocol", site + "  upstream = \"a\"\n[upstream.a]\nservers = [\"127.0.0.1:1\"]\nprotocol = \"h2c\"\nsend_proxy_protocol = \"v2\"\n", "upstream.a.send_proxy_protocol: a PROXY header names one client"},
		{"bad hash key", site + "  upstream = \"a\"\n[upstream.a]\nservers = [\"127.0.0.1:1\"]\npolicy = \"hash\"\nhash_key = \"ip\"\n", "edged.toml:10: upstream.a.hash_key"},
		{"bad upgrade", site + "  upstream = \"a\"\n  upgrades = [\"websocket/13\"]\n[upstream.a]\nservers = [\"127.0.0.1:1\"]\n", "edged.toml:7: site[0].route[0].upgrades[0]: \"websocket/13\" is not a protocol name"},
		{"upgrades without upstream", site + "  respond = \"x\"\n  upgrades = [\"h2c\"]\n", "edged.toml:7: site[0].route[0].upgrades: upgrades goes with an upstream route"},
		{"zero body timeout", "[server]\nclient_body_timeout = \"0s\"\n" + site + "  respond = \"x\"\n", "edged.toml:2: server.client_body_timeout: 0s would let a stalled client"},
		{"zero send timeout", "[server]\nsend_timeout = \"0s\"\n" + site + "  respond = \"x\"\n", "edged.toml:2: server.send_timeout: 0s"},
		{"negative connection cap", "[server]\nmax_connections_per_ip = -1\n" + site + "  respond = \"x\"\n", "edged.toml:2: server.max_connections_per_ip: -1 is negative"},
		{"admin on every address", "[server]\nadmin = \":9000\"\n" + site + "  respond = \"x\"\n", "edged.toml:2: server.admin: \":9000\" is reachable from other machines"},
		{"admin on a public address", "[server]\nadmin = \"192.0.2.1:9000\"\n" + site + "  respond = \"x\"\n", "set admin_token_file"},
		{"relative token file", "[server]\nadmin = \"127.0.0.1:9000\"\nadmin_token_file = \"token\"\n" + site + "  respond = \"x\"\n", "edged.toml:3: server.admin_token_file"},
		{"bad trusted proxy", "[server]\ntrusted_proxies = [\"10.0.0.0/33\"]\n" + site + "  respond = \"x\"\n", "edged.toml:2: server.trusted_proxies[0]"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("edged.toml", []byte(tc.src))
			if err == nil {
				t.Fatalf("accepted:\n%s", tc.src)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error\n  %v\ndoes not contain\n  %s", err, tc.want)
			}
		})
	}
}

func TestAdminAddresses(t *testing.T) {
	site := "[[site]]\n[[site.route]]\npath = \"/\"\nrespond = \"x\"\n"
	for _, ok := range []string{
		`admin = "127.0.0.1:9000"`, `admin = "[::1]:9000"`, `admin = "localhost:9000"`, `admin = "unix:/run/edged/admin.sock"`,
		"admin = \"0.0.0.0:9000\"\nadmin_token_file = \"/etc/edged/admin.token\"",
	} {
		if _, err := Parse("edged.toml", []byte("[server]\n"+ok+"\n"+site)); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
}

func TestAllErrorsReportedAtOnce(t *testing.T) {
	src := "[[site]]\n[[site.route]]\npath = \"a\"\n[[site.route]]\npath = \"/b\"\nupstream = \"x\"\n"
	_, err := Parse("edged.toml", []byte(src))
	if err == nil {
		t.Fatal("accepted")
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "edged.toml:2:") || !strings.HasPrefix(lines[2], "edged.toml:6:") {
		t.Fatalf("want three errors in line order, got:\n%v", err)
	}
}

func TestLoadFromFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "edged.toml")
	os.WriteFile(p, []byte("[[site]]\n[[site.route]]\npath=\"/\"\nrespond=\"ok\"\n"), 0o644)
	c, err := Load(p)
	if err != nil || c.Sites[0].Routes[0].Respond != "ok" {
		t.Fatalf("Load: %v", err)
	}
	if _, err := Load(p + ".missing"); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("missing file: %v", err)
	}
}
