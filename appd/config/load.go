package config

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/edgeapp/edgeapp/internal/logging"
	"github.com/edgeapp/edgeapp/internal/systemd"
	"github.com/edgeapp/edgeapp/internal/tomlconf"
	"golang.org/x/sys/unix"
)

// PathFor is the configuration file of instance name: /etc/appd/NAME.toml,
// or DefaultPath for an empty name.
func PathFor(name string) string {
	if name == "" {
		return DefaultPath
	}
	return filepath.Join(DefaultDir, name+".toml")
}

// RuntimeDir is where appd puts its sockets: $RUNTIME_DIRECTORY (the first
// one, as systemd may list several), else /run/appd.
func RuntimeDir() string {
	return systemd.RuntimeDir("/run/appd")
}

// ControlPath is where `appd status NAME` finds the control socket of the
// instance NAME: the default of app.control, RuntimeDir()/NAME.ctl, or
// RuntimeDir()/NAME/NAME.ctl for an instance whose unit has
// RuntimeDirectory=appd/NAME (DynamicUser=yes: a dynamic user must not own
// the shared /run/appd).
func ControlPath(name string) string {
	p := filepath.Join(RuntimeDir(), name+".ctl")
	if _, err := os.Stat(p); err != nil {
		own := filepath.Join(RuntimeDir(), name, name+".ctl")
		if _, err := os.Stat(own); err == nil {
			return own
		}
	}
	return p
}

// Load reads, decodes, defaults and validates path for instance name (""
// means "appd"). The error lists every problem found, each with file, line
// and key.
func Load(path, name string) (*Config, error) {
	data, err := tomlconf.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, name, data)
}

// Parse is Load for configuration text already in memory.
func Parse(file, name string, data []byte) (*Config, error) {
	var c Config
	doc, err := tomlconf.Decode(file, data, &c)
	if err != nil {
		return nil, err
	}
	c.Doc = doc
	c.Path = file
	var errs tomlconf.Errors
	c.applyDefaults(name, &errs)
	c.validate(&errs)
	if err := errs.Err(); err != nil {
		return nil, err
	}
	return &c, nil
}

func (c *Config) applyDefaults(name string, errs *tomlconf.Errors) {
	if name == "" {
		name = "appd"
	}
	a := &c.App
	if !c.Doc.IsDefined("app", "listen") {
		a.Listen = []string{"unix:" + filepath.Join(RuntimeDir(), name+".sock")}
	}
	if a.Control == "" {
		a.Control = filepath.Join(RuntimeDir(), name+".ctl")
	}
	if !c.Doc.IsDefined("app", "zygote") {
		a.Zygote = a.Preload || RunsRunner(a.Command)
	}
	if a.Readiness == "" {
		a.Readiness = "notify"
	}
	if a.Output == "" {
		a.Output = "journal"
	}
	if a.LogLevel == "" {
		a.LogLevel = "info"
	}
	if a.Probe.Interval == 0 {
		a.Probe.Interval = tomlconf.Duration(250 * time.Millisecond)
	}
	if a.Probe.Host == "" {
		a.Probe.Host = "localhost"
	}

	w := &c.Workers
	switch v := w.Count.V.(type) {
	case nil:
		w.N = CPUs()
	case int64:
		if v < 1 || v > 10000 {
			*errs = append(*errs, c.Doc.Errorf("workers.count", "%d workers: want 1 to 10000, or \"auto\"", v))
		}
		w.N = int(v)
	case string:
		if v != "auto" {
			*errs = append(*errs, c.Doc.Errorf("workers.count", "%q: want a number of workers or \"auto\"", v))
		}
		w.N = CPUs()
	case map[string]any:
		// { min = N, max = M }: appd scales between them by pressure.
		w.Autoscale = true
		get := func(k string) int {
			n, ok := v[k].(int64)
			if !ok || n < 1 || n > 10000 {
				*errs = append(*errs, c.Doc.Errorf("workers.count."+k, "%v: want 1 to 10000 workers", v[k]))
				return 1
			}
			return int(n)
		}
		for k := range v {
			if k != "min" && k != "max" {
				*errs = append(*errs, c.Doc.Errorf("workers.count."+k, "unknown key: want count = { min = N, max = M }"))
			}
		}
		w.Min, w.Max = get("min"), get("max")
		if w.Min > w.Max {
			*errs = append(*errs, c.Doc.Errorf("workers.count", "min %d is more than max %d", w.Min, w.Max))
		}
		if c.Doc.IsDefined("workers", "min") || c.Doc.IsDefined("workers", "max") {
			*errs = append(*errs, c.Doc.Errorf("workers.count", "count = { min, max } and workers.min/max: give the bounds once"))
		}
		w.N = w.Min
	default:
		*errs = append(*errs, c.Doc.Errorf("workers.count", "%v: want a number of workers, \"auto\" or { min = N, max = M }", v))
		w.N = 1
	}
	if !w.Autoscale && !c.Doc.IsDefined("workers", "min") {
		w.Min = 1
	}
	if !w.Autoscale && !c.Doc.IsDefined("workers", "max") {
		w.Max = max(2*w.N, w.Min)
	}
	if !c.Doc.IsDefined("workers", "surge") {
		w.Surge = 0 // as many as the workers being replaced
	}
	if !c.Doc.IsDefined("workers", "memory_pressure_limit") {
		w.MemoryPressureLimit = DefaultMemoryPressureLimit
	}
	setDur := func(d *tomlconf.Duration, key string, def time.Duration) {
		if !c.Doc.IsDefined("workers", key) {
			*d = tomlconf.Duration(def)
		}
	}
	setDur(&w.Timeout, "timeout", 30*time.Second)
	setDur(&w.StartTimeout, "start_timeout", 60*time.Second)
	setDur(&w.GracefulTimeout, "graceful_timeout", 30*time.Second)
	setDur(&w.LifetimeJitter, "lifetime_jitter", w.MaxLifetime.D()/10)
	setDur(&w.RestartDelay, "restart_delay", 100*time.Millisecond)
	setDur(&w.RestartDelayMax, "restart_delay_max", 30*time.Second)
	setDur(&w.CrashLoopWindow, "crash_loop_window", 60*time.Second)
	setDur(&w.ScaleUpCooldown, "scale_up_cooldown", DefaultScaleUpCooldown)
	setDur(&w.ScaleDownAfter, "scale_down_after", DefaultScaleDownAfter)
	if !c.Doc.IsDefined("workers", "crash_loop_restarts") {
		w.CrashLoopRestarts = 5
	}

	l := &c.Limits
	if !c.Doc.IsDefined("limits", "pids_max") {
		l.PidsMax, l.PidsMaxDefault = DefaultPidsMax, true
	}
	switch {
	case l.Swap.Max:
		l.SwapMax = nil
	case l.Swap.Set:
		l.SwapMax = &l.Swap.Size
	case l.MemoryMax > 0:
		var none tomlconf.Size
		l.SwapMax = &none
	}
}

// CPUs is the number of CPUs appd may run on: the "auto" worker count.
func CPUs() int {
	var set unix.CPUSet
	if unix.SchedGetaffinity(0, &set) == nil {
		if n := set.Count(); n > 0 {
			return n
		}
	}
	return runtime.NumCPU()
}

func (c *Config) validate(errs *tomlconf.Errors) {
	bad := func(key, format string, args ...any) {
		*errs = append(*errs, c.Doc.Errorf(key, format, args...))
	}
	a := &c.App
	if len(a.Command) == 0 || a.Command[0] == "" {
		bad("app.command", "missing: the worker's command line, e.g. [\"gunicorn\", \"-w\", \"1\", \"myapp:app\"]")
	} else if p, err := c.resolveCommand(a.Command[0]); err != nil {
		bad("app.command", "%v", err)
	} else {
		a.Command[0] = p
	}
	for i, addr := range a.Listen {
		if _, _, err := systemd.SplitAddr(addr); err != nil {
			bad(fmt.Sprintf("app.listen[%d]", i), "%v", err)
		}
	}
	if a.Directory != "" {
		if !filepath.IsAbs(a.Directory) {
			bad("app.directory", "%q: want an absolute path", a.Directory)
		} else if st, err := os.Stat(a.Directory); err != nil || !st.IsDir() {
			bad("app.directory", "%q is not a directory", a.Directory)
		}
	}
	for k := range a.Environment {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			bad("app.environment", "%q is not a valid variable name", k)
		}
	}
	if a.User != "" {
		if _, err := user.Lookup(a.User); err != nil {
			bad("app.user", "no such user %q", a.User)
		}
	}
	if a.Group != "" {
		if _, err := user.LookupGroup(a.Group); err != nil {
			bad("app.group", "no such group %q", a.Group)
		}
	}
	if a.Preload && !a.Zygote {
		bad("app.preload", "preload = true needs zygote = true: the zygote is what loads the application once")
	}
	switch a.Readiness {
	case "notify", "exec":
	case "probe":
		if (a.Probe.HTTP == "") == !a.Probe.TCP {
			bad("app.probe", "readiness = \"probe\" needs exactly one of probe.http = \"/path\" or probe.tcp = true")
		}
		if a.Probe.HTTP != "" && !strings.HasPrefix(a.Probe.HTTP, "/") {
			bad("app.probe.http", "%q: want a path starting with /", a.Probe.HTTP)
		}
	default:
		bad("app.readiness", "%q: want \"notify\", \"exec\" or \"probe\"", a.Readiness)
	}
	switch a.Output {
	case "journal", "inherit":
	default:
		bad("app.output", "%q: want \"journal\" or \"inherit\"", a.Output)
	}
	if a.Control != "-" && !filepath.IsAbs(strings.TrimPrefix(a.Control, "unix:")) {
		bad("app.control", "%q: want an absolute socket path or \"-\"", a.Control)
	}
	a.Control = strings.TrimPrefix(a.Control, "unix:")
	if _, err := logging.ParseLevel(a.LogLevel); err != nil {
		bad("app.log_level", "%v", err)
	}

	w := &c.Workers
	if w.Min < 1 {
		bad("workers.min", "%d: want at least 1", w.Min)
	}
	if !w.Autoscale && w.Min > w.N { // count = { min, max } was checked as it was read
		bad("workers.min", "min %d is more than count %d", w.Min, w.N)
	}
	if !w.Autoscale && w.Max < w.N {
		bad("workers.max", "max %d is less than count %d", w.Max, w.N)
	}
	if w.StartTimeout == 0 {
		bad("workers.start_timeout", "must be more than 0")
	}
	if w.RestartDelay == 0 {
		bad("workers.restart_delay", "must be more than 0 (a worker that exits at once would be restarted in a tight loop)")
	}
	if w.RestartDelayMax < w.RestartDelay {
		bad("workers.restart_delay_max", "%v is less than restart_delay %v", w.RestartDelayMax, w.RestartDelay)
	}
	if w.CrashLoopRestarts < 1 {
		bad("workers.crash_loop_restarts", "%d: want at least 1", w.CrashLoopRestarts)
	}
	if c.Doc.IsDefined("workers", "surge") && w.Surge < 1 {
		bad("workers.surge", "%d: want at least 1 (1 replaces one worker at a time)", w.Surge)
	}
	if w.MemoryPressureLimit <= 0 || w.MemoryPressureLimit > 100 {
		bad("workers.memory_pressure_limit", "%v: want a percentage above 0 and at most 100", w.MemoryPressureLimit)
	}
	if w.ScaleDownAfter.D() < time.Second {
		bad("workers.scale_down_after", "%v: want at least 1s", w.ScaleDownAfter)
	}
	if w.MaxLifetime > 0 && w.MaxLifetime.D() < time.Second {
		bad("workers.max_lifetime", "%v is too short to be useful", w.MaxLifetime)
	}

	l := &c.Limits
	if l.CPUMax != "" {
		f, err := ParseCPU(l.CPUMax)
		if err != nil {
			bad("limits.cpu_max", "%v", err)
		}
		l.CPUFraction = f
	}
	if l.CPUWeight != 0 && (l.CPUWeight < 1 || l.CPUWeight > 10000) {
		bad("limits.cpu_weight", "%d: want 1 to 10000", l.CPUWeight)
	}
	if l.PidsMax < 0 {
		bad("limits.pids_max", "%d: must not be negative", l.PidsMax)
	}
	if l.MemoryHigh > 0 && l.MemoryMax > 0 && l.MemoryHigh > l.MemoryMax {
		bad("limits.memory_high", "%v is above memory_max %v", l.MemoryHigh, l.MemoryMax)
	}
	if w.MaxMemory > 0 && l.MemoryMax > 0 && w.MaxMemory >= l.MemoryMax {
		bad("workers.max_memory", "%v is not below limits.memory_max %v: the OOM killer would act before the graceful recycle", w.MaxMemory, l.MemoryMax)
	}
}

// CheckWorkerUser refuses to run the workers as root by default: when appd
// runs as root (euid 0), app.user must be set; user = "root" runs them as
// root on purpose. appd calls it for -t, start and reload.
func (c *Config) CheckWorkerUser(euid int) error {
	if euid != 0 || c.App.User != "" {
		return nil
	}
	return tomlconf.Errors{c.Doc.Errorf("app.user",
		"not set, and appd runs as root: the workers would run as root. Set user = \"NAME\" to a dedicated user "+
			"(e.g. useradd --system --no-create-home NAME), or user = \"root\" to run them as root on purpose")}
}

// resolveCommand finds the executable like the shell would, using the PATH
// the workers will have.
func (c *Config) resolveCommand(cmd string) (string, error) {
	if !strings.Contains(cmd, "/") {
		path := os.Getenv("PATH")
		if p, ok := c.App.Environment["PATH"]; ok {
			path = p
		}
		for _, dir := range filepath.SplitList(path) {
			if dir == "" {
				dir = "."
			}
			p := filepath.Join(dir, cmd)
			if isExecutable(p) == nil {
				return p, nil
			}
		}
		return "", fmt.Errorf("%q not found in PATH (%s)", cmd, path)
	}
	if !filepath.IsAbs(cmd) && c.App.Directory != "" {
		cmd = filepath.Join(c.App.Directory, cmd)
	}
	if err := isExecutable(cmd); err != nil {
		return "", err
	}
	return cmd, nil
}

func isExecutable(p string) error {
	st, err := os.Stat(p)
	if err != nil {
		return fmt.Errorf("%s: %w", p, errors.Unwrap(err))
	}
	if st.IsDir() {
		return fmt.Errorf("%s is a directory", p)
	}
	if st.Mode()&0o111 == 0 {
		return fmt.Errorf("%s is not executable", p)
	}
	return nil
}

// ParseCPU parses a CPU quota "50%", "100%", "250%" into a fraction of one
// CPU.
func ParseCPU(s string) (float64, error) {
	num, ok := strings.CutSuffix(strings.TrimSpace(s), "%")
	if !ok {
		return 0, fmt.Errorf("%q: want a percentage of one CPU, e.g. \"50%%\" or \"200%%\"", s)
	}
	f, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
	if err != nil || f <= 0 || f > 100000 {
		return 0, fmt.Errorf("%q: want a percentage of one CPU above 0, e.g. \"50%%\" or \"200%%\"", s)
	}
	return f / 100, nil
}

// Credentials resolves User and Group to ids; ok is false when no user or
// group is configured.
func (a *App) Credentials() (uid, gid uint32, groups []uint32, ok bool, err error) {
	if a.User == "" && a.Group == "" {
		return 0, 0, nil, false, nil
	}
	uid, gid = uint32(os.Getuid()), uint32(os.Getgid())
	if a.User != "" {
		u, err := user.Lookup(a.User)
		if err != nil {
			return 0, 0, nil, false, fmt.Errorf("looking up user %q: %w", a.User, err)
		}
		n, _ := strconv.ParseUint(u.Uid, 10, 32)
		g, _ := strconv.ParseUint(u.Gid, 10, 32)
		uid, gid = uint32(n), uint32(g)
		if ids, err := u.GroupIds(); err == nil {
			for _, s := range ids {
				if v, err := strconv.ParseUint(s, 10, 32); err == nil {
					groups = append(groups, uint32(v))
				}
			}
		}
	}
	if a.Group != "" {
		g, err := user.LookupGroup(a.Group)
		if err != nil {
			return 0, 0, nil, false, fmt.Errorf("looking up group %q: %w", a.Group, err)
		}
		n, _ := strconv.ParseUint(g.Gid, 10, 32)
		gid = uint32(n)
	}
	return uid, gid, groups, true, nil
}

// RunsRunner says whether command runs appd-python, alone or under a
// Python interpreter (["/srv/venv/bin/python", "-X", "dev",
// "/usr/bin/appd-python", ...]). appd-python speaks the zygote protocol,
// so its workers are forked from a zygote unless the configuration says
// zygote = false: one interpreter with gunicorn imported, shared by the
// workers as gunicorn's master shares it with its own.
func RunsRunner(command []string) bool {
	const runner = "appd-python"
	if len(command) == 0 {
		return false
	}
	if filepath.Base(command[0]) == runner {
		return true
	}
	if !strings.HasPrefix(filepath.Base(command[0]), "python") {
		return false
	}
	for i := 1; i < len(command); i++ {
		switch arg := command[i]; {
		case arg == "-c" || arg == "-m" || arg == "-":
			return false // a program that is not a file
		case arg == "-W" || arg == "-X" || arg == "--check-hash-based-pycs":
			i++ // the option's value
		case strings.HasPrefix(arg, "-"):
		default:
			return filepath.Base(arg) == runner
		}
	}
	return false
}
