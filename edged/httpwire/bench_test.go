package httpwire

import (
	"bufio"
	"bytes"
	"net/http"
	"testing"
)

var browserRequest = []byte("GET /static/app.css?v=3 HTTP/1.1\r\n" +
	"Host: www.example.com\r\n" +
	"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n" +
	"Accept: text/css,*/*;q=0.1\r\n" +
	"Accept-Language: en-US,en;q=0.5\r\n" +
	"Accept-Encoding: gzip, deflate, br, zstd\r\n" +
	"Referer: https://www.example.com/\r\n" +
	"Connection: keep-alive\r\n" +
	"Cookie: session=0123456789abcdef; theme=dark\r\n" +
	"Sec-Fetch-Dest: style\r\n" +
	"Sec-Fetch-Mode: no-cors\r\n" +
	"Sec-Fetch-Site: same-origin\r\n" +
	"If-None-Match: \"5f2b-1a3\"\r\n\r\n")

var upstreamResponse = []byte("HTTP/1.1 200 OK\r\n" +
	"Server: gunicorn\r\n" +
	"Date: Thu, 27 Nov 2026 03:50:00 GMT\r\n" +
	"Content-Type: text/html; charset=utf-8\r\n" +
	"Content-Length: 1024\r\n" +
	"Cache-Control: max-age=60\r\n" +
	"Vary: Accept-Encoding\r\n\r\n")

func BenchmarkParseRequest(b *testing.B) {
	var r Request
	b.SetBytes(int64(len(browserRequest)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseRequest(browserRequest, &r); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkNetHTTPReadRequest is the same head through net/http, for
// comparison.
func BenchmarkNetHTTPReadRequest(b *testing.B) {
	b.SetBytes(int64(len(browserRequest)))
	b.ReportAllocs()
	rd := bytes.NewReader(browserRequest)
	br := bufio.NewReader(rd)
	for b.Loop() {
		rd.Reset(browserRequest)
		br.Reset(rd)
		if _, err := http.ReadRequest(br); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseResponse(b *testing.B) {
	var r Response
	b.SetBytes(int64(len(upstreamResponse)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseResponse(upstreamResponse, &r); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkChunkedDecode(b *testing.B) {
	var enc bytes.Buffer
	cw := &ChunkedWriter{W: &enc}
	chunk := bytes.Repeat([]byte("x"), 8192)
	for range 16 {
		cw.Write(chunk)
	}
	cw.Close(nil)
	body := enc.Bytes()
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	var d ChunkedDecoder
	for b.Loop() {
		d.Reset()
		for p := body; len(p) > 0; {
			n, _, err := d.Decode(p, 1<<20)
			p = p[n:]
			if err != nil {
				break
			}
		}
	}
}

func BenchmarkAppendHead(b *testing.B) {
	h := http.Header{
		"Content-Type":   {"text/html; charset=utf-8"},
		"Content-Length": {"1024"},
		"Cache-Control":  {"max-age=60"},
		"Vary":           {"Accept-Encoding"},
		"X-Request-Id":   {"0123456789ab1f"},
	}
	buf := make([]byte, 0, 1024)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendStatusLine(buf[:0], 200)
		buf = AppendHeader(buf, h)
	}
}
