// Package units holds the systemd units. Its test checks what the units
// promise that no other test sees before the packages are built: edged's
// sandbox score, and that only root and edged may connect to an app's
// socket (issue 9).
package units

import (
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// directives returns the values of key in a unit file, in order.
func directives(t *testing.T, file, key string) []string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var vals []string
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), key+"="); ok {
			vals = append(vals, v)
		}
	}
	return vals
}

func one(t *testing.T, file, key, want string) {
	t.Helper()
	if got := directives(t, file, key); len(got) != 1 || got[0] != want {
		t.Errorf("%s: %s=%q, want %s=%s", file, key, got, key, want)
	}
}

// TestAppSocketsOnlyForRootAndEdged: the app sockets are 0660 root and
// the group appd-socket, which the packages' sysusers.d file creates and
// edged.service joins; nobody else can reach an app behind edged's back.
func TestAppSocketsOnlyForRootAndEdged(t *testing.T) {
	for _, s := range []string{"appd.socket", "appd@.socket"} {
		one(t, s, "SocketMode", "0660")
		one(t, s, "SocketUser", "root")
		one(t, s, "SocketGroup", "appd-socket")
	}
	if g := directives(t, "edged.service", "SupplementaryGroups"); len(g) != 1 || !strings.Contains(" "+g[0]+" ", " appd-socket ") {
		t.Errorf("edged.service: SupplementaryGroups=%q, want it to name appd-socket", g)
	}
	b, err := os.ReadFile("../packaging/sysusers/appd-socket.conf")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^g\s+appd-socket\s`).Match(b) {
		t.Errorf("packaging/sysusers/appd-socket.conf does not create the group appd-socket:\n%s", b)
	}
	for _, pkg := range []string{"edged", "appd"} {
		y, err := os.ReadFile("../packaging/" + pkg + ".yaml")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(y), "src: packaging/sysusers/appd-socket.conf") {
			t.Errorf("packaging/%s.yaml does not ship packaging/sysusers/appd-socket.conf", pkg)
		}
	}
}

// TestEdgedExposure: systemd-analyze rates edged.service's sandbox below
// 2.0 ("OK"); it was 1.1 when measured.
func TestEdgedExposure(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Skip("no systemd-analyze on this machine: apt-get install systemd (make deps does) to score the units")
	}
	out, err := exec.Command("systemd-analyze", "security", "--offline=true", "--no-pager", "edged.service").CombinedOutput()
	m := regexp.MustCompile(`Overall exposure level for edged.service: ([0-9.]+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("systemd-analyze security --offline=true edged.service: %v\n%s", err, out)
	}
	if score, _ := strconv.ParseFloat(string(m[1]), 64); score >= 2.0 {
		t.Errorf("edged.service exposure %.1f, want below 2.0:\n%s", score, out)
	}
}
