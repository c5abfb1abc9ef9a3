package supervisor

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgeapp/edgeapp/appd/config"
)

func TestStartNWorkersServeInheritedSocket(t *testing.T) {
	h := start(t, conf(t, "environment = { TW_STATUS = \"warming up\" }\n[workers]\ncount = 3\n"))
	st := h.waitFor("3 ready workers", 30*time.Second, allReady(3, 1))
	if st.Message != "3/3 ready, gen 1, 0 restarting" {
		t.Errorf("status line %q", st.Message)
	}
	// Every worker accepts on the one socket the supervisor holds.
	for _, w := range st.Slots {
		want := fmt.Sprintf("worker slot=%d gen=1 pid=%d listening on %s", w.Slot, w.PID, h.addr)
		for deadline := time.Now().Add(10 * time.Second); !strings.Contains(h.out.String(), want); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("output lacks %q:\n%s", want, h.out.String())
			}
		}
	}
	if body, err := h.get("/"); err != nil || !regexp.MustCompile(`slot=\d gen=1`).MatchString(body) {
		t.Fatalf("answer %q %v", body, err)
	}
	for _, w := range st.Slots {
		if w.PID == 0 || w.Generation != 1 {
			t.Errorf("slot %+v", w)
		}
	}
	h.waitFor("worker STATUS= in the status", 10*time.Second, func(st Status) bool {
		for _, w := range st.Slots {
			if w.Status != "warming up" {
				return false
			}
		}
		return true
	})
	// Output is prefixed with the slot and pid.
	w0 := pidsOf(st)[0]
	want := fmt.Sprintf("[w0 pid %d] worker slot=0 gen=1 pid=%d", w0, w0)
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(h.out.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("output lacks %q:\n%s", want, h.out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	h.sigs <- syscall.SIGTERM
	if err := h.wait(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	for _, pid := range pidsOf(st) {
		if alive(pid) {
			t.Errorf("worker %d alive after stop", pid)
		}
	}
}

func TestCrashedWorkerIsRestarted(t *testing.T) {
	h := start(t, conf(t, "[workers]\ncount = 2\n"))
	st := h.waitFor("2 ready", 30*time.Second, allReady(2, 1))
	old := pidsOf(st)[1]
	stop := make(chan struct{})
	res, wg := h.load(4, 1000000, stop)
	for res.total.Load() < 500 {
		time.Sleep(time.Millisecond)
	}
	syscall.Kill(old, syscall.SIGKILL)
	st = h.waitFor("slot 1 replaced", 30*time.Second, func(st Status) bool {
		p := pidsOf(st)[1]
		return p != 0 && p != old && st.Ready == 2
	})
	for n := res.total.Load() + 1000; res.total.Load() < n; {
		time.Sleep(time.Millisecond)
	}
	close(stop)
	wg.Wait()
	// Only requests the killed worker was serving can fail: at most one per
	// client goroutine. The socket, held by the supervisor, never closed.
	if f := res.failed.Load(); f > 4 {
		t.Errorf("%d of %d requests failed around the crash: %v", f, res.total.Load(), res.errs)
	}
	t.Logf("%d requests around the crash, %d failed (killed mid-request)", res.total.Load(), res.failed.Load())
	for _, w := range st.Slots {
		if w.Slot == 1 {
			if w.Restarts != 1 || !strings.Contains(w.LastExit, "SIGKILL") {
				t.Errorf("slot 1: %+v", w)
			}
		} else if w.Restarts != 0 {
			t.Errorf("slot 0 restarted: %+v", w)
		}
	}
	if !strings.Contains(h.logs.String(), "worker exited unexpectedly, restarting") {
		t.Error("no restart log line")
	}
}

// TestLastWordsComeBeforeTheExit: a worker's STATUS= sent just before it
// exits (appd-python's import error) is part of the failure every time:
// under load the exit used to reach the loop before the notify reader had
// posted the datagram, and the failure (or a reload's rollback) said only
// "exit status N".
func TestLastWordsComeBeforeTheExit(t *testing.T) {
	h := start(t, conf(t, `environment = { TW_EXIT_AT_START = "3", TW_STATUS = "cannot load app: last words" }
[workers]
count = 4
restart_delay = "10ms"
restart_delay_max = "20ms"
`))
	const exits = 60
	h.waitFor(fmt.Sprint(exits, " failed starts"), 60*time.Second, func(st Status) bool {
		n := 0
		for _, sl := range st.Slots {
			n += sl.Restarts
		}
		return n >= exits
	})
	lines := regexp.MustCompile(`worker exited unexpectedly, restarting.*`).FindAllString(h.logs.String(), -1)
	if len(lines) < exits {
		t.Fatalf("%d failures logged, want %d", len(lines), exits)
	}
	for _, l := range lines {
		if !strings.Contains(l, `status="exit status 3; it said: cannot load app: last words"`) {
			t.Errorf("the failure lost what the worker said: %s", l)
		}
	}
}

func TestCrashLoopIsReportedWithoutForkBomb(t *testing.T) {
	h := start(t, conf(t, `environment = { TW_EXIT_AT_START = "3" }
[workers]
count = 1
restart_delay = "50ms"
restart_delay_max = "400ms"
crash_loop_restarts = 4
crash_loop_window = "1m"
`))
	st := h.waitFor("crash loop", 30*time.Second, func(st Status) bool { return strings.Contains(st.Message, "CRASH LOOP: w0") })
	if len(st.Slots) != 1 || st.Slots[0].LastExit != "exit status 3" {
		t.Errorf("slots %+v", st.Slots)
	}
	before := st.Slots[0].Restarts
	time.Sleep(2 * time.Second)
	st = h.status()
	// Backoff is capped at 400ms +-25%: at most 2s/300ms (+1 in flight)
	// restarts, not hundreds.
	if n := st.Slots[0].Restarts - before; n > 8 || n < 1 {
		t.Errorf("%d restarts in 2s with restart_delay_max 400ms", n)
	}
	if !strings.Contains(h.logs.String(), "crash loop: worker keeps failing") {
		t.Error("crash loop not logged")
	}
	select {
	case err := <-h.done:
		t.Fatalf("supervisor exited on a crash loop: %v", err)
	default:
	}
}

func TestWatchdogTimeoutAbortsAndReplaces(t *testing.T) {
	h := start(t, conf(t, `environment = { TW_HANG_SLOTS = "0", TW_STATUS = "handling /report" }
[workers]
count = 2
timeout = "1s"
`))
	st := h.waitFor("2 ready", 30*time.Second, allReady(2, 1))
	old := pidsOf(st)
	st = h.waitFor("slot 0 replaced after the watchdog", 30*time.Second, func(st Status) bool {
		for _, w := range st.Slots {
			if w.Slot == 0 && w.Restarts >= 1 {
				return true
			}
		}
		return false
	})
	var w0 Worker
	for _, w := range st.Slots {
		if w.Slot == 0 {
			w0 = w
		}
	}
	// A Go program dies of SIGABRT with exit status 2 after dumping stacks.
	if !strings.Contains(w0.LastExit, "watchdog timeout") || !strings.Contains(w0.LastExit, "exit status 2") {
		t.Errorf("last exit %q", w0.LastExit)
	}
	logs := h.logs.String()
	if !strings.Contains(logs, "worker watchdog timeout: sending SIGABRT") || !strings.Contains(logs, `last_status="handling /report"`) ||
		!strings.Contains(logs, fmt.Sprintf("pid=%d", old[0])) || !strings.Contains(logs, "last_ping=") {
		t.Errorf("watchdog log line lacks worker, since when, or last status:\n%s", logs)
	}
	if !strings.Contains(h.out.String(), "SIGABRT") {
		t.Errorf("worker did not dump its stacks on SIGABRT")
	}
	if st := h.status(); pidsOf(st)[1] != old[1] {
		t.Errorf("the healthy worker was replaced too")
	}
}

func TestWatchdogKillsWhatIgnoresAbort(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the 5s SIGABRT grace")
	}
	h := start(t, conf(t, `environment = { TW_HANG_SLOTS = "0", TW_IGNORE_ABRT = "1" }
[workers]
count = 1
timeout = "1s"
`))
	st := h.waitFor("1 ready", 30*time.Second, allReady(1, 1))
	old := pidsOf(st)[0]
	h.waitFor("slot 0 replaced after SIGKILL", 30*time.Second, func(st Status) bool {
		return len(st.Slots) == 1 && st.Slots[0].Restarts >= 1 && strings.Contains(st.Slots[0].LastExit, "killed by signal SIGKILL") &&
			strings.Contains(st.Slots[0].LastExit, "watchdog timeout")
	})
	if alive(old) {
		t.Error("old worker alive")
	}
	if !strings.Contains(h.logs.String(), "worker still alive after SIGABRT, killing it") {
		t.Error("SIGKILL after SIGABRT not logged")
	}
}

func TestStartTimeoutKillsNeverReadyWorker(t *testing.T) {
	h := start(t, conf(t, `environment = { TW_READY = "never" }
[workers]
count = 1
start_timeout = "700ms"
restart_delay = "50ms"
`))
	st := h.waitFor("start_timeout failure", 30*time.Second, func(st Status) bool {
		return len(st.Slots) == 1 && st.Slots[0].Restarts >= 1
	})
	if !strings.Contains(st.Slots[0].LastExit, "start_timeout passed (700ms) without becoming ready") {
		t.Errorf("last exit %q", st.Slots[0].LastExit)
	}
	if st.Ready != 0 || st.Serving != 0 {
		t.Errorf("never-ready worker counted ready: %+v", st)
	}
}

func TestReloadUnderLoadDropsNothing(t *testing.T) {
	h := start(t, conf(t, "[workers]\ncount = 2\ngraceful_timeout = \"10s\"\n"))
	h.waitFor("2 ready", 30*time.Second, allReady(2, 1))
	stop := make(chan struct{})
	res, wg := h.load(8, 5000000, stop)
	reloads := 20
	if testing.Short() {
		reloads = 5
	}
	for i := 0; i < reloads; i++ {
		gen := i + 2
		h.reload(conf(t, fmt.Sprintf("environment = { RELOAD = \"%d\" }\n[workers]\ncount = 2\ngraceful_timeout = \"10s\"\n", gen)))
		h.waitFor(fmt.Sprintf("generation %d serving", gen), 60*time.Second, allReady(2, gen))
	}
	// Keep the load on until at least some thousands went through.
	for res.total.Load() < 3000 {
		time.Sleep(10 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	t.Logf("%d requests during %d reloads, %d failed", res.total.Load(), reloads, res.failed.Load())
	if res.failed.Load() != 0 {
		t.Fatalf("%d of %d requests failed: %v", res.failed.Load(), res.total.Load(), res.errs)
	}
	body, err := h.get("/")
	if err != nil || !strings.Contains(body, fmt.Sprintf("gen=%d", reloads+1)) {
		t.Errorf("after the reloads: %q %v", body, err)
	}
	if !strings.Contains(h.logs.String(), "reload done: new generation serving") {
		t.Error("reload completion not logged")
	}
}

func TestInvalidReloadKeepsServing(t *testing.T) {
	h := start(t, conf(t, "[workers]\ncount = 2\n"))
	st := h.waitFor("2 ready", 30*time.Second, allReady(2, 1))
	before := pidsOf(st)
	h.reload("[app]\ncommand = [\"/nonexistent/app\"]\n[workers]\ncount = 2\nbogus = 1\n")
	st = h.waitFor("reload refused", 30*time.Second, func(st Status) bool { return strings.Contains(st.Message, "reload refused") })
	if st.Generation != 1 || fmt.Sprint(pidsOf(st)) != fmt.Sprint(before) {
		t.Errorf("workers changed on an invalid reload: %+v", st)
	}
	if lr := st.LastReload; lr == nil || lr.Result != "invalid" || !strings.Contains(lr.Detail, "workers.bogus: unknown key") {
		t.Errorf("last reload after an invalid one: %+v", lr)
	}
	logs := h.logs.String()
	if !strings.Contains(logs, "test.toml:5: workers.bogus: unknown key") {
		t.Errorf("the refusal does not say why:\n%s", logs)
	}
	if body, err := h.get("/"); err != nil || !strings.Contains(body, "gen=1") {
		t.Errorf("not serving: %q %v", body, err)
	}
	// A later valid reload goes through.
	h.reload(conf(t, "[workers]\ncount = 2\n"))
	st = h.waitFor("gen 2 done", 30*time.Second, func(st Status) bool {
		return allReady(2, 2)(st) && st.LastReload != nil && st.LastReload.Result == "done"
	})
	if st.LastReload.Generation != 2 || st.LastReload.At.IsZero() {
		t.Errorf("last reload: %+v", st.LastReload)
	}
}

func TestNeverReadyGenerationIsRolledBack(t *testing.T) {
	for _, tc := range []struct{ name, env string }{
		{"never ready", `TW_READY = "never"`},
		{"exits at start", `TW_EXIT_AT_START = "1"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := start(t, conf(t, "[workers]\ncount = 2\n"))
			st := h.waitFor("2 ready", 30*time.Second, allReady(2, 1))
			before := pidsOf(st)
			stop := make(chan struct{})
			res, wg := h.load(4, 100000, stop)
			h.reload(conf(t, fmt.Sprintf("environment = { %s }\n[workers]\ncount = 2\nstart_timeout = \"1s\"\n", tc.env)))
			st = h.waitFor("rollback", 30*time.Second, func(st Status) bool {
				return strings.Contains(st.Message, "reload to gen 2 rolled back")
			})
			if lr := st.LastReload; lr == nil || lr.Result != "rolled_back" || lr.Generation != 2 || lr.Detail == "" {
				t.Errorf("last reload after a rollback: %+v", lr)
			}
			st = h.waitFor("gen 1 serving alone", 30*time.Second, allReady(2, 1))
			close(stop)
			wg.Wait()
			if fmt.Sprint(pidsOf(st)) != fmt.Sprint(before) {
				t.Errorf("old workers replaced: %v -> %v", before, pidsOf(st))
			}
			if res.failed.Load() != 0 {
				t.Errorf("%d of %d requests failed during the rollback: %v", res.failed.Load(), res.total.Load(), res.errs)
			}
			if !strings.Contains(h.logs.String(), "new generation failed, rolling back") || !strings.Contains(h.logs.String(), "rollback done") {
				t.Error("rollback not logged")
			}
			// The next reload gets a fresh generation number and works.
			h.reload(conf(t, "[workers]\ncount = 2\n"))
			h.waitFor("gen 3", 30*time.Second, allReady(2, 3))
		})
	}
}

func TestScaleWithTTINAndTTOU(t *testing.T) {
	h := start(t, conf(t, "[workers]\ncount = 2\nmin = 1\nmax = 3\n"))
	h.waitFor("2 ready", 30*time.Second, allReady(2, 1))
	h.sigs <- syscall.SIGTTIN
	h.waitFor("3 ready", 30*time.Second, allReady(3, 1))
	h.sigs <- syscall.SIGTTIN // above max: ignored
	h.sigs <- syscall.SIGTTOU
	h.sigs <- syscall.SIGTTOU
	st := h.waitFor("1 ready", 30*time.Second, allReady(1, 1))
	if st.Workers != 1 || st.Slots[0].Slot != 0 {
		t.Errorf("after scaling down: %+v", st)
	}
	h.sigs <- syscall.SIGTTOU // below min: ignored
	time.Sleep(200 * time.Millisecond)
	if st := h.status(); st.Workers != 1 || st.Ready != 1 {
		t.Errorf("scaled below min: %+v", st)
	}
	logs := h.logs.String()
	if strings.Count(logs, "scale request ignored") != 2 || !strings.Contains(logs, "reason=\"scaled down\"") {
		t.Errorf("scaling not logged as expected:\n%s", logs)
	}
}

func TestMaxLifetimeRecyclesOneAtATime(t *testing.T) {
	h := start(t, conf(t, "[workers]\ncount = 3\nmax_lifetime = \"1s\"\nlifetime_jitter = \"0s\"\n"))
	st := h.waitFor("3 ready", 30*time.Second, allReady(3, 1))
	first := pidsOf(st)
	stop := make(chan struct{})
	res, wg := h.load(4, 5000000, stop)
	defer func() {
		close(stop)
		wg.Wait()
		t.Logf("%d requests while recycling, %d failed", res.total.Load(), res.failed.Load())
		if res.failed.Load() != 0 {
			t.Errorf("%d requests failed while recycling: %v", res.failed.Load(), res.errs)
		}
	}()
	replaced := map[int]bool{}
	deadline := time.Now().Add(60 * time.Second)
	for len(replaced) < 3 {
		st := h.status()
		recycling, ready := 0, 0
		for _, w := range st.Slots {
			if w.Recycle != "" && w.State != "draining" {
				recycling++
			}
		}
		ready = st.Ready
		if recycling > 1 {
			t.Fatalf("%d workers recycling at once: %+v", recycling, st.Slots)
		}
		if ready < 3 {
			t.Fatalf("only %d ready during recycling: %+v", ready, st.Slots)
		}
		for slot, pid := range pidsOf(st) {
			if pid != first[slot] {
				replaced[slot] = true
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("only slots %v recycled", replaced)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if n := strings.Count(h.logs.String(), "max_lifetime (1s) reached"); n < 3 {
		t.Errorf("%d recycle log lines", n)
	}
}

func TestSIGTERMDrainsInFlightRequestsAndReturns(t *testing.T) {
	h := start(t, conf(t, "[workers]\ncount = 2\n"))
	st := h.waitFor("2 ready", 30*time.Second, allReady(2, 1))
	type result struct {
		body string
		err  error
	}
	got := make(chan result, 1)
	go func() {
		b, err := h.get("/slow?ms=1500")
		got <- result{b, err}
	}()
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(h.out.String(), "slow request started"); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the slow request never reached a worker")
		}
	}
	h.sigs <- syscall.SIGTERM
	if err := h.wait(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	r := <-got
	if r.err != nil || !strings.Contains(r.body, "slow") {
		t.Errorf("in-flight request: %q %v", r.body, r.err)
	}
	for _, pid := range pidsOf(st) {
		if alive(pid) {
			t.Errorf("worker %d still alive", pid)
		}
	}
}

func TestTermIgnoringWorkerIsKilledAfterGracefulTimeout(t *testing.T) {
	h := start(t, conf(t, `environment = { TW_IGNORE_TERM = "1", TW_CHILD = "1" }
[workers]
count = 1
graceful_timeout = "1s"
`))
	st := h.waitFor("1 ready", 30*time.Second, allReady(1, 1))
	pid := pidsOf(st)[0]
	var child int
	deadline := time.Now().Add(10 * time.Second)
	for child == 0 {
		if m := regexp.MustCompile(`grandchild pid=(\d+)`).FindStringSubmatch(h.out.String()); m != nil {
			fmt.Sscan(m[1], &child)
		}
		if time.Now().After(deadline) {
			t.Fatal("no grandchild")
		}
		time.Sleep(10 * time.Millisecond)
	}
	began := time.Now()
	h.sigs <- syscall.SIGTERM
	if err := h.wait(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(began); took < time.Second {
		t.Errorf("killed after %v, before graceful_timeout", took)
	}
	// SIGKILL is delivered asynchronously: on a loaded machine the
	// grandchild may still be running for a moment after kill() returned.
	for deadline := time.Now().Add(10 * time.Second); alive(pid) || alive(child); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Errorf("worker %d or its grandchild %d survived", pid, child)
			break
		}
	}
	if !strings.Contains(h.logs.String(), "worker did not exit within graceful_timeout, killing it") {
		t.Error("kill not logged")
	}
}

func TestReadinessExecAndProbe(t *testing.T) {
	for _, tc := range []struct{ name, conf string }{
		{"exec", "readiness = \"exec\"\nenvironment = { TW_READY = \"never\" }\n"},
		{"probe http", "readiness = \"probe\"\nprobe = { http = \"/\", interval = \"50ms\" }\nenvironment = { TW_READY = \"never\" }\n"},
		{"probe tcp", "readiness = \"probe\"\nprobe = { tcp = true }\nenvironment = { TW_READY = \"never\" }\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := start(t, conf(t, tc.conf+"[workers]\ncount = 2\nstart_timeout = \"20s\"\n"))
			h.waitFor("2 ready", 30*time.Second, allReady(2, 1))
			if !strings.Contains(h.logs.String(), "by="+strings.Fields(tc.name)[0]) {
				t.Errorf("not made ready by %s", tc.name)
			}
		})
	}
}

func TestExecFailureIsReported(t *testing.T) {
	dir := t.TempDir()
	bin := dir + "/app"
	if err := os.WriteFile(bin, []byte("#!/nonexistent/interpreter\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	h := start(t, fmt.Sprintf("[app]\ncommand = [%q]\ncontrol = \"-\"\n[workers]\ncount = 1\n", bin))
	st := h.waitFor("exec failure", 30*time.Second, func(st Status) bool {
		return len(st.Slots) == 1 && st.Slots[0].Restarts >= 1
	})
	if !strings.Contains(st.Slots[0].LastExit, "executing "+bin) {
		t.Errorf("last exit %q", st.Slots[0].LastExit)
	}
}

func TestMaxMemoryRecyclesGracefully(t *testing.T) {
	h := start(t, conf(t, "[workers]\ncount = 2\nmax_memory = \"60MiB\"\n"))
	st := h.waitFor("2 ready", 30*time.Second, allReady(2, 1))
	before := pidsOf(st)
	body, err := h.get("/leak?mb=100")
	if err != nil {
		t.Fatal(err)
	}
	var leaker int
	fmt.Sscanf(body, "pid=%d", &leaker)
	st = h.waitFor("leaking worker replaced", 30*time.Second, func(st Status) bool {
		for _, w := range st.Slots {
			if w.PID == leaker {
				return false
			}
		}
		return st.Ready == 2
	})
	for _, w := range st.Slots {
		if before[w.Slot] == leaker {
			if w.Restarts != 0 || !strings.Contains(w.LastExit, "max_memory") {
				t.Errorf("recycled slot: %+v", w)
			}
		} else if w.PID != before[w.Slot] {
			t.Errorf("healthy slot %d recycled too", w.Slot)
		}
	}
	if !strings.Contains(h.logs.String(), "recycling worker: starting its replacement first") {
		t.Error("recycle not logged")
	}
}

func TestLimitsWithoutCgroupTree(t *testing.T) {
	text := conf(t, "[workers]\ncount = 1\n[limits]\nmemory_max = \"256MiB\"\n")
	h := start(t, text)
	h.waitFor("1 ready", 30*time.Second, allReady(1, 1))
	if n := strings.Count(h.logs.String(), "workers run WITHOUT the configured [limits]"); n != 1 {
		t.Errorf("warning printed %d times", n)
	}
	if st := h.status(); st.Cgroup != "" {
		t.Errorf("cgroup %q without a tree", st.Cgroup)
	}
	// A reload that requires limits is refused; the workers keep serving.
	h.reload(conf(t, "[workers]\ncount = 1\n[limits]\nmemory_max = \"256MiB\"\nrequired = true\n"))
	h.waitFor("refused", 30*time.Second, func(st Status) bool { return strings.Contains(st.Message, "reload refused") })

	c := parse(t, conf(t, "[limits]\nrequired = true\n"))
	_, err := New(Options{Config: c, Listeners: []*os.File{h.ln}, TreeErr: errors.New("not delegated")})
	if err == nil || !strings.Contains(err.Error(), "limits.required = true but there is no delegated cgroup v2 tree (not delegated)") {
		t.Errorf("required limits without a tree: %v", err)
	}
}

func TestEnvironmentAndDirectory(t *testing.T) {
	dir := t.TempDir()
	script := dir + "/show-env"
	os.WriteFile(script, []byte("#!/bin/sh\necho \"pwd=$(pwd) worker=$APPD_WORKER gen=$APPD_GENERATION fds=$LISTEN_FDS names=$LISTEN_FDNAMES pid_ok=$([ \"$LISTEN_PID\" = $$ ] && echo yes) custom=$CUSTOM notify=${NOTIFY_SOCKET%%/*}\"\nexec sleep 1000\n"), 0o755)
	h := start(t, fmt.Sprintf("[app]\ncommand = [%q]\ncontrol = \"-\"\ndirectory = %q\nreadiness = \"exec\"\nenvironment = { CUSTOM = \"yes\" }\n[workers]\ncount = 1\n", script, dir))
	h.waitFor("1 ready", 30*time.Second, allReady(1, 1))
	want := fmt.Sprintf("pwd=%s worker=0 gen=1 fds=1 names=app pid_ok=yes custom=yes notify=@appd", dir)
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(h.out.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("worker environment: want %q in\n%s", want, h.out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

var _ = config.PathFor

func TestWorkersRunAsConfiguredUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	// The trampoline runs as the worker's user: it must be able to execute
	// appd's binary (/usr/bin/appd is), so the test binary is copied to a
	// directory everybody may enter.
	dir, err := os.MkdirTemp("", "appd-user-test")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)
	self, _ := os.ReadFile(os.Args[0])
	tramp := dir + "/trampoline"
	if err := os.WriteFile(tramp, self, 0o755); err != nil {
		t.Fatal(err)
	}
	h := start(t, "[app]\ncommand = [\"/bin/sh\", \"-c\", \"echo uid=$(id -u) gid=$(id -g); exec sleep 1000\"]\ncontrol = \"-\"\ndirectory = \"/\"\nreadiness = \"exec\"\nuser = \"nobody\"\ngroup = \"nogroup\"\n[workers]\ncount = 1\n",
		func(o *Options) { o.Trampoline = tramp })
	h.waitFor("ready", 30*time.Second, allReady(1, 1))
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(h.out.String(), "uid=65534 gid=65534"); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("worker identity: %s", h.out.String())
		}
	}
}

func TestOutputInherit(t *testing.T) {
	h := start(t, conf(t, "output = \"inherit\"\n[workers]\ncount = 1\n"))
	h.waitFor("ready", 30*time.Second, allReady(1, 1))
	if strings.Contains(h.out.String(), "[w0 pid") {
		t.Errorf("output was prefixed although output = inherit: %q", h.out.String())
	}
}

func TestReloadSupersedesUnfinishedReload(t *testing.T) {
	h := start(t, conf(t, "[workers]\ncount = 2\n"))
	st := h.waitFor("2 ready", 30*time.Second, allReady(2, 1))
	before := pidsOf(st)
	h.reload(conf(t, "environment = { TW_READY = \"never\" }\n[workers]\ncount = 2\nstart_timeout = \"1m\"\n"))
	h.waitFor("gen 2 starting", 30*time.Second, func(st Status) bool { return st.Generation == 2 && len(st.Slots) == 4 })
	h.reload(conf(t, "[workers]\ncount = 2\n"))
	st = h.waitFor("gen 3 serving", 30*time.Second, allReady(2, 3))
	for slot, pid := range before {
		if alive(pid) {
			t.Errorf("gen 1 worker of slot %d still alive", slot)
		}
	}
	if !strings.Contains(h.logs.String(), `reason="superseded by a newer reload"`) {
		t.Error("the unfinished generation's workers were not ended as superseded")
	}
}

func TestFastStopDoesNotWaitForGracefulTimeout(t *testing.T) {
	h := start(t, conf(t, "environment = { TW_IGNORE_TERM = \"1\" }\n[workers]\ncount = 1\ngraceful_timeout = \"1m\"\n"))
	h.waitFor("ready", 30*time.Second, allReady(1, 1))
	h.sigs <- syscall.SIGINT
	began := time.Now()
	if err := h.wait(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(began); took > 20*time.Second {
		t.Errorf("SIGINT took %v: it waited for graceful_timeout", took)
	}
	if !strings.Contains(h.logs.String(), "graceful_timeout=1s") {
		t.Error("fast stop did not shorten the grace")
	}
}

// TestMetricsLabelledBySlot: per-worker series carry the slot alone, so
// reloads and restarts add no series, and the CPU counter of a slot keeps
// what its replaced workers used.
func TestMetricsLabelledBySlot(t *testing.T) {
	h := start(t, conf(t, "environment = { TW_SPIN = \"1\" }\n[workers]\ncount = 2\n"))
	h.waitFor("2 ready with CPU sampled", 30*time.Second, func(st Status) bool {
		return allReady(2, 1)(st) && st.Slots[0].CPU > 0.2 && st.Slots[1].CPU > 0.2
	})
	metrics := func() string {
		var b strings.Builder
		writeMetrics(&b, h.status())
		return b.String()
	}
	cpu0 := func(m string) float64 {
		var v float64
		for _, line := range strings.Split(m, "\n") {
			if rest, ok := strings.CutPrefix(line, `appd_worker_cpu_seconds_total{slot="0"} `); ok {
				fmt.Sscan(rest, &v)
			}
		}
		return v
	}
	before := metrics()
	h.reload(conf(t, "environment = { TW_SPIN = \"1\" }\n[workers]\ncount = 2\n"))
	h.waitFor("gen 2", 30*time.Second, allReady(2, 2))
	after := metrics()
	for _, m := range []string{before, after} {
		for _, line := range strings.Split(m, "\n") {
			if strings.HasPrefix(line, "appd_worker_") && !regexp.MustCompile(`^appd_worker_[a-z_]+\{(slot="\d+"|kind="[a-z]+")\} [0-9.]+$`).MatchString(line) {
				t.Errorf("series not labelled by slot alone: %q", line)
			}
		}
		if n := strings.Count(m, "appd_worker_memory_bytes{"); n != 2 {
			t.Errorf("%d memory series for 2 slots:\n%s", n, m)
		}
	}
	if cpu0(after) < cpu0(before) {
		t.Errorf("slot 0's CPU counter went back across the reload: %v -> %v", cpu0(before), cpu0(after))
	}
}

// TestSurgeBoundsReplacements: a reload starts at most surge new workers
// at once while old ones serve (by default all of them), and finishes.
func TestSurgeBoundsReplacements(t *testing.T) {
	for _, tc := range []struct {
		surge    string
		min, max int // most new workers starting at once, as seen
	}{
		{"", 3, 4},
		{"surge = 1\n", 1, 1},
		{"surge = 2\n", 2, 2},
	} {
		t.Run(strings.TrimSpace("surge "+tc.surge), func(t *testing.T) {
			text := conf(t, "environment = { TW_READY_DELAY = \"400ms\" }\n[workers]\ncount = 4\n"+tc.surge)
			h := start(t, text)
			h.waitFor("4 ready", 30*time.Second, allReady(4, 1))
			h.reload(text)
			most := 0
			for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
				st := h.status()
				starting := 0
				for _, w := range st.Slots {
					if w.Generation == 2 && w.State == "starting" {
						starting++
					}
				}
				most = max(most, starting)
				if allReady(4, 2)(st) {
					break
				}
				if st.Ready < 4 {
					t.Fatalf("only %d slots ready during the reload: %+v", st.Ready, st.Slots)
				}
				if time.Now().After(deadline) {
					t.Fatalf("reload did not finish: %+v", st)
				}
			}
			if most < tc.min || most > tc.max {
				t.Errorf("%d new workers starting at once, want %d..%d", most, tc.min, tc.max)
			}
		})
	}
}
