package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, src := range files {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

const mainWithInclude = `include = ["sites.d/*.toml"]
[server]
http = ["127.0.0.1:8080"]
[[site]]
hosts = ["main.example.com"]
tls = "off"
[[site.route]]
path = "/"
respond = "main"
`

func TestDropIns(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"edged.toml": mainWithInclude,
		"sites.d/20-b.toml": `[[site]]
hosts = ["b.example.com"]
tls = "off"
[[site.route]]
path = "/"
upstream = "shared"
`,
		"sites.d/10-a.toml": `[[site]]
hosts = ["a.example.com"]
tls = "off"
[[site.route]]
path = "/"
upstream = "shared"
cache = "c"
[upstream.shared]
servers = ["127.0.0.1:9000"]
[cache.c]
`,
		"sites.d/README":        "not toml",
		"sites.d/30-b.toml.bak": "garbage",
	})
	c, err := Load(filepath.Join(dir, "edged.toml"))
	if err != nil {
		t.Fatal(err)
	}
	var hosts []string
	for _, s := range c.Sites {
		hosts = append(hosts, s.Hosts[0])
	}
	if strings.Join(hosts, " ") != "main.example.com a.example.com b.example.com" {
		t.Fatalf("sites in order %v", hosts)
	}
	if c.Upstreams["shared"] == nil || c.Caches["c"] == nil || c.Upstreams["shared"].Policy != "round_robin" {
		t.Fatalf("upstreams %v caches %v", c.Upstreams, c.Caches)
	}
}

// TestDropInErrors: a drop-in's errors name the drop-in, its line and its
// own key; a name or host defined in two files is refused with both
// places.
func TestDropInErrors(t *testing.T) {
	site := func(host string) string {
		return "[[site]]\nhosts = [\"" + host + "\"]\ntls = \"off\"\n[[site.route]]\npath = \"/\"\nrespond = \"x\"\n"
	}
	for _, c := range []struct {
		name  string
		files map[string]string
		want  []string
	}{
		{"bad route", map[string]string{"sites.d/a.toml": site("a.example.com") + "[[site.route]]\npath = \"api\"\nrespond = \"y\"\n"},
			[]string{"sites.d/a.toml:8: site[0].route[1].path: \"api\": a route path starts with /"}},
		{"wrong type", map[string]string{"sites.d/a.toml": site("a.example.com") + "status = \"ok\"\n"},
			[]string{"sites.d/a.toml:7: site[0].route[0].status: incompatible types"}},
		{"server in a drop-in", map[string]string{"sites.d/a.toml": "[server]\nh2c = true\n" + site("a.example.com")},
			[]string{"sites.d/a.toml:1: server: not allowed in a drop-in file"}},
		{"duplicate upstream", map[string]string{
			"sites.d/a.toml": "[upstream.app]\nservers = [\"127.0.0.1:1\"]\n",
			"sites.d/b.toml": "\n[upstream.app]\nservers = [\"127.0.0.1:2\"]\n",
		}, []string{"sites.d/b.toml:2: upstream.app: [upstream.app] is already defined at upstream.app (" + "DIR/sites.d/a.toml:1)"}},
		{"duplicate host", map[string]string{
			"sites.d/a.toml": site("dup.example.com"),
			"sites.d/b.toml": site("DUP.example.com"),
		}, []string{"sites.d/b.toml:2: site[0].hosts[0]: host \"DUP.example.com\" is already served by site[0] (DIR/sites.d/a.toml:1)"}},
		{"host of the main file", map[string]string{"sites.d/a.toml": site("main.example.com")},
			[]string{"sites.d/a.toml:2: site[0].hosts[0]: host \"main.example.com\" is already served by site[0] (DIR/edged.toml:4)"}},
		{"undefined upstream in a drop-in", map[string]string{"sites.d/a.toml": "[[site]]\nhosts = [\"u.example.com\"]\ntls = \"off\"\n[[site.route]]\npath = \"/\"\nupstream = \"nope\"\n"},
			[]string{"sites.d/a.toml:6: site[0].route[0].upstream: no [upstream.nope] is defined"}},
		{"two errors in two drop-ins", map[string]string{
			"sites.d/a.toml": "[upstream.x]\nservers = [\"localhost\"]\n",
			"sites.d/b.toml": "[cache.y]\nmemory = \"lots\"\n",
		}, []string{"sites.d/a.toml:2: upstream.x.servers[0]", "sites.d/b.toml:2: cache.y.memory: invalid size"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			c.files["edged.toml"] = mainWithInclude
			writeFiles(t, dir, c.files)
			_, err := Load(filepath.Join(dir, "edged.toml"))
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range c.want {
				w = strings.ReplaceAll(w, "DIR", dir)
				if !strings.Contains(err.Error(), filepath.Join(dir, w[:strings.IndexByte(w, ':')])+w[strings.IndexByte(w, ':'):]) {
					t.Errorf("error\n  %v\nwant it to contain\n  %s", err, w)
				}
			}
		})
	}
}

// TestOwnersReportEveryProblem: the proxy, compress and static packages
// own their settings' checks; config reports every problem they find, at
// its key.
func TestOwnersReportEveryProblem(t *testing.T) {
	dir := t.TempDir()
	src := `[compress]
gzip_level = 12
encodings = ["br"]
[[site]]
[[site.route]]
path = "/s/"
static = "` + dir + `"
precompressed = ["lzma"]
fallback = "index.html"
[[site.route]]
path = "/"
upstream = "a"
[upstream.a]
servers = ["localhost", "10.0.0.1:99999"]
policy = "fastest"
retries = -1
`
	_, err := Parse("edged.toml", []byte(src))
	for _, want := range []string{
		"edged.toml:2: compress.gzip_level: 12: want 1 to 9",
		"edged.toml:3: compress.encodings[0]",
		"edged.toml:8: site[0].route[0].precompressed[0]",
		"edged.toml:9: site[0].route[0].fallback",
		"edged.toml:14: upstream.a.servers[0]",
		"edged.toml:14: upstream.a.servers[1]",
		"edged.toml:15: upstream.a.policy",
		"edged.toml:16: upstream.a.retries",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in\n%v", want, err)
		}
	}
}

// TestHealthTimeoutDefaultFollowsInterval: a short interval with no
// timeout is not an error; a timeout written longer than the interval is.
func TestHealthTimeoutDefaultFollowsInterval(t *testing.T) {
	site := "[[site]]\n[[site.route]]\npath = \"/\"\nupstream = \"a\"\n"
	c, err := Parse("edged.toml", []byte(site+"[upstream.a]\nservers = [\"127.0.0.1:1\"]\nhealth = { tcp = true, interval = \"1s\" }\n"))
	if err != nil || c.Upstreams["a"].Health.Timeout.D() != time.Second {
		t.Fatalf("%v", err)
	}
	if _, err := Parse("edged.toml", []byte(site+"[upstream.a]\nservers = [\"127.0.0.1:1\"]\nhealth = { path = \"/h\", interval = \"1s\", timeout = \"3s\" }\n")); err == nil || !strings.Contains(err.Error(), "upstream.a.health.timeout") {
		t.Fatalf("%v", err)
	}
}
