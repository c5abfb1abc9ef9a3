package supervisor

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// gunicornConf runs Debian's gunicorn, one worker per appd slot, on the
// inherited socket: gunicorn sees LISTEN_FDS with its own LISTEN_PID and
// uses fd 3. (Adding --bind fd://3 would make gunicorn 20 use fd 3 twice:
// it closes the fd after its first dup and dies of EBADF.)
func gunicornConf(t *testing.T, extra string) string {
	t.Helper()
	g, err := exec.LookPath("gunicorn")
	if err != nil || !strings.HasPrefix(g, "/usr/bin/") {
		t.Skipf("SKIPPED LOUDLY: Debian's gunicorn is not installed (apt-get install -y gunicorn; .ci/run installs it): %v %s", err, g)
	}
	dir, _ := filepath.Abs("testdata")
	return fmt.Sprintf(`[app]
command = ["/usr/bin/gunicorn", "-w", "1", "--graceful-timeout", "10", "wsgiapp:app"]
directory = %q
control = "-"
%s`, dir, extra)
}

func TestGunicornWorkersReloadWithoutFailures(t *testing.T) {
	h := start(t, gunicornConf(t, "[workers]\ncount = 2\n"))
	h.waitFor("2 gunicorn masters ready", 60*time.Second, allReady(2, 1))
	h.client.Transport = &http.Transport{DisableKeepAlives: true} // gunicorn's sync worker closes every connection
	var body string
	var err error
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if body, err = h.get("/"); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil || !strings.Contains(body, "gen=1") {
		t.Fatalf("gunicorn answered %q %v\noutput:\n%s", body, err, h.out.String())
	}
	stop := make(chan struct{})
	res, wg := h.load(4, 1000000, stop)
	reloads := 5
	for i := 0; i < reloads; i++ {
		gen := i + 2
		h.reload(gunicornConf(t, "[workers]\ncount = 2\n"))
		h.waitFor(fmt.Sprintf("gen %d", gen), 60*time.Second, allReady(2, gen))
	}
	for res.total.Load() < 1000 {
		time.Sleep(10 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	t.Logf("gunicorn: %d requests during %d reloads, %d failed", res.total.Load(), reloads, res.failed.Load())
	if res.failed.Load() != 0 {
		t.Fatalf("%d of %d requests failed: %v", res.failed.Load(), res.total.Load(), res.errs)
	}
	if !strings.Contains(h.out.String(), "] [INFO] Booting worker with pid") {
		t.Errorf("gunicorn's log lines are not prefixed:\n%s", h.out.String())
	}
}

func TestGunicornCrashKillsItsWorkersAndRestarts(t *testing.T) {
	h := start(t, gunicornConf(t, "[workers]\ncount = 1\n"))
	st := h.waitFor("ready", 60*time.Second, allReady(1, 1))
	master := pidsOf(st)[0]
	var child int
	for deadline := time.Now().Add(30 * time.Second); child == 0; time.Sleep(20 * time.Millisecond) {
		child = childOf(master)
		if time.Now().After(deadline) {
			t.Fatal("gunicorn started no worker")
		}
	}
	// Without cgroups a slot's memory is its process group's: gunicorn's
	// master and its worker.
	h.waitFor("memory of master and worker", 30*time.Second, func(st Status) bool {
		return len(st.Slots) == 1 && st.Slots[0].MemoryCurrent > rssOf(master) && st.Slots[0].Pids >= 2
	})
	syscall.Kill(master, syscall.SIGKILL)
	h.waitFor("restarted", 60*time.Second, func(st Status) bool {
		p := pidsOf(st)[0]
		return p != 0 && p != master && st.Ready == 1
	})
	for deadline := time.Now().Add(10 * time.Second); alive(child); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("gunicorn's worker %d outlived its master", child)
		}
	}
}

// childOf finds a child process of pid.
func childOf(pid int) int {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		var p int
		if _, err := fmt.Sscan(e.Name(), &p); err != nil {
			continue
		}
		if parentPid(p) == pid {
			return p
		}
	}
	return 0
}

func rssOf(pid int) int64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			var kb int64
			fmt.Sscan(v, &kb)
			return kb << 10
		}
	}
	return 0
}
