package supervisor

import (
	"github.com/edgeapp/edgeapp/internal/syncbuf"
	"io"
	"os"
	"strings"
	"testing"
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
