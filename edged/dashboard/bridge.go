package dashboard

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// DefaultBridgeAddr is where `edged dashboard` serves the page: a fixed
// loopback port, so that the SSH tunnel's command line stays the same.
const DefaultBridgeAddr = "127.0.0.1:9180"

// BridgeOptions configure Bridge.
type BridgeOptions struct {
	// Listen is a loopback address; anything else is refused.
	Listen string
	// Source gives the snapshots, from the admin socket.
	Source Source
	// Out receives the page's address once it serves.
	Out io.Writer
	// Token is the page's secret path; "" makes a random one. Any local
	// user can reach a loopback port, so the page is served only under
	// it, and everything else is 404.
	Token string
}

// Bridge serves the page on a loopback port until ctx ends: what `edged
// dashboard` runs on the server, for an SSH tunnel from the operator's
// machine.
func Bridge(ctx context.Context, o BridgeOptions) error {
	if o.Listen == "" {
		o.Listen = DefaultBridgeAddr
	}
	if err := checkLoopback(o.Listen); err != nil {
		return err
	}
	if o.Token == "" {
		var b [16]byte
		rand.Read(b[:])
		o.Token = hex.EncodeToString(b[:])
	}
	ln, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return fmt.Errorf("listening for the page: %w", err)
	}
	prefix := "/" + o.Token + "/"
	page := Handler(Options{Prefix: prefix, Source: o.Source})
	mux := http.NewServeMux()
	mux.Handle(prefix, page)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "404: open the address `edged dashboard` printed (it holds a secret path)", http.StatusNotFound)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	port := ln.Addr().(*net.TCPAddr).Port
	if o.Out != nil {
		fmt.Fprintf(o.Out, "edged dashboard: serving the status page at\n\n    http://%s%s\n\n"+
			"(loopback only). From your machine: ssh -N -L %d:%s HOST, then open that address.\n"+
			"Interrupt (Ctrl-C) to stop.\n", ln.Addr(), prefix, port, ln.Addr())
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(sctx) // event streams end with their connections
		srv.Close()
		return nil
	case err := <-errc:
		return err
	}
}

func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("-listen %q: %w", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return errors.New("-listen " + addr + ": the page is served on a loopback address only (reach it through an SSH tunnel); for a page on the network, use a route with status_page = true behind allow or basic_auth")
	}
	return nil
}

// AdminSource reads the snapshots from edged's admin socket through
// client (which dials it and adds the admin token).
func AdminSource(client *http.Client) Source {
	return func(ctx context.Context) ([]byte, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://edged/dashboard/status.json", nil)
		resp, err := client.Do(req)
		if err != nil {
			return nil, fmt.Errorf("asking edged's admin socket: %w", err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
		if err != nil {
			return nil, fmt.Errorf("reading edged's answer: %w", err)
		}
		if resp.StatusCode != http.StatusOK {
			if len(body) > 300 {
				body = body[:300]
			}
			return nil, fmt.Errorf("edged's admin socket answered %s: %s", resp.Status, body)
		}
		return body, nil
	}
}
