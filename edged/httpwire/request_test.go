package httpwire

import (
	"errors"
	"strings"
	"testing"
)

func parseReq(t *testing.T, s string) (*Request, int, error) {
	t.Helper()
	var r Request
	n, err := ParseRequest([]byte(s), &r)
	return &r, n, err
}

func TestParseRequestValid(t *testing.T) {
	const s = "\r\nGET /a?b=c HTTP/1.1\r\nHost: example.com\r\nX-Empty:\r\nAccept:  text/html \t\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\nExpect: 100-Continue\r\n\r\nBODY"
	r, n, err := parseReq(t, s)
	if err != nil {
		t.Fatal(err)
	}
	if n != len(s)-4 {
		t.Errorf("head length %d, want %d", n, len(s)-4)
	}
	if string(r.Method) != "GET" || string(r.Target) != "/a?b=c" || r.Minor != 1 || r.Form != OriginForm {
		t.Errorf("request line: %q %q 1.%d form %d", r.Method, r.Target, r.Minor, r.Form)
	}
	if string(r.Host) != "example.com" || !r.HasHost {
		t.Errorf("host %q", r.Host)
	}
	if len(r.Fields) != 6 {
		t.Fatalf("fields %d, want 6", len(r.Fields))
	}
	if v, _ := Get(r.Fields, "accept"); string(v) != "text/html" {
		t.Errorf("Accept %q: surrounding whitespace must be trimmed", v)
	}
	if v, ok := Get(r.Fields, "x-empty"); !ok || len(v) != 0 {
		t.Errorf("empty field lost: %q %v", v, ok)
	}
	if r.Body != BodyNone || r.Close || !r.Upgrade || !r.Expect100 {
		t.Errorf("body %d close %v upgrade %v expect100 %v", r.Body, r.Close, r.Upgrade, r.Expect100)
	}
}

func TestParseRequestFraming(t *testing.T) {
	for _, tc := range []struct {
		name, head string
		body       Body
		length     int64
		close      bool
	}{
		{"length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0042\r\n\r\n", BodyLength, 42, false},
		{"chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n", BodyChunked, -1, false},
		{"http10 default close", "GET / HTTP/1.0\r\n\r\n", BodyNone, -1, true},
		{"http10 keep-alive", "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", BodyNone, -1, false},
		{"close", "GET / HTTP/1.1\r\nHost: a\r\nConnection: foo, close\r\n\r\n", BodyNone, -1, true},
		{"bare LF lines", "GET / HTTP/1.1\nHost: a\n\n", BodyNone, -1, false},
		{"HTTP/1.2 as 1.1", "GET / HTTP/1.2\r\nHost: a\r\n\r\n", BodyNone, -1, false},
		{"absolute form", "GET http://A.example:80/x HTTP/1.1\r\nHost: a.example\r\n\r\n", BodyNone, -1, false},
		{"absolute https", "GET https://a.example/x HTTP/1.1\r\nHost: a.example:443\r\n\r\n", BodyNone, -1, false},
		{"asterisk", "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", BodyNone, -1, false},
		{"connect", "CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n", BodyNone, -1, false},
		{"obs-text", "GET /\xc3\xa9 HTTP/1.1\r\nHost: a\r\nX: caf\xc3\xa9\r\n\r\n", BodyNone, -1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, n, err := parseReq(t, tc.head)
			if err != nil {
				t.Fatal(err)
			}
			if n != len(tc.head) || r.Body != tc.body || r.ContentLength != tc.length || r.Close != tc.close {
				t.Errorf("n=%d body=%d length=%d close=%v", n, r.Body, r.ContentLength, r.Close)
			}
		})
	}
}

// TestParseRequestRefused is the parser's half of the request-smuggling
// corpus: every ambiguity RFC 9112 names, and the classic obfuscations.
// The engine's tests send the same requests to a real edged.
func TestParseRequestRefused(t *testing.T) {
	for _, tc := range SmugglingCorpus {
		t.Run(tc.Name, func(t *testing.T) {
			_, _, err := parseReq(t, tc.Request)
			if !errors.Is(err, tc.Err) {
				t.Fatalf("%q: err %v, want %v", tc.Request, err, tc.Err)
			}
			var e *Error
			if !errors.As(err, &e) || e.Status != tc.Status {
				t.Fatalf("status of %v is not %d", err, tc.Status)
			}
		})
	}
}

func TestParseRequestIncomplete(t *testing.T) {
	const full = "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n"
	for i := 0; i < len(full); i++ {
		_, _, err := parseReq(t, full[:i])
		if err != ErrIncomplete {
			t.Fatalf("prefix %q: %v, want ErrIncomplete", full[:i], err)
		}
	}
	// Garbage is refused before the head is complete.
	if _, _, err := parseReq(t, "GET /\x00"); err != ErrNUL {
		t.Errorf("partial request line with NUL: %v", err)
	}
	if _, _, err := parseReq(t, "GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\nMore"); err != ErrSpaceBeforeColon {
		t.Errorf("partial head with bad field: %v", err)
	}
}

func TestParseRequestReusesFields(t *testing.T) {
	var r Request
	head := []byte("GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n\r\n")
	if _, err := ParseRequest(head, &r); err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := ParseRequest(head, &r); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per parse, want 0", allocs)
	}
}

func TestFieldsKeepOrderAndRepeats(t *testing.T) {
	r, _, err := parseReq(t, "GET / HTTP/1.1\r\nHost: a\r\nSet: 1\r\nOther: x\r\nset: 2\r\n\r\n")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range r.Fields {
		got = append(got, string(f.Name)+"="+string(f.Value))
	}
	if strings.Join(got, ",") != "Host=a,Set=1,Other=x,set=2" {
		t.Errorf("fields %v", got)
	}
}
