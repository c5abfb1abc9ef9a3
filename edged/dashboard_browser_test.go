package main

// The status page in a real browser: Debian's Chromium, headless, driven
// by chromedp over the DevTools protocol.

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// chromiumPath finds Debian's chromium (`make deps` installs it).
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("no chromium on this machine: apt-get install chromium (make deps does) to run the status page's browser test")
	return ""
}

// artifactDir is where the browser test leaves its screenshots:
// $EDGEAPP_ARTIFACTS, or test-artifacts/ at the top of the checkout.
func artifactDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("EDGEAPP_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join("..", "test-artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	abs, _ := filepath.Abs(dir)
	return abs
}

// browser starts a headless Chromium with the flags this machine needs
// (no sandbox as root, no GPU, no network of its own) and a fresh
// profile, and collects what its console says.
type browser struct {
	ctx     context.Context
	mu      sync.Mutex
	console []chromedp.ConsoleMessage
}

func startBrowser(t *testing.T) *browser {
	t.Helper()
	path := chromiumPath(t)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	// The first action starts the browser; its life is ctx's, so it
	// gets no time limit of its own.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting %s: %v", path, err)
	}
	b := &browser{ctx: ctx}
	messages := chromedp.Console(ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			b.mu.Lock()
			b.console = append(b.console, m)
			b.mu.Unlock()
		}
	}()
	return b
}

// errors is what the console said at the level of error or worse.
func (b *browser) errors() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, m := range b.console {
		if m.Type == chromedp.ConsoleError || m.Type == chromedp.ConsoleException {
			out = append(out, fmt.Sprintf("%s %s:%d: %s", m.Type, m.URL, m.Line+1, m.Text))
		}
	}
	return out
}

// do runs actions with a time limit of their own.
func (b *browser) do(t *testing.T, timeout time.Duration, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, timeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		t.Fatalf("in the browser: %v", err)
	}
}

// waitFor polls a JavaScript condition until it is true, and says how long
// it took.
func (b *browser) waitFor(t *testing.T, what, cond string, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	ctx, cancel := context.WithTimeout(b.ctx, timeout)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](cond, chromedp.WithPollingInterval(50*time.Millisecond))); err != nil {
		t.Fatalf("waiting %v for %s: %v", timeout, what, err)
	}
	return time.Since(start)
}

func (b *browser) eval(t *testing.T, js string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[string](js))
	if err != nil {
		t.Fatalf("evaluating %s: %v", js, err)
	}
	return v
}

func (b *browser) screenshot(t *testing.T, name string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	path := filepath.Join(artifactDir(t), name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
	return path
}

func sel(s string) string { return "document.querySelector(" + jsString(s) + ") !== null" }

func jsString(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

// TestDashboardInBrowser loads the page from a running edged with two
// upstream servers and an appd with two workers, checks the rows, kills
// one server and sees it go down on the page without reloading it, and
// checks the console stayed clean. Screenshots (a laptop's width and a
// phone's) are left in test-artifacts/.
func TestDashboardInBrowser(t *testing.T) {
	b := startBrowser(t)
	f := startDashFixture(t)

	b.do(t, 30*time.Second, chromedp.Navigate(f.pageURL))
	rows := map[string]string{
		"upstream server 1 up":       fmt.Sprintf(`tr[data-upstream="web"][data-server="%s"][data-state="up"]`, f.upAddr[0]),
		"upstream server 2 up":       fmt.Sprintf(`tr[data-upstream="web"][data-server="%s"][data-state="up"]`, f.upAddr[1]),
		"appd worker slot 0 ready":   `.app[data-app="shop"] tr[data-slot="0"][data-state="ready"]`,
		"appd worker slot 1 ready":   `.app[data-app="shop"] tr[data-slot="1"][data-state="ready"]`,
		"route /":                    `tr[data-route="127.0.0.1/"]`,
		"route /shop/":               `tr[data-route="127.0.0.1/shop/"]`,
		"the certificate":            `tr[data-cert="secure.test"]`,
		"the cache":                  `tr[data-cache="main"]`,
		"the limit zone":             `tr[data-limit="perip"]`,
		"a drawn sparkline":          `tr[data-route="127.0.0.1/shop/"] svg.spark polyline`,
		"the live indicator":         `#live[data-state="live"]`,
		"the configuration card":     `#summary .card`,
		"appd's generation and pids": `.app[data-app="shop"] tr[data-slot="0"][data-pid]:not([data-pid=""])`,
	}
	for what, css := range rows {
		b.waitFor(t, what, sel(css), 20*time.Second)
	}
	// The route's request rate is on the page (the fixture sent traffic).
	if rate := b.eval(t, `document.querySelector('tr[data-route="127.0.0.1/shop/"] td:nth-child(3)').textContent`); rate == "" || rate == "0" {
		t.Errorf("the /shop/ route's rate reads %q", rate)
	}
	// The page's own state survives what follows only if it is not reloaded.
	b.eval(t, `window.__notReloaded = 'yes'; 'ok'`)

	f.up[1].kill()
	killed := time.Now()
	down := fmt.Sprintf(`tr[data-upstream="web"][data-server="%s"][data-state="down"]`, f.upAddr[1])
	took := b.waitFor(t, "the killed server shown down", sel(down), 10*time.Second)
	t.Logf("the killed upstream server was shown down %v after the kill", time.Since(killed).Round(10*time.Millisecond))
	if took > 3*time.Second {
		t.Errorf("the page took %v to show the killed server down; want a couple of seconds", took)
	}
	if v := b.eval(t, `String(window.__notReloaded)`); v != "yes" {
		t.Errorf("the page was reloaded (marker %q)", v)
	}
	if up := b.eval(t, fmt.Sprintf(`document.querySelector('tr[data-server="%s"]').dataset.state`, f.upAddr[0])); up != "up" {
		t.Errorf("the other server reads %q", up)
	}
	if why := b.eval(t, fmt.Sprintf(`document.querySelector(%s).textContent`, jsString(down))); !strings.Contains(why, "health check") && !strings.Contains(why, "fail") {
		t.Errorf("the down server's row gives no reason: %q", why)
	}
	// Let the sparklines and the summary settle for the picture.
	time.Sleep(1500 * time.Millisecond)
	b.screenshot(t, "dashboard.png")

	// A phone: nothing wider than the screen but the tables' own scroll.
	b.do(t, 30*time.Second, chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2), chromedp.EmulateMobile))
	b.waitFor(t, "the page at a phone's width", `document.documentElement.clientWidth <= 400`, 10*time.Second)
	if w := b.eval(t, `String(document.documentElement.scrollWidth)`); w != "390" {
		t.Errorf("on a phone the page is %s px wide (the screen is 390)", w)
	}
	b.screenshot(t, "dashboard-phone.png")

	if errs := b.errors(); len(errs) > 0 {
		t.Errorf("console errors:\n%s", strings.Join(errs, "\n"))
	}
}
