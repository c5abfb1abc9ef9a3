// Command app is the demo application edgeapp's demo appliance runs under
// appd: an HTTP server that accepts on the socket it inherits (fd 3, the
// sd_listen_fds protocol), tells its supervisor when it is ready and pings
// the watchdog. Any language's worker does the same; this one is in Go only
// to keep the demo self-contained.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/coreos/go-systemd/v22/daemon"
)

func main() {
	lns, err := activation.Listeners()
	if err != nil || len(lns) == 0 {
		// Run by hand: listen where told.
		addr := os.Getenv("DEMO_ADDR")
		if addr == "" {
			addr = "127.0.0.1:8000"
		}
		ln, lerr := net.Listen("tcp", addr)
		if lerr != nil {
			log.Fatalf("demo app: no inherited socket (%v) and cannot listen on %s: %v", err, addr, lerr)
		}
		lns = []net.Listener{ln}
	}
	worker, gen := os.Getenv("APPD_WORKER"), os.Getenv("APPD_GENERATION")
	started := time.Now()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{
			"app": "edgeapp demo", "worker": worker, "generation": gen, "pid": os.Getpid(),
			"uptime":        time.Since(started).Round(time.Millisecond).String(),
			"forwarded_for": r.Header.Get("X-Forwarded-For"), "request_id": r.Header.Get("X-Request-ID"),
		})
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	// /events streams server-sent events, to show that edged flushes.
	mux.HandleFunc("GET /events", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		if n <= 0 || n > 100 {
			n = 5
		}
		for i := 1; i <= n; i++ {
			fmt.Fprintf(w, "data: tick %d from worker %s\n\n", i, worker)
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	})
	// /alloc?mb=N allocates and keeps N MiB, to show memory limits at work.
	var hoard [][]byte
	mux.HandleFunc("GET /alloc", func(w http.ResponseWriter, r *http.Request) {
		mb, _ := strconv.Atoi(r.URL.Query().Get("mb"))
		for i := 0; i < mb; i++ {
			b := make([]byte, 1<<20)
			for j := range b {
				b[j] = byte(j)
			}
			hoard = append(hoard, b)
		}
		fmt.Fprintf(w, "holding %d MiB\n", len(hoard))
	})
	// conns and draining implement a stop that loses no request, see below.
	var conns sync.Map // net.Conn -> connInfo
	var draining atomic.Bool
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if draining.Load() {
			w.Header().Set("Connection", "close")
		}
		mux.ServeHTTP(w, r)
	})
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second,
		ConnState: func(c net.Conn, st http.ConnState) {
			if st == http.StateClosed || st == http.StateHijacked {
				conns.Delete(c)
				return
			}
			conns.Store(c, connInfo{st, time.Now()})
		}}
	for _, ln := range lns {
		go srv.Serve(ln)
	}
	daemon.SdNotify(false, "READY=1\nSTATUS=serving")
	// Ping the supervisor's watchdog if it asked for one.
	if iv, err := daemon.SdWatchdogEnabled(false); err == nil && iv > 0 {
		go func() {
			for range time.Tick(iv / 3) {
				daemon.SdNotify(false, "WATCHDOG=1")
			}
		}()
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	daemon.SdNotify(false, "STOPPING=1")
	// The listening socket is shared with the other workers: stop
	// accepting, answer what still arrives on open connections with
	// "Connection: close", and close connections only once they have been
	// silent a while. http.Server.Shutdown alone would close idle
	// kept-alive connections at once and drop a request read after it
	// began, and the proxy in front would answer that request 502.
	draining.Store(true)
	for _, ln := range lns {
		ln.Close()
	}
	for deadline := time.Now().Add(25 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		busy := 0
		conns.Range(func(c, v any) bool {
			ci := v.(connInfo)
			if ci.state == http.StateActive || time.Since(ci.since) < 500*time.Millisecond {
				busy++
			} else {
				c.(net.Conn).Close()
			}
			return true
		})
		if busy == 0 {
			break
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	srv.Shutdown(ctx)
}

type connInfo struct {
	state http.ConnState
	since time.Time
}
