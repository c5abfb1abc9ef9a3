// Package man holds the manual pages. Its test keeps them, the shipped
// configuration and the demo's true to the code, so that drift fails
// `make test` (and CI) rather than only packaging/check.sh, which needs
// the packaging tools and runs late.
package man

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// configKeys returns every TOML key named in the struct tags of the
// non-test Go files of dir.
func configKeys(t *testing.T, dir string) []string {
	t.Helper()
	fset := token.NewFileSet()
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(fset, f, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(file, func(n ast.Node) bool {
			field, ok := n.(*ast.Field)
			if !ok || field.Tag == nil {
				return true
			}
			tag, err := strconv.Unquote(field.Tag.Value)
			if err != nil {
				t.Fatalf("%s: tag %s: %v", fset.Position(field.Pos()), field.Tag.Value, err)
			}
			name, _, _ := strings.Cut(reflect.StructTag(tag).Get("toml"), ",")
			if name != "" && name != "-" {
				seen[name] = true
			}
			return true
		})
	}
	var keys []string
	for k := range seen {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if len(keys) == 0 {
		t.Fatalf("no toml keys found in %s", dir)
	}
	return keys
}

func readPage(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestConfigPagesNameEveryKey: every key of edged's and appd's
// configuration schema appears in its page as `.Cm KEY` (or as the
// [section] / [[array]] it is), as packaging/check.sh once checked alone.
func TestConfigPagesNameEveryKey(t *testing.T) {
	for _, prog := range []string{"edged", "appd"} {
		page := readPage(t, prog+".toml.5")
		for _, k := range configKeys(t, filepath.Join("..", prog, "config")) {
			q := regexp.QuoteMeta(k)
			re := regexp.MustCompile(`(?m)Cm ` + q + `( |$)|\[\[?([a-z_]+\.)?` + q + `(\.|\]| NAME\])`)
			if !re.MatchString(page) {
				t.Errorf("%s.toml(5) does not document key %s (a key of %s/config): add it as .It Cm %s", prog, k, prog, k)
			}
		}
	}
}

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// binaries builds edged, appd and the demo's worker once (as the packages do, without cgo)
// and returns the directory that holds them.
func binaries(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "man-test-")
		if buildErr != nil {
			return
		}
		// demoapp: the demo's worker, which demo/appd.toml names.
		for prog, pkg := range map[string]string{"edged": "../edged", "appd": "../appd", "demoapp": "../demo/app"} {
			cmd := exec.Command("go", "build", "-o", filepath.Join(binDir, prog), pkg)
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if out, err := cmd.CombinedOutput(); err != nil {
				buildErr = &buildError{prog, err, out}
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

type buildError struct {
	prog string
	err  error
	out  []byte
}

func (e *buildError) Error() string {
	return "go build " + e.prog + ": " + e.err.Error() + "\n" + string(e.out)
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

var flagLine = regexp.MustCompile(`(?m)^  -([a-z][a-z0-9-]*)`)

// TestCommandPagesNameEveryFlag: every flag `PROG [COMMAND] -h` lists
// appears in PROG(8) as .Fl NAME.
func TestCommandPagesNameEveryFlag(t *testing.T) {
	bin := binaries(t)
	for _, cmd := range [][]string{
		{"edged"}, {"edged", "status"}, {"edged", "purge"}, {"edged", "register"}, {"edged", "dashboard"},
		{"appd"}, {"appd", "status"},
	} {
		prog := cmd[0]
		args := append(cmd[1:len(cmd):len(cmd)], "-h")
		out, _ := exec.Command(filepath.Join(bin, prog), args...).CombinedOutput() // -h exits 0 or 2
		flags := flagLine.FindAllStringSubmatch(string(out), -1)
		if len(flags) == 0 {
			t.Errorf("%s -h lists no flags:\n%s", strings.Join(cmd, " "), out)
			continue
		}
		page := readPage(t, prog+".8")
		for _, f := range flags {
			if !regexp.MustCompile(`(?m)Fl ` + regexp.QuoteMeta(f[1]) + `( |$)`).MatchString(page) {
				t.Errorf("%s(8) does not document -%s (from %s -h)", prog, f[1], strings.Join(cmd, " "))
			}
		}
	}
}

// TestShippedConfigurationsCheck: the conffiles the packages install
// (etc/) and the demo's (make demo) pass `edged -t` and `appd -t`.
func TestShippedConfigurationsCheck(t *testing.T) {
	bin := binaries(t)
	top, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	run := filepath.Join(dir, "run")
	os.MkdirAll(run, 0o755)
	// Place-holders: the welcome page exists once the package is
	// installed; the example's user is the administrator's to create; the
	// demo's paths are filled in by demo/run.sh.
	user := ""
	if os.Geteuid() == 0 {
		user = `user = "root"`
	}
	fix := strings.NewReplacer(
		"/usr/share/edged/welcome", filepath.Join(top, "packaging/welcome"),
		`user = "mysite"`, `user = "nobody"`,
		"@RUN@", run, "@BIN@", bin, "@DEMO@", filepath.Join(top, "demo"), "@USER@", user,
	)
	check := func(prog, src string) {
		t.Helper()
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(top, src)
		dst := filepath.Join(dir, strings.ReplaceAll(rel, "/", "_"))
		if err := os.WriteFile(dst, []byte(fix.Replace(string(b))), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(filepath.Join(bin, prog), "-t", "-config", dst)
		// appd-python is looked up in PATH, where the package puts it.
		cmd.Env = append(os.Environ(), "PATH="+filepath.Join(top, "appd/python")+":"+os.Getenv("PATH"))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("%s -t rejects %s: %v\n%s", prog, rel, err, out)
		}
	}
	check("edged", filepath.Join(top, "etc/edged/edged.toml"))
	check("edged", filepath.Join(top, "demo/edged.toml"))
	examples, _ := filepath.Glob(filepath.Join(top, "etc/appd/*.toml"))
	if len(examples) == 0 {
		t.Fatal("no etc/appd/*.toml")
	}
	for _, f := range examples {
		check("appd", f)
	}
	check("appd", filepath.Join(top, "demo/appd.toml"))
}

// TestPagesRenderWithoutWarnings: mandoc -Tlint finds nothing to warn
// about in any page.
func TestPagesRenderWithoutWarnings(t *testing.T) {
	if _, err := exec.LookPath("mandoc"); err != nil {
		t.Skip("no mandoc on this machine: apt-get install mandoc (make deps does) to lint the man pages")
	}
	pages, _ := filepath.Glob("*.[58]")
	if len(pages) < 4 {
		t.Fatalf("only %d man pages: %v", len(pages), pages)
	}
	for _, p := range pages {
		out, err := exec.Command("mandoc", "-Tlint", "-W", "warning", p).CombinedOutput()
		if err != nil || len(out) > 0 {
			t.Errorf("mandoc -Tlint -W warning %s: %v\n%s", p, err, out)
		}
	}
}
