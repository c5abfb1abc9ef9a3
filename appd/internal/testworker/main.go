// Command testworker is the worker appd's tests run: an HTTP server on the
// socket inherited by the sd_listen_fds protocol that reports READY=1,
// STATUS= and WATCHDOG=1 to $NOTIFY_SOCKET, and misbehaves on request.
//
// Environment (set through appd's [app] environment):
//
//	TW_READY=never           never send READY=1
//	TW_READY_DELAY=500ms     wait before READY=1
//	TW_EXIT_AT_START=3       exit with this status at once (after STATUS=TW_STATUS, if set)
//	TW_CRASH_AFTER=2s        exit 3 this long after start
//	TW_HANG_SLOTS=0,2        these slots stop sending WATCHDOG=1 after the first ping
//	TW_IGNORE_TERM=1         ignore SIGTERM
//	TW_IGNORE_ABRT=1         ignore SIGABRT (the watchdog's first signal)
//	TW_CHILD=1               start a grandchild (sleep) that must die with the worker
//	TW_STATUS=text           send STATUS=text after READY=1 (or before TW_EXIT_AT_START's exit)
//	TW_LEAK_MB=N             allocate and touch N MiB at start
//	TW_SPIN=1                burn CPU in a loop
//	TW_FORK_BOMB=N           start N sleeping children (pids.max test)
//
// Requests: GET / answers "pid=P slot=S gen=G"; /slow?ms=N answers after N
// ms; /crash exits 3; /leak?mb=N allocates N MiB and keeps it; /spin burns a
// CPU from now on; /hang stops
// the watchdog pings; /status?msg=X sends STATUS=X.
package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/coreos/go-systemd/v22/daemon"
)

var (
	leaked [][]byte
	leakMu sync.Mutex
	hung   atomic.Bool
)

func notify(state string) {
	if _, err := daemon.SdNotify(false, state); err != nil {
		fmt.Fprintln(os.Stderr, "notify:", err)
	}
}

func leak(mb int) {
	b := make([]byte, mb<<20)
	for i := 0; i < len(b); i += 4096 {
		b[i] = 1
	}
	leakMu.Lock()
	leaked = append(leaked, b)
	leakMu.Unlock()
}

func main() {
	slot := os.Getenv("APPD_WORKER")
	gen := os.Getenv("APPD_GENERATION")
	if v := os.Getenv("TW_EXIT_AT_START"); v != "" {
		n, _ := strconv.Atoi(v)
		if s := os.Getenv("TW_STATUS"); s != "" {
			notify("STATUS=" + s) // last words, as an import error is
		}
		fmt.Fprintf(os.Stderr, "exiting at start with status %d\n", n)
		os.Exit(n)
	}
	if os.Getenv("LISTEN_PID") != strconv.Itoa(os.Getpid()) {
		fmt.Fprintf(os.Stderr, "LISTEN_PID=%s but my pid is %d\n", os.Getenv("LISTEN_PID"), os.Getpid())
		os.Exit(4)
	}
	if os.Getenv("LISTEN_FDNAMES") == "" {
		fmt.Fprintln(os.Stderr, "no LISTEN_FDNAMES")
		os.Exit(4)
	}
	lns, err := activation.Listeners()
	if err != nil || len(lns) == 0 {
		fmt.Fprintf(os.Stderr, "no inherited listener: %v\n", err)
		os.Exit(4)
	}
	fmt.Printf("worker slot=%s gen=%s pid=%d listening on %s\n", slot, gen, os.Getpid(), lns[0].Addr())

	if os.Getenv("TW_IGNORE_TERM") == "1" {
		signal.Ignore(syscall.SIGTERM)
	}
	if os.Getenv("TW_IGNORE_ABRT") == "1" {
		signal.Ignore(syscall.SIGABRT)
	}
	if os.Getenv("TW_CHILD") == "1" {
		c := exec.Command("sleep", "1000")
		if err := c.Start(); err == nil {
			fmt.Printf("grandchild pid=%d\n", c.Process.Pid)
		}
	}
	if v := os.Getenv("TW_FORK_BOMB"); v != "" {
		n, _ := strconv.Atoi(v)
		started := 0
		for range n {
			if exec.Command("sleep", "1000").Start() == nil {
				started++
			}
		}
		fmt.Printf("fork bomb: started %d of %d children\n", started, n)
	}
	if v := os.Getenv("TW_LEAK_MB"); v != "" {
		n, _ := strconv.Atoi(v)
		leak(n)
	}
	spin := func() {
		go func() {
			for x := 0; ; x++ {
				_ = x * x
			}
		}()
	}
	if os.Getenv("TW_SPIN") == "1" {
		spin()
	}
	if v := os.Getenv("TW_CRASH_AFTER"); v != "" {
		d, _ := time.ParseDuration(v)
		time.AfterFunc(d, func() {
			fmt.Fprintln(os.Stderr, "crashing as told")
			os.Exit(3)
		})
	}

	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "pid=%d slot=%s gen=%s\n", os.Getpid(), slot, gen)
	})
	mux.HandleFunc("/spin", func(w http.ResponseWriter, r *http.Request) {
		spin()
		fmt.Fprintf(w, "pid=%d spinning\n", os.Getpid())
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
		fmt.Println("slow request started")
		time.Sleep(time.Duration(ms) * time.Millisecond)
		fmt.Fprintf(w, "pid=%d slot=%s gen=%s slow\n", os.Getpid(), slot, gen)
	})
	mux.HandleFunc("/crash", func(w http.ResponseWriter, r *http.Request) {
		os.Exit(3)
	})
	mux.HandleFunc("/leak", func(w http.ResponseWriter, r *http.Request) {
		mb, _ := strconv.Atoi(r.URL.Query().Get("mb"))
		leak(mb)
		fmt.Fprintf(w, "pid=%d leaked %d MiB\n", os.Getpid(), mb)
	})
	mux.HandleFunc("/hang", func(w http.ResponseWriter, r *http.Request) {
		hung.Store(true)
		fmt.Fprintf(w, "pid=%d hung\n", os.Getpid())
	})
	mux.HandleFunc("/status", func(w http.ResponseWriter, r *http.Request) {
		notify("STATUS=" + r.URL.Query().Get("msg"))
		fmt.Fprintf(w, "pid=%d\n", os.Getpid())
	})
	// conns tracks every connection's state and since when, for the
	// drain below; draining makes every answer close its connection.
	type connState struct {
		st    http.ConnState
		since time.Time
	}
	var conns sync.Map
	var draining atomic.Bool
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if draining.Load() {
			w.Header().Set("Connection", "close")
		}
		mux.ServeHTTP(w, r)
	})
	srv := &http.Server{Handler: handler, ConnState: func(c net.Conn, st http.ConnState) {
		if st == http.StateClosed || st == http.StateHijacked {
			conns.Delete(c)
			return
		}
		conns.Store(c, connState{st, time.Now()})
	}}
	for _, ln := range lns[1:] {
		go srv.Serve(ln)
	}
	go srv.Serve(lns[0])

	if v := os.Getenv("TW_READY_DELAY"); v != "" {
		d, _ := time.ParseDuration(v)
		time.Sleep(d)
	}
	if os.Getenv("TW_READY") != "never" {
		notify("READY=1")
		if s := os.Getenv("TW_STATUS"); s != "" {
			notify("STATUS=" + s)
		}
	}
	hangSlot := slices.Contains(strings.Split(os.Getenv("TW_HANG_SLOTS"), ","), slot)
	if us, err := strconv.Atoi(os.Getenv("WATCHDOG_USEC")); err == nil && us > 0 && os.Getenv("WATCHDOG_PID") == strconv.Itoa(os.Getpid()) {
		go func() {
			t := time.NewTicker(time.Duration(us) * time.Microsecond / 4)
			for range t.C {
				if !hung.Load() {
					notify("WATCHDOG=1")
				}
				if hangSlot {
					hung.Store(true)
				}
			}
		}()
	}

	if os.Getenv("TW_IGNORE_TERM") == "1" {
		select {} // only SIGKILL ends this one
	}
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	<-term
	notify("STOPPING=1")
	// A graceful drain that loses nothing, even for clients that do not
	// retry (wrk): stop accepting; answer every request still coming on
	// open connections with "Connection: close" (closing an idle
	// keep-alive connection could cross a request already on its way);
	// close only connections that stay silent (a spare dialed ahead, a
	// client that went idle) for a while. http.Server.Shutdown alone
	// would close idle connections at once and drop a request it reads
	// after shutdown began.
	draining.Store(true)
	for _, ln := range lns {
		ln.Close()
	}
	began, said := time.Now(), false
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		n := 0
		conns.Range(func(c, v any) bool {
			cs := v.(connState)
			switch {
			case cs.st == http.StateActive:
				n++
			case time.Since(cs.since) < 500*time.Millisecond:
				n++ // new or idle, but a request may still come
			default:
				c.(net.Conn).Close() // silent: nobody is using it
			}
			return true
		})
		if n == 0 {
			break
		}
		if time.Since(began) > 2*time.Second && !said {
			said = true
			fmt.Printf("drain: %d connections still busy\n", n)
		}
	}
	fmt.Printf("drain: connections done after %v\n", time.Since(began).Round(time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv.Shutdown(ctx)
	fmt.Println("drained, exiting")
}
