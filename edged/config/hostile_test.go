package config

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestHostileConfigs: files a reviewer (or an accident) might hand to
// edged -t. Each is refused promptly with file, line and key where there
// is one, and none hangs, crashes or is read into memory whole.
func TestHostileConfigs(t *testing.T) {
	dir := t.TempDir()
	site := "[[site]]\n[[site.route]]\npath = \"/\"\nrespond = \"x\"\n"
	write := func(name, src string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	zero := filepath.Join(dir, "zero.toml")
	os.Symlink("/dev/zero", zero)
	fifo := filepath.Join(dir, "fifo.toml")
	unix.Mkfifo(fifo, 0o600)
	big := filepath.Join(dir, "big.toml")
	f, _ := os.Create(big)
	f.Truncate(64 << 20)
	f.Close()
	deep := write("deep.toml", "a = "+strings.Repeat("[", 100000)+strings.Repeat("]", 100000)+"\n")
	cases := []struct {
		name, path, want string
	}{
		{"symlink to /dev/zero", zero, "not a regular file"},
		{"fifo", fifo, "not a regular file"},
		{"directory", dir, "not a regular file"},
		{"64 MiB", big, "more than a configuration file may be"},
		{"deep nesting", deep, "deep.toml:1"},
		{"NUL bytes", write("nul.toml", "[server]\x00\n"), "nul.toml:1"},
		{"not UTF-8", write("latin1.toml", site+"  status = 200 # caf\xe9\n"), "latin1.toml:5: not UTF-8"},
		{"duplicate key", write("dupkey.toml", "[server]\nh2c = true\nh2c = false\n"+site), "dupkey.toml:3"},
		{"duplicate table", write("duptable.toml", "[server]\n[server]\n"+site), "duptable.toml:2"},
		{"port too large", write("port.toml", "[server]\nhttp = [\"127.0.0.1:99999\"]\n"+site), "port.toml:2: server.http[0]: address \"127.0.0.1:99999\": port \"99999\" is not a number from 0 to 65535"},
		{"upstream port too large", write("upport.toml", "[[site]]\n[[site.route]]\npath = \"/\"\nupstream = \"a\"\n[upstream.a]\nservers = [\"10.0.0.1:65536\"]\n"), "upport.toml:6: upstream.a.servers[0]"},
		{"service name port", write("svc.toml", "[server]\nhttp = [\":http\"]\n"+site), "svc.toml:2: server.http[0]"},
		{"read_header_timeout 0s", write("rht.toml", "[server]\nread_header_timeout = \"0s\"\n"+site), "rht.toml:2: server.read_header_timeout: 0s"},
		{"idle_timeout 0s", write("idle.toml", "[server]\nidle_timeout = \"0s\"\n"+site), "idle.toml:2: server.idle_timeout: 0s"},
		{"duration overflow", write("dur.toml", "[server]\nidle_timeout = \"99999999999999d\"\n"+site), "dur.toml:2: server.idle_timeout: invalid duration"},
		{"duration overflow h", write("durh.toml", "[server]\nidle_timeout = \"9999999999999h\"\n"+site), "durh.toml:2: server.idle_timeout: invalid duration"},
		{"size overflow", write("size.toml", "[server]\nmax_body = \"99999999999TiB\"\n"+site), "size.toml:2: server.max_body: invalid size"},
		{"negative size", write("neg.toml", "[server]\nmax_body = -1\n"+site), "neg.toml:2: server.max_body"},
		{"integer overflow", write("int.toml", "[server]\nmax_connections = 99999999999999999999\n"+site), "int.toml:2"},
		{"site is a string", write("sitestr.toml", "site = \"x\"\n"), "sitestr.toml:1: site: want an array of tables"},
		{"server is an array", write("srvarr.toml", "server = [1]\n"+site), "srvarr.toml:1: server: want a table"},
		{"upstream is a string", write("upstr.toml", "upstream = \"a\"\n"+site), "upstr.toml:1: upstream: want a table"},
		{"control characters in a header", write("hdr.toml", site+"  response_headers.set = { X-A = \"a\\r\\nSet-Cookie: x=1\" }\n"), "hdr.toml:5"},
		{"control characters in a host", write("host.toml", "[[site]]\nhosts = [\"a\\u0000.example\"]\n[[site.route]]\npath = \"/\"\nrespond = \"x\"\n"), "host.toml:2: site[0].hosts[0]"},
		{"every type error at once", write("types.toml", "[server]\nh2c = \"yes\"\nmax_connections = \"many\"\n[[site]]\nhosts = \"a.example\"\n[[site.route]]\npath = 5\n"), "types.toml:2: server.h2c"},
	}
	lineKey := regexp.MustCompile(`^[^:]+\.toml:\d+: `)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			done := make(chan error, 1)
			go func() { _, err := Load(c.path); done <- err }()
			var err error
			select {
			case err = <-done:
			case <-time.After(20 * time.Second):
				t.Fatal("Load hangs")
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error\n  %v\nwant it to contain\n  %s", err, c.want)
			}
			if strings.Contains(c.want, ".toml:") {
				for _, line := range strings.Split(err.Error(), "\n") {
					if !lineKey.MatchString(line) {
						t.Errorf("a line without file and line number: %q", line)
					}
				}
			}
		})
	}
	t.Run("every type error at once", func(t *testing.T) {
		_, err := Load(filepath.Join(dir, "types.toml"))
		for _, want := range []string{"types.toml:2: server.h2c", "types.toml:3: server.max_connections", "types.toml:5: site[0].hosts", "types.toml:7: site[0].route[0].path"} {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("missing %q in\n%v", want, err)
			}
		}
	})
}
