package accesslog

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func entry() *Entry {
	return &Entry{
		Time: time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC), RemoteIP: "192.0.2.1", Method: "GET",
		URI: "/a?b=\"c\"", Proto: "HTTP/1.1", Status: 200, Bytes: 1234, UserAgent: "curl/8\n",
		Host: "example.com", Duration: 1500 * time.Microsecond, RequestID: "abc", Upstream: "example.com/",
	}
}

func TestCombinedAndRotation(t *testing.T) {
	p := filepath.Join(t.TempDir(), "access.log")
	l, err := Open(p, "combined")
	if err != nil {
		t.Fatal(err)
	}
	l.Log(entry())
	// Rotate: move the file away, reopen, log again.
	if err := os.Rename(p, p+".1"); err != nil {
		t.Fatal(err)
	}
	if err := l.Reopen(); err != nil {
		t.Fatal(err)
	}
	l.Log(entry())
	l.Close()
	old, _ := os.ReadFile(p + ".1")
	cur, _ := os.ReadFile(p)
	want := `192.0.2.1 - - [27/Nov/2026:10:00:00 +0000] "GET /a?b=\x22c\x22 HTTP/1.1" 200 1234 "-" "curl/8\x0A" 0.002 abc` + "\n"
	if string(old) != want || string(cur) != want {
		t.Fatalf("rotated %q\ncurrent %q\nwant %q", old, cur, want)
	}
}

func TestJSON(t *testing.T) {
	p := filepath.Join(t.TempDir(), "access.json")
	l, err := Open(p, "json")
	if err != nil {
		t.Fatal(err)
	}
	l.Log(entry())
	l.Close()
	b, _ := os.ReadFile(p)
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	if m["uri"] != `/a?b="c"` || m["status"].(float64) != 200 || m["user_agent"] != "curl/8\n" || !strings.HasSuffix(string(b), "}\n") {
		t.Fatalf("json %s", b)
	}
}

func TestOffIsNil(t *testing.T) {
	l, err := Open("off", "combined")
	if err != nil || l != nil {
		t.Fatal("off should give a nil logger")
	}
	l.Log(entry()) // must not panic
	if err := l.Reopen(); err != nil {
		t.Fatal(err)
	}
}

func BenchmarkCombined(b *testing.B) {
	l, _ := Open(filepath.Join(b.TempDir(), "a.log"), "combined")
	e := entry()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		l.Log(e)
	}
}
