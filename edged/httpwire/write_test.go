package httpwire

import (
	"net/http"
	"testing"
)

func TestAppendFieldSanitises(t *testing.T) {
	got := string(AppendField(nil, "X-A", "a\r\nSet-Cookie: evil\x00"))
	if got != "X-A: a  Set-Cookie: evil \r\n" {
		t.Errorf("%q", got)
	}
	if got := AppendField(nil, "Bad Name", "v"); len(got) != 0 {
		t.Errorf("invalid name written: %q", got)
	}
	if got := AppendField(nil, "", "v"); len(got) != 0 {
		t.Errorf("empty name written: %q", got)
	}
}

func TestAppendHeadRoundTrip(t *testing.T) {
	h := http.Header{"Content-Type": {"text/plain"}, "Set-Cookie": {"a=1", "b=2"}}
	b := AppendStatusLine(nil, 200)
	b = AppendHeader(b, h)
	b = append(b, "\r\n"...)
	var r Response
	if _, err := ParseResponse(b, &r); err != nil {
		t.Fatal(err)
	}
	if r.Status != 200 || string(r.Reason) != "OK" || len(r.Fields) != 3 {
		t.Fatalf("%d %q %d fields", r.Status, r.Reason, len(r.Fields))
	}
	if got := string(AppendStatusLine(nil, 599)); got != "HTTP/1.1 599 \r\n" {
		t.Errorf("unknown status: %q", got)
	}
	if got := string(AppendRequestLine(nil, "GET", "/x")); got != "GET /x HTTP/1.1\r\n" {
		t.Errorf("request line %q", got)
	}
}
