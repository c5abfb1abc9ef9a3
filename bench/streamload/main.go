// Command streamload is the load generator of bench/streams.sh: HTTP/3
// requests on quic-go (curl here has no HTTP/3), TLS connections through a
// TCP proxy, and the TCP echo server behind that proxy.
//
//	streamload h3 -url https://127.0.0.1:8443/ -conns 4 -c 64 -d 10s
//	streamload tls -addr 127.0.0.1:9993 -c 32 -d 10s [-keep]
//	streamload echo -addr 127.0.0.1:9000
//	streamload get -url https://NAME:443/ -addr 127.0.0.1:443 -ca root.crt
//
// get sends one HTTP/3 request, verifying the certificate against -ca for
// the URL's host, connecting to -addr, and prints "PROTO STATUS BODY"
// (the e2e journey's HTTP/3 check).
//
// It prints one line: "OPS_PER_S P50_US P99_US ERRORS OPS". Every run is
// bounded by -d; the load goes only to the address given (loopback).
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: streamload h3|tls|echo [flags]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	url := fs.String("url", "", "h3: URL")
	addr := fs.String("addr", "", "tls: proxy address; echo: listen address")
	conns := fs.Int("conns", 4, "h3: QUIC connections")
	c := fs.Int("c", 32, "concurrent requests or connections")
	d := fs.Duration("d", 10*time.Second, "duration")
	keep := fs.Bool("keep", false, "tls: keep each connection and echo 16 KiB messages on it (throughput) instead of one 1 KiB exchange per connection (handshakes)")
	name := fs.String("name", "bench.test", "TLS server name")
	ca := fs.String("ca", "", "get: PEM roots to verify the server against")
	fs.Parse(os.Args[2:])
	switch os.Args[1] {
	case "get":
		if err := get(*url, *addr, *ca); err != nil {
			fmt.Fprintln(os.Stderr, "streamload get:", err)
			os.Exit(1)
		}
	case "echo":
		echo(*addr)
	case "h3":
		report(runH3(*url, *name, *conns, *c, *d))
	case "tls":
		report(runTLS(*addr, *name, *c, *d, *keep))
	default:
		fmt.Fprintln(os.Stderr, "unknown mode", os.Args[1])
		os.Exit(2)
	}
}

type result struct {
	lat    []time.Duration
	errors int64
	bytes  int64
	dur    time.Duration
}

func report(r result) {
	slices.Sort(r.lat)
	p := func(q float64) int64 {
		if len(r.lat) == 0 {
			return 0
		}
		return r.lat[int(q*float64(len(r.lat)-1))].Microseconds()
	}
	ops := float64(len(r.lat)) / r.dur.Seconds()
	fmt.Printf("%.0f %d %d %d %d %.1f\n", ops, p(0.5), p(0.99), r.errors, len(r.lat), float64(r.bytes)/r.dur.Seconds()/(1<<20))
}

// run calls op from c goroutines until d has passed.
func run(c int, d time.Duration, op func(w int) (int64, error)) result {
	var mu sync.Mutex
	var all result
	var errs atomic.Int64
	start := time.Now()
	end := start.Add(d)
	var wg sync.WaitGroup
	for w := range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var lat []time.Duration
			var bytes int64
			for time.Now().Before(end) {
				t := time.Now()
				n, err := op(w)
				if err != nil {
					errs.Add(1)
					time.Sleep(10 * time.Millisecond)
					continue
				}
				bytes += n
				lat = append(lat, time.Since(t))
			}
			mu.Lock()
			all.lat = append(all.lat, lat...)
			all.bytes += bytes
			mu.Unlock()
		}()
	}
	wg.Wait()
	all.dur = time.Since(start)
	all.errors = errs.Load()
	return all
}

func runH3(url, name string, conns, c int, d time.Duration) result {
	clients := make([]*http.Client, conns)
	for i := range clients {
		tr := &http3.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true, ServerName: name}, QUICConfig: &quic.Config{}}
		defer tr.Close()
		clients[i] = &http.Client{Transport: tr, Timeout: 10 * time.Second}
	}
	return run(c, d, func(w int) (int64, error) {
		req, _ := http.NewRequest("GET", url, nil)
		req.Host = name
		res, err := clients[w%conns].Do(req)
		if err != nil {
			return 0, err
		}
		n, err := io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if err == nil && res.StatusCode != 200 {
			err = fmt.Errorf("status %d", res.StatusCode)
		}
		return n, err
	})
}

func runTLS(addr, name string, c int, d time.Duration, keep bool) result {
	conf := &tls.Config{InsecureSkipVerify: true, ServerName: name}
	size := 1 << 10
	if keep {
		size = 16 << 10
	}
	held := make([]*tls.Conn, c)
	bufs := make([][2][]byte, c)
	for i := range bufs {
		bufs[i] = [2][]byte{make([]byte, size), make([]byte, size)}
	}
	dial := func() (*tls.Conn, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		nc, err := (&tls.Dialer{Config: conf}).DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		return nc.(*tls.Conn), nil
	}
	r := run(c, d, func(w int) (int64, error) {
		tc := held[w]
		if tc == nil {
			var err error
			if tc, err = dial(); err != nil {
				return 0, err
			}
		}
		tc.SetDeadline(time.Now().Add(5 * time.Second))
		out, in := bufs[w][0], bufs[w][1]
		if _, err := tc.Write(out); err != nil {
			tc.Close()
			held[w] = nil
			return 0, err
		}
		if _, err := io.ReadFull(tc, in); err != nil {
			tc.Close()
			held[w] = nil
			return 0, err
		}
		if keep {
			held[w] = tc
		} else {
			tc.Close()
		}
		return int64(2 * size), nil
	})
	for _, tc := range held {
		if tc != nil {
			tc.Close()
		}
	}
	return r
}

func get(url, addr, ca string) error {
	pem, err := os.ReadFile(ca)
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return fmt.Errorf("no certificate in %s", ca)
	}
	tr := &http3.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots},
		Dial: func(ctx context.Context, _ string, tc *tls.Config, qc *quic.Config) (*quic.Conn, error) {
			return quic.DialAddrEarly(ctx, addr, tc, qc)
		},
	}
	defer tr.Close()
	c := &http.Client{Transport: tr, Timeout: 20 * time.Second}
	res, err := c.Get(url)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return err
	}
	fmt.Printf("%s %d %s\n", res.Proto, res.StatusCode, b)
	return nil
}

// echo serves TCP echo until killed.
func echo(addr string) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			continue
		}
		go func() {
			defer c.Close()
			io.Copy(c, c)
		}()
	}
}
