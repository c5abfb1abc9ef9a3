// Command slowclients keeps slow clients busy against a server for
// bench/shield.sh: uploaders that send a body at a fixed rate and readers
// that read a large response at a fixed rate, each on its own connection,
// starting over when one finishes, until the duration is up or the process
// gets SIGTERM. It prints one summary line (bytes moved, requests done,
// failures) at the end.
//
//	slowclients -addr 127.0.0.1:8080 -uploaders 8 -upload-size 65536 -upload-rate 1024 \
//	            -readers 4 -read-path /big -read-rate 20480 -duration 60s
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "server host:port")
	host := flag.String("host", "localhost", "Host header")
	uploaders := flag.Int("uploaders", 8, "slow uploaders")
	uploadPath := flag.String("upload-path", "/upload", "path the uploads POST to")
	uploadSize := flag.Int("upload-size", 64<<10, "body bytes per upload")
	uploadRate := flag.Int("upload-rate", 1<<10, "upload bytes per second, per uploader")
	readers := flag.Int("readers", 4, "slow readers")
	readPath := flag.String("read-path", "/big", "path the readers GET")
	readRate := flag.Int("read-rate", 20<<10, "bytes per second read, per reader")
	duration := flag.Duration("duration", time.Minute, "how long to keep going")
	flag.Parse()

	ctx, cancel := context.WithTimeout(context.Background(), *duration)
	defer cancel()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() { <-sig; cancel() }()

	var st stats
	var wg sync.WaitGroup
	for i := 0; i < *uploaders; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				upload(ctx, &st, *addr, *host, *uploadPath, *uploadSize, *uploadRate)
			}
		}()
	}
	for i := 0; i < *readers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				read(ctx, &st, *addr, *host, *readPath, *readRate)
			}
		}()
	}
	wg.Wait()
	fmt.Printf("uploaded %d bytes (%d uploads done, %d failed), read %d bytes (%d responses done, %d failed)\n",
		st.sent.Load(), st.uploads.Load(), st.uploadFails.Load(), st.read.Load(), st.reads.Load(), st.readFails.Load())
}

type stats struct {
	sent, read                             atomic.Int64
	uploads, uploadFails, reads, readFails atomic.Int64
}

// dial connects and closes the connection when ctx ends, so a blocked
// read or write returns.
func dial(ctx context.Context, addr string) (net.Conn, func(), error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	stop := context.AfterFunc(ctx, func() { c.Close() })
	return c, func() { stop(); c.Close() }, nil
}

// upload sends one POST whose body trickles at rate bytes per second, in
// pieces of a tenth of a second, and reads the answer.
func upload(ctx context.Context, st *stats, addr, host, path string, size, rate int) {
	c, done, err := dial(ctx, addr)
	if err != nil {
		pause(ctx)
		st.uploadFails.Add(1)
		return
	}
	defer done()
	if _, err := fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\nContent-Type: application/octet-stream\r\n\r\n", path, host, size); err != nil {
		st.uploadFails.Add(1)
		return
	}
	piece := make([]byte, max(1, rate/10))
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for left := size; left > 0; {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n := min(left, len(piece))
		if _, err := c.Write(piece[:n]); err != nil {
			st.uploadFails.Add(1)
			return
		}
		st.sent.Add(int64(n))
		left -= n
	}
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		if ctx.Err() == nil {
			st.uploadFails.Add(1)
		}
		return
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if res.StatusCode/100 != 2 {
		st.uploadFails.Add(1)
		return
	}
	st.uploads.Add(1)
}

// read GETs path and reads the response at rate bytes per second.
func read(ctx context.Context, st *stats, addr, host, path string, rate int) {
	c, done, err := dial(ctx, addr)
	if err != nil {
		pause(ctx)
		st.readFails.Add(1)
		return
	}
	defer done()
	// A small receive buffer, so the reader is slow at the TCP level too
	// rather than having the kernel take megabytes on its behalf.
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetReadBuffer(16 << 10)
	}
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", path, host); err != nil {
		st.readFails.Add(1)
		return
	}
	res, err := http.ReadResponse(bufio.NewReaderSize(c, 4096), nil)
	if err != nil {
		if ctx.Err() == nil {
			st.readFails.Add(1)
		}
		return
	}
	defer res.Body.Close()
	buf := make([]byte, max(1, rate/10))
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	var total int64
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, err := io.ReadFull(res.Body, buf)
		st.read.Add(int64(n))
		total += int64(n)
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			if res.ContentLength >= 0 && total != res.ContentLength {
				st.readFails.Add(1) // cut short
				return
			}
			st.reads.Add(1)
			return
		}
		if err != nil {
			if ctx.Err() == nil {
				st.readFails.Add(1)
			}
			return
		}
	}
}

func pause(ctx context.Context) {
	select {
	case <-ctx.Done():
	case <-time.After(100 * time.Millisecond):
	}
}
