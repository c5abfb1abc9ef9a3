// Package config is the schema of appd.toml (one file per application,
// /etc/appd/NAME.toml): plain structs decoded strictly from TOML, defaults,
// and validation whose messages name file, line and key. Load returns a
// Config whose defaults are filled and whose values are checked; the
// supervisor reads only the resolved fields (Command[0] made absolute,
// Workers.N, Limits parsed into bytes and fractions).
package config

import (
	"fmt"
	"time"

	"github.com/edgeapp/edgeapp/internal/tomlconf"
)

// DefaultPath is the configuration appd reads without -config or -name.
const DefaultPath = "/etc/appd/appd.toml"

// DefaultDir holds one NAME.toml per application (appd@NAME.service).
const DefaultDir = "/etc/appd"

// Autoscaling defaults (count = { min, max }).
const (
	DefaultScaleUpCooldown     = 2 * time.Second
	DefaultScaleDownAfter      = 30 * time.Second
	DefaultMemoryPressureLimit = 10.0 // percent, PSI some avg10
)

// Config is the whole of appd.toml.
type Config struct {
	App     App     `toml:"app"`
	Workers Workers `toml:"workers"`
	Limits  Limits  `toml:"limits"`

	// Path is the file the config was read from.
	Path string `toml:"-"`
	// Doc locates keys for error messages; nil for configs built in code.
	Doc *tomlconf.Doc `toml:"-"`
}

// App describes the program appd runs as its workers.
type App struct {
	// Command is the worker's argv; required. The first word is looked up
	// in PATH (from the environment below, else appd's) unless it contains
	// a slash. The worker finds the listening socket(s) as fd 3 onwards by
	// the sd_listen_fds protocol (LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES=app),
	// e.g. ["gunicorn", "-w", "1", "myapp:app"]: gunicorn finds the socket
	// through LISTEN_FDS by itself. Do not add "--bind fd://3" as well:
	// gunicorn 20 would then take fd 3 twice and exit with EBADF.
	Command []string `toml:"command"`
	// Listen lists the addresses appd binds when systemd passed no socket
	// named "app" ("unix:/path" or "host:port"). Default:
	// ["unix:$RUNTIME_DIRECTORY/NAME.sock"], else ["unix:/run/appd/NAME.sock"].
	// An inherited socket is never bound or listen()ed again.
	Listen []string `toml:"listen"`
	// Directory is the workers' working directory. Default: appd's.
	Directory string `toml:"directory"`
	// Environment is added to the environment appd passes on (appd's own,
	// minus systemd's LISTEN_*, NOTIFY_SOCKET and WATCHDOG_* variables).
	Environment map[string]string `toml:"environment"`
	// User and Group the workers run as; only when appd runs as root.
	// Default: appd's own. Group defaults to the user's primary group;
	// the user's supplementary groups apply too. The worker starts through
	// appd's own binary (a trampoline that sets LISTEN_PID), so that user
	// must be able to execute it, as anyone can /usr/bin/appd.
	User  string `toml:"user"`
	Group string `toml:"group"`
	// Zygote = true starts the command once per generation as a zygote
	// (APPD_ZYGOTE_FD names its end of a socket pair) that forks the
	// workers when appd asks; appd moves each fork into its own cgroup
	// leaf before letting it accept. The zygote speaks appd's fork
	// protocol (appd.toml(5), ZYGOTE PROTOCOL); appd-python does.
	// Default: true with Preload or when the command runs appd-python
	// (RunsRunner), else false.
	Zygote bool `toml:"zygote"`
	// Preload = true has the zygote load the application before it forks
	// (APPD_PRELOAD=1), so its code and data are shared copy-on-write by
	// the workers; a reload starts a new zygote with the new code.
	// Implies Zygote.
	Preload bool `toml:"preload"`
	// Readiness says when a new worker counts as serving:
	// "notify" (default) - it sent READY=1 to $NOTIFY_SOCKET (gunicorn
	// does, as do programs using sd_notify); "exec" - its command was
	// executed successfully; "probe" - the probe below answered.
	Readiness string `toml:"readiness"`
	// Probe is used when readiness = "probe".
	Probe Probe `toml:"probe"`
	// Output of the workers' stdout and stderr: "journal" (default) copies
	// each line to appd's stderr prefixed with "[wSLOT pid PID] ", keeping
	// an sd-daemon "<N>" priority prefix in front; "inherit" passes appd's
	// stdout and stderr to the workers unchanged.
	Output string `toml:"output"`
	// Control is the unix socket of `appd status` and the Prometheus
	// metrics (GET /metrics). Default: $RUNTIME_DIRECTORY/NAME.ctl, else
	// /run/appd/NAME.ctl. "-" disables it.
	Control string `toml:"control"`
	// LogLevel: debug, info (default), warn, error.
	LogLevel string `toml:"log_level"`
}

// Probe is the readiness check of readiness = "probe". It goes to the
// shared socket, so any serving worker may answer it: it proves a freshly
// started application serves, but during a reload the old generation
// answers too. Prefer "notify" when the program can send READY=1.
type Probe struct {
	// HTTP is the path of a GET request; a 2xx or 3xx answer means ready.
	HTTP string `toml:"http"`
	// TCP = true: a successful connect means ready.
	TCP bool `toml:"tcp"`
	// Interval between attempts. Default 250ms.
	Interval tomlconf.Duration `toml:"interval"`
	// Host header of the HTTP probe. Default "localhost".
	Host string `toml:"host"`
}

// Workers sizes the pool and says how workers are kept healthy.
type Workers struct {
	// Count is the number of workers: an integer, or "auto" for one per
	// CPU appd may run on, or { min = N, max = M }: appd starts min and
	// scales by pressure (autoscaling, below). Default "auto".
	// SIGTTIN/SIGTTOU change it by one within Min..Max until the next
	// reload (with autoscaling: until the autoscaler's next decision after
	// the cool-downs).
	Count Count `toml:"count"`
	// Min and Max bound SIGTTOU/SIGTTIN scaling. Defaults: 1 and twice
	// count (with count = { min, max }: those).
	Min int `toml:"min"`
	Max int `toml:"max"`
	// Surge is how many workers may be starting at once to replace workers
	// that still serve (a reload's new generation, recycling), and fewer
	// when appd's own cgroup (the unit's MemoryMax=) has no room for them.
	// Default 0: as many as are being replaced, all at once.
	Surge int `toml:"surge"`
	// Autoscaling with count = { min, max }: a worker is added when
	// connections wait in the listening socket's accept queue or every
	// worker is busy, at most once per ScaleUpCooldown, never while
	// appd's cgroup is under memory pressure (PSI "some" avg10 above
	// MemoryPressureLimit percent); one is removed when a worker's worth
	// of capacity stayed idle for ScaleDownAfter. Defaults 2s, 30s, 10.
	ScaleUpCooldown     tomlconf.Duration `toml:"scale_up_cooldown"`
	ScaleDownAfter      tomlconf.Duration `toml:"scale_down_after"`
	MemoryPressureLimit float64           `toml:"memory_pressure_limit"`
	// Timeout is the watchdog: a worker that sent WATCHDOG=1 once and then
	// stays silent this long gets SIGABRT (so a runtime can dump its stack)
	// and SIGKILL 5s later, and is replaced. Workers get WATCHDOG_USEC so
	// sd_watchdog_enabled() works. Default 30s; "0s" disables it.
	Timeout tomlconf.Duration `toml:"timeout"`
	// StartTimeout is how long a new worker may take to become ready
	// before it is killed and counted as failed. Default 60s.
	StartTimeout tomlconf.Duration `toml:"start_timeout"`
	// GracefulTimeout is how long a worker has between SIGTERM and SIGKILL
	// when drained (reload, recycle, scale down, stop). Default 30s.
	GracefulTimeout tomlconf.Duration `toml:"graceful_timeout"`
	// MaxLifetime recycles a worker (a replacement is started and ready
	// before the old one drains, one slot at a time) after it has run this
	// long. Default 0 = never.
	MaxLifetime tomlconf.Duration `toml:"max_lifetime"`
	// LifetimeJitter adds a random 0..jitter to each worker's max_lifetime
	// so workers started together are not recycled together. Default a
	// tenth of max_lifetime.
	LifetimeJitter tomlconf.Duration `toml:"lifetime_jitter"`
	// MaxMemory recycles a worker gracefully once its memory passes this
	// (the cgroup's memory.current; without a cgroup tree, the summed RSS
	// of the worker's process group, sampled every second). Set it below limits.memory_max so the
	// recycle happens before the OOM killer. Default 0 = never.
	MaxMemory tomlconf.Size `toml:"max_memory"`
	// RestartDelay is the delay before restarting a worker that exited
	// unexpectedly; it doubles (with +-25% jitter) for each further failure
	// of the slot, up to RestartDelayMax. A worker that had become ready is
	// replaced at once the first time; one that stayed up 10s resets the
	// count. Defaults 100ms and 30s.
	RestartDelay    tomlconf.Duration `toml:"restart_delay"`
	RestartDelayMax tomlconf.Duration `toml:"restart_delay_max"`
	// CrashLoopRestarts failures of one slot within CrashLoopWindow mark it
	// as crash-looping in the status and the log; appd keeps retrying at
	// restart_delay_max and never exits for it. Defaults 5 and 60s.
	CrashLoopRestarts int               `toml:"crash_loop_restarts"`
	CrashLoopWindow   tomlconf.Duration `toml:"crash_loop_window"`

	// N is Count resolved ("auto" -> CPUs; { min, max } -> min).
	N int `toml:"-"`
	// Autoscale is set by count = { min, max }.
	Autoscale bool `toml:"-"`
}

// Limits are per-worker cgroup v2 limits. Each worker gets its own leaf
// under appd's delegated cgroup (Delegate=yes); without one, appd warns once
// and runs without limits unless Required is set.
type Limits struct {
	MemoryMax  tomlconf.Size `toml:"memory_max"`  // memory.max: OOM kill above it (the whole worker: memory.oom.group=1). Default none.
	MemoryHigh tomlconf.Size `toml:"memory_high"` // memory.high: reclaim/throttle above it. Default none.
	// Swap is swap_max as written: a size, or "max" for no limit. Default:
	// 0 when memory_max is set (a worker that outgrows memory_max is
	// OOM-killed and replaced instead of paging), else left as the kernel
	// has it.
	Swap SwapSetting `toml:"swap_max"`
	// CPUMax caps CPU time as a percentage of one CPU: "50%", "100%",
	// "250%" (two and a half CPUs). Default none.
	CPUMax    string `toml:"cpu_max"`
	CPUWeight int    `toml:"cpu_weight"` // cpu.weight 1..10000; default 100 (the kernel's)
	// PidsMax is pids.max: tasks (processes and threads) per worker, which
	// stops fork bombs. Default DefaultPidsMax, applied where the cgroup
	// tree has the pids controller; 0 means no limit. A value written in
	// the file needs the pids controller.
	PidsMax int `toml:"pids_max"`
	// Required refuses to start (and to reload) without a delegated cgroup
	// v2 tree. Default false: warn once, run without limits.
	Required bool `toml:"required"`

	// SwapMax is memory.swap.max resolved from Swap and its default: nil
	// leaves it as the kernel has it ("max").
	SwapMax *tomlconf.Size `toml:"-"`
	// PidsMaxDefault says PidsMax is the default, not written in the file.
	PidsMaxDefault bool `toml:"-"`
	// CPUFraction is CPUMax parsed (1.0 = one CPU; 0 = none).
	CPUFraction float64 `toml:"-"`
}

// DefaultPidsMax is the default pids_max per worker: room for the threads
// of any runtime (the JVM, Node.js, gthread workers), not for a fork bomb.
const DefaultPidsMax = 512

// SwapSetting is swap_max: a size, or "max" for no limit.
type SwapSetting struct {
	Size tomlconf.Size
	Max  bool // "max": no limit
	Set  bool // written in the file
}

// UnmarshalTOML accepts "max" or a size.
func (s *SwapSetting) UnmarshalTOML(v any) error {
	s.Set = true
	if v == "max" {
		s.Max = true
		return nil
	}
	if err := s.Size.UnmarshalTOML(v); err != nil {
		return fmt.Errorf("%w, or \"max\" for no limit", err)
	}
	return nil
}

// Any reports whether any limit is set in the file (memory, swap, CPU, or a
// pids_max other than the default).
func (l Limits) Any() bool {
	return l.MemoryMax > 0 || l.MemoryHigh > 0 || l.Swap.Set || l.CPUFraction > 0 || l.CPUWeight > 0 || (l.PidsMax > 0 && !l.PidsMaxDefault)
}

// Count is workers.count as written: an integer, a string or a table.
type Count struct{ V any }

// UnmarshalTOML keeps the value for Load to check (and marks a table's
// keys as read).
func (c *Count) UnmarshalTOML(v any) error {
	c.V = v
	return nil
}
