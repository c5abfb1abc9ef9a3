package supervisor

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-systemd/v22/journal"
	"github.com/edgeapp/edgeapp/internal/syncbuf"
)

func TestCopyLinesPrefixesAndKeepsPriority(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	var out syncbuf.Buffer
	done := make(chan struct{})
	go func() { copyLines(&out, r, "[w1 pid 7] "); close(done) }()
	io.WriteString(w, "hello\n<3>broken thing\npartial")
	w.Close()
	<-done
	want := "[w1 pid 7] hello\n<3>[w1 pid 7] broken thing\n[w1 pid 7] partial\n"
	if out.String() != want {
		t.Errorf("got %q, want %q", out.String(), want)
	}
	long := strings.Repeat("x", 10000)
	r, w, _ = os.Pipe()
	out = syncbuf.Buffer{}
	done = make(chan struct{})
	go func() { copyLines(&out, r, "> "); close(done) }()
	io.WriteString(w, long+"\n")
	w.Close()
	<-done
	if got := strings.ReplaceAll(strings.ReplaceAll(out.String(), "> ", ""), "\n", ""); got != long {
		t.Errorf("long line mangled: %d bytes back", len(got))
	}
}

// BenchmarkCopyLines is the cost per worker output line (a busy app may
// log thousands a second through appd).
func BenchmarkCopyLines(b *testing.B) {
	line := []byte("[2026-11-27 03:00:00 +0000] [1234] [INFO] GET /api/items 200 0.003s\n")
	r, w, err := os.Pipe()
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() { copyLines(io.Discard, r, "[w3 pid 12345] "); close(done) }()
	b.SetBytes(int64(len(line)))
	b.ReportAllocs()
	for b.Loop() {
		w.Write(line)
	}
	w.Close()
	<-done
}

// TestJournalWorkerOutput: under systemd, workers' lines reach the
// journal with their slot, generation and pid as fields and their
// priority (runs where journald is: the VM).
func TestJournalWorkerOutput(t *testing.T) {
	if !journal.Enabled() {
		if os.Getenv("APPD_CGROUP_TESTS") == "1" {
			t.Fatal("no journald socket in the VM")
		}
		t.Skip("SKIPPED: no journald here (/run/systemd/journal/socket); runs in the VM: make vm-test")
	}
	name := fmt.Sprintf("jtest%d", os.Getpid())
	h := start(t, conf(t, "[workers]\ncount = 1\n"), func(o *Options) { o.Journal = true; o.Name = name })
	st := h.waitFor("ready", 60*time.Second, allReady(1, 1))
	pid := pidsOf(st)[0]
	var entry map[string]string
	for deadline := time.Now().Add(30 * time.Second); entry == nil; time.Sleep(200 * time.Millisecond) {
		out, err := exec.Command("journalctl", "--no-pager", "-o", "json", "APPD_INSTANCE="+name).Output()
		if err != nil {
			t.Fatalf("journalctl: %v", err)
		}
		for _, line := range strings.Split(string(out), "\n") {
			var e map[string]any
			if json.Unmarshal([]byte(line), &e) == nil && strings.Contains(fmt.Sprint(e["MESSAGE"]), "listening on") {
				entry = map[string]string{}
				for k, v := range e {
					entry[k] = fmt.Sprint(v)
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no journal entry of the worker:\n%s", out)
		}
	}
	want := map[string]string{"APPD_SLOT": "0", "APPD_GENERATION": "1", "APPD_WORKER_PID": fmt.Sprint(pid),
		"SYSLOG_PID": fmt.Sprint(pid), "SYSLOG_IDENTIFIER": filepath.Base(testWorker), "PRIORITY": "6"}
	for k, v := range want {
		if entry[k] != v {
			t.Errorf("%s=%q, want %q (entry %v)", k, entry[k], v, entry)
		}
	}
	if !strings.HasPrefix(entry["MESSAGE"], "[w0] ") {
		t.Errorf("MESSAGE %q", entry["MESSAGE"])
	}
	if strings.Contains(h.out.String(), "listening on") {
		t.Errorf("the line also went to the plain output: %q", h.out.String())
	}
}
