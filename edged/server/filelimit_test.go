package server

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/edgeapp/edgeapp/edged/connlimit"
)

// TestFileLimitWarning: when the process may not open enough files for
// max_connections (LimitNOFILE= lower than nginx's worker_rlimit_nofile
// rule of two per proxied connection), edged says so in one line at start,
// naming the limit, what is needed and the fix, and again when a reload
// raises max_connections past it; a max_connections that fits says
// nothing.
func TestFileLimitWarning(t *testing.T) {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	if rl.Cur > 1<<30 {
		t.Skipf("open-file limit %d: no max_connections can exceed it", rl.Cur)
	}
	const warning = "open-file limit is too low for max_connections"
	fits := 64
	if filesNeeded(fits) > rl.Cur {
		t.Skipf("open-file limit %d: even max_connections = %d does not fit", rl.Cur, fits)
	}
	tooMany := int(rl.Cur) // needs twice as many
	config := func(maxConns int) string {
		return fmt.Sprintf("[server]\nhttp = [\"127.0.0.1:0\"]\nhttps = []\nadmin = \"\"\nmax_connections = %d\n[tls]\nstorage = \"{{DIR}}/tls\"\n"+
			"[[site]]\nhosts = [\"x\"]\ntls = \"off\"\n  [[site.route]]\n  path = \"/\"\n  respond = \"ok\"\n", maxConns)
	}

	ts := startServer(t, config(tooMany))
	line := ""
	for _, l := range strings.Split(ts.log.String(), "\n") {
		if strings.Contains(l, warning) {
			line = l
		}
	}
	for _, want := range []string{fmt.Sprintf("limit=%d", rl.Cur), fmt.Sprintf("max_connections=%d", tooMany),
		fmt.Sprintf("needed=%d", filesNeeded(tooMany)), "LimitNOFILE="} {
		if !strings.Contains(line, want) {
			t.Fatalf("start with max_connections = %d (limit %d): want a warning with %q, got %q", tooMany, rl.Cur, want, line)
		}
	}

	ts.write(config(fits))
	if err := ts.srv.Reload(); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(ts.log.String(), warning); n != 1 {
		t.Fatalf("after a reload to max_connections = %d: %d warnings, want still 1", fits, n)
	}
	ts.write(config(tooMany))
	if err := ts.srv.Reload(); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(ts.log.String(), warning); n != 2 {
		t.Fatalf("after a reload back to max_connections = %d: %d warnings, want 2", tooMany, n)
	}
}

// TestFileLimitFitsDefaults: the shipped unit's LimitNOFILE= holds the
// default max_connections.
func TestFileLimitFitsDefaults(t *testing.T) {
	unit, err := os.ReadFile("../../units/edged.service")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^LimitNOFILE=([0-9]+)$`).FindSubmatch(unit)
	if m == nil {
		t.Fatal("units/edged.service sets no LimitNOFILE=")
	}
	limit, _ := strconv.ParseUint(string(m[1]), 10, 64)
	if need := filesNeeded(connlimit.DefaultMax); need > limit {
		t.Fatalf("the default max_connections %d needs %d files, above edged.service's LimitNOFILE=%d", connlimit.DefaultMax, need, limit)
	}
}
