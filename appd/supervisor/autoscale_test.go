package supervisor

import (
	"net/http"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestAutoscaleUpOnQueueDownWhenIdle: sync workers serve one request at a
// time, so eight clients of a slow path queue connections in the accept
// queue: appd adds workers up to max; once the load stops it removes them
// one at a time, scale_down_after apart.
func TestAutoscaleUpOnQueueDownWhenIdle(t *testing.T) {
	h := start(t, runnerConf(t, "", "[workers]\ncount = { min = 1, max = 3 }\nscale_up_cooldown = \"300ms\"\nscale_down_after = \"2s\"\n"))
	h.waitFor("1 ready", 60*time.Second, allReady(1, 1))
	h.client.Transport = &http.Transport{DisableKeepAlives: true}
	stop := make(chan struct{})
	res, wg := func() (*loadResult, func()) {
		r := &loadResult{}
		done := make(chan struct{})
		n := 8
		for range n {
			go func() {
				defer func() { done <- struct{}{} }()
				for {
					select {
					case <-stop:
						return
					default:
					}
					r.total.Add(1)
					if _, err := h.get("/slow?ms=150"); err != nil {
						r.failed.Add(1)
					}
				}
			}()
		}
		return r, func() {
			for range n {
				<-done
			}
		}
	}()
	st := h.waitFor("3 workers under load", 60*time.Second, func(st Status) bool { return st.Workers == 3 && st.Ready == 3 })
	if st.ScaleUps != 2 || !st.Autoscale {
		t.Errorf("status after scaling up: %+v", st)
	}
	if !regexp.MustCompile(`scaling from=1 to=2 reason="autoscale up: \d+ connections waiting in the accept queue"`).MatchString(h.logs.String()) {
		t.Errorf("scale-up not logged with the queue:\n%s", h.logs.String())
	}
	close(stop)
	wg()
	if res.failed.Load() != 0 {
		t.Errorf("%d of %d requests failed while scaling", res.failed.Load(), res.total.Load())
	}
	h.waitFor("2 workers when idle", 30*time.Second, func(st Status) bool { return st.Workers == 2 })
	at2 := time.Now()
	h.waitFor("1 worker when idle", 30*time.Second, func(st Status) bool { return st.Workers == 1 && len(st.Slots) == 1 })
	if gap := time.Since(at2); gap < 1500*time.Millisecond {
		t.Errorf("scaled down twice within %v: want one at a time, scale_down_after apart", gap)
	}
	if n := strings.Count(h.logs.String(), `reason="autoscale down: idle for 2s`); n != 2 {
		t.Errorf("%d scale-downs logged, want 2", n)
	}
}

// TestAutoscaleUpWhenAllBusyAndManualOverride: workers that use a whole
// CPU count as busy; SIGTTOU removes one by hand and the cool-down keeps
// the autoscaler from undoing it at once.
func TestAutoscaleUpWhenAllBusyAndManualOverride(t *testing.T) {
	h := start(t, conf(t, "environment = { TW_SPIN = \"1\" }\n[workers]\ncount = { min = 1, max = 2 }\nscale_up_cooldown = \"3s\"\n"))
	h.waitFor("scaled to 2", 30*time.Second, func(st Status) bool { return st.Workers == 2 && st.Ready == 2 })
	if !strings.Contains(h.logs.String(), `reason="autoscale up: all 1 workers busy`) {
		t.Errorf("scale-up by busy workers not logged:\n%s", h.logs.String())
	}
	h.sigs <- syscall.SIGTTIN // at max: ignored
	tou := time.Now()         // no later than the loop takes SIGTTOU
	h.sigs <- syscall.SIGTTOU
	h.waitFor("1 by hand", 10*time.Second, func(st Status) bool { return st.Workers == 1 && len(st.Slots) == 1 })
	h.waitFor("2 again, after the cool-down", 30*time.Second, func(st Status) bool { return st.Workers == 2 })
	if d := time.Since(tou); d < 2900*time.Millisecond {
		t.Errorf("the autoscaler undid SIGTTOU after %v, within scale_up_cooldown", d)
	}
	if !strings.Contains(h.logs.String(), "scale request ignored: outside workers.min..max") {
		t.Error("SIGTTIN above max not refused")
	}
}

func TestAcceptQueueInStatusAndMetrics(t *testing.T) {
	h := start(t, conf(t, "[workers]\ncount = 1\n"))
	st := h.waitFor("backlog read", 30*time.Second, func(st Status) bool { return st.Ready == 1 && st.Backlog > 0 })
	if st.Queued != 0 || st.Autoscale {
		t.Errorf("status %+v", st)
	}
	var b strings.Builder
	writeMetrics(&b, st)
	for _, want := range []string{"appd_accept_queue 0\n", "appd_accept_backlog ", "appd_busy_workers ", "appd_scale_held_back 0\n", `appd_autoscale_total{direction="up"} 0`} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}
