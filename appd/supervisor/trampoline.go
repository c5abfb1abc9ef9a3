package supervisor

import (
	"fmt"
	"os"
	"strconv"
	"syscall"
)

// Go cannot run code between fork and exec, but a worker must see its own
// pid in LISTEN_PID. So appd starts itself (/proc/self/exe) in trampoline
// mode: the trampoline sets LISTEN_PID and WATCHDOG_PID to its pid and
// execs the worker in place: same pid, same fds 3.., same cgroup.
const (
	envTrampoline = "_APPD_TRAMPOLINE" // "1" selects trampoline mode
	envExecFD     = "_APPD_EXEC_FD"    // fd of the exec-status pipe
)

// RunTrampolineIfRequested turns this process into a worker when it was
// started as appd's trampoline, and returns otherwise. Call it first thing
// in main (and in TestMain of packages whose tests run a Supervisor).
//
// The exec-status pipe is close-on-exec here: the supervisor reads EOF when
// the worker's command was executed, or the error text when it was not.
func RunTrampolineIfRequested() {
	if os.Getenv(envTrampoline) != "1" {
		return
	}
	fd, err := strconv.Atoi(os.Getenv(envExecFD))
	os.Unsetenv(envTrampoline)
	os.Unsetenv(envExecFD)
	fail := func(format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		if fd > 2 {
			syscall.Write(fd, []byte(msg))
		}
		fmt.Fprintln(os.Stderr, "appd trampoline: "+msg)
		os.Exit(127)
	}
	if err != nil || fd < 3 {
		fail("bad %s", envExecFD)
	}
	syscall.CloseOnExec(fd)
	if len(os.Args) < 2 {
		fail("no command to execute")
	}
	pid := strconv.Itoa(os.Getpid())
	os.Setenv("LISTEN_PID", pid)
	if os.Getenv("WATCHDOG_USEC") != "" {
		os.Setenv("WATCHDOG_PID", pid)
	}
	argv := os.Args[1:]
	err = syscall.Exec(argv[0], argv, os.Environ())
	fail("executing %s: %v", argv[0], err)
}
