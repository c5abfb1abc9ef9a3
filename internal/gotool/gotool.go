// Package gotool runs the go command for tests that need a module's files
// (Pebble's test certificates) or a tool pinned in go.mod (Pebble, h2spec).
// It is the one place that must work on a fresh machine, whose module cache
// is empty: `go list -m -f {{.Dir}}` prints an empty Dir for a module not
// downloaded yet, so directories come from `go mod download -json`, which
// fetches the module first. `make test-modcache` runs the tests that use it
// with an empty GOMODCACHE.
package gotool

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
)

// ModuleDir returns the directory of module (a module of the build list,
// at the version go.mod selects) in the module cache, downloading it first
// if needed.
func ModuleDir(module string) (string, error) {
	cmd := exec.Command("go", "mod", "download", "-json", module)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var m struct{ Dir, Error string }
	if jerr := json.Unmarshal(out, &m); jerr == nil && m.Error != "" {
		return "", fmt.Errorf("go mod download %s: %s", module, m.Error)
	}
	if err != nil {
		return "", fmt.Errorf("go mod download %s: %w\n%s", module, err, stderr.String())
	}
	if m.Dir == "" {
		return "", fmt.Errorf("go mod download %s printed no Dir: %s", module, out)
	}
	if _, err := os.Stat(m.Dir); err != nil {
		return "", fmt.Errorf("module %s: %w", module, err)
	}
	return m.Dir, nil
}

// Build builds the command pkg (a package path of the build list, such as
// a tool pinned in go.mod) into dir and returns the executable's path.
func Build(dir, pkg string) (string, error) {
	bin := filepath.Join(dir, path.Base(pkg))
	if out, err := exec.Command("go", "build", "-o", bin, pkg).CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %w\n%s", pkg, err, out)
	}
	return bin, nil
}
