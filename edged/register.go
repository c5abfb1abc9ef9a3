package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/edgeapp/edgeapp/edged/cluster"
	"github.com/edgeapp/edgeapp/edged/config"
)

// registerCmd keeps an app server registered in the cluster's etcd for an
// upstream whose edged nodes say registry = NAME, until SIGTERM or SIGINT
// withdraws it. It runs on the app node (beside appd, as a unit of its
// own) with an edged.toml whose [cluster] reaches the same etcd.
func registerCmd(args []string) int {
	fs := flag.NewFlagSet("edged register", flag.ExitOnError)
	cfgPath := fs.String("config", config.DefaultPath, "configuration file (its [cluster] is used)")
	upstream := fs.String("upstream", "", "the registry name the edged nodes' upstream watches")
	weight := fs.Int("weight", 1, "the server's weight")
	ttl := fs.Duration("ttl", 10*time.Second, "lease: a node that dies leaves the pools within this")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: edged register [-config FILE] -upstream NAME [-weight N] [-ttl 10s] ADDR")
		fs.PrintDefaults()
	}
	fs.Parse(args)
	if *upstream == "" || fs.NArg() != 1 {
		fs.Usage()
		return 2
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "edged register:", err)
		return 1
	}
	if !cfg.Cluster.Enabled() {
		fmt.Fprintln(os.Stderr, "edged register:", *cfgPath, "has no [cluster] etcd = [...]")
		return 1
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	o := cfg.ClusterOptions()
	o.Log, o.StateDir = log, ""
	c, err := cluster.Open(o, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "edged register:", err)
		return 1
	}
	defer c.Close()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := c.Register(ctx, *upstream, cluster.Server{Addr: fs.Arg(0), Weight: *weight}, *ttl); err != nil {
		fmt.Fprintln(os.Stderr, "edged register:", err)
		return 1
	}
	return 0
}
