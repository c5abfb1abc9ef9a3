package gotool

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// emptyModCache points the go command at a module cache of its own for
// the test, as on a fresh machine, and removes it afterwards (its files
// are read-only, so only `go clean -modcache` can).
func emptyModCache(t *testing.T) {
	dir, err := os.MkdirTemp("", "gotool-modcache-")
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("GOMODCACHE", dir)
	t.Cleanup(func() {
		if out, err := exec.Command("go", "clean", "-modcache").CombinedOutput(); err != nil {
			t.Errorf("go clean -modcache: %v\n%s", err, out)
		}
		os.RemoveAll(dir)
	})
}

// TestModuleDirOnAnEmptyCache: the defect of a fresh machine's first
// make test (issue 9): the directory of a module nobody has downloaded
// yet is found, with its files in it.
func TestModuleDirOnAnEmptyCache(t *testing.T) {
	emptyModCache(t)
	dir, err := ModuleDir("github.com/BurntSushi/toml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "decode.go")); err != nil {
		t.Fatalf("module directory %s: %v", dir, err)
	}
	if filepath.Dir(filepath.Dir(filepath.Dir(dir))) != os.Getenv("GOMODCACHE") {
		t.Errorf("module directory %s is not in the test's module cache %s", dir, os.Getenv("GOMODCACHE"))
	}
}

func TestModuleDirOfAnUnknownModule(t *testing.T) {
	if _, err := ModuleDir("example.com/no/such/module"); err == nil {
		t.Fatal("no error for a module that does not exist")
	}
}

// TestBuildOnAnEmptyCache: a tool pinned in go.mod is built on a machine
// that has never downloaded it or its dependencies.
func TestBuildOnAnEmptyCache(t *testing.T) {
	emptyModCache(t)
	bin, err := Build(t.TempDir(), "github.com/summerwind/h2spec/cmd/h2spec")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "--version").CombinedOutput(); err != nil {
		t.Fatalf("%s --version: %v\n%s", bin, err, out)
	}
}
