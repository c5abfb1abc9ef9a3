package tomlconf

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
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
		{"unknown in array table", "[[site]]\nhosts=[]\n[[site.route]]\npath=\"/\"\nstatic_dir=\"/x\"\n", "edged.toml:5: site[0].route[0].static_dir: unknown key"},
		{"wrong type", "[server]\nworkers = \"four\"\n", "edged.toml:2: server.workers: incompatible types"},
		{"bad size", "[server]\nmax_body = \"ten\"\n", "edged.toml:2: server.max_body: invalid size \"ten\""},
		{"bad duration", "[[site]]\n[[site.route]]\ntimeout = \"5x\"\n", "edged.toml:3: site[0].route[0].timeout: invalid duration \"5x\""},
		{"bare number duration", "[[site]]\n[[site.route]]\ntimeout = 5\n", "write it as a string with a unit"},
		{"syntax", "[server\n", "to end table name"},
		{"table where a value goes", "[server]\n[server.workers]\n", "edged.toml:2: server.workers: incompatible types"},
		{"value where a table goes", "server = 5\n", "edged.toml:1: server: want a table, not an integer"},
		{"value where tables go", "site = [1, 2]\n", "edged.toml:1: site: want an array of tables"},
		{"bad element", "[[site]]\nhosts = [\"a\", 2, \"c\"]\n", "edged.toml:2: site[0].hosts[1]: incompatible types"},
		{"string where an array goes", "[[site]]\nhosts = \"a\"\n", "edged.toml:2: site[0].hosts: want an array, not a string"},
		{"case matters", "[Server]\nhttp = []\n", "edged.toml:1: Server: unknown key"},
		{"not UTF-8", "[server]\nhttp = [\"\xff\"]\n", "edged.toml:2: not UTF-8 text"},
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

// TestEveryErrorAtOnce: wrong types and unknown keys all over the file are
// reported together, in line order, each with its indexed key.
func TestEveryErrorAtOnce(t *testing.T) {
	src := "[server]\nworkers = \"four\"\nmax_body = true\nbogus = 1\n[[site]]\nhosts = \"a\"\n[[site.route]]\npath = 1\n[[site.route]]\ntimeout = \"x\"\n[[site]]\n[[site.route]]\nupstream = []\n"
	var c conf
	_, err := Decode("edged.toml", []byte(src), &c)
	var es Errors
	if !errors.As(err, &es) {
		t.Fatalf("%T %v", err, err)
	}
	var got []string
	for _, e := range es {
		got = append(got, fmt.Sprintf("%d %s", e.Line, e.Key))
	}
	want := []string{"2 server.workers", "3 server.max_body", "4 server.bogus", "6 site[0].hosts", "8 site[0].route[0].path", "10 site[0].route[1].timeout", "13 site[1].route[0].upstream"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("errors\n%v\nwant\n%v\nfull:\n%v", got, want, err)
	}
}

// TestReadFileRefusesWhatIsNotAConfigFile: devices, FIFOs, directories and
// oversized files are refused without being read (a symlink to /dev/zero
// used to hang edged -t).
func TestReadFileRefusesWhatIsNotAConfigFile(t *testing.T) {
	dir := t.TempDir()
	zero := filepath.Join(dir, "zero.toml")
	os.Symlink("/dev/zero", zero)
	fifo := filepath.Join(dir, "fifo.toml")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big.toml")
	f, _ := os.Create(big)
	f.Truncate(MaxFileSize + 1)
	f.Close()
	good := filepath.Join(dir, "good.toml")
	os.WriteFile(good, []byte("[server]\n"), 0o644)
	link := filepath.Join(dir, "link.toml")
	os.Symlink(good, link)
	for path, want := range map[string]string{
		zero: "not a regular file", fifo: "not a regular file", dir: "not a regular file",
		big: "more than a configuration file may be", filepath.Join(dir, "none.toml"): "no such file",
	} {
		done := make(chan error, 1)
		go func() { _, err := ReadFile(path); done <- err }()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("%s: %v, want %q", path, err, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: ReadFile hangs", path)
		}
	}
	if b, err := ReadFile(link); err != nil || string(b) != "[server]\n" {
		t.Errorf("a symlink to a regular file: %q, %v", b, err)
	}
}

type inlineEntry struct{ Addr string }

func (e *inlineEntry) UnmarshalTOML(v any) error {
	switch x := v.(type) {
	case string:
		e.Addr = x
	case map[string]any:
		e.Addr, _ = x["addr"].(string)
	default:
		return errors.New("want a string or a table")
	}
	return nil
}

// TestArraysOfInlineTables: an array of inline tables decodes into custom
// elements, each with its own index on error.
func TestArraysOfInlineTables(t *testing.T) {
	var c struct {
		Servers []inlineEntry `toml:"servers"`
	}
	if _, err := Decode("x.toml", []byte("servers = [{ addr = \"a\" }, { addr = \"b\" }]\n"), &c); err != nil || len(c.Servers) != 2 || c.Servers[1].Addr != "b" {
		t.Fatalf("%v %+v", err, c)
	}
	if _, err := Decode("x.toml", []byte("servers = [\"a\", 5]\n"), &c); err == nil || !strings.Contains(err.Error(), "x.toml:1: servers[1]: want a string or a table") {
		t.Fatalf("%v", err)
	}
}
