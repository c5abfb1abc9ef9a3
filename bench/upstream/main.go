// Command upstream holds the reference proxies that bench/proxy.sh measures
// beside edged, to tell the cost of Go's HTTP engine from the cost of edged's
// own code:
//
//	upstream -mode nethttp -listen 127.0.0.1:P -upstream 127.0.0.1:U [-static DIR]
//	upstream -mode raw     -listen 127.0.0.1:P -upstream 127.0.0.1:U [-static DIR]
//
// Both serve /static/NAME from DIR (when given) and proxy everything else.
// nethttp is the least a net/http reverse proxy does: http.Server, one
// http.Transport with a keep-alive pool, headers copied, body streamed;
// files through http.FileServer.
// raw is a bare HTTP/1.1 keep-alive proxy on net.Conn, one goroutine per
// client connection that also does the upstream exchange: no per-request
// goroutines, channels, contexts or header maps. It handles only what the
// benchmark sends (GET without a body, upstream answers with
// Content-Length) and is not a product: it measures what a lean engine in
// Go could cost per request on this machine. Its files are opened, stat'ed,
// read and closed per request, as edged and nginx (without open_file_cache)
// do, and sent with Content-Length, Last-Modified and ETag.
// hybrid is net/http's server with raw's upstream exchange done in the
// handler goroutine: it splits the engine's cost into server and client.
package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"
)

func main() {
	mode := flag.String("mode", "raw", "nethttp, raw or hybrid")
	listen := flag.String("listen", "127.0.0.1:18282", "address to serve on")
	upstream := flag.String("upstream", "127.0.0.1:18281", "upstream host:port")
	static := flag.String("static", "", "directory served under /static/")
	flag.Parse()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("listening on %s: %v", *listen, err)
	}
	switch *mode {
	case "nethttp":
		err = serveNetHTTP(ln, *upstream, *static)
	case "raw":
		err = serveRaw(ln, *upstream, *static)
	case "hybrid":
		err = serveHybrid(ln, *upstream)
	default:
		err = fmt.Errorf("unknown -mode %q (want nethttp, raw or hybrid)", *mode)
	}
	log.Fatal(err)
}

var hopByHop = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

func serveNetHTTP(ln net.Listener, upstream, static string) error {
	tr := &http.Transport{MaxIdleConnsPerHost: 256, IdleConnTimeout: 90 * time.Second, DisableCompression: true}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		out := r.Clone(r.Context())
		out.URL.Scheme, out.URL.Host, out.RequestURI = "http", upstream, ""
		for _, k := range hopByHop {
			out.Header.Del(k)
		}
		if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
			out.Header.Set("X-Forwarded-For", host)
		}
		res, err := tr.RoundTrip(out)
		if err != nil {
			http.Error(w, "502 Bad Gateway", http.StatusBadGateway)
			return
		}
		defer res.Body.Close()
		for _, k := range hopByHop {
			res.Header.Del(k)
		}
		for k, v := range res.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(res.StatusCode)
		io.Copy(w, res.Body)
	})
	mux := http.NewServeMux()
	mux.Handle("/", h)
	if static != "" {
		mux.Handle("/static/", http.StripPrefix("/static/", http.FileServer(http.Dir(static))))
	}
	return (&http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}).Serve(ln)
}

// upConn is a kept-alive upstream connection with its reader.
type upConn struct {
	c net.Conn
	r *bufio.Reader
}

type pool struct {
	addr string
	mu   sync.Mutex
	idle []*upConn
}

func (p *pool) get() (*upConn, error) {
	p.mu.Lock()
	if n := len(p.idle); n > 0 {
		u := p.idle[n-1]
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		return u, nil
	}
	p.mu.Unlock()
	c, err := net.Dial("tcp", p.addr)
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", p.addr, err)
	}
	return &upConn{c: c, r: bufio.NewReaderSize(c, 16<<10)}, nil
}

func (p *pool) put(u *upConn) {
	p.mu.Lock()
	if len(p.idle) < 256 {
		p.idle = append(p.idle, u)
		u = nil
	}
	p.mu.Unlock()
	if u != nil {
		u.c.Close()
	}
}

func serveRaw(ln net.Listener, upstream, static string) error {
	p := &pool{addr: upstream}
	for {
		c, err := ln.Accept()
		if err != nil {
			return fmt.Errorf("accepting: %w", err)
		}
		go rawConn(c, p, static)
	}
}

var staticPrefix = []byte("GET /static/")

// rawFile answers a GET /static/NAME request head; false if it is not one.
func rawFile(cw *bufio.Writer, head []byte, dir string, buf []byte) bool {
	if dir == "" || !bytes.HasPrefix(head, staticPrefix) {
		return false
	}
	rest := head[len(staticPrefix):]
	sp := bytes.IndexByte(rest, ' ')
	if sp < 0 || bytes.Contains(rest[:sp], []byte("..")) {
		return false
	}
	f, err := os.Open(dir + "/" + string(rest[:sp]))
	if err != nil {
		cw.WriteString("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
		return true
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || st.Size() > int64(len(buf)) {
		cw.WriteString("HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n")
		return true
	}
	n, _ := io.ReadFull(f, buf[:st.Size()])
	mt := st.ModTime()
	var h [256]byte
	b := append(h[:0], "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(n), 10)
	b = append(b, "\r\nLast-Modified: "...)
	b = mt.UTC().AppendFormat(b, http.TimeFormat)
	b = append(b, "\r\nETag: \""...)
	b = strconv.AppendInt(b, mt.Unix(), 16)
	b = append(b, '-')
	b = strconv.AppendInt(b, int64(n), 16)
	b = append(b, "\"\r\nAccept-Ranges: bytes\r\n\r\n"...)
	cw.Write(b)
	cw.Write(buf[:n])
	return true
}

var (
	hdrCL     = []byte("content-length:")
	hdrConn   = []byte("connection:")
	errFormat = errors.New("malformed message")
)

// readHead reads a message head into buf (request or response), returning
// it and the Content-Length (-1 if absent).
func readHead(r *bufio.Reader, buf []byte) ([]byte, int64, error) {
	buf = buf[:0]
	cl := int64(-1)
	for first := true; ; first = false {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return nil, 0, err
		}
		if len(line) <= 2 && !first {
			buf = append(buf, line...)
			return buf, cl, nil
		}
		if len(line) > len(hdrCL) && bytes.EqualFold(line[:len(hdrCL)], hdrCL) {
			n, err := strconv.ParseInt(string(bytes.TrimSpace(line[len(hdrCL):])), 10, 64)
			if err != nil {
				return nil, 0, errFormat
			}
			cl = n
		}
		if len(line) > len(hdrConn) && bytes.EqualFold(line[:len(hdrConn)], hdrConn) {
			continue // hop-by-hop: the proxy keeps both sides alive itself
		}
		buf = append(buf, line...)
	}
}

func rawConn(c net.Conn, p *pool, static string) {
	defer c.Close()
	cr := bufio.NewReaderSize(c, 4<<10)
	cw := bufio.NewWriterSize(c, 16<<10)
	host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
	xff := []byte("X-Forwarded-For: " + host + "\r\n\r\n")
	req := make([]byte, 0, 4<<10)
	res := make([]byte, 0, 4<<10)
	var file []byte
	if static != "" {
		file = make([]byte, 64<<10)
	}
	for {
		head, _, err := readHead(cr, req)
		if err != nil {
			return
		}
		req = head
		if rawFile(cw, head, static, file) {
			if cr.Buffered() == 0 {
				if err := cw.Flush(); err != nil {
					return
				}
			}
			continue
		}
		u, err := p.get()
		if err != nil {
			cw.WriteString("HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
			cw.Flush()
			return
		}
		// The head without its blank line, then our header and the blank line.
		out := append(head[:len(head)-2], xff...)
		if _, err := u.c.Write(out); err != nil {
			u.c.Close()
			return
		}
		rh, cl, err := readHead(u.r, res)
		if err != nil || cl < 0 {
			u.c.Close()
			return
		}
		res = rh
		cw.Write(rh)
		if _, err := io.CopyN(cw, u.r, cl); err != nil {
			u.c.Close()
			return
		}
		p.put(u)
		// Flush only when no further pipelined request is already buffered.
		if cr.Buffered() == 0 {
			if err := cw.Flush(); err != nil {
				return
			}
		}
	}
}

// serveHybrid proxies with net/http's server and the raw upstream exchange.
func serveHybrid(ln net.Listener, upstream string) error {
	p := &pool{addr: upstream}
	bufs := sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		bp := bufs.Get().(*[]byte)
		defer bufs.Put(bp)
		b := append((*bp)[:0], r.Method...)
		b = append(b, ' ')
		b = append(b, r.RequestURI...)
		b = append(b, " HTTP/1.1\r\nHost: "...)
		b = append(b, r.Host...)
		b = append(b, "\r\n"...)
		for k, vs := range r.Header {
			if k == "Connection" || k == "Keep-Alive" || k == "Te" || k == "Upgrade" {
				continue
			}
			for _, v := range vs {
				b = append(b, k...)
				b = append(b, ": "...)
				b = append(b, v...)
				b = append(b, "\r\n"...)
			}
		}
		if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
			b = append(b, "X-Forwarded-For: "...)
			b = append(b, host...)
			b = append(b, "\r\n"...)
		}
		b = append(b, "\r\n"...)
		*bp = b
		u, err := p.get()
		if err != nil {
			http.Error(w, "502 Bad Gateway", http.StatusBadGateway)
			return
		}
		if _, err := u.c.Write(b); err != nil {
			u.c.Close()
			http.Error(w, "502 Bad Gateway", http.StatusBadGateway)
			return
		}
		status, cl, err := readHeadInto(u.r, w.Header())
		if err != nil || cl < 0 {
			u.c.Close()
			http.Error(w, "502 Bad Gateway", http.StatusBadGateway)
			return
		}
		w.WriteHeader(status)
		if _, err := io.CopyN(w, u.r, cl); err != nil {
			u.c.Close()
			return
		}
		p.put(u)
	})
	return (&http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}).Serve(ln)
}

// readHeadInto reads a response head into h: status, Content-Length (-1
// if absent). Hop-by-hop headers are dropped.
func readHeadInto(r *bufio.Reader, h http.Header) (int, int64, error) {
	line, err := r.ReadSlice('\n')
	if err != nil {
		return 0, 0, err
	}
	if len(line) < 12 {
		return 0, 0, errFormat
	}
	status, err := strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, 0, errFormat
	}
	cl := int64(-1)
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return 0, 0, err
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			return status, cl, nil
		}
		k, v, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			return 0, 0, errFormat
		}
		key := http.CanonicalHeaderKey(string(k))
		val := string(bytes.TrimSpace(v))
		switch key {
		case "Content-Length":
			if cl, err = strconv.ParseInt(val, 10, 64); err != nil {
				return 0, 0, errFormat
			}
		case "Connection", "Keep-Alive", "Transfer-Encoding":
			continue
		}
		h[key] = append(h[key], val)
	}
}
