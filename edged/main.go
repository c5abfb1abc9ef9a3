// Command edged is the edge server: reverse proxy, load balancer, static
// files, HTTP cache and automatic HTTPS, socket-activated by systemd.
//
//	edged [-config FILE]            run
//	edged -t [-config FILE]         check the configuration, like nginx -t
//	edged status [-config FILE]     print the running server's state
//	edged purge [-config FILE] URL  remove URL from the caches (-prefix, -all)
//	edged register -upstream NAME ADDR  register an app server in the cluster
//	edged dashboard [-listen ADDR]  serve the status page on loopback (SSH tunnel)
//
// Signals: HUP reloads the configuration, TERM and INT drain and stop, USR1
// reopens the access log.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/edgeapp/edgeapp/edged/config"
	"github.com/edgeapp/edgeapp/edged/server"
	"github.com/edgeapp/edgeapp/internal/logging"
	"github.com/edgeapp/edgeapp/internal/systemd"
)

var version = "dev"

const usage = `Usage:
  edged [-config FILE]              run the server (default config %s)
  edged -t [-config FILE]           check the configuration and exit 0 (ok) or 1
  edged status [-config FILE]       show sites, upstream health and certificates
  edged purge [-config FILE] URL    remove one URL (all variants) from the caches
  edged purge -prefix URL           remove everything under a URL prefix
  edged purge -all                  empty the caches (with [cluster]: on every node)
  edged register -upstream NAME ADDR  keep ADDR registered in the cluster's etcd
  edged dashboard [-listen ADDR]    serve the live status page on a loopback port
                                    (default 127.0.0.1:9180), for an SSH tunnel
  edged -version                    print the version

Signals: SIGHUP reloads the configuration (systemctl reload edged), SIGTERM
drains connections and exits, SIGUSR1 reopens the access log.
See edged(8) and edged.toml(5).

Flags:
`

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "status":
			os.Exit(statusCmd(os.Args[2:]))
		case "purge":
			os.Exit(purgeCmd(os.Args[2:]))
		case "register":
			os.Exit(registerCmd(os.Args[2:]))
		case "dashboard":
			os.Exit(dashboardCmd(os.Args[2:])) // dashboardcmd.go
		}
	}
	fs := flag.NewFlagSet("edged", flag.ExitOnError)
	cfgPath := fs.String("config", config.DefaultPath, "configuration file")
	test := fs.Bool("t", false, "check the configuration and exit")
	showVersion := fs.Bool("version", false, "print the version and exit")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), usage, config.DefaultPath)
		fs.PrintDefaults()
	}
	fs.Parse(os.Args[1:])
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "edged: unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		os.Exit(2)
	}
	switch {
	case *showVersion:
		fmt.Println("edged", version)
	case *test:
		if err := server.Check(*cfgPath); err != nil {
			fmt.Fprintln(os.Stderr, err)
			fmt.Fprintf(os.Stderr, "configuration %s has errors\n", *cfgPath)
			os.Exit(1)
		}
		fmt.Printf("configuration %s OK\n", *cfgPath)
	default:
		os.Exit(run(*cfgPath))
	}
}

func run(cfgPath string) int {
	log := logging.New(os.Stderr, logging.Options{Journal: logging.JournalDetected()})
	notifier := systemd.NewNotifier()
	if cfg, err := config.Load(cfgPath); err == nil {
		if lvl, err := logging.ParseLevel(cfg.Server.LogLevel); err == nil {
			log = logging.New(os.Stderr, logging.Options{Level: lvl, Journal: logging.JournalDetected()})
		}
	}
	srv, err := server.New(server.Options{ConfigPath: cfgPath, Version: version, Log: log, Notifier: notifier})
	if err != nil {
		log.Error("not starting: " + strings.ReplaceAll(err.Error(), "\n", "; "))
		notifier.Status("failed to start: " + err.Error())
		return 1
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR1)
	go func() {
		for sig := range sigs {
			switch sig {
			case syscall.SIGHUP:
				srv.Reload()
			case syscall.SIGUSR1:
				srv.ReopenLogs()
			default:
				log.Info("received " + sig.String() + "; stopping")
				stop()
				return
			}
		}
	}()
	watchdogStop := make(chan struct{})
	// Each ping waits for edged to answer a request it sends itself.
	interval := systemd.WatchdogInterval()
	go notifier.RunWatchdog(interval, func() bool { return srv.Healthy(interval / 2) }, watchdogStop)
	err = srv.Serve(ctx)
	close(watchdogStop)
	if err != nil {
		return 1
	}
	return 0
}

// adminClient talks HTTP to the admin socket named in the configuration.
func adminClient(fs *flag.FlagSet, args []string) (*http.Client, error) {
	cfgPath := fs.String("config", config.DefaultPath, "configuration file")
	admin := fs.String("admin", "", "admin socket address (default: from the configuration)")
	tokenFile := fs.String("token-file", "", "file holding the admin API's bearer token (default: admin_token_file from the configuration)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	addr, tf := *admin, *tokenFile
	if addr == "" || tf == "" {
		cfg, err := config.Load(*cfgPath)
		switch {
		case err == nil:
			if addr == "" {
				addr = cfg.Server.Admin
			}
			if tf == "" {
				tf = cfg.Server.AdminTokenFile
			}
		case addr == "":
			return nil, fmt.Errorf("finding the admin socket (or pass -admin): %w", err)
		}
	}
	if addr == "" {
		return nil, errors.New("the admin socket is disabled ([server] admin = \"\")")
	}
	token, err := server.ReadAdminToken(tf)
	if err != nil {
		return nil, err
	}
	network, address, err := systemd.SplitAddr(addr)
	if err != nil {
		return nil, err
	}
	var rt http.RoundTripper = &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, address)
	}}
	if token != "" {
		rt = bearer{token: token, next: rt}
	}
	return &http.Client{Timeout: 30 * time.Second, Transport: rt}, nil
}

// bearer adds the admin API's token to each request.
type bearer struct {
	token string
	next  http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(r)
}

func statusCmd(args []string) int {
	fs := flag.NewFlagSet("edged status", flag.ExitOnError)
	c, err := adminClient(fs, args)
	if err != nil {
		fmt.Fprintln(os.Stderr, "edged status:", err)
		return 1
	}
	return doAdmin(c, http.MethodGet, "/status")
}

func purgeCmd(args []string) int {
	fs := flag.NewFlagSet("edged purge", flag.ExitOnError)
	prefix := fs.String("prefix", "", "purge every URL under this prefix")
	all := fs.Bool("all", false, "purge everything")
	cacheName := fs.String("cache", "", "only this cache")
	c, err := adminClient(fs, args)
	if err != nil {
		fmt.Fprintln(os.Stderr, "edged purge:", err)
		return 1
	}
	q := url.Values{}
	switch {
	case *all:
		q.Set("all", "1")
	case *prefix != "":
		q.Set("prefix", *prefix)
	case fs.NArg() == 1:
		q.Set("url", fs.Arg(0))
	default:
		fmt.Fprintln(os.Stderr, "edged purge: give a URL, -prefix URL or -all")
		return 2
	}
	if *cacheName != "" {
		q.Set("cache", *cacheName)
	}
	return doAdmin(c, http.MethodPost, "/purge?"+q.Encode())
}

func doAdmin(c *http.Client, method, path string) int {
	req, _ := http.NewRequest(method, "http://edged"+path, nil)
	resp, err := c.Do(req)
	if err != nil {
		fmt.Fprintln(os.Stderr, "edged: talking to the admin socket:", err)
		return 1
	}
	defer resp.Body.Close()
	io.Copy(os.Stdout, resp.Body)
	if resp.StatusCode >= 300 {
		return 1
	}
	return 0
}
