// Command appd is the application server's master process for any
// language: it holds the listening socket, runs N workers that inherit it
// and accept on it themselves, keeps them alive, recycles and reloads them
// without dropping a request, and fences each in its own cgroup v2 leaf.
//
//	appd [-config FILE] [-name NAME]      run (appd@NAME.service passes -name %i)
//	appd -t [-config FILE] [-name NAME]   check the configuration
//	appd status [-json] [-name NAME | -socket PATH | -config FILE]
//	appd -version
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/coreos/go-systemd/v22/journal"
	"github.com/edgeapp/edgeapp/appd/cgroup"
	"github.com/edgeapp/edgeapp/appd/config"
	"github.com/edgeapp/edgeapp/appd/supervisor"
	"github.com/edgeapp/edgeapp/internal/logging"
	"github.com/edgeapp/edgeapp/internal/systemd"
)

// version is set at build time: -ldflags "-X main.version=1.2.3".
var version = "dev"

const usage = `appd - pre-fork application supervisor

Usage:
  appd [-config FILE] [-name NAME]        run the application's workers
  appd -t [-config FILE] [-name NAME]     check the configuration and exit
  appd status [-json] [-name NAME | -socket PATH | -config FILE]
                                          show the workers of a running appd
  appd -version                           print the version

The configuration is /etc/appd/NAME.toml with -name (appd@NAME.service
passes -name %i), else /etc/appd/appd.toml. Signals: HUP reloads (new
generation of workers, old ones drain once the new ones are ready), TERM
drains and exits, INT/QUIT stop fast, TTIN/TTOU add/remove a worker.

Flags:
`

func main() {
	supervisor.RunTrampolineIfRequested()
	if len(os.Args) > 1 && os.Args[1] == "status" {
		os.Exit(statusCmd(os.Args[2:]))
	}
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := flag.NewFlagSet("appd", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	configPath := fs.String("config", "", "configuration file (default /etc/appd/NAME.toml, or /etc/appd/appd.toml)")
	name := fs.String("name", "", "instance name: selects /etc/appd/NAME.toml and names the sockets")
	check := fs.Bool("t", false, "check the configuration and exit")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "appd: unexpected argument %q (see appd -h)\n", fs.Arg(0))
		return 2
	}
	if strings.ContainsAny(*name, "/\x00") || *name == "." || *name == ".." {
		fmt.Fprintf(os.Stderr, "appd: -name %q: want a plain instance name (it names /etc/appd/NAME.toml and the sockets)\n", *name)
		return 2
	}
	if *showVersion {
		fmt.Println("appd", version)
		return 0
	}
	path := *configPath
	if path == "" {
		path = config.PathFor(*name)
	}
	// The rules that depend on how appd runs (as root or not) apply to -t,
	// start and reload alike.
	load := func() (*config.Config, error) {
		cfg, err := config.Load(path, *name)
		if err != nil {
			return nil, err
		}
		if err := cfg.CheckWorkerUser(os.Geteuid()); err != nil {
			return nil, err
		}
		return cfg, nil
	}
	cfg, err := load()
	if *check {
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Printf("%s: configuration OK\n", path)
		return 0
	}
	level, _ := logging.ParseLevel("info")
	if cfg != nil {
		level, _ = logging.ParseLevel(cfg.App.LogLevel)
	}
	log := logging.New(os.Stderr, logging.Options{Level: level, Journal: logging.JournalDetected()})
	if err != nil {
		log.Error("configuration invalid, not starting: " + err.Error())
		return 1
	}
	keepHeapSmall()
	if os.Geteuid() == 0 && cfg.App.User == "root" {
		log.Warn("the workers run as root (app.user = \"root\"): any flaw in the application is a flaw of the whole machine")
	}
	instance := *name
	if instance == "" {
		instance = "appd"
	}

	// Signals first, so a HUP during startup is not fatal.
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGTTIN, syscall.SIGTTOU)

	notifier := systemd.NewNotifier()
	files, fromSystemd, closeSockets, err := sockets(cfg)
	if err != nil {
		log.Error("cannot get the application's socket: " + err.Error())
		return 1
	}
	defer closeSockets()
	if fromSystemd {
		log.Info("using the socket passed by systemd", "name", "app", "count", len(files))
	} else {
		log.Info("listening", "addresses", fmt.Sprint(cfg.App.Listen))
	}

	tree, treeErr := cgroup.Open(log)
	sup, err := supervisor.New(supervisor.Options{
		Name:      instance,
		Config:    cfg,
		Reload:    load,
		Listeners: files,
		Tree:      tree,
		TreeErr:   treeErr,
		Log:       log,
		Notifier:  notifier,
		Signals:   sigs,
		Journal:   workerOutputToJournal(),
	})
	if err != nil {
		log.Error("not starting: " + err.Error())
		return 1
	}
	if err := sup.Run(context.Background()); err != nil {
		log.Error("appd failed: " + err.Error())
		return 1
	}
	return 0
}

// workerOutputToJournal: appd's stderr is a journal stream (a systemd
// service) and the journal's socket is there, so the workers' lines go to
// the journal natively, with fields.
func workerOutputToJournal() bool {
	ok, err := journal.StderrIsJournalStream()
	return err == nil && ok && journal.Enabled()
}

// sockets returns the listening sockets for the workers: those systemd
// passed under the name "app" (never listen()ed again), else the
// configured addresses, bound here.
func sockets(cfg *config.Config) (files []*os.File, fromSystemd bool, closeAll func(), err error) {
	act := systemd.TakeActivated()
	if fs := act.Files("app"); len(fs) > 0 {
		return fs, true, func() {}, nil
	}
	if !act.Empty() {
		return nil, false, nil, fmt.Errorf("systemd passed sockets %v but none named \"app\" (FileDescriptorName=app)", act.Names())
	}
	var lns []net.Listener
	closeAll = func() {
		for _, ln := range lns {
			ln.Close()
		}
		for _, f := range files {
			f.Close()
		}
	}
	for _, addr := range cfg.App.Listen {
		network, p, _ := systemd.SplitAddr(addr)
		if network == "unix" {
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				closeAll()
				return nil, false, nil, fmt.Errorf("making the directory of %s: %w", addr, err)
			}
		}
		ln, err := systemd.Bind(addr)
		if err != nil {
			closeAll()
			return nil, false, nil, err
		}
		lns = append(lns, ln)
		var f *os.File
		switch l := ln.(type) {
		case *net.TCPListener:
			f, err = l.File()
		case *net.UnixListener:
			os.Chmod(p, 0o666) // the edge, another user, connects to it
			f, err = l.File()
		}
		if err != nil {
			closeAll()
			return nil, false, nil, fmt.Errorf("passing %s to the workers: %w", addr, err)
		}
		files = append(files, f)
	}
	if len(files) == 0 {
		return nil, false, nil, errors.New("no socket: systemd passed none named \"app\" and app.listen is empty")
	}
	return files, false, closeAll, nil
}

func statusCmd(args []string) int {
	fs := flag.NewFlagSet("appd status", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print the status as JSON")
	name := fs.String("name", "", "instance name: its control socket is RUNTIME_DIR/NAME.ctl")
	socket := fs.String("socket", "", "control socket path")
	configPath := fs.String("config", "", "read the control socket path from this configuration")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *name == "" && fs.NArg() == 1 {
		*name = fs.Arg(0) // appd status NAME
	}
	path := *socket
	if path == "" && *configPath != "" {
		cfg, err := config.Load(*configPath, *name)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		path = cfg.App.Control
	}
	if path == "" {
		n := *name
		if n == "" {
			n = "appd"
		}
		path = config.ControlPath(n)
	}
	st, err := supervisor.FetchStatus(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "appd status:", err)
		return 1
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		enc.Encode(st)
		return 0
	}
	st.Print(os.Stdout)
	return 0
}

// keepHeapSmall tunes the Go runtime for a master that lives long and
// holds little: about half a MiB of live heap (workers, their status,
// configuration), against the 4 MiB that Go lets a heap grow to between
// collections by default, and the memory profiler's hash table, which
// nobody reads here. GOGC = 25 collects at 1 MiB and a quarter more than
// what is live: a collection every few seconds of a busy sampling loop,
// each well under a millisecond; it saves about 1.5 MiB of appd's own
// memory (PSS), which counts against appd as gunicorn's master counts
// against gunicorn. A GOGC or GODEBUG=memprofilerate in the environment
// (the unit's Environment=) wins.
func keepHeapSmall() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(25)
	}
	if !strings.Contains(os.Getenv("GODEBUG"), "memprofilerate=") {
		runtime.MemProfileRate = 0
	}
}
