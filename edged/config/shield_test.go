package config

import (
	"strings"
	"testing"
)

func TestShieldKeysNameLineAndKey(t *testing.T) {
	site := "[[site]]\nhosts = [\"a.example\"]\ntls = \"off\"\n  [[site.route]]\n  path = \"/\"\n  respond = \"x\"\n"
	zone := "[limit.api]\nrate = \"10r/s\"\n"
	cases := []struct{ name, src, want string }{
		{"unknown zone", site + "  limit = [\"nope\"]\n", "edged.toml:7: site[0].route[0].limit[0]: no [limit.nope] is defined"},
		{"zone twice", zone + site + "  limit = [\"api\", \"api\"]\n", "edged.toml:9: site[0].route[0].limit[1]: \"api\" is listed twice"},
		{"bad rate", "[limit.api]\nrate = \"10r/d\"\n" + site, "edged.toml:1: limit.api: rate \"10r/d\""},
		{"empty zone", "[limit.api]\nburst = 3\n" + site, "burst, delay and nodelay need a rate"},
		{"bad zone key", "[limit.api]\nrate = \"1r/s\"\nkey = \"ip\"\n" + site, "key \"ip\": want client_ip, header:NAME or cookie:NAME"},
		{"unknown zone field", "[limit.api]\nrate = \"1r/s\"\nzone = \"10m\"\n" + site, "edged.toml:3: limit.api.zone: unknown key"},
		{"bad allow", site + "  allow = [\"10.0.0.0/33\"]\n", "edged.toml:7: site[0].route[0].allow[0]"},
		{"bad deny", site + "  deny = [\"everyone\"]\n", "edged.toml:7: site[0].route[0].deny[0]"},
		{"auth on a site", "[[site]]\nauth = false\n  [[site.route]]\n  path = \"/\"\n  respond = \"x\"\n", "edged.toml:2: site[0].auth: auth = false goes on a route"},
		{"both auths", site + "  basic_auth = { htpasswd = \"/etc/h\" }\n  forward_auth = { url = \"http://a/\" }\n", "basic_auth and forward_auth are exclusive"},
		{"basic auth without users", site + "  basic_auth = { realm = \"x\" }\n", "edged.toml:7: site[0].route[0].basic_auth: give users"},
		{"relative htpasswd", site + "  basic_auth = { htpasswd = \"htpasswd\" }\n", "edged.toml:7: site[0].route[0].basic_auth.htpasswd"},
		{"bad fail rate", site + "  basic_auth = { htpasswd = \"/h\", fail_rate = \"often\" }\n", "basic_auth.fail_rate"},
		{"bad forward url", site + "  forward_auth = { url = \"/verify\" }\n", "edged.toml:7: site[0].route[0].forward_auth.url"},
		{"bad copy header", site + "  forward_auth = { url = \"http://a/\", copy_headers = [\"X User\"] }\n", "forward_auth.copy_headers[0]"},
		{"unknown forward key", site + "  forward_auth = { url = \"http://a/\", headers = [] }\n", "forward_auth.headers: unknown key"},
		{"bad error status", site + "  error_pages = { 200 = \"/p.html\" }\n", "edged.toml:7: site[0].route[0].error_pages: \"200\""},
		{"bad error class", site + "  error_pages = { 3xx = \"/p.html\" }\n", "\"3xx\""},
		{"relative error page", site + "  error_pages = { 404 = \"404.html\" }\n", "want an absolute file path"},
		{"bad satisfy", site + "  satisfy = \"either\"\n", "edged.toml:7: site[0].route[0].satisfy"},
		{"maintenance key", site + "  maintenance = { enabled = true, until = \"5pm\" }\n", "maintenance.until: unknown key"},
		{"maintenance type", site + "  maintenance = \"on\"\n", "maintenance: want true, false or a table"},
		{"maintenance allow", site + "  maintenance = { enabled = true, allow = [\"x\"] }\n", "edged.toml:7: site[0].route[0].maintenance.allow[0]"},
		{"fallback with try_files", "[[site]]\n  [[site.route]]\n  path = \"/\"\n  static = \"/\"\n  upstream = \"a\"\n  fallback = \"/index.html\"\n[upstream.a]\nservers = [\"127.0.0.1:1\"]\n", "edged.toml:6: site[0].route[0].fallback: a route with static and upstream"},
		{"bad log field", "[access_log]\noutput = \"stdout\"\nformat = \"json\"\nfields = [\"status\", \"colour\"]\n" + site, "edged.toml:1: access_log: unknown field \"colour\""},
		{"bad log template", "[access_log]\noutput = \"stdout\"\nformat = \"$remote_addr $nope\"\n" + site, "template: unknown field \"nope\""},
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

func TestShieldKeysAccepted(t *testing.T) {
	src := `
[limit.api]
rate = "10r/s"
burst = 20
nodelay = true
concurrent = 5
[access_log]
output = "stdout"
format = "json"
fields = ["client", "status", "header:X-Tenant"]
[[site]]
hosts = ["a.example"]
tls = "off"
allow = ["10.0.0.0/8"]
deny = ["all"]
limit = ["api"]
error_pages = { 404 = "/srv/404.html", 5xx = "/srv/50x.html" }
maintenance = true
  [[site.route]]
  path = "/"
  respond = "x"
  limit = []
  auth = false
  satisfy = "any"
  basic_auth = { users = { alice = "$2y$05$abc" } }
`
	c, err := Parse("edged.toml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	s, r := c.Sites[0], c.Sites[0].Routes[0]
	if len(s.Limit) != 1 || r.Limit == nil || len(r.Limit) != 0 {
		t.Errorf("limit lists: site %v, route %#v (want an empty, non-nil route list)", s.Limit, r.Limit)
	}
	if s.Maintenance == nil || !s.Maintenance.Enabled || r.Auth == nil || *r.Auth {
		t.Errorf("maintenance %+v, auth %v", s.Maintenance, r.Auth)
	}
	if c.Limits["api"].LimitConfig("api").Delay != 20 {
		t.Errorf("nodelay: delay %d, want the burst", c.Limits["api"].LimitConfig("api").Delay)
	}
}
