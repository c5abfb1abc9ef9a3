// Command load is the end-to-end test's load generator: a few clients send
// GET requests in a loop, half over kept-alive connections and half over a
// new connection each (or all of one kind: -keepalive on|off), until a
// duration or a request count runs out, or a stop file appears. Every request must be answered 200 with a body;
// anything else (refused or reset connection, 5xx, timeout) is a failure.
// It prints a one-line summary and exits 1 on any failure or if no request
// succeeded. With -stop, the duration and count are only caps: running out
// of them before the stop file appears is a failure too (the load ended
// before what it was meant to cover). With -started, that file is created
// once the first request has succeeded.
//
//	load -url http://127.0.0.1/ -host demo.test -c 4 -d 30s -n 100000 [-stop FILE] [-started FILE]
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	target := flag.String("url", "http://127.0.0.1/", "URL to GET")
	host := flag.String("host", "", "Host header (default: the URL's)")
	unixSock := flag.String("unix", "", "connect to this unix socket instead of the URL's host")
	conc := flag.Int("c", 4, "concurrent clients")
	dur := flag.Duration("d", 30*time.Second, "how long to run at most")
	maxReq := flag.Int64("n", 100000, "requests to send at most")
	stop := flag.String("stop", "", "stop as soon as this file exists (then -d and -n are only caps)")
	started := flag.String("started", "", "create this file once the first request has succeeded")
	timeout := flag.Duration("timeout", 30*time.Second, "per-request timeout")
	contains := flag.String("contains", "", "the body must contain this string")
	keepAlive := flag.String("keepalive", "mixed", "mixed: half the clients keep connections alive; on; off")
	flag.Parse()
	switch *keepAlive {
	case "mixed", "on", "off":
	default:
		fmt.Fprintln(os.Stderr, "load: -keepalive wants mixed, on or off")
		os.Exit(2)
	}

	ctx, cancel := context.WithTimeout(context.Background(), *dur)
	defer cancel()
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		var d net.Dialer
		if *unixSock != "" {
			return d.DialContext(ctx, "unix", *unixSock)
		}
		return d.DialContext(ctx, network, addr)
	}
	newClient := func(keepAlive bool) *http.Client {
		return &http.Client{
			Timeout: *timeout,
			Transport: &http.Transport{
				DialContext:       dial,
				DisableKeepAlives: !keepAlive,
				MaxIdleConns:      1,
				// The e2e test's HTTPS sites use edged's internal CA.
				TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
			},
		}
	}

	var sent, ok, failed atomic.Int64
	var startedOnce sync.Once
	var stopped atomic.Bool
	var mu sync.Mutex
	samples := map[string]int{}
	var when []string
	var latencies []time.Duration
	var wg sync.WaitGroup
	for i := 0; i < *conc; i++ {
		wg.Add(1)
		go func(keepAlive bool) {
			defer wg.Done()
			c := newClient(keepAlive)
			var mine []time.Duration
			defer func() {
				mu.Lock()
				latencies = append(latencies, mine...)
				mu.Unlock()
			}()
			for ctx.Err() == nil {
				if sent.Add(1) > *maxReq {
					return
				}
				if *stop != "" {
					if _, err := os.Stat(*stop); err == nil {
						stopped.Store(true)
						return
					}
				}
				t0 := time.Now()
				err := get(c, *target, *host, *contains)
				mine = append(mine, time.Since(t0))
				if err == nil {
					if ok.Add(1) == 1 && *started != "" {
						startedOnce.Do(func() {
							if err := os.WriteFile(*started, nil, 0o644); err != nil {
								fmt.Fprintln(os.Stderr, "load:", err)
							}
						})
					}
					continue
				}
				failed.Add(1)
				mu.Lock()
				samples[err.Error()]++
				if len(when) < 10 {
					// Wall-clock times, to find the moment in the journal.
					when = append(when, fmt.Sprintf("%s (keep-alive %v): %v", t0.Format("15:04:05.000000"), keepAlive, err))
				}
				mu.Unlock()
			}
		}(*keepAlive == "on" || *keepAlive == "mixed" && i%2 == 0)
	}
	wg.Wait()

	sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
	pct := func(p float64) time.Duration {
		if len(latencies) == 0 {
			return 0
		}
		return latencies[int(p*float64(len(latencies)-1))].Round(time.Millisecond)
	}
	fmt.Printf("load: %d ok, %d failed (%d clients, keep-alive %s); latency p50 %v p99 %v max %v\n",
		ok.Load(), failed.Load(), *conc, *keepAlive, pct(0.5), pct(0.99), pct(1))
	for msg, n := range samples {
		fmt.Printf("load: failure x%d: %s\n", n, msg)
	}
	for _, w := range when {
		fmt.Printf("load: failed request sent at %s\n", w)
	}
	early := false
	if *stop != "" && !stopped.Load() {
		_, err := os.Stat(*stop)
		early = err != nil
	}
	if early {
		fmt.Printf("load: the cap (-d %v, -n %d) ran out before %s appeared: the load did not cover all it was meant to\n", *dur, *maxReq, *stop)
	}
	if failed.Load() > 0 || ok.Load() == 0 || early {
		os.Exit(1)
	}
}

func get(c *http.Client, target, host, contains string) error {
	req, err := http.NewRequest(http.MethodGet, target, nil)
	if err != nil {
		return err
	}
	if host != "" {
		req.Host = host
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("reading the body: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d: %.80s", resp.StatusCode, strings.TrimSpace(string(body)))
	}
	if len(body) == 0 {
		return errors.New("empty body")
	}
	if contains != "" && !strings.Contains(string(body), contains) {
		return fmt.Errorf("body lacks %q: %.80s", contains, body)
	}
	return nil
}
