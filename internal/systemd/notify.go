package systemd

import (
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"
)

// Notifier speaks sd_notify(3) to the service manager. It keeps
// NOTIFY_SOCKET in the environment it read it from (it never unsets it), and
// is a no-op when the process was not started by systemd.
type Notifier struct {
	socket string
}

// NewNotifier reads NOTIFY_SOCKET and removes it from the environment, so that
// child processes (appd's workers) never talk to systemd by mistake.
func NewNotifier() *Notifier {
	s := os.Getenv("NOTIFY_SOCKET")
	os.Unsetenv("NOTIFY_SOCKET")
	return &Notifier{socket: s}
}

// Enabled reports whether a service manager is listening.
func (n *Notifier) Enabled() bool { return n != nil && n.socket != "" }

// Send sends the given assignments ("READY=1", "STATUS=...") in one datagram.
func (n *Notifier) Send(lines ...string) error {
	if !n.Enabled() {
		return nil
	}
	// Go maps a leading '@' to the abstract namespace itself.
	addr := &net.UnixAddr{Name: n.socket, Net: "unixgram"}
	conn, err := net.DialUnix("unixgram", nil, addr)
	if err != nil {
		return fmt.Errorf("notifying systemd at %s: %w", n.socket, err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(strings.Join(lines, "\n"))); err != nil {
		return fmt.Errorf("notifying systemd at %s: %w", n.socket, err)
	}
	return nil
}

// Ready says the service is serving, with a status line for systemctl status.
func (n *Notifier) Ready(status string) error {
	return n.Send("READY=1", "STATUS="+status)
}

// Reloading starts a reload as Type=notify-reload expects: RELOADING=1 with
// the current CLOCK_MONOTONIC time. Ready must follow when it is done,
// whether the new configuration was taken or not.
func (n *Notifier) Reloading(status string) error {
	return n.Send("RELOADING=1", "MONOTONIC_USEC="+MonotonicUsec(), "STATUS="+status)
}

// Stopping says the service is shutting down.
func (n *Notifier) Stopping(status string) error {
	return n.Send("STOPPING=1", "STATUS="+status)
}

// Status updates the free-form status line.
func (n *Notifier) Status(status string) error { return n.Send("STATUS=" + status) }

// MainPID tells systemd which process is the service's main process.
func (n *Notifier) MainPID(pid int) error { return n.Send(fmt.Sprintf("MAINPID=%d", pid)) }

// MonotonicUsec is CLOCK_MONOTONIC in microseconds, as sd_notify wants it.
func MonotonicUsec() string {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return "0"
	}
	return fmt.Sprintf("%d", ts.Nano()/1000)
}

// WatchdogInterval returns how often to send WATCHDOG=1 (half the period
// systemd set with WatchdogSec=), or 0 when no watchdog is armed for us.
func WatchdogInterval() time.Duration {
	d, err := daemon.SdWatchdogEnabled(false)
	if err != nil || d <= 0 {
		return 0
	}
	return d / 2
}

// RunWatchdog pings systemd every interval until stop is closed. healthy is
// asked before each ping, so a wedged main loop stops the pings and systemd
// restarts the service; nil means always healthy.
func (n *Notifier) RunWatchdog(interval time.Duration, healthy func() bool, stop <-chan struct{}) {
	if !n.Enabled() || interval <= 0 {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			if healthy == nil || healthy() {
				n.Send("WATCHDOG=1")
			}
		}
	}
}
