// Package systemd gives both daemons what systemd hands a service: listening
// sockets passed by name (socket activation), the sd_notify protocol and the
// watchdog. Without systemd each call degrades to the obvious manual
// behaviour, so the daemons run the same way by hand.
package systemd

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// Activated holds the sockets systemd passed to this process, by the name the
// socket unit gave them (FileDescriptorName=). Unnamed sockets are under
// "unknown", as sd_listen_fds_with_names(3) reports them.
type Activated struct {
	files map[string][]*os.File
}

// listenFDsStart is SD_LISTEN_FDS_START: the first passed descriptor.
const listenFDsStart = 3

var (
	activatedOnce sync.Once
	activated     *Activated
)

// TakeActivated reads LISTEN_FDS/LISTEN_FDNAMES once per process and unsets
// them so that children do not inherit a stale protocol. It is safe to call
// more than once; later calls return the same set.
func TakeActivated() *Activated {
	activatedOnce.Do(func() {
		activated = &Activated{files: listenFiles()}
	})
	return activated
}

// listenFiles is go-systemd's activation.FilesWithNames, which this
// package does not import: that package links crypto/tls for its TLS
// listeners, and appd, which has no use for TLS, would carry it (a
// quarter of its binary, 1 MiB of its memory). Like it, it unsets the
// environment and marks the fds close-on-exec; appd hands the raw files
// to its workers through ExtraFiles, which duplicates them without that
// flag. A socket without a name is "LISTEN_FD_N", as go-systemd names it.
func listenFiles() map[string][]*os.File {
	defer func() {
		os.Unsetenv("LISTEN_PID")
		os.Unsetenv("LISTEN_FDS")
		os.Unsetenv("LISTEN_FDNAMES")
	}()
	files := map[string][]*os.File{}
	if pid, err := strconv.Atoi(os.Getenv("LISTEN_PID")); err != nil || pid != os.Getpid() {
		return files
	}
	n, err := strconv.Atoi(os.Getenv("LISTEN_FDS"))
	if err != nil || n <= 0 {
		return files
	}
	names := strings.Split(os.Getenv("LISTEN_FDNAMES"), ":")
	for i := range n {
		fd := listenFDsStart + i
		syscall.CloseOnExec(fd)
		name := "LISTEN_FD_" + strconv.Itoa(fd)
		if i < len(names) && names[i] != "" {
			name = names[i]
		}
		files[name] = append(files[name], os.NewFile(uintptr(fd), name))
	}
	return files
}

// Files returns the passed sockets named name, or nil.
func (a *Activated) Files(name string) []*os.File {
	if a == nil {
		return nil
	}
	return a.files[name]
}

// Names lists the names systemd passed, for diagnostics.
func (a *Activated) Names() []string {
	if a == nil {
		return nil
	}
	names := make([]string, 0, len(a.files))
	for n := range a.files {
		names = append(names, n)
	}
	return names
}

// Empty reports whether systemd passed no socket at all.
func (a *Activated) Empty() bool { return a == nil || len(a.files) == 0 }

// Listeners turns the stream sockets named name into net.Listeners. The
// files stay open; each listener owns a dup of its file.
func (a *Activated) Listeners(name string) ([]net.Listener, error) {
	var out []net.Listener
	for _, f := range a.Files(name) {
		ln, err := net.FileListener(f)
		if err != nil {
			closeAll(out)
			return nil, fmt.Errorf("using socket %q (fd %d) passed by systemd: %w", name, f.Fd(), err)
		}
		out = append(out, ln)
	}
	return out, nil
}

// ListenOrBind returns the sockets systemd passed under name when there are
// any, and otherwise binds each address in fallback. This is the whole
// "socket-activated, or configured by hand" rule of the design.
func (a *Activated) ListenOrBind(name string, fallback []string) ([]net.Listener, bool, error) {
	if len(a.Files(name)) > 0 {
		lns, err := a.Listeners(name)
		return lns, true, err
	}
	var out []net.Listener
	for _, addr := range fallback {
		ln, err := Bind(addr)
		if err != nil {
			closeAll(out)
			return nil, false, err
		}
		out = append(out, ln)
	}
	return out, false, nil
}

// PacketConns turns the datagram sockets named name (ListenDatagram=)
// into net.PacketConns. The files stay open; each conn owns a dup.
func (a *Activated) PacketConns(name string) ([]net.PacketConn, error) {
	var out []net.PacketConn
	for _, f := range a.Files(name) {
		pc, err := net.FilePacketConn(f)
		if err != nil {
			for _, c := range out {
				c.Close()
			}
			return nil, fmt.Errorf("using datagram socket %q (fd %d) passed by systemd: %w", name, f.Fd(), err)
		}
		out = append(out, pc)
	}
	return out, nil
}

// BindUDP opens a UDP socket on a "host:port" address (":443",
// "127.0.0.1:8443", "[::1]:443").
func BindUDP(addr string) (net.PacketConn, error) {
	network, address, err := SplitAddr(addr)
	if err != nil {
		return nil, err
	}
	if network != "tcp" {
		return nil, fmt.Errorf("address %q: a UDP socket needs host:port", addr)
	}
	pc, err := net.ListenPacket("udp", address)
	if err != nil {
		return nil, fmt.Errorf("binding UDP %s: %w", addr, err)
	}
	return pc, nil
}

// Bind listens on addr, which is "unix:/path" for a unix socket or a TCP
// "host:port" (":80", "127.0.0.1:8080", "[::1]:443"). A stale unix socket
// file left by a previous run is removed first; a live one is an error.
func Bind(addr string) (net.Listener, error) {
	network, address, err := SplitAddr(addr)
	if err != nil {
		return nil, err
	}
	if network == "unix" {
		if err := makeSocketDir(address); err != nil {
			return nil, fmt.Errorf("binding %s: %w", addr, err)
		}
		if err := removeStaleSocket(address); err != nil {
			return nil, err
		}
	}
	ln, err := net.Listen(network, address)
	if err != nil {
		return nil, fmt.Errorf("binding %s: %w", addr, err)
	}
	if ul, ok := ln.(*net.UnixListener); ok {
		// We removed any stale file ourselves; let Close remove ours.
		ul.SetUnlinkOnClose(true)
	}
	return ln, nil
}

// SplitAddr parses a listen or upstream address into a network and an
// address for net.Listen / net.Dial: "unix:/path" (or "unix:@abstract"),
// or a TCP "host:port" with a numeric port of at most 65535 (0 lets a
// listener pick one). It is the one parser of addresses both daemons use.
func SplitAddr(addr string) (network, address string, err error) {
	if p, ok := strings.CutPrefix(addr, "unix:"); ok {
		if p == "" || !strings.HasPrefix(p, "/") && !strings.HasPrefix(p, "@") {
			return "", "", fmt.Errorf("address %q: a unix socket needs an absolute path (unix:/run/x.sock)", addr)
		}
		return "unix", p, nil
	}
	if strings.Contains(addr, "://") {
		return "", "", fmt.Errorf("address %q: give host:port or unix:/path, without a scheme", addr)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", "", fmt.Errorf("address %q: want host:port, :port or unix:/path: %w", addr, err)
	}
	if port == "" {
		return "", "", fmt.Errorf("address %q: missing port", addr)
	}
	if n, err := strconv.ParseUint(port, 10, 32); err != nil || n > 65535 {
		return "", "", fmt.Errorf("address %q: port %q is not a number from 0 to 65535", addr, port)
	}
	if strings.ContainsAny(host, "/ \t\r\n") {
		return "", "", fmt.Errorf("address %q: %q is not a host", addr, host)
	}
	return "tcp", net.JoinHostPort(host, port), nil
}

// SplitDialAddr is SplitAddr for an address to connect to, which needs a
// host and a port other than 0.
func SplitDialAddr(addr string) (network, address string, err error) {
	network, address, err = SplitAddr(addr)
	if err != nil || network == "unix" {
		return network, address, err
	}
	host, port, _ := net.SplitHostPort(address)
	if host == "" {
		return "", "", fmt.Errorf("address %q: the host is missing", addr)
	}
	if port == "0" {
		return "", "", fmt.Errorf("address %q: port 0 cannot be connected to", addr)
	}
	return network, address, nil
}

// makeSocketDir creates the directory a unix socket goes in when it is
// missing and its own parent exists, as systemd's RuntimeDirectory= would
// have: a daemon run by hand (edged -config FILE as root) then finds
// /run/edged. Deeper paths are not invented.
func makeSocketDir(path string) error {
	if strings.HasPrefix(path, "@") {
		return nil
	}
	dir := filepath.Dir(path)
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		return nil // there, or a problem Listen will name
	}
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("creating the socket's directory: %w", err)
	}
	return nil
}

func removeStaleSocket(path string) error {
	if strings.HasPrefix(path, "@") {
		return nil // abstract namespace: nothing on disk
	}
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("checking socket path %s: %w", path, err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("socket path %s exists and is not a socket; refusing to remove it", path)
	}
	if c, err := net.Dial("unix", path); err == nil {
		c.Close()
		return fmt.Errorf("socket %s is in use by another process", path)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("removing stale socket %s: %w", path, err)
	}
	return nil
}

func closeAll(lns []net.Listener) {
	for _, ln := range lns {
		ln.Close()
	}
}
