package supervisor

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// runnerPath is appd-python, the Python runner appd ships (APPD_RUNNER in
// the VM, where the tests do not run from the source tree).
func runnerPath(t *testing.T) string {
	t.Helper()
	p := os.Getenv("APPD_RUNNER")
	if p == "" {
		p, _ = filepath.Abs("../python/appd-python")
	}
	if out, err := exec.Command("/usr/bin/python3", "-c", "import gunicorn").CombinedOutput(); err != nil {
		if os.Getenv("APPD_CGROUP_TESTS") == "1" {
			t.Fatalf("the VM lacks Debian's python3-gunicorn: %v %s", err, out)
		}
		t.Skipf("SKIPPED LOUDLY: Debian's python3-gunicorn is not installed (apt-get install -y python3-gunicorn; make deps installs it): %v %s", err, out)
	}
	return p
}

// testdataDir holds wsgiapp.py (APPD_TESTDATA in the VM).
func testdataDir() string {
	if d := os.Getenv("APPD_TESTDATA"); d != "" {
		return d
	}
	d, _ := filepath.Abs("testdata")
	return d
}

// runnerConf serves testdata/wsgiapp.py with appd-python; args go before
// the application (gunicorn options); extra continues [app].
func runnerConf(t *testing.T, args, extra string) string {
	t.Helper()
	cmd := fmt.Sprintf("%q", runnerPath(t))
	for _, a := range strings.Fields(args) {
		cmd += fmt.Sprintf(", %q", a)
	}
	return fmt.Sprintf("[app]\ncommand = [%s, \"wsgiapp:app\"]\ndirectory = %q\ncontrol = \"-\"\n%s", cmd, testdataDir(), extra)
}

// waitOutput polls the workers' output for a match of re.
func (h *harness) waitOutput(what string, re *regexp.Regexp) []string {
	h.t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if m := re.FindStringSubmatch(h.out.String()); m != nil {
			return m
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("no %s in the output:\n%s", what, h.out.String())
		}
	}
}

func TestRunnerReadyHeartbeatAndWatchdog(t *testing.T) {
	h := start(t, runnerConf(t, "", "[workers]\ncount = 2\ntimeout = \"1s\"\n"))
	st := h.waitFor("2 ready", 60*time.Second, allReady(2, 1))
	h.client.Transport = &http.Transport{DisableKeepAlives: true} // the sync worker closes every connection
	body, err := h.get("/")
	if err != nil || !regexp.MustCompile(`^pid=\d+ slot=[01] gen=1 `).MatchString(body) {
		t.Fatalf("answer %q %v", body, err)
	}
	for _, w := range st.Slots {
		if w.Status != "serving (SyncWorker)" {
			t.Errorf("slot %d STATUS= %q", w.Slot, w.Status)
		}
	}
	// Idle workers ping: with a 1s watchdog, nobody is aborted in 3s.
	time.Sleep(3 * time.Second)
	if st2 := h.status(); fmt.Sprint(pidsOf(st2)) != fmt.Sprint(pidsOf(st)) || strings.Contains(h.logs.String(), "watchdog timeout") {
		t.Fatalf("idle workers were replaced (no WATCHDOG=1?): %v -> %v\n%s", pidsOf(st), pidsOf(st2), h.logs.String())
	}
	// A sync worker stuck in a request stops pinging: appd aborts it, and
	// the runner says which request it was handling.
	go h.get("/slow?ms=6000")
	m := h.waitOutput("the abort report", regexp.MustCompile(`\[w(\d) pid (\d+)\] \[ERROR\] aborted \(appd's watchdog\) while handling GET /slow\?ms=6000 for \d+\.\ds`))
	var slot, pid int
	fmt.Sscan(m[1], &slot)
	fmt.Sscan(m[2], &pid)
	h.waitFor("the stuck worker replaced", 30*time.Second, func(st Status) bool {
		p := pidsOf(st)[slot]
		return p != 0 && p != pid && st.Ready == 2
	})
	if !strings.Contains(h.logs.String(), "worker watchdog timeout: sending SIGABRT") {
		t.Errorf("watchdog not logged:\n%s", h.logs.String())
	}
	// faulthandler's stack dump names the application's frame.
	if !strings.Contains(h.out.String(), "wsgiapp.py\", line") {
		t.Errorf("no stack dump of the stuck worker:\n%s", h.out.String())
	}
}

func TestRunnerDrainsOnSIGTERM(t *testing.T) {
	h := start(t, runnerConf(t, "", "[workers]\ncount = 1\n"))
	st := h.waitFor("ready", 60*time.Second, allReady(1, 1))
	h.client.Transport = &http.Transport{DisableKeepAlives: true}
	got := make(chan string, 1)
	go func() {
		b, err := h.get("/slow?ms=1500")
		got <- fmt.Sprint(b, err)
	}()
	time.Sleep(500 * time.Millisecond) // the request is in the worker (nothing to await: the app says nothing)
	h.sigs <- syscall.SIGTERM
	if err := h.wait(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	if r := <-got; !strings.HasPrefix(r, "slow done") {
		t.Errorf("in-flight request during the drain: %q", r)
	}
	if !strings.Contains(h.logs.String(), `status="exit status 0"`) {
		t.Errorf("the worker did not exit cleanly:\n%s", h.logs.String())
	}
	if alive(pidsOf(st)[0]) {
		t.Error("worker alive after the stop")
	}
}

func TestRunnerImportErrorIsOneLine(t *testing.T) {
	for name, extra := range map[string]string{"forked": "", "exec": "zygote = false\n"} {
		t.Run(name, func(t *testing.T) {
			h := start(t, runnerConf(t, "", extra+"environment = { APP_FAIL_IMPORT = \"1\" }\n[workers]\ncount = 1\nrestart_delay = \"1s\"\n"))
			st := h.waitFor("the failure", 60*time.Second, func(st Status) bool { return len(st.Slots) == 1 && st.Slots[0].Restarts >= 1 })
			want := "cannot load wsgiapp:app: RuntimeError: APP_FAIL_IMPORT is set (at " + testdataDir() + "/wsgiapp.py:"
			if le := st.Slots[0].LastExit; !strings.HasPrefix(le, "exit status 4; it said: "+want) {
				t.Errorf("last exit %q, want the import error", le)
			}
			out := h.out.String()
			if n := strings.Count(out, "cannot load"); n < 1 || strings.Contains(out, "Traceback") {
				t.Errorf("want one line per failure, no traceback:\n%s", out)
			}
		})
	}
}

// TestRunnerReloadsUnderLoad: sync (a connection per request) and gthread
// (kept-alive connections) both reload without a failed request, forked
// from a zygote (appd-python's default), exec'd one by one, and preloaded.
func TestRunnerReloadsUnderLoad(t *testing.T) {
	for _, tc := range []struct{ name, args, extra string }{
		{"sync exec", "", "zygote = false\n"},
		{"gthread", "--threads 4 --keep-alive 5", ""},
		{"sync", "", ""},
		{"preload", "--threads 4", "preload = true\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			text := runnerConf(t, tc.args, tc.extra+"[workers]\ncount = 2\n")
			h := start(t, text)
			h.waitFor("2 ready", 60*time.Second, allReady(2, 1))
			if tc.args == "" {
				h.client.Transport = &http.Transport{DisableKeepAlives: true}
			}
			stop := make(chan struct{})
			res, wg := h.load(4, 1000000, stop)
			for i := 2; i <= 4; i++ {
				h.reload(text)
				h.waitFor(fmt.Sprintf("gen %d", i), 60*time.Second, allReady(2, i))
			}
			for n := res.total.Load() + 200; res.total.Load() < n; {
				time.Sleep(time.Millisecond)
			}
			close(stop)
			wg.Wait()
			t.Logf("%s: %d requests during 3 reloads, %d failed", tc.name, res.total.Load(), res.failed.Load())
			if res.failed.Load() != 0 {
				t.Fatalf("%d of %d requests failed: %v", res.failed.Load(), res.total.Load(), res.errs)
			}
		})
	}
}

func TestZygotePreloadsOnceAndForks(t *testing.T) {
	for _, tc := range []struct {
		name, extra string
		preloaded   bool
	}{
		{"preload", "preload = true\n", true},
		{"zygote without preload", "zygote = true\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := start(t, runnerConf(t, "", tc.extra+"[workers]\ncount = 3\n"))
			st := h.waitFor("3 ready", 60*time.Second, allReady(3, 1))
			if len(st.Zygotes) != 1 || st.Zygotes[0].State != "ready" || st.Zygotes[0].PID == 0 {
				t.Fatalf("zygotes: %+v", st.Zygotes)
			}
			zpid := st.Zygotes[0].PID
			h.client.Transport = &http.Transport{DisableKeepAlives: true}
			seen := map[int]bool{}
			for i := 0; i < 60 && len(seen) < 3; i++ {
				body, err := h.get("/")
				if err != nil {
					t.Fatal(err)
				}
				var pid, by int
				var slot, gen string
				fmt.Sscanf(body, "pid=%d slot=%s gen=%s imported_by=%d", &pid, &slot, &gen, &by)
				seen[pid] = true
				if parentPid(pid) != zpid {
					t.Errorf("worker %d is not the zygote's (%d) child", pid, zpid)
				}
				if tc.preloaded != (by == zpid) || !tc.preloaded && by != pid {
					t.Errorf("preload=%v: worker %d answered imported_by=%d (zygote %d)", tc.preloaded, pid, by, zpid)
				}
			}
			for _, w := range st.Slots {
				if !seen[w.PID] && len(seen) == 3 {
					t.Errorf("slot %d pid %d never answered", w.Slot, w.PID)
				}
			}
			// A killed worker is forked again from the same zygote.
			victim := st.Slots[1].PID
			syscall.Kill(victim, syscall.SIGKILL)
			st = h.waitFor("slot 1 forked again", 30*time.Second, func(st Status) bool {
				return st.Ready == 3 && pidsOf(st)[1] != victim && len(st.Zygotes) == 1 && st.Zygotes[0].PID == zpid
			})
			if le := st.Slots[1].LastExit; le != "killed by signal SIGKILL" {
				t.Errorf("the zygote's report of the kill: %q", le)
			}
		})
	}
}

func TestZygoteDeathKeepsWorkersAndRestarts(t *testing.T) {
	h := start(t, runnerConf(t, "", "preload = true\n[workers]\ncount = 2\n"))
	st := h.waitFor("2 ready", 60*time.Second, allReady(2, 1))
	before, zpid := pidsOf(st), st.Zygotes[0].PID
	syscall.Kill(zpid, syscall.SIGKILL)
	st = h.waitFor("a new zygote", 60*time.Second, func(st Status) bool {
		return len(st.Zygotes) == 1 && st.Zygotes[0].PID != zpid && st.Zygotes[0].State == "ready"
	})
	if fmt.Sprint(pidsOf(st)) != fmt.Sprint(before) || st.Ready != 2 {
		t.Fatalf("workers changed when their zygote died: %v -> %v", before, pidsOf(st))
	}
	h.client.Transport = &http.Transport{DisableKeepAlives: true}
	if _, err := h.get("/"); err != nil {
		t.Fatalf("not serving without the zygote: %v", err)
	}
	// Orphaned workers still drain and exit; the replacement comes from
	// the new zygote.
	syscall.Kill(before[0], syscall.SIGKILL)
	st = h.waitFor("slot 0 replaced", 30*time.Second, func(st Status) bool { return st.Ready == 2 && pidsOf(st)[0] != before[0] })
	if p := parentPid(pidsOf(st)[0]); p != st.Zygotes[0].PID {
		t.Errorf("the replacement's parent is %d, not the new zygote %d", p, st.Zygotes[0].PID)
	}
	if !strings.Contains(h.logs.String(), "zygote exited unexpectedly, restarting it; its workers keep serving") {
		t.Error("the zygote's death is not logged")
	}
}

func TestZygoteImportErrorRollsBackReload(t *testing.T) {
	text := runnerConf(t, "", "preload = true\n[workers]\ncount = 2\n")
	h := start(t, text)
	st := h.waitFor("2 ready", 60*time.Second, allReady(2, 1))
	before, zpid := pidsOf(st), st.Zygotes[0].PID
	h.client.Transport = &http.Transport{DisableKeepAlives: true}
	stop := make(chan struct{})
	res, wg := h.load(4, 1000000, stop)
	h.reload(runnerConf(t, "", "preload = true\nenvironment = { APP_FAIL_IMPORT = \"1\" }\n[workers]\ncount = 2\n"))
	st = h.waitFor("rollback", 60*time.Second, func(st Status) bool { return strings.Contains(st.Message, "reload to gen 2 rolled back") })
	st = h.waitFor("gen 1 alone", 30*time.Second, func(st Status) bool {
		return allReady(2, 1)(st) && len(st.Zygotes) == 1
	})
	close(stop)
	wg.Wait()
	if fmt.Sprint(pidsOf(st)) != fmt.Sprint(before) || st.Zygotes[0].PID != zpid {
		t.Errorf("gen 1 changed: workers %v -> %v, zygote %d -> %d", before, pidsOf(st), zpid, st.Zygotes[0].PID)
	}
	if res.failed.Load() != 0 {
		t.Errorf("%d of %d requests failed: %v", res.failed.Load(), res.total.Load(), res.errs)
	}
	logs := h.logs.String()
	if !regexp.MustCompile(`new generation failed, rolling back.*cause="zygote exit status 4; it said: cannot load wsgiapp:app: RuntimeError: APP_FAIL_IMPORT is set`).MatchString(logs) {
		t.Errorf("the rollback does not give the import error:\n%s", logs)
	}
	h.reload(text)
	h.waitFor("gen 3", 60*time.Second, allReady(2, 3))
}

func TestRunnerMaxRequestsRecyclesGracefully(t *testing.T) {
	h := start(t, runnerConf(t, "--max-requests 30", "zygote = true\n[workers]\ncount = 2\n"))
	st := h.waitFor("2 ready", 60*time.Second, allReady(2, 1))
	before := pidsOf(st)
	h.client.Transport = &http.Transport{DisableKeepAlives: true}
	stop := make(chan struct{})
	res, wg := h.load(4, 1000000, stop)
	h.waitFor("both workers recycled", 60*time.Second, func(st Status) bool {
		p := pidsOf(st)
		return st.Ready == 2 && p[0] != before[0] && p[1] != before[1]
	})
	close(stop)
	wg.Wait()
	if res.failed.Load() != 0 {
		t.Errorf("%d of %d requests failed while recycling: %v", res.failed.Load(), res.total.Load(), res.errs)
	}
	if !strings.Contains(h.logs.String(), `reason="the worker asked: max_requests (30 requests)"`) {
		t.Errorf("recycle not logged with its reason:\n%s", h.logs.String())
	}
	if strings.Contains(h.logs.String(), "exited unexpectedly") {
		t.Errorf("a worker exited instead of being recycled:\n%s", h.logs.String())
	}
}

// TestZygoteKeptAcrossReloadReadsConfigAgain: without preload the zygote
// holds no application code, so a reload keeps it and forks the new
// generation at once; a fork uses the zygote's reading of gunicorn's
// configuration file while the file is unchanged (as gunicorn's workers
// use their master's), and reads it again once it changed.
func TestZygoteKeptAcrossReloadReadsConfigAgain(t *testing.T) {
	dir := t.TempDir()
	gconf, reads := filepath.Join(dir, "gunicorn.conf.py"), filepath.Join(dir, "reads")
	conf := func(threads int) {
		t.Helper()
		src := fmt.Sprintf("open(%q, 'a').write('read\\n')\nthreads = %d\n", reads, threads)
		if err := os.WriteFile(gconf, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	readCount := func() int {
		b, _ := os.ReadFile(reads)
		return strings.Count(string(b), "read\n")
	}
	conf(1)
	text := runnerConf(t, "-c "+gconf, "zygote = true\n[workers]\ncount = 2\n")
	h := start(t, text)
	st := h.waitFor("2 ready", 60*time.Second, allReady(2, 1))
	zpid := st.Zygotes[0].PID
	if st.Slots[0].Status != "serving (SyncWorker)" {
		t.Fatalf("gen 1 status %q", st.Slots[0].Status)
	}
	h.reload(text)
	h.waitFor("gen 2", 60*time.Second, allReady(2, 2))
	if n := readCount(); n != 1 {
		t.Errorf("the configuration file was read %d times for a zygote and 4 forks of an unchanged file, want 1 (the zygote's)", n)
	}
	conf(4)
	h.reload(text)
	st = h.waitFor("gen 3", 60*time.Second, allReady(2, 3))
	if n := readCount(); n != 3 {
		t.Errorf("the configuration file was read %d times, want 3: once by the zygote, once by each fork after it changed", n)
	}
	if len(st.Zygotes) != 1 || st.Zygotes[0].PID != zpid {
		t.Errorf("the zygote was replaced: %d -> %+v", zpid, st.Zygotes)
	}
	for _, w := range st.Slots {
		if w.Status != "serving (ThreadWorker)" || parentPid(w.PID) != zpid {
			t.Errorf("slot %d: status %q, parent %d (zygote %d)", w.Slot, w.Status, parentPid(w.PID), zpid)
		}
	}
	// A changed command needs a new zygote.
	h.reload(runnerConf(t, "-c "+gconf+" --timeout 40", "zygote = true\n[workers]\ncount = 2\n"))
	st = h.waitFor("gen 4", 60*time.Second, func(st Status) bool { return allReady(2, 4)(st) && len(st.Zygotes) == 1 })
	if st.Zygotes[0].PID == zpid {
		t.Error("the zygote was kept although the command changed")
	}
	if !strings.Contains(h.logs.String(), "the zygote stays") {
		t.Error("keeping the zygote is not logged")
	}
}
