package supervisor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/edgeapp/edgeapp/appd/plainhttp"
	"github.com/edgeapp/edgeapp/internal/systemd"
)

// Status is the supervisor's state as `appd status` shows it and the
// control socket serves it (GET /status, JSON).
type Status struct {
	Name       string    `json:"name"`
	PID        int       `json:"pid"`
	Message    string    `json:"message"` // the STATUS= line sent to systemd
	Generation int       `json:"generation"`
	Serving    int       `json:"serving_generation"` // last generation fully serving
	Workers    int       `json:"workers"`            // target count
	Min        int       `json:"min"`
	Max        int       `json:"max"`
	Ready      int       `json:"ready"` // slots with a ready worker
	Reloading  bool      `json:"reloading"`
	Stopping   bool      `json:"stopping"`
	Cgroup     string    `json:"cgroup,omitempty"` // the delegated tree; "" = no limits
	Started    time.Time `json:"started"`
	Slots      []Worker  `json:"slots"`
	// Zygotes are the generations' zygotes (zygote = true), Slot -1.
	Zygotes []Worker `json:"zygotes,omitempty"`
	// Reloads counts reload outcomes: started, done, rolled_back, invalid.
	Reloads map[string]int `json:"reloads"`
	// LastReload is the last reload's outcome; nil before any.
	LastReload *ReloadOutcome `json:"last_reload,omitempty"`
	// MemoryMax is [limits] memory_max of the current generation's
	// workers (0: none), enforced only with a Cgroup.
	MemoryMax int64 `json:"memory_max_bytes,omitempty"`
	// Exits counts worker exits: planned (drained), failed, oom.
	Exits map[string]int `json:"exits"`
	// Load: connections waiting in the listening sockets' accept queues
	// (and their backlog), and the workers' worth of CPU in use.
	Queued  int     `json:"accept_queue"`
	Backlog int     `json:"accept_backlog"`
	Busy    float64 `json:"busy_workers"`
	// Autoscale is count = { min, max }; HeldBack says why a worker it
	// wants is not added (memory pressure), ScaleUps/ScaleDowns count its
	// changes.
	Autoscale bool   `json:"autoscale"`
	HeldBack  string `json:"scale_held_back,omitempty"`
	// MemoryPressure is PSI "some" avg10 (percent) of appd's cgroup, or
	// of the machine without one; -1 where the kernel has no PSI.
	MemoryPressure float64 `json:"memory_pressure"`
	ScaleUps       int     `json:"scale_ups"`
	ScaleDowns     int     `json:"scale_downs"`

	// perSlot sums each slot's workers (two during a reload) for the
	// metrics, which are labelled by slot only: "0", "1", ..., "zygote".
	perSlot map[string]slotTotals
}

// slotTotals is what the metrics say about one slot.
type slotTotals struct {
	memory, pids int64
	cpu          float64 // seconds, counting the slot's workers that are gone
	restarts     int
}

// Worker is one row of the status: a worker, or a slot waiting for one.
type Worker struct {
	Slot          int       `json:"slot"`
	PID           int       `json:"pid,omitempty"`
	Generation    int       `json:"generation,omitempty"`
	State         string    `json:"state"` // starting, ready, draining, backoff, crash-loop
	Since         time.Time `json:"since,omitzero"`
	Uptime        float64   `json:"uptime_seconds"`
	Restarts      int       `json:"restarts"`
	LastExit      string    `json:"last_exit,omitempty"`
	Recycle       string    `json:"recycle,omitempty"` // why it is being replaced
	Status        string    `json:"status,omitempty"`  // the worker's own STATUS=
	MemoryCurrent int64     `json:"memory_current_bytes"`
	MemoryPeak    int64     `json:"memory_peak_bytes"`
	CPU           float64   `json:"cpu_seconds"`
	Pids          int64     `json:"pids"`
}

// ReloadOutcome is where a reload got: "started" (the new generation is
// starting), "done" (it serves), "rolled_back" (it failed; the previous
// one serves, Detail says why) or "invalid" (the configuration was
// refused; Detail is the error).
type ReloadOutcome struct {
	At         time.Time `json:"at"`
	Result     string    `json:"result"`
	Generation int       `json:"generation"`
	Detail     string    `json:"detail,omitempty"`
}

type statusRequest struct{ reply chan Status }

// snapshot builds a Status; loop only.
func (s *Supervisor) snapshot(now time.Time) Status {
	st := Status{Name: s.opts.Name, PID: os.Getpid(), Message: s.statusLine(), Generation: s.gen, Serving: s.stableGen,
		Workers: s.count, Min: s.cfg.Workers.Min, Max: s.cfg.Workers.Max, Ready: s.readyCount(),
		Reloading: s.rollout && s.stableGen != 0, Stopping: s.stopping, Started: s.started,
		Reloads: maps.Clone(s.reloads), Exits: maps.Clone(s.exits),
		Queued: s.as.queued, Backlog: s.as.backlog, Busy: s.as.busy, Autoscale: s.cfg.Workers.Autoscale,
		HeldBack: s.as.heldBack, ScaleUps: s.as.ups, ScaleDowns: s.as.downs, MemoryPressure: s.as.pressure,
		MemoryMax: int64(s.cfg.Limits.MemoryMax)}
	if s.lastReload != nil {
		lr := *s.lastReload
		st.LastReload = &lr
	}
	if s.tree != nil {
		st.Cgroup = s.tree.Path()
	}
	st.perSlot = map[string]slotTotals{}
	for i := 0; i < s.count; i++ {
		sl := s.slot(i)
		st.perSlot[strconv.Itoa(i)] = slotTotals{cpu: sl.cpuDone.Seconds(), restarts: sl.restarts}
	}
	if s.cfg.App.Zygote || s.zslot.cpuDone > 0 {
		st.perSlot["zygote"] = slotTotals{cpu: s.zslot.cpuDone.Seconds(), restarts: s.zslot.restarts}
	}
	seen := map[int]bool{}
	for _, w := range s.workers {
		key := strconv.Itoa(w.slot)
		if w.kind == zygote {
			key = "zygote"
		}
		t, ok := st.perSlot[key]
		if !ok { // a slot above the target, draining
			sl := s.slotOf(w)
			t = slotTotals{cpu: sl.cpuDone.Seconds(), restarts: sl.restarts}
		}
		t.memory += w.stats.memCurrent
		t.pids += w.stats.pids
		t.cpu += w.stats.cpu.Seconds()
		st.perSlot[key] = t
		sl := s.slotOf(w)
		row := Worker{Slot: w.slot, PID: w.pid, Generation: w.gen, State: w.state.String(),
			Since: w.started, Uptime: now.Sub(w.started).Seconds(), Restarts: sl.restarts, LastExit: sl.lastExit,
			Recycle: w.retire, Status: w.status, MemoryCurrent: w.stats.memCurrent, MemoryPeak: w.stats.memPeak,
			CPU: w.stats.cpu.Seconds(), Pids: w.stats.pids}
		if w.kind == zygote {
			st.Zygotes = append(st.Zygotes, row)
			continue
		}
		seen[w.slot] = true
		st.Slots = append(st.Slots, row)
	}
	if len(st.Zygotes) == 0 && s.cfg.App.Zygote && (s.zslot.restarts > 0) {
		state := "backoff"
		if s.zslot.crashLoop {
			state = "crash-loop"
		}
		st.Zygotes = append(st.Zygotes, Worker{Slot: -1, State: state, Restarts: s.zslot.restarts, LastExit: s.zslot.lastExit})
	}
	sort.Slice(st.Zygotes, func(i, j int) bool { return st.Zygotes[i].Generation < st.Zygotes[j].Generation })
	for i := 0; i < s.count; i++ {
		if seen[i] {
			continue
		}
		sl := s.slot(i)
		state := "backoff"
		if sl.crashLoop {
			state = "crash-loop"
		}
		st.Slots = append(st.Slots, Worker{Slot: i, State: state, Restarts: sl.restarts, LastExit: sl.lastExit})
	}
	sort.Slice(st.Slots, func(i, j int) bool {
		a, b := st.Slots[i], st.Slots[j]
		if a.Slot != b.Slot {
			return a.Slot < b.Slot
		}
		return a.Generation < b.Generation
	})
	return st
}

// readyCount is the number of slots below the target with a ready worker.
func (s *Supervisor) readyCount() int {
	n := 0
	for i := 0; i < s.count; i++ {
		for _, w := range s.workers {
			if w.slot == i && w.state == Ready {
				n++
				break
			}
		}
	}
	return n
}

// statusLine is the STATUS= text for systemctl status:
// "4/4 ready, gen 3, 0 restarting".
func (s *Supervisor) statusLine() string {
	if s.stopping {
		return fmt.Sprintf("stopping, %d workers left", len(s.workers))
	}
	restarting := 0
	var loops []string
	for i := 0; i < s.count; i++ {
		sl := s.slot(i)
		if sl.crashLoop {
			loops = append(loops, fmt.Sprintf("w%d", i))
		}
		if s.current(i) == nil && time.Now().Before(sl.nextStart) {
			restarting++
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d/%d ready, gen %d, %d restarting", s.readyCount(), s.count, s.gen, restarting)
	if s.rollout && s.stableGen != 0 {
		fmt.Fprintf(&b, ", reloading from gen %d", s.stableGen)
	}
	if s.cfg.App.Zygote && !s.stopping {
		switch z := s.zygoteOf(s.gen); {
		case z == nil:
			b.WriteString(", zygote restarting")
		case z.state == Starting:
			b.WriteString(", zygote loading")
		}
		if s.zslot.crashLoop {
			loops = append(loops, "zygote")
		}
	}
	if len(loops) > 0 {
		fmt.Fprintf(&b, ", CRASH LOOP: %s", strings.Join(loops, " "))
	}
	if s.reloadNote != "" {
		b.WriteString(", " + s.reloadNote)
	}
	if s.as.heldBack != "" {
		b.WriteString(", scale-up held back: " + s.as.heldBack)
	}
	return b.String()
}

// report sends STATUS= when it changed.
func (s *Supervisor) report() {
	line := s.statusLine()
	if line == s.lastStatus {
		return
	}
	s.lastStatus = line
	s.notify.Status(line)
}

// Status asks the loop for a snapshot (safe from any goroutine).
func (s *Supervisor) Status(ctx context.Context) (Status, error) {
	req := statusRequest{reply: make(chan Status, 1)}
	select {
	case s.events <- req:
	case <-s.done:
		return Status{}, errors.New("supervisor not running")
	case <-ctx.Done():
		return Status{}, ctx.Err()
	}
	select {
	case st := <-req.reply:
		return st, nil
	case <-s.done:
		return Status{}, errors.New("supervisor not running")
	case <-ctx.Done():
		return Status{}, ctx.Err()
	}
}

type controlServer = plainhttp.Server

// serveControl serves GET /status (JSON) and GET /metrics (Prometheus text)
// on a unix socket; the requests are answered from a loop snapshot.
func (s *Supervisor) serveControl(path string) (*controlServer, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("making the control socket's directory: %w", err)
	}
	ln, err := systemd.Bind("unix:" + path)
	if err != nil {
		return nil, fmt.Errorf("opening the control socket: %w", err)
	}
	os.Chmod(path, 0o660)
	shareControl(path)
	return plainhttp.Serve(ln, func(ctx context.Context, path string) plainhttp.Response {
		if path != "/status" && path != "/metrics" {
			return plainhttp.Error(404, "not found: GET /status or /metrics")
		}
		ctx, cancel := context.WithTimeout(ctx, controlWait)
		defer cancel()
		st, err := s.Status(ctx)
		if err != nil {
			return plainhttp.Error(503, err.Error())
		}
		var b bytes.Buffer
		if path == "/metrics" {
			writeMetrics(&b, st)
			return plainhttp.Response{ContentType: "text/plain; version=0.0.4", Body: b.Bytes()}
		}
		enc := json.NewEncoder(&b)
		enc.SetIndent("", "  ")
		enc.Encode(st)
		return plainhttp.Response{ContentType: "application/json", Body: b.Bytes()}
	}), nil
}

// ControlGroup may read the control socket (GET /status and /metrics
// only): the group that already reaches the applications' sockets, so
// that edged (SupplementaryGroups=appd-socket) shows appd's workers on
// its status page. Where the group does not exist the socket stays
// root's.
const ControlGroup = "appd-socket"

func shareControl(path string) {
	g, err := user.LookupGroup(ControlGroup)
	if err != nil {
		return
	}
	if gid, err := strconv.Atoi(g.Gid); err == nil {
		os.Chown(path, -1, gid) // only root may; otherwise it stays ours
	}
}

// writeMetrics writes the status in the Prometheus text format.
func writeMetrics(w io.Writer, st Status) {
	p := func(help, typ, name string) {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
	}
	p("Target number of workers.", "gauge", "appd_workers_target")
	fmt.Fprintf(w, "appd_workers_target %d\n", st.Workers)
	p("Slots with a ready worker.", "gauge", "appd_workers_ready")
	fmt.Fprintf(w, "appd_workers_ready %d\n", st.Ready)
	p("Current generation (reloads start a new one).", "gauge", "appd_generation")
	fmt.Fprintf(w, "appd_generation %d\n", st.Generation)
	p("Workers by state.", "gauge", "appd_workers")
	states := map[string]int{"starting": 0, "ready": 0, "draining": 0, "backoff": 0, "crash-loop": 0}
	for _, r := range st.Slots {
		states[r.State]++
	}
	keys := make([]string, 0, len(states))
	for k := range states {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "appd_workers{state=%q} %d\n", k, states[k])
	}
	counters := func(name, help, label string, m map[string]int) {
		p(help, "counter", name)
		keys := slices.Sorted(maps.Keys(m))
		for _, k := range keys {
			fmt.Fprintf(w, "%s{%s=%q} %d\n", name, label, k, m[k])
		}
	}
	p("Connections waiting in the listening sockets' accept queues.", "gauge", "appd_accept_queue")
	fmt.Fprintf(w, "appd_accept_queue %d\n", st.Queued)
	p("Backlog of the listening sockets (the most that may wait).", "gauge", "appd_accept_backlog")
	fmt.Fprintf(w, "appd_accept_backlog %d\n", st.Backlog)
	p("Workers' worth of CPU wanted, run or waiting to run (each worker counts at most 1).", "gauge", "appd_busy_workers")
	fmt.Fprintf(w, "appd_busy_workers %.2f\n", st.Busy)
	p("PSI memory pressure of appd's cgroup, some avg10, percent (-1: no PSI).", "gauge", "appd_memory_pressure")
	fmt.Fprintf(w, "appd_memory_pressure %.2f\n", st.MemoryPressure)
	p("1 while autoscaling wants a worker but memory pressure holds it back.", "gauge", "appd_scale_held_back")
	held := 0
	if st.HeldBack != "" {
		held = 1
	}
	fmt.Fprintf(w, "appd_scale_held_back %d\n", held)
	counters("appd_autoscale_total", "Workers added (up) and removed (down) by autoscaling.", "direction", map[string]int{"up": st.ScaleUps, "down": st.ScaleDowns})
	counters("appd_reloads_total", "Reloads by outcome (started, done, rolled_back, invalid).", "result", st.Reloads)
	counters("appd_worker_exits_total", "Worker exits: planned (drained), failed (restarted), oom (OOM-killed).", "kind", st.Exits)
	// Per slot, never per pid: the series stay as many as the slots while
	// workers are recycled and reloaded. "zygote" is the zygotes'.
	slots := slices.SortedFunc(maps.Keys(st.perSlot), func(a, b string) int {
		ai, aerr := strconv.Atoi(a)
		bi, berr := strconv.Atoi(b)
		switch {
		case aerr != nil || berr != nil:
			return strings.Compare(a, b)
		}
		return ai - bi
	})
	perSlot := func(name, typ, help string, val func(slotTotals) string) {
		p(help, typ, name)
		for _, k := range slots {
			fmt.Fprintf(w, "%s{slot=%q} %s\n", name, k, val(st.perSlot[k]))
		}
	}
	perSlot("appd_worker_restarts_total", "counter", "Unexpected worker exits per slot.", func(t slotTotals) string { return strconv.Itoa(t.restarts) })
	perSlot("appd_worker_memory_bytes", "gauge", "Memory of the slot's workers (cgroup memory.current, or RSS without cgroups).", func(t slotTotals) string { return strconv.FormatInt(t.memory, 10) })
	perSlot("appd_worker_cpu_seconds_total", "counter", "CPU time of the slot's workers, past and present.", func(t slotTotals) string { return strconv.FormatFloat(t.cpu, 'f', 3, 64) })
	perSlot("appd_worker_tasks", "gauge", "Tasks (processes and threads) of the slot's workers.", func(t slotTotals) string { return strconv.FormatInt(t.pids, 10) })
}

// FetchStatus asks a running appd for its status over its control socket.
func FetchStatus(socket string) (*Status, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	code, body, err := plainhttp.Get(ctx, "unix", socket, "appd", "/status", 64<<20)
	if err != nil {
		return nil, fmt.Errorf("asking appd at %s: %w", socket, err)
	}
	if code != 200 {
		if len(body) > 4096 {
			body = body[:4096]
		}
		return nil, fmt.Errorf("appd at %s: status %d: %s", socket, code, strings.TrimSpace(string(body)))
	}
	var st Status
	if err := json.Unmarshal(body, &st); err != nil {
		return nil, fmt.Errorf("reading appd's status from %s: %w", socket, err)
	}
	return &st, nil
}

// Print writes the status as a table a person reads.
func (st *Status) Print(out io.Writer) {
	name := st.Name
	if name == "" {
		name = "appd"
	}
	fmt.Fprintf(out, "%s (pid %d): %s\n", name, st.PID, st.Message)
	limits := "none (no delegated cgroup v2 tree)"
	if st.Cgroup != "" {
		limits = st.Cgroup
	}
	scaling := "fixed"
	if st.Autoscale {
		scaling = fmt.Sprintf("autoscaled: %d up, %d down", st.ScaleUps, st.ScaleDowns)
		if st.HeldBack != "" {
			scaling += "; HELD BACK: " + st.HeldBack
		}
	}
	fmt.Fprintf(out, "workers %d (min %d, max %d, %s), generation %d, cgroup %s\n", st.Workers, st.Min, st.Max, scaling, st.Generation, limits)
	pressure := "unknown"
	if st.MemoryPressure >= 0 {
		pressure = fmt.Sprintf("%.1f%%", st.MemoryPressure)
	}
	fmt.Fprintf(out, "accept queue %d (backlog %d), busy %.1f workers' worth of CPU, memory pressure %s\n\n", st.Queued, st.Backlog, st.Busy, pressure)
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SLOT\tPID\tGEN\tSTATE\tUPTIME\tRESTARTS\tMEMORY\tPEAK\tCPU\tPIDS\tLAST EXIT\tSTATUS")
	for _, r := range append(slices.Clone(st.Zygotes), st.Slots...) {
		pid, gen, up, mem, peak, cpu, pids := "-", "-", "-", "-", "-", "-", "-"
		if r.PID != 0 {
			pid = fmt.Sprint(r.PID)
			gen = fmt.Sprint(r.Generation)
			up = (time.Duration(r.Uptime) * time.Second).Round(time.Second).String()
			mem, peak = sizeString(r.MemoryCurrent), sizeString(r.MemoryPeak)
			cpu = fmt.Sprintf("%.2fs", r.CPU)
			pids = fmt.Sprint(r.Pids)
		}
		state := r.State
		if r.Recycle != "" {
			state += " (recycling)"
		}
		last := r.LastExit
		if last == "" {
			last = "-"
		}
		name := fmt.Sprintf("w%d", r.Slot)
		if r.Slot < 0 {
			name = "zygote"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", name, pid, gen, state, up, r.Restarts, mem, peak, cpu, pids, last, r.Status)
	}
	tw.Flush()
}
