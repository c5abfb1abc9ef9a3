package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeapp/edgeapp/internal/tomlconf"
)

func TestDefaults(t *testing.T) {
	t.Setenv("RUNTIME_DIRECTORY", "/run/appd")
	c, err := Parse("myapp.toml", "myapp", []byte("[app]\ncommand = [\"sh\", \"-c\", \"true\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(c.App.Command[0], "/sh") || !filepath.IsAbs(c.App.Command[0]) {
		t.Errorf("command not resolved in PATH: %q", c.App.Command[0])
	}
	w := c.Workers
	if w.N != CPUs() || w.Min != 1 || w.Max != 2*w.N || w.Timeout.D() != 30*time.Second || w.StartTimeout.D() != time.Minute ||
		w.GracefulTimeout.D() != 30*time.Second || w.MaxLifetime != 0 || w.RestartDelay.D() != 100*time.Millisecond ||
		w.RestartDelayMax.D() != 30*time.Second || w.CrashLoopRestarts != 5 || w.CrashLoopWindow.D() != time.Minute {
		t.Errorf("worker defaults %+v", w)
	}
	a := c.App
	if a.Listen[0] != "unix:/run/appd/myapp.sock" || a.Control != "/run/appd/myapp.ctl" || a.Readiness != "notify" || a.Output != "journal" {
		t.Errorf("app defaults %+v", a)
	}
	if c.Limits.Any() || c.Limits.Required || c.Limits.PidsMax != DefaultPidsMax || !c.Limits.PidsMaxDefault || c.Limits.SwapMax != nil {
		t.Errorf("limits by default: %+v", c.Limits)
	}
}

func TestLimitDefaults(t *testing.T) {
	for _, tc := range []struct {
		limits      string
		pids        int
		pidsDefault bool
		swap        string // "" = left alone
	}{
		{"", DefaultPidsMax, true, ""},
		{"memory_max = \"256MiB\"", DefaultPidsMax, true, "0"},
		{"memory_max = \"256MiB\"\nswap_max = \"max\"", DefaultPidsMax, true, ""},
		{"memory_max = \"256MiB\"\nswap_max = \"64MiB\"", DefaultPidsMax, true, "64MiB"},
		{"swap_max = 0", DefaultPidsMax, true, "0"},
		{"memory_high = \"256MiB\"", DefaultPidsMax, true, ""},
		{"pids_max = 0", 0, false, ""},
		{"pids_max = 64", 64, false, ""},
	} {
		c, err := Parse("x.toml", "x", []byte("[app]\ncommand = [\"/bin/true\"]\n[limits]\n"+tc.limits+"\n"))
		if err != nil {
			t.Errorf("%q: %v", tc.limits, err)
			continue
		}
		l := c.Limits
		swap := ""
		if l.SwapMax != nil {
			swap = l.SwapMax.String()
		}
		if l.PidsMax != tc.pids || l.PidsMaxDefault != tc.pidsDefault || swap != tc.swap {
			t.Errorf("%q: pids_max %d (default %v), swap_max %q; want %d (%v), %q", tc.limits, l.PidsMax, l.PidsMaxDefault, swap, tc.pids, tc.pidsDefault, tc.swap)
		}
	}
	_, err := Parse("x.toml", "x", []byte("[app]\ncommand = [\"/bin/true\"]\n[limits]\nswap_max = \"none\"\n"))
	if err == nil || !strings.Contains(err.Error(), "x.toml:4: limits.swap_max: invalid size \"none\"") || !strings.Contains(err.Error(), `or "max"`) {
		t.Errorf("swap_max = \"none\": %v", err)
	}
}

func TestCheckWorkerUser(t *testing.T) {
	parse := func(src string) *Config {
		c, err := Parse("x.toml", "x", []byte(src))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	noUser := parse("# comment\n[app]\ncommand = [\"/bin/true\"]\ngroup = \"root\"\n")
	err := noUser.CheckWorkerUser(0)
	if err == nil || !strings.HasPrefix(err.Error(), "x.toml:2: app.user: not set, and appd runs as root") {
		t.Errorf("root appd, no user: %v", err)
	}
	if err := noUser.CheckWorkerUser(1000); err != nil {
		t.Errorf("unprivileged appd, no user: %v", err)
	}
	if err := parse("[app]\ncommand = [\"/bin/true\"]\nuser = \"root\"\n").CheckWorkerUser(0); err != nil {
		t.Errorf("user = \"root\" written: %v", err)
	}
	if err := parse("[app]\ncommand = [\"/bin/true\"]\nuser = \"nobody\"\n").CheckWorkerUser(0); err != nil {
		t.Errorf("user = \"nobody\": %v", err)
	}
}

func TestFullConfig(t *testing.T) {
	dir := t.TempDir()
	src := `[app]
command = ["/bin/sh", "-c", "exec sleep 100"]
listen = ["unix:/run/appd/x.sock", "127.0.0.1:8000"]
directory = "` + dir + `"
environment = { APP_ENV = "production" }
readiness = "probe"
probe = { http = "/healthz", interval = "1s" }
output = "inherit"
[workers]
count = 4
min = 2
max = 8
timeout = "10s"
max_lifetime = "6h"
max_memory = "400MiB"
[limits]
memory_max = "512MiB"
memory_high = "450MiB"
swap_max = 0
cpu_max = "150%"
cpu_weight = 200
pids_max = 128
required = true
`
	c, err := Parse("x.toml", "x", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if c.Workers.N != 4 || c.Workers.LifetimeJitter.D() != 36*time.Minute || c.Limits.CPUFraction != 1.5 ||
		*c.Limits.SwapMax != 0 || c.Limits.MemoryMax != 512<<20 || c.App.Probe.HTTP != "/healthz" || !c.Limits.Any() {
		t.Errorf("decoded %+v", c)
	}
}

func TestCountAuto(t *testing.T) {
	c, err := Parse("x.toml", "", []byte("[app]\ncommand = [\"/bin/true\"]\n[workers]\ncount = \"auto\"\n"))
	if err != nil || c.Workers.N != CPUs() {
		t.Fatalf("auto: %v %+v", err, c)
	}
}

func TestErrorsNameLineAndKey(t *testing.T) {
	notExec := filepath.Join(t.TempDir(), "app")
	os.WriteFile(notExec, []byte("x"), 0o644)
	cases := []struct{ src, want string }{
		{"[app]\n", "x.toml:1: app.command: missing"},
		{"[app]\ncommand = [\"no-such-program-here\"]\n", "x.toml:2: app.command: \"no-such-program-here\" not found in PATH"},
		{"[app]\ncommand = [\"" + notExec + "\"]\n", "x.toml:2: app.command: " + notExec + " is not executable"},
		{"[app]\ncommand = [\"/bin/true\"]\nlisten = [\"nowhere\"]\n", "x.toml:3: app.listen[0]: address \"nowhere\""},
		{"[app]\ncommand = [\"/bin/true\"]\nreadiness = \"psychic\"\n", "x.toml:3: app.readiness: \"psychic\""},
		{"[app]\ncommand = [\"/bin/true\"]\nreadiness = \"probe\"\n", "app.probe: readiness = \"probe\" needs exactly one of"},
		{"[app]\ncommand = [\"/bin/true\"]\n[workers]\ncount = 4\nmin = 5\n", "x.toml:5: workers.min: min 5 is more than count 4"},
		{"[app]\ncommand = [\"/bin/true\"]\n[workers]\ncount = 4\nmax = 3\n", "x.toml:5: workers.max: max 3 is less than count 4"},
		{"[app]\ncommand = [\"/bin/true\"]\n[workers]\ncount = \"many\"\n", "x.toml:4: workers.count: \"many\""},
		{"[app]\ncommand = [\"/bin/true\"]\n[limits]\ncpu_max = \"1.5\"\n", "x.toml:4: limits.cpu_max: \"1.5\": want a percentage"},
		{"[app]\ncommand = [\"/bin/true\"]\n[limits]\nmemory_max = \"lots\"\n", "x.toml:4: limits.memory_max: invalid size"},
		{"[app]\ncommand = [\"/bin/true\"]\n[workers]\nmax_memory = \"1GiB\"\n[limits]\nmemory_max = \"512MiB\"\n", "workers.max_memory: 1GiB is not below limits.memory_max 512MiB"},
		{"[app]\ncommand = [\"/bin/true\"]\nuser = \"no-such-user-x\"\n", "x.toml:3: app.user: no such user"},
		{"[app]\ncommand = [\"/bin/true\"]\n[workers]\ntimeout = 30\n", "x.toml:4: workers.timeout: invalid duration 30: write it as a string"},
		{"[app]\ncommand = [\"/bin/true\"]\nworkers = 3\n", "x.toml:3: app.workers: unknown key"},
	}
	for _, tc := range cases {
		_, err := Parse("x.toml", "x", []byte(tc.src))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q:\n got %v\nwant %q", tc.src, err, tc.want)
		}
		var es tomlconf.Errors
		if err != nil && !errors.As(err, &es) {
			t.Errorf("%q: error %T is not tomlconf.Errors", tc.src, err)
		}
	}
}

func TestParseCPU(t *testing.T) {
	for in, want := range map[string]float64{"50%": 0.5, "100%": 1, "250%": 2.5, " 20 %": 0.2} {
		if got, err := ParseCPU(in); err != nil || got != want {
			t.Errorf("ParseCPU(%q) = %v %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "0%", "-5%", "x%", "100"} {
		if _, err := ParseCPU(bad); err == nil {
			t.Errorf("ParseCPU(%q) accepted", bad)
		}
	}
}

func TestPathFor(t *testing.T) {
	if PathFor("") != "/etc/appd/appd.toml" || PathFor("myapp") != "/etc/appd/myapp.toml" {
		t.Error(PathFor(""), PathFor("myapp"))
	}
}

func TestControlPath(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("RUNTIME_DIRECTORY", dir)
	if got, want := ControlPath("app"), filepath.Join(dir, "app.ctl"); got != want {
		t.Errorf("nothing there: %s, want %s", got, want)
	}
	own := filepath.Join(dir, "app", "app.ctl")
	os.MkdirAll(filepath.Dir(own), 0o755)
	os.WriteFile(own, nil, 0o600)
	if got := ControlPath("app"); got != own {
		t.Errorf("RuntimeDirectory=appd/app: %s, want %s", got, own)
	}
	shared := filepath.Join(dir, "app.ctl")
	os.WriteFile(shared, nil, 0o600)
	if got := ControlPath("app"); got != shared {
		t.Errorf("both: %s, want the shared directory's %s", got, shared)
	}
}

func TestAutoscaleSurgeAndZygoteKeys(t *testing.T) {
	parse := func(body string) (*Config, error) {
		return Parse("x.toml", "x", []byte("[app]\ncommand = [\"/bin/true\"]\n"+body))
	}
	c, err := parse("preload = true\n[workers]\ncount = { min = 2, max = 6 }\nsurge = 2\nscale_up_cooldown = \"1s\"\n")
	if err != nil {
		t.Fatal(err)
	}
	w := c.Workers
	if !w.Autoscale || w.N != 2 || w.Min != 2 || w.Max != 6 || w.Surge != 2 || w.ScaleUpCooldown.D() != time.Second ||
		w.ScaleDownAfter.D() != DefaultScaleDownAfter || w.MemoryPressureLimit != DefaultMemoryPressureLimit || !c.App.Zygote || !c.App.Preload {
		t.Errorf("parsed %+v %+v", w, c.App)
	}
	c, _ = parse("[workers]\ncount = 3\n")
	if c.Workers.Autoscale || c.Workers.Surge != 0 || c.App.Zygote {
		t.Errorf("defaults %+v", c.Workers)
	}
	// appd-python speaks the zygote protocol: its workers are forked from
	// a zygote unless the configuration says otherwise.
	for cmd, want := range map[string]bool{
		"appd-python app:app":                               true,
		"/usr/bin/appd-python --threads 4 app:app":          true,
		"/srv/venv/bin/python /usr/bin/appd-python app:app": true,
		"python3 -X dev -u /usr/bin/appd-python app:app":    true,
		"python3 -m appd-python":                            false,
		"python3 /srv/other.py appd-python":                 false,
		"/usr/bin/gunicorn --bind fd://3 -w 1 app:app":      false,
		"/usr/bin/env appd-python app:app":                  false,
		"":                                                  false,
	} {
		if got := RunsRunner(strings.Fields(cmd)); got != want {
			t.Errorf("RunsRunner(%s) = %v, want %v", cmd, got, want)
		}
	}
	runner := filepath.Join(t.TempDir(), "appd-python")
	if err := os.WriteFile(runner, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for body, want := range map[string]bool{"": true, "zygote = false\n": false, "preload = true\n": true} {
		c, err := Parse("x.toml", "x", []byte(fmt.Sprintf("[app]\ncommand = [%q, \"app:app\"]\n%s", runner, body)))
		if err != nil || c.App.Zygote != want {
			t.Errorf("appd-python with %q: zygote %v (%v), want %v", body, c != nil && c.App.Zygote, err, want)
		}
	}
	for body, want := range map[string]string{
		"[workers]\ncount = { min = 4, max = 2 }\n":          "x.toml:4: workers.count: min 4 is more than max 2",
		"[workers]\ncount = { min = 1, most = 2 }\n":         "workers.count.most: unknown key",
		"[workers]\ncount = { min = 1, max = 3 }\nmax = 4\n": "give the bounds once",
		"[workers]\ncount = { min = 0, max = 3 }\n":          "workers.count.min: 0: want 1 to 10000",
		"[workers]\nsurge = 0\n":                             "workers.surge: 0: want at least 1",
		"[workers]\nmemory_pressure_limit = 0.0\n":           "workers.memory_pressure_limit",
		"preload = true\nzygote = false\n":                   "app.preload: preload = true needs zygote = true",
	} {
		if _, err := parse(body); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want %q", body, err, want)
		}
	}
}
