package accesslog

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edgeapp/edgeapp/edged/reqinfo"
)

func entry() *Entry {
	r, _ := http.NewRequest("GET", "http://example.com/a?b=\"c\"", nil)
	r.RequestURI = "/a?b=\"c\""
	r.Header.Set("User-Agent", "curl/8\n")
	r.Header.Set("X-Tenant", "blue")
	return &Entry{
		Time:    time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC),
		Request: r,
		Info: &reqinfo.Info{
			Peer: netip.MustParseAddr("10.0.0.2"), Client: netip.MustParseAddr("192.0.2.1"), Trusted: true,
			RequestID: "abc", Site: "example.com", Route: "example.com/", Upstream: "127.0.0.1:8000",
			UpstreamStatus: 502, UpstreamTime: 250 * time.Millisecond, CacheStatus: "MISS", BytesIn: 7,
		},
		Status: 502, BytesOut: 1234, Duration: 1500 * time.Microsecond,
		ResponseHeader: http.Header{"Content-Type": {"text/html"}},
	}
}

func TestCombinedAndRotation(t *testing.T) {
	p := filepath.Join(t.TempDir(), "access.log")
	l, err := Open(Options{Output: p, Format: "combined"})
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
	want := `192.0.2.1 - - [27/Nov/2026:10:00:00 +0000] "GET /a?b=\x22c\x22 HTTP/1.1" 502 1234 "-" "curl/8\x0A" 0.002 abc` + "\n"
	if string(old) != want || string(cur) != want {
		t.Fatalf("rotated %q\ncurrent %q\nwant %q", old, cur, want)
	}
}

func TestTemplate(t *testing.T) {
	p := filepath.Join(t.TempDir(), "access.log")
	l, err := Open(Options{Output: p, Format: `$remote_addr via $realip_remote_addr "$request_method $uri?$args" $status up=$upstream_addr/$upstream_status/${upstream_response_time}s cache=$upstream_cache_status t=$http_x_tenant ct=$sent_http_content_type user=$remote_user tls=$ssl_protocol`})
	if err != nil {
		t.Fatal(err)
	}
	l.Log(entry())
	l.Close()
	got, _ := os.ReadFile(p)
	want := `192.0.2.1 via 10.0.0.2 "GET /a?b=\x22c\x22" 502 up=127.0.0.1:8000/502/0.250s cache=MISS t=blue ct=text/html user=- tls=-` + "\n"
	if string(got) != want {
		t.Fatalf("got  %q\nwant %q", got, want)
	}
	for _, bad := range []string{"$nosuch", "$", "${status", "$http_", "x"} {
		if err := Check(Options{Output: "stdout", Format: bad}); err == nil {
			t.Errorf("format %q accepted", bad)
		}
	}
}

func TestJSON(t *testing.T) {
	p := filepath.Join(t.TempDir(), "access.json")
	l, err := Open(Options{Output: p, Format: "json"})
	if err != nil {
		t.Fatal(err)
	}
	e := entry()
	e.Request.Header.Set("User-Agent", "curl/8\n\xff ü")
	l.Log(e)
	e.Info.Upstream, e.Info.UpstreamStatus = "", 0
	e.Info.Client = netip.Addr{}
	l.Log(e)
	l.Close()
	b, _ := os.ReadFile(p)
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("want 2 lines: %s", b)
	}
	// Buffers are written in any order: find each line by content.
	if strings.Contains(lines[0], `"upstream":""`) {
		lines[0], lines[1] = lines[1], lines[0]
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &m); err != nil {
		t.Fatalf("%v: %s", err, lines[0])
	}
	want := map[string]any{
		"uri": `/a?b="c"`, "status": 502.0, "user_agent": "curl/8\n\u00ff ü", "client": "192.0.2.1",
		"upstream": "127.0.0.1:8000", "upstream_status": 502.0, "upstream_time": 0.25, "cache": "MISS",
		"bytes_in": 7.0, "bytes_out": 1234.0, "duration": 0.0015, "request_id": "abc", "route": "example.com/",
		"time": "2026-11-27T10:00:00.000Z",
	}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s = %#v, want %#v", k, m[k], v)
		}
	}
	m = nil
	if err := json.Unmarshal([]byte(lines[1]), &m); err != nil {
		t.Fatalf("%v: %s", err, lines[1])
	}
	if m["upstream_status"] != nil || m["client"] != "" || m["upstream_time"] != nil {
		t.Errorf("empty values: %s", lines[1])
	}
}

func TestJSONFields(t *testing.T) {
	p := filepath.Join(t.TempDir(), "access.json")
	l, err := Open(Options{Output: p, Format: "json", Fields: []string{"status", "header:X-Tenant", "resp_header:content-type", "peer", "request"}})
	if err != nil {
		t.Fatal(err)
	}
	l.Log(entry())
	l.Close()
	b, _ := os.ReadFile(p)
	want := `{"status":502,"header_x_tenant":"blue","resp_header_content_type":"text/html","peer":"10.0.0.2","request":"GET /a?b=\"c\" HTTP/1.1"}` + "\n"
	if string(b) != want {
		t.Fatalf("got  %s\nwant %s", b, want)
	}
	for _, bad := range [][]string{{"nosuch"}, {"status", "status"}, {"header:"}, {"remote_addr"}} {
		if err := Check(Options{Output: "stdout", Format: "json", Fields: bad}); err == nil {
			t.Errorf("fields %q accepted", bad)
		}
	}
}

// Lines written concurrently from many goroutines come out whole, each
// exactly once, across flushes triggered by size and by Flush.
func TestConcurrentWholeLines(t *testing.T) {
	p := filepath.Join(t.TempDir(), "access.log")
	l, err := Open(Options{Output: p, Format: "$request_id $status"})
	if err != nil {
		t.Fatal(err)
	}
	const goroutines, each = 8, 3000
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e := entry()
			e.Info = &reqinfo.Info{}
			for i := range each {
				e.Info.RequestID = fmt.Sprintf("g%d-%d", g, i)
				e.Status = 200 + i%300
				l.Log(e)
				if i%1000 == 0 {
					l.Flush()
				}
			}
		}()
	}
	wg.Wait()
	l.Close()
	f, _ := os.Open(p)
	defer f.Close()
	seen := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var id string
		var status int
		if n, err := fmt.Sscanf(sc.Text(), "%s %d", &id, &status); n != 2 || err != nil || seen[id] {
			t.Fatalf("bad or repeated line %q", sc.Text())
		}
		seen[id] = true
	}
	if len(seen) != goroutines*each {
		t.Fatalf("%d lines, want %d", len(seen), goroutines*each)
	}
}

func TestOffIsNil(t *testing.T) {
	l, err := Open(Options{Output: "off"})
	if err != nil || l != nil {
		t.Fatal("off should give a nil logger")
	}
	l.Log(entry()) // must not panic
	if err := l.Reopen(); err != nil {
		t.Fatal(err)
	}
	if err := Check(Options{Output: "relative/path"}); err == nil {
		t.Fatal("relative output accepted")
	}
}

func TestJournalNames(t *testing.T) {
	for in, want := range map[string]string{"status": "HTTP_STATUS", "header:X-Tenant-Id": "HTTP_HEADER_X_TENANT_ID", "upstream_time": "HTTP_UPSTREAM_TIME"} {
		f, err := parseField(in, false)
		if err != nil {
			t.Fatal(err)
		}
		if got := f.journalName(); got != want {
			t.Errorf("%s: %s, want %s", in, got, want)
		}
	}
}

func BenchmarkCombined(b *testing.B) {
	l, _ := Open(Options{Output: filepath.Join(b.TempDir(), "a.log"), Format: "combined"})
	defer l.Close()
	e := entry()
	b.ReportAllocs()
	before := cpuTime()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			l.Log(e)
		}
	})
	b.ReportMetric(float64(cpuTime()-before)/float64(b.N), "cpu-ns/op")
}

func BenchmarkJSON(b *testing.B) {
	l, _ := Open(Options{Output: filepath.Join(b.TempDir(), "a.log"), Format: "json"})
	defer l.Close()
	e := entry()
	b.ReportAllocs()
	before := cpuTime()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			l.Log(e)
		}
	})
	b.ReportMetric(float64(cpuTime()-before)/float64(b.N), "cpu-ns/op")
}

// cpuTime is the process's user and system CPU time in nanoseconds,
// steadier than wall time on a shared host.
func cpuTime() int64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}
