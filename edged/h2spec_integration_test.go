package main

import (
	"fmt"
	"net"
	"os/exec"
	"regexp"
	"testing"

	"github.com/edgeapp/edgeapp/edged/engine"
	"github.com/edgeapp/edgeapp/edged/engine/enginetest"
	"github.com/edgeapp/edgeapp/internal/gotool"
)

// TestH2Spec runs h2spec (github.com/summerwind/h2spec v2.2.1, pinned as a
// tool in go.mod), the HTTP/2 conformance suite, against the real edged
// over TLS, as browsers connect, and wants every case to pass.
func TestH2Spec(t *testing.T) {
	if testing.Short() {
		t.Skip("builds h2spec")
	}
	if enginetest.Name() == engine.NetHTTP {
		// The fallback's HTTP/2 is Go's, not edged's: it answers four to
		// six cases instead of refusing them, some by timing (run here:
		// 141 and 139 of 145), as edged.toml(5) says of that engine.
		t.Skip("h2spec judges edged's own HTTP/2; EDGED_TEST_ENGINE=net/http serves Go's")
	}
	bin, err := gotool.Build(t.TempDir(), "github.com/summerwind/h2spec/cmd/h2spec")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cert, key, _ := selfSigned(t, dir, "h2spec.test")
	_, httpsAddr := startEdgedTLS(t, fmt.Sprintf(`
[server]
admin = ""
[tls]
storage = "{{DIR}}/state"
[[site]]
hosts = ["h2spec.test", "127.0.0.1"]
tls = { cert = %q, key = %q }
redirect_http = false
  [[site.route]]
  path = "/"
  respond = "hello from edged\n"
`, cert, key))
	host, port, _ := net.SplitHostPort(httpsAddr)
	// -o: seconds to wait for each expected frame (a loaded machine needs
	// more than the default 2).
	cmd := exec.Command(bin, "-h", host, "-p", port, "-t", "-k", "-o", "10")
	out, err := cmd.CombinedOutput()
	m := regexp.MustCompile(`(\d+) tests, (\d+) passed, (\d+) skipped, (\d+) failed`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("h2spec: %v; no summary in its output:\n%s", err, out)
	}
	if string(m[2]) != string(m[1]) || string(m[4]) != "0" {
		t.Fatalf("h2spec: %s\n%s", m[0], out)
	}
	t.Logf("h2spec: %s", m[0])
}
