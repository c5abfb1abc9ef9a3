package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/edgeapp/edgeapp/edged/dashboard"
)

// dashboardCmd serves the status page on a loopback port from the admin
// socket's snapshots: `edged dashboard`, for an SSH tunnel.
func dashboardCmd(args []string) int {
	fs := flag.NewFlagSet("edged dashboard", flag.ExitOnError)
	listen := fs.String("listen", dashboard.DefaultBridgeAddr, "loopback address to serve the page on")
	c, err := adminClient(fs, args)
	if err != nil {
		fmt.Fprintln(os.Stderr, "edged dashboard:", err)
		return 1
	}
	src := dashboard.AdminSource(c)
	// Say at once when edged cannot be reached, rather than on the page.
	if _, err := src(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "edged dashboard:", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := dashboard.Bridge(ctx, dashboard.BridgeOptions{Listen: *listen, Source: src, Out: os.Stdout}); err != nil {
		fmt.Fprintln(os.Stderr, "edged dashboard:", err)
		return 1
	}
	return 0
}
