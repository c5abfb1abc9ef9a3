package httpwire

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// decodeAll feeds body to a decoder in pieces of step bytes.
func decodeAll(body []byte, step int) ([]byte, []Field, int, error) {
	var d ChunkedDecoder
	var out []byte
	pos := 0
	for pos < len(body) {
		end := min(pos+step, len(body))
		piece := body[pos:end]
		for len(piece) > 0 {
			n, data, err := d.Decode(piece, 1<<20)
			out = append(out, data...)
			pos += n
			piece = piece[n:]
			if err == io.EOF {
				return out, d.Trailers(), pos, nil
			}
			if err != nil {
				return out, nil, pos, err
			}
		}
	}
	return out, nil, pos, io.ErrUnexpectedEOF
}

func TestChunkedDecode(t *testing.T) {
	body := "5\r\nhello\r\n6;name=val;q=\"a \\\" b\" ; x \r\n world\r\n1a \r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nExpires: never\r\nX-Sum: 1\r\n\r\nNEXT"
	for step := 1; step <= len(body); step++ {
		out, trailers, n, err := decodeAll([]byte(body), step)
		if err != nil {
			t.Fatalf("step %d: %v", step, err)
		}
		if string(out) != "hello worldabcdefghijklmnopqrstuvwxyz" {
			t.Fatalf("step %d: body %q", step, out)
		}
		if n != len(body)-4 {
			t.Fatalf("step %d: consumed %d, want %d (the next message must stay)", step, n, len(body)-4)
		}
		if len(trailers) != 2 || string(trailers[0].Name) != "Expires" || string(trailers[1].Value) != "1" {
			t.Fatalf("step %d: trailers %q", step, trailers)
		}
	}
}

func TestChunkedRefused(t *testing.T) {
	for _, tc := range ChunkedCorpus {
		t.Run(tc.Name, func(t *testing.T) {
			_, _, _, err := decodeAll([]byte(tc.Body), len(tc.Body))
			if !errors.Is(err, tc.Err) {
				t.Errorf("%q: %v, want %v", tc.Body, err, tc.Err)
			}
		})
	}
}

func TestChunkedLimits(t *testing.T) {
	long := "5;" + strings.Repeat("a", MaxChunkLine) + "\r\nhello\r\n0\r\n\r\n"
	if _, _, _, err := decodeAll([]byte(long), 100); err != ErrChunkLine {
		t.Errorf("long chunk line: %v", err)
	}
	zeros := strings.Repeat("0", 100) + "5\r\nhello\r\n0\r\n\r\n"
	if out, _, _, err := decodeAll([]byte(zeros), 7); err != nil || string(out) != "hello" {
		t.Errorf("leading zeros: %q %v", out, err)
	}
	big := "0\r\n" + strings.Repeat("X-A: b\r\n", MaxTrailerBytes/8+1) + "\r\n"
	if _, _, _, err := decodeAll([]byte(big), 1000); err != ErrTrailerTooLarge {
		t.Errorf("huge trailer: %v", err)
	}
}

func TestChunkedReader(t *testing.T) {
	var enc bytes.Buffer
	cw := &ChunkedWriter{W: &enc}
	payload := bytes.Repeat([]byte("0123456789abcdef"), 10000)
	for rest := payload; len(rest) > 0; {
		n := min(len(rest), 7000)
		cw.Write(rest[:n])
		rest = rest[n:]
	}
	cw.Close([]Field{{Name: []byte("X-Sum"), Value: []byte("ok")}})
	enc.WriteString("GET /next HTTP/1.1\r\n")
	for _, wrap := range []func(io.Reader) io.Reader{
		func(r io.Reader) io.Reader { return r },
		iotest.OneByteReader,
		iotest.HalfReader,
	} {
		br := bufio.NewReaderSize(wrap(bytes.NewReader(enc.Bytes())), 4096)
		cr := NewChunkedReader(br)
		got, err := io.ReadAll(cr)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, payload) {
			t.Fatalf("body differs: %d bytes, want %d", len(got), len(payload))
		}
		if tr := cr.D.Trailers(); len(tr) != 1 || string(tr[0].Value) != "ok" {
			t.Fatalf("trailers %q", tr)
		}
		rest, _ := io.ReadAll(br)
		if string(rest) != "GET /next HTTP/1.1\r\n" {
			t.Fatalf("after the body: %q", rest)
		}
	}
	// A connection that ends inside the body.
	cr := NewChunkedReader(bufio.NewReader(strings.NewReader("5\r\nhel")))
	if _, err := io.ReadAll(cr); err != io.ErrUnexpectedEOF {
		t.Errorf("truncated body: %v", err)
	}
}

func TestChunkedDecodeAllocs(t *testing.T) {
	body := []byte("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
	var d ChunkedDecoder
	a := testing.AllocsPerRun(100, func() {
		d.Reset()
		for p := body; len(p) > 0; {
			n, _, err := d.Decode(p, 1<<20)
			p = p[n:]
			if err != nil {
				break
			}
		}
	})
	if a != 0 {
		t.Errorf("%v allocations per body", a)
	}
}

func TestAppendChunkHeader(t *testing.T) {
	for n, want := range map[int]string{1: "1\r\n", 15: "f\r\n", 16: "10\r\n", 4096: "1000\r\n"} {
		if got := string(AppendChunkHeader(nil, n)); got != want {
			t.Errorf("%d: %q, want %q", n, got, want)
		}
	}
}
