package h2

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// FuzzConn sends the server arbitrary frames after a valid preface: it
// must never panic, and the connection must end once the client goes.
func FuzzConn(f *testing.F) {
	var b bytes.Buffer
	fr := http2.NewFramer(&b, nil)
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	block := func(fields ...string) []byte {
		hb.Reset()
		for i := 0; i+1 < len(fields); i += 2 {
			enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
		}
		return append([]byte(nil), hb.Bytes()...)
	}
	get := block(":method", "GET", ":scheme", "https", ":authority", "x", ":path", "/")
	post := block(":method", "POST", ":scheme", "https", ":authority", "x", ":path", "/up", "content-length", "5", "trailer", "x-t")
	seed := func(write func()) {
		b.Reset()
		write()
		f.Add(append([]byte(nil), b.Bytes()...))
	}
	seed(func() {
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: get, EndStream: true, EndHeaders: true})
	})
	seed(func() {
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: post, EndHeaders: true})
		fr.WriteData(1, false, []byte("hello"))
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block("x-t", "v"), EndStream: true, EndHeaders: true})
	})
	seed(func() {
		fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1})
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: get, EndStream: true, EndHeaders: true})
		fr.WriteWindowUpdate(3, 100)
		fr.WriteWindowUpdate(0, 100)
		fr.WritePing(false, [8]byte{1})
		fr.WriteRSTStream(3, http2.ErrCodeCancel)
	})
	seed(func() {
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 5, BlockFragment: get[:3], EndHeaders: false})
		fr.WriteContinuation(5, true, get[3:])
		fr.WritePriority(7, http2.PriorityParam{StreamDep: 5})
		fr.WriteGoAway(0, http2.ErrCodeNo, nil)
	})
	f.Fuzz(func(t *testing.T, data []byte) {
		s := New(Options{
			Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				body, _ := io.ReadAll(r.Body)
				w.Header().Set("Trailer", "X-Sum")
				w.Write(body)
				w.(http.Flusher).Flush()
				w.Write(bytes.Repeat([]byte("x"), 70000)) // more than the default window
				w.Header().Set("X-Sum", "1")
			}),
			ClientBodyTimeout: 50 * time.Millisecond,
			SendTimeout:       50 * time.Millisecond,
			IdleTimeout:       time.Second,
		})
		cli, srv := net.Pipe()
		done := make(chan struct{})
		go func() {
			s.ServeConn(srv, nil)
			srv.Close()
			close(done)
		}()
		go io.Copy(io.Discard, cli)
		cli.SetWriteDeadline(time.Now().Add(2 * time.Second))
		io.WriteString(cli, http2.ClientPreface)
		cfr := http2.NewFramer(cli, nil)
		cfr.WriteSettings()
		cli.Write(data)
		cli.Close()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("the connection did not end after the client closed it")
		}
	})
}
