package httpwire

import (
	"errors"
	"testing"
)

func TestParseResponse(t *testing.T) {
	for _, tc := range []struct {
		name, head, method string
		status             int
		body               Body
		length             int64
		close              bool
	}{
		{"length", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", "GET", 200, BodyLength, 5, false},
		{"zero length", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", "GET", 200, BodyNone, 0, false},
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "GET", 200, BodyChunked, -1, false},
		{"no length: until close", "HTTP/1.1 200 OK\r\n\r\n", "GET", 200, BodyUntilClose, -1, false},
		{"HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", "HEAD", 200, BodyNone, 0, false},
		{"204", "HTTP/1.1 204 No Content\r\n\r\n", "GET", 204, BodyNone, 0, false},
		{"304", "HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\n", "GET", 304, BodyNone, 0, false},
		{"100", "HTTP/1.1 100 Continue\r\n\r\n", "POST", 100, BodyNone, 0, false},
		{"CONNECT 200", "HTTP/1.1 200 Connection established\r\n\r\n", "CONNECT", 200, BodyNone, 0, false},
		{"no reason", "HTTP/1.1 200\r\nContent-Length: 1\r\n\r\n", "GET", 200, BodyLength, 1, false},
		{"empty reason", "HTTP/1.1 200 \r\nContent-Length: 1\r\n\r\n", "GET", 200, BodyLength, 1, false},
		{"close", "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n", "GET", 200, BodyLength, 1, true},
		{"HTTP/1.0", "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", "GET", 200, BodyLength, 1, true},
		{"HTTP/1.0 keep-alive", "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n", "GET", 200, BodyLength, 1, false},
		{"bare LF", "HTTP/1.1 404 Not Found\nContent-Length: 1\n\n", "GET", 404, BodyLength, 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r Response
			n, err := ParseResponse([]byte(tc.head+"rest"), &r)
			if err != nil {
				t.Fatal(err)
			}
			body, length := r.BodyFor(tc.method)
			if n != len(tc.head) || r.Status != tc.status || body != tc.body || length != tc.length || r.Close != tc.close {
				t.Errorf("n=%d status=%d body=%d length=%d close=%v", n, r.Status, body, length, r.Close)
			}
		})
	}
}

func TestParseResponseRefused(t *testing.T) {
	for _, tc := range []struct {
		name, head string
		err        error
	}{
		{"CL and TE", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", ErrLengthAndEncoding},
		{"two CL", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", ErrDuplicateLength},
		{"bad CL", "HTTP/1.1 200 OK\r\nContent-Length: 5x\r\n\r\n", ErrContentLength},
		{"obs-fold", "HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n", ErrObsFold},
		{"bare CR", "HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n", ErrBareCR},
		{"NUL", "HTTP/1.1 200 OK\r\nX: a\x00\r\n\r\n", ErrNUL},
		{"space before colon", "HTTP/1.1 200 OK\r\nX : a\r\n\r\n", ErrSpaceBeforeColon},
		{"TE in 1.0", "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", ErrEncodingHTTP10},
		{"gzip then chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", ErrUnknownEncoding},
		{"gzip only", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", ErrUnknownEncoding},
		{"chunked twice", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", ErrChunkedTwice},
		{"two-digit status", "HTTP/1.1 20 OK\r\n\r\n", ErrStatusLine},
		{"four-digit status", "HTTP/1.1 2000 OK\r\n\r\n", ErrStatusLine},
		{"status 099", "HTTP/1.1 099 OK\r\n\r\n", ErrStatusLine},
		{"HTTP/2", "HTTP/2.0 200 OK\r\n\r\n", ErrVersionUnsupported},
		{"not HTTP", "SSH-2.0-OpenSSH\r\n\r\n", ErrStatusLine},
		{"not HTTP, partial", "SSH-2.0", ErrStatusLine},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r Response
			if _, err := ParseResponse([]byte(tc.head), &r); !errors.Is(err, tc.err) {
				t.Errorf("err %v, want %v", err, tc.err)
			}
		})
	}
}

func TestParseResponseIncompleteAndAllocs(t *testing.T) {
	const full = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\n"
	var r Response
	for i := 0; i < len(full); i++ {
		if _, err := ParseResponse([]byte(full[:i]), &r); err != ErrIncomplete {
			t.Fatalf("prefix %q: %v", full[:i], err)
		}
	}
	b := []byte(full)
	if a := testing.AllocsPerRun(100, func() { ParseResponse(b, &r) }); a != 0 {
		t.Errorf("%v allocations per parse", a)
	}
}
