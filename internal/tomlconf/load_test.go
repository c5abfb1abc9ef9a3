package tomlconf

import (
	"errors"
	"strings"
	"testing"
	"time"
)

type route struct {
	Path     string   `toml:"path"`
	Upstream string   `toml:"upstream"`
	Timeout  Duration `toml:"timeout"`
}

type site struct {
	Hosts  []string `toml:"hosts"`
	Routes []route  `toml:"route"`
}

type conf struct {
	Server struct {
		HTTP    []string `toml:"http"`
		MaxBody Size     `toml:"max_body"`
		Workers int      `toml:"workers"`
	} `toml:"server"`
	Sites []site `toml:"site"`
}

const good = `# comment
[server]
http = [
  ":80",  # first
]
max_body = "10MiB"

[[site]]
hosts = ["a.example"]
  [[site.route]]
  path = "/"
  upstream = "app"
  [[site.route]]
  path = "/api/"   # the API
  timeout = "30s"

[[site]]
hosts = ["b.example"]
  [[site.route]]
  path = "/b"
`

func TestDecodeGoodAndLines(t *testing.T) {
	var c conf
	doc, err := Decode("edged.toml", []byte(good), &c)
	if err != nil {
		t.Fatal(err)
	}
	if c.Server.MaxBody != 10<<20 || c.Sites[0].Routes[1].Timeout.D() != 30*time.Second {
		t.Fatalf("decoded %+v", c)
	}
	for key, want := range map[string]int{
		"server.max_body":          6,
		"site[0].route[1].path":    14,
		"site[0].route[1].timeout": 15,
		"site[1].hosts":            18,
		"site[1].route[0].path":    20,
		"site[1].route[0].nothere": 19, // falls back to the table's line
		"server.http":              3,
	} {
		if got := doc.Line(key); got != want {
			t.Errorf("Line(%s) = %d, want %d", key, got, want)
		}
	}
	e := doc.Errorf("site[1].route[0].path", "bad %s", "thing")
	if e.Error() != "edged.toml:20: site[1].route[0].path: bad thing" {
		t.Errorf("Errorf = %q", e.Error())
	}
}

func TestDecodeErrorsNameFileLineKey(t *testing.T) {
	cases := []struct {
		name, src, want string
	}{
		{"unknown key", "[server]\nhttp = []\nbogus = 1\n", "edged.toml:3: server.bogus: unknown key"},
		{"unknown in array table", "[[site]]\nhosts=[]\n[[site.route]]\npath=\"/\"\nstatic_dir=\"/x\"\n", "edged.toml:5: site.route.static_dir: unknown key"},
		{"wrong type", "[server]\nworkers = \"four\"\n", "edged.toml:2: server.workers: incompatible types"},
		{"bad size", "[server]\nmax_body = \"ten\"\n", "edged.toml:2: server.max_body: invalid size \"ten\""},
		{"bad duration", "[[site]]\n[[site.route]]\ntimeout = \"5x\"\n", "edged.toml:3: site.route.timeout: invalid duration \"5x\""},
		{"bare number duration", "[[site]]\n[[site.route]]\ntimeout = 5\n", "write it as a string with a unit"},
		{"syntax", "[server\n", "to end table name"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var c conf
			_, err := Decode("edged.toml", []byte(tc.src), &c)
			if err == nil {
				t.Fatal("no error")
			}
			var es Errors
			if !errors.As(err, &es) {
				t.Fatalf("error %T is not Errors", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

func TestSizes(t *testing.T) {
	for in, want := range map[string]Size{"512": 512, "64KiB": 64 << 10, "1k": 1024, "256MiB": 256 << 20, "10GiB": 10 << 30, "1.5GB": 1500000000, "2 MB": 2000000} {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "MiB", "12 parsecs", "-1"} {
		if _, err := ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q) accepted", bad)
		}
	}
	if s := Size(256 << 20).String(); s != "256MiB" {
		t.Errorf("String = %s", s)
	}
}

func TestDurations(t *testing.T) {
	for in, want := range map[string]time.Duration{"500ms": 500 * time.Millisecond, "30s": 30 * time.Second, "6h": 6 * time.Hour, "7d": 7 * 24 * time.Hour, "1h30m": 90 * time.Minute} {
		got, err := ParseDuration(in)
		if err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "5", "d", "-3s", "soon"} {
		if _, err := ParseDuration(bad); err == nil {
			t.Errorf("ParseDuration(%q) accepted", bad)
		}
	}
}
