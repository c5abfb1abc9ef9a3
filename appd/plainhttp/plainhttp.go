// Package plainhttp is the little HTTP/1.1 appd speaks: a server that
// answers one GET or HEAD per connection (the control socket's /status and
// /metrics) and a client that makes one GET per connection (appd status,
// readiness probes).
//
// appd does not link net/http: it would bring its HTTP/2 code, crypto/tls
// and x509 along (half of appd's binary, about 2 MiB of a master whose
// whole memory is compared with gunicorn's arbiter), for four requests a
// minute. Header fields are read with net/textproto, as net/http does.
//
// The server: the request head (at most MaxHead bytes, within HeadTimeout)
// is a request line with method, target and HTTP/1.0 or HTTP/1.1, and
// header fields; methods other than GET and HEAD get 405; a request with
// a body (Content-Length other than 0, or Transfer-Encoding) gets 400, as
// does anything malformed. Every response has a Content-Length and
// "Connection: close", and the connection is closed after it.
//
// The client's Get sends HTTP/1.0 requests, so that any server (an older
// appd on net/http included) answers without chunking and closes the
// connection at the end of the body; Probe, which reads no body, sends
// HTTP/1.1 with "Connection: close", as net/http's client did.
package plainhttp

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"time"
)

const (
	MaxHead      = 16 << 10         // a request head larger than this gets 431
	HeadTimeout  = 5 * time.Second  // for the whole request head
	WriteTimeout = 10 * time.Second // for the whole response
)

// Response is what a Handler answers.
type Response struct {
	Status      int    // 0 means 200
	ContentType string // default "text/plain; charset=utf-8"
	Body        []byte
}

// Handler answers a GET (or HEAD: the body is not sent) of path, the
// request target without its query. ctx ends when the server is closed.
type Handler func(ctx context.Context, path string) Response

// Error is a plain-text response with the given status.
func Error(status int, msg string) Response {
	return Response{Status: status, Body: []byte(msg + "\n")}
}

// Server serves a Handler on a listener.
type Server struct {
	h      Handler
	ln     net.Listener
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

// Serve starts answering the connections accepted on ln, each in its own
// goroutine, until Close.
func Serve(ln net.Listener, h Handler) *Server {
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{h: h, ln: ln, ctx: ctx, cancel: cancel, conns: map[net.Conn]struct{}{}}
	s.wg.Add(1)
	go s.accept()
	return s
}

func (s *Server) accept() {
	defer s.wg.Done()
	var delay time.Duration
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if s.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			// EMFILE and the like: wait a little, as net/http does.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			select {
			case <-time.After(delay):
			case <-s.ctx.Done():
				return
			}
			continue
		}
		delay = 0
		s.mu.Lock()
		if s.ctx.Err() != nil {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			s.serve(c)
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
			c.Close()
		}()
	}
}

// Close stops accepting, closes the connections in progress and waits
// for their goroutines.
func (s *Server) Close() error {
	s.mu.Lock()
	s.cancel()
	err := s.ln.Close()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

// serve answers the one request of c.
func (s *Server) serve(c net.Conn) {
	c.SetReadDeadline(time.Now().Add(HeadTimeout))
	method, path, resp := readRequest(c)
	if resp.Status == 0 {
		resp = s.h(s.ctx, path)
	}
	c.SetWriteDeadline(time.Now().Add(WriteTimeout))
	writeResponse(c, method == "HEAD", resp)
}

// readRequest reads the request head from c: the method and path of a GET
// or HEAD, or a response with the error.
func readRequest(c net.Conn) (method, path string, resp Response) {
	lr := &io.LimitedReader{R: c, N: MaxHead}
	tp := textproto.NewReader(bufio.NewReaderSize(lr, 4096))
	line, err := tp.ReadLine()
	if err != nil {
		return "", "", headError(lr, err, "reading the request line")
	}
	method, rest, ok1 := strings.Cut(line, " ")
	target, proto, ok2 := strings.Cut(rest, " ")
	if !ok1 || !ok2 || method == "" || !strings.HasPrefix(target, "/") || strings.ContainsAny(target, " \t") {
		return "", "", Error(400, "malformed request line")
	}
	if proto != "HTTP/1.1" && proto != "HTTP/1.0" {
		return "", "", Error(505, "HTTP/1.0 or HTTP/1.1 only")
	}
	hdr, err := tp.ReadMIMEHeader()
	if err != nil {
		return "", "", headError(lr, err, "reading the header fields")
	}
	if method != "GET" && method != "HEAD" {
		return "", "", Error(405, "GET or HEAD only")
	}
	if cl := hdr.Values("Content-Length"); len(cl) > 0 && (len(cl) > 1 || cl[0] != "0") || len(hdr.Values("Transfer-Encoding")) > 0 {
		return "", "", Error(400, "no request body is accepted here")
	}
	path, _, _ = strings.Cut(target, "?")
	return method, path, Response{}
}

func headError(lr *io.LimitedReader, err error, doing string) Response {
	if lr.N <= 0 {
		return Error(431, "request head larger than "+strconv.Itoa(MaxHead)+" bytes")
	}
	return Error(400, doing+": "+err.Error())
}

var statusText = map[int]string{
	200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
	431: "Request Header Fields Too Large", 500: "Internal Server Error",
	503: "Service Unavailable", 505: "HTTP Version Not Supported",
}

// writeResponse writes resp with its length, in one write.
func writeResponse(w io.Writer, head bool, resp Response) error {
	status := resp.Status
	if status == 0 {
		status = 200
	}
	ctype := resp.ContentType
	if ctype == "" {
		ctype = "text/plain; charset=utf-8"
	}
	var b strings.Builder
	b.Grow(160 + len(resp.Body))
	fmt.Fprintf(&b, "HTTP/1.1 %d %s\r\n", status, statusText[status])
	fmt.Fprintf(&b, "Content-Type: %s\r\nContent-Length: %d\r\nX-Content-Type-Options: nosniff\r\n", ctype, len(resp.Body))
	if status == 405 {
		b.WriteString("Allow: GET, HEAD\r\n")
	}
	b.WriteString("Connection: close\r\n\r\n")
	if !head {
		b.Write(resp.Body)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// Get makes one HTTP/1.0 GET of target (a path, with its query if any)
// with the given Host field over a new connection to network/addr, and
// returns the status code and up to limit bytes of the body. ctx bounds
// the whole exchange.
func Get(ctx context.Context, network, addr, host, target string, limit int64) (int, []byte, error) {
	return get(ctx, network, addr, "GET "+target+" HTTP/1.0\r\nHost: "+host+"\r\nUser-Agent: appd\r\n\r\n", limit)
}

// Probe makes one HTTP/1.1 GET of target with the given Host field and
// "Connection: close" over a new connection to network/addr, and returns
// the status code; the body is not read.
func Probe(ctx context.Context, network, addr, host, target string) (int, error) {
	code, _, err := get(ctx, network, addr, "GET "+target+" HTTP/1.1\r\nHost: "+host+"\r\nUser-Agent: appd\r\nConnection: close\r\n\r\n", 0)
	return code, err
}

func get(ctx context.Context, network, addr, req string, limit int64) (int, []byte, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return 0, nil, err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := io.WriteString(c, req); err != nil {
		return 0, nil, fmt.Errorf("sending the request: %w", err)
	}
	br := bufio.NewReaderSize(c, 4096)
	tp := textproto.NewReader(br)
	line, err := tp.ReadLine()
	if err != nil {
		return 0, nil, fmt.Errorf("reading the status line: %w", err)
	}
	proto, rest, _ := strings.Cut(line, " ")
	codeText, _, _ := strings.Cut(rest, " ")
	code, err := strconv.Atoi(codeText)
	if !strings.HasPrefix(proto, "HTTP/1.") || err != nil || len(codeText) != 3 {
		return 0, nil, fmt.Errorf("malformed status line %q", line)
	}
	hdr, err := tp.ReadMIMEHeader()
	if err != nil {
		return code, nil, fmt.Errorf("reading the header fields: %w", err)
	}
	if limit <= 0 {
		return code, nil, nil
	}
	var body io.Reader = br
	want := int64(-1)
	if cl := hdr.Get("Content-Length"); cl != "" {
		n, err := strconv.ParseInt(cl, 10, 64)
		if err != nil || n < 0 {
			return code, nil, fmt.Errorf("malformed Content-Length %q", cl)
		}
		body, want = io.LimitReader(br, n), min(n, limit)
	}
	b, err := io.ReadAll(io.LimitReader(body, limit))
	if err != nil {
		return code, b, fmt.Errorf("reading the body: %w", err)
	}
	if want >= 0 && int64(len(b)) < want {
		return code, b, fmt.Errorf("reading the body: %w (%d of %d bytes)", io.ErrUnexpectedEOF, len(b), want)
	}
	return code, b, nil
}
