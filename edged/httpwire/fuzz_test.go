package httpwire

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"net/url"
	"slices"
	"testing"
)

func addRequestSeeds(f *testing.F) {
	f.Add([]byte("GET /a?b HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n"))
	f.Add([]byte("POST /form HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Type: text/plain\r\n\r\nabc"))
	f.Add([]byte("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"))
	f.Add([]byte("GET http://a.example/x HTTP/1.1\r\nHost: a.example\r\n\r\n"))
	f.Add([]byte("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"))
	f.Add([]byte("OPTIONS * HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n"))
	f.Add([]byte("GET / HTTP/1.1\nHost: a\nUpgrade: websocket\nConnection: Upgrade\n\n"))
	for _, tc := range SmugglingCorpus {
		f.Add([]byte(tc.Request))
	}
}

// FuzzParseRequest checks the parser's own invariants on any input: it
// never panics, a head it accepts parses the same again on its own, and
// every field it returns is well-formed.
func FuzzParseRequest(f *testing.F) {
	addRequestSeeds(f)
	f.Fuzz(func(t *testing.T, in []byte) {
		var r Request
		n, err := ParseRequest(in, &r)
		if err != nil {
			var e *Error
			if err != ErrIncomplete && !errors.As(err, &e) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if n <= 0 || n > len(in) {
			t.Fatalf("head length %d of %d", n, len(in))
		}
		checkFields(t, r.Fields)
		if !isToken(r.Method) || len(r.Target) == 0 {
			t.Fatalf("request line %q %q", r.Method, r.Target)
		}
		var again Request
		if m, err := ParseRequest(in[:n], &again); err != nil || m != n || again.Body != r.Body || again.ContentLength != r.ContentLength || len(again.Fields) != len(r.Fields) {
			t.Fatalf("head alone parses differently: %d %v", m, err)
		}
		// Every prefix is incomplete or refused, never a different head.
		for i := 0; i < n; i += 1 + n/16 {
			var p Request
			if _, err := ParseRequest(in[:i], &p); err == nil {
				t.Fatalf("prefix %d of %d accepted", i, n)
			}
		}
	})
}

func checkFields(t *testing.T, fields []Field) {
	t.Helper()
	for _, fl := range fields {
		if !isToken(fl.Name) {
			t.Fatalf("field name %q", fl.Name)
		}
		for _, c := range fl.Value {
			if class[c]&cValue == 0 {
				t.Fatalf("field value %q", fl.Value)
			}
		}
		if v := trimOWS(fl.Value); len(v) != len(fl.Value) {
			t.Fatalf("untrimmed value %q", fl.Value)
		}
	}
}

// engineAccepts applies what edged's engine checks after the parser: the
// target must be a URL net/url understands.
func engineAccepts(r *Request) bool {
	if r.Form == AuthorityForm || r.Form == AsteriskForm {
		return true
	}
	_, err := url.ParseRequestURI(string(r.Target))
	return err == nil
}

// FuzzRequestDifferential compares the parser with net/http's: what both
// accept must mean the same request (method, target, version, Host, every
// header value in order, and above all the body's framing). Refusing what
// net/http accepts is allowed (this parser is stricter); accepting what it
// refuses is not.
func FuzzRequestDifferential(f *testing.F) {
	addRequestSeeds(f)
	f.Fuzz(func(t *testing.T, in []byte) {
		var r Request
		n, err := ParseRequest(in, &r)
		if err != nil || !engineAccepts(&r) {
			return
		}
		head := bytes.TrimLeft(in[:n], "\r\n") // net/http does not skip empty lines
		std, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(head)))
		if err != nil {
			t.Fatalf("accepted what net/http refuses (%v):\n%q", err, head)
		}
		if std.Method != string(r.Method) || std.RequestURI != string(r.Target) || min(std.ProtoMinor, 1) != r.Minor {
			t.Fatalf("request line: net/http %s %s %d, httpwire %s %s %d", std.Method, std.RequestURI, std.ProtoMinor, r.Method, r.Target, r.Minor)
		}
		if r.HasHost && r.Form == OriginForm && std.Host != string(r.Host) {
			t.Fatalf("Host: net/http %q, httpwire %q", std.Host, r.Host)
		}
		compareHeader(t, std.Header, r.Fields, "Host", "Transfer-Encoding", "Content-Length")
		switch r.Body {
		case BodyChunked:
			if !slices.Equal(std.TransferEncoding, []string{"chunked"}) {
				t.Fatalf("framing: httpwire chunked, net/http %v %d", std.TransferEncoding, std.ContentLength)
			}
		case BodyLength:
			if std.ContentLength != r.ContentLength || std.TransferEncoding != nil {
				t.Fatalf("framing: httpwire length %d, net/http %d %v", r.ContentLength, std.ContentLength, std.TransferEncoding)
			}
		case BodyNone:
			if std.ContentLength > 0 || std.TransferEncoding != nil {
				t.Fatalf("framing: httpwire none, net/http %d %v", std.ContentLength, std.TransferEncoding)
			}
		}
		if r.Close != std.Close {
			t.Fatalf("close: httpwire %v, net/http %v", r.Close, std.Close)
		}
	})
}

// compareHeader checks that h (net/http's) holds exactly the fields, by
// canonical name and in order, except the names net/http moves elsewhere.
func compareHeader(t *testing.T, h http.Header, fields []Field, skip ...string) {
	t.Helper()
	want := http.Header{}
	for _, fl := range fields {
		k := textproto.CanonicalMIMEHeaderKey(string(fl.Name))
		if !slices.Contains(skip, k) {
			want[k] = append(want[k], string(fl.Value))
		}
	}
	for _, k := range skip {
		delete(h, k)
	}
	if len(h) != len(want) {
		t.Fatalf("header: net/http %q, httpwire %q", h, want)
	}
	for k, v := range want {
		if !slices.Equal(h[k], v) {
			t.Fatalf("header %s: net/http %q, httpwire %q", k, h[k], v)
		}
	}
}

func addResponseSeeds(f *testing.F) {
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Type: text/plain\r\n\r\nabc"))
	f.Add([]byte("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 204 No Content\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n"))
	f.Add([]byte("HTTP/1.0 200 OK\r\n\r\nuntil close"))
	f.Add([]byte("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"))
}

// FuzzParseResponse checks the response parser's invariants.
func FuzzParseResponse(f *testing.F) {
	addResponseSeeds(f)
	f.Fuzz(func(t *testing.T, in []byte) {
		var r Response
		n, err := ParseResponse(in, &r)
		if err != nil {
			var e *Error
			if err != ErrIncomplete && !errors.As(err, &e) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if n <= 0 || n > len(in) || r.Status < 100 || r.Status > 999 {
			t.Fatalf("head length %d of %d, status %d", n, len(in), r.Status)
		}
		checkFields(t, r.Fields)
		if r.Chunked && r.ContentLength >= 0 {
			t.Fatal("accepted both Transfer-Encoding and Content-Length")
		}
	})
}

// FuzzResponseDifferential compares with net/http's client parser for a
// GET: the same status, header values and body framing.
func FuzzResponseDifferential(f *testing.F) {
	addResponseSeeds(f)
	f.Fuzz(func(t *testing.T, in []byte) {
		var r Response
		n, err := ParseResponse(in, &r)
		if err != nil {
			return
		}
		req := &http.Request{Method: "GET"}
		std, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(in[:n])), req)
		if err != nil {
			t.Fatalf("accepted what net/http refuses (%v):\n%q", err, in[:n])
		}
		if std.StatusCode != r.Status || min(std.ProtoMinor, 1) != r.Minor {
			t.Fatalf("status: net/http %d 1.%d, httpwire %d 1.%d", std.StatusCode, std.ProtoMinor, r.Status, r.Minor)
		}
		compareHeader(t, std.Header, r.Fields, "Transfer-Encoding", "Content-Length")
		body, length := r.BodyFor("GET")
		switch body {
		case BodyChunked:
			if !slices.Contains(std.TransferEncoding, "chunked") {
				t.Fatalf("framing: httpwire chunked, net/http %v", std.TransferEncoding)
			}
		case BodyLength:
			if std.ContentLength != length {
				t.Fatalf("framing: httpwire length %d, net/http %d", length, std.ContentLength)
			}
		case BodyNone:
			if std.ContentLength > 0 {
				t.Fatalf("framing: httpwire none, net/http %d", std.ContentLength)
			}
		}
	})
}

func addChunkedSeeds(f *testing.F) {
	f.Add([]byte("5\r\nhello\r\n0\r\n\r\n"))
	f.Add([]byte("5;a=b;c=\"d\"\r\nhello\r\n6 \r\n world\r\n0\r\nX: y\r\n\r\n"))
	f.Add([]byte("1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\n"))
	for _, tc := range ChunkedCorpus {
		f.Add([]byte(tc.Body))
	}
}

// FuzzChunked checks that the decoder's result does not depend on how the
// input is split, that what it accepts net/http's chunked reader reads as
// the same bytes, and that the writer's output decodes to its input.
func FuzzChunked(f *testing.F) {
	addChunkedSeeds(f)
	f.Fuzz(func(t *testing.T, in []byte) {
		whole, wholeTr, wholeN, wholeErr := decodeAll(in, len(in)+1)
		split, _, splitN, splitErr := decodeAll(in, 3)
		if !bytes.Equal(whole, split) || wholeN != splitN || (wholeErr == nil) != (splitErr == nil) {
			t.Fatalf("split changes the result: %q/%v vs %q/%v", whole, wholeErr, split, splitErr)
		}
		if wholeErr == nil {
			checkFields(t, wholeTr)
			std, err := io.ReadAll(httputil.NewChunkedReader(bytes.NewReader(in[:wholeN])))
			if err == nil && !bytes.Equal(std, whole) {
				t.Fatalf("net/http reads %q, httpwire %q", std, whole)
			}
		}
		var enc bytes.Buffer
		cw := &ChunkedWriter{W: &enc}
		for rest := in; len(rest) > 0; {
			k := min(len(rest), 1+int(rest[0])%17)
			cw.Write(rest[:k])
			rest = rest[k:]
		}
		cw.Close(nil)
		back, _, _, err := decodeAll(enc.Bytes(), 5)
		if err != nil || !bytes.Equal(back, in) {
			t.Fatalf("round trip: %q %v", back, err)
		}
	})
}
