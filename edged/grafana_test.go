package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

// grafanaDashboard is the dashboard the packages install.
const grafanaDashboard = "../grafana/edgeapp.json"

// targetLabels are added by Prometheus to every series it scrapes; they
// are in no /metrics output.
var targetLabels = map[string]bool{"job": true, "instance": true}

// exposition is every series name in a /metrics output, with the label
// names its series carry.
type exposition map[string]map[string]bool

var seriesRE = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s`)
var labelRE = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="(?:[^"\\]|\\.)*"`)

func (e exposition) read(t *testing.T, what string, r io.Reader) {
	t.Helper()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	n := 0
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		m := seriesRE.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("%s: unreadable line %q", what, line)
		}
		if e[m[1]] == nil {
			e[m[1]] = map[string]bool{}
		}
		for _, l := range labelRE.FindAllStringSubmatch(m[2], -1) {
			e[m[1]][l[1]] = true
		}
		n++
	}
	if n == 0 {
		t.Fatalf("%s: no series", what)
	}
}

func (e exposition) scrape(t *testing.T, c *http.Client, url string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	e.read(t, url, resp.Body)
}

// promQL is what one query of the dashboard uses.
type promQL struct {
	where, expr string
	legend      string
}

// dashboardQueries walks the dashboard's panels (rows' too) and template
// variables for their queries.
func dashboardQueries(t *testing.T) []promQL {
	t.Helper()
	b, err := os.ReadFile(grafanaDashboard)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Title, UID string
		Panels     []json.RawMessage
		Templating struct {
			List []struct {
				Name, Type string
				Query      json.RawMessage
			}
		}
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", grafanaDashboard, err)
	}
	if d.Title == "" || d.UID == "" {
		t.Fatalf("%s has no title or uid", grafanaDashboard)
	}
	type panel struct {
		Title, Type string
		Targets     []struct{ Expr, LegendFormat string }
		Panels      []json.RawMessage
	}
	var out []promQL
	var walk func([]json.RawMessage)
	walk = func(raw []json.RawMessage) {
		for _, r := range raw {
			var p panel
			if err := json.Unmarshal(r, &p); err != nil {
				t.Fatal(err)
			}
			if p.Type != "row" && len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			for _, tg := range p.Targets {
				out = append(out, promQL{where: "panel " + p.Title, expr: tg.Expr, legend: tg.LegendFormat})
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct{ Query string }
		if json.Unmarshal(v.Query, &q) != nil {
			json.Unmarshal(v.Query, &q.Query)
		}
		out = append(out, promQL{where: "variable $" + v.Name, expr: q.Query})
	}
	return out
}

var (
	metricNameRE  = regexp.MustCompile(`\b((?:edged|appd)_[a-zA-Z0-9_]+)\b`)
	matcherRE     = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*"`)
	selectorRE    = regexp.MustCompile(`\{([^}]*)\}`)
	groupingRE    = regexp.MustCompile(`\b(?:by|without)\s*\(([^)]*)\)`)
	labelValuesRE = regexp.MustCompile(`label_values\([^,]+,\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)`)
	legendRE      = regexp.MustCompile(`\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}`)
)

// labelsOf lists the label names q uses: in matchers, by/without,
// label_values and the legend.
func labelsOf(q promQL) []string {
	seen := map[string]bool{}
	for _, sel := range selectorRE.FindAllStringSubmatch(q.expr, -1) {
		for _, m := range matcherRE.FindAllStringSubmatch(sel[1], -1) {
			seen[m[1]] = true
		}
	}
	for _, g := range groupingRE.FindAllStringSubmatch(q.expr, -1) {
		for _, l := range strings.Split(g[1], ",") {
			if l = strings.TrimSpace(l); l != "" {
				seen[l] = true
			}
		}
	}
	for _, m := range labelValuesRE.FindAllStringSubmatch(q.expr, -1) {
		seen[m[1]] = true
	}
	for _, m := range legendRE.FindAllStringSubmatch(q.legend, -1) {
		seen[m[1]] = true
	}
	out := make([]string, 0, len(seen))
	for l := range seen {
		out = append(out, l)
	}
	sort.Strings(out)
	return out
}

// TestGrafanaDashboardMatchesMetrics: every metric name and label a panel
// or variable of the Grafana dashboard uses is in the real /metrics of a
// running edged (its admin socket's /metrics and /appd/metrics) and appd
// (its control socket's /metrics), after the events that make each
// series appear: traffic, a cache, a limit zone refusing, a failing
// upstream server, a good and a failed reload of each daemon.
func TestGrafanaDashboardMatchesMetrics(t *testing.T) {
	queries := dashboardQueries(t) // a broken file fails before anything starts
	f := startDashFixture(t)

	// An upstream server that refuses connections, for the failure series.
	good, err := os.ReadFile(f.e.config)
	if err != nil {
		t.Fatal(err)
	}
	withGone := strings.Replace(string(good), "[upstream.web]", "[upstream.gone]\nservers = [\"127.0.0.1:1\"]\n\n[upstream.web]", 1)
	withGone = strings.Replace(withGone, "  [[site.route]]\n  path = \"/shop/\"", "  [[site.route]]\n  path = \"/gone/\"\n  upstream = \"gone\"\n  [[site.route]]\n  path = \"/shop/\"", 1)
	f.e.reload(withGone)
	resp, err := http.Get(f.e.httpURL + "/gone/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 502 {
		t.Errorf("a refusing server answered %s", resp.Status)
	}
	f.e.reload("[server]\nbogus = 1\n") // refused: the previous configuration serves on
	// A reload of appd: a new generation replaces the workers.
	f.appd.cmd.Process.Signal(syscall.SIGHUP)
	ctl := unixClient(f.appdCtl)
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		var st struct {
			Generation int `json:"generation"`
			Serving    int `json:"serving_generation"`
		}
		if resp, err := ctl.Get("http://appd/status"); err == nil {
			json.NewDecoder(resp.Body).Decode(&st)
			resp.Body.Close()
		}
		if st.Serving == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("appd's reload did not finish in 60s\n%s", f.appd.out.String())
		}
	}
	// The replaced workers' exits are counted once they are reaped, the
	// certificate's expiry once it is obtained.
	var exp exposition
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		exp = exposition{}
		exp.scrape(t, ctl, "http://appd/metrics")
		exp.scrape(t, f.admin, "http://edged/metrics")
		exp.scrape(t, f.admin, "http://edged/appd/metrics")
		if exp["appd_worker_exits_total"]["kind"] && exp["edged_tls_certificate_expiry_timestamp_seconds"]["host"] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 30s: appd_worker_exits_total %v, edged_tls_certificate_expiry_timestamp_seconds %v",
				exp["appd_worker_exits_total"], exp["edged_tls_certificate_expiry_timestamp_seconds"])
		}
	}
	if !exp["appd_up"]["app"] || !exp["appd_worker_memory_bytes"]["app"] {
		t.Fatalf("edged's /appd/metrics does not label appd's series by app: %v", exp["appd_worker_memory_bytes"])
	}

	names := map[string]bool{}
	for _, q := range queries {
		metrics := metricNameRE.FindAllString(q.expr, -1)
		if len(metrics) == 0 {
			t.Errorf("%s: no edged or appd metric in %q", q.where, q.expr)
			continue
		}
		for _, m := range metrics {
			names[m] = true
			if exp[m] == nil {
				t.Errorf("%s: metric %s is in no /metrics output", q.where, m)
			}
		}
		for _, l := range labelsOf(q) {
			if targetLabels[l] {
				continue
			}
			found := false
			for _, m := range metrics {
				found = found || exp[m][l]
			}
			if !found {
				t.Errorf("%s: label %q is on none of %v in the /metrics outputs", q.where, l, metrics)
			}
		}
	}
	t.Logf("%d queries, %d metric names checked against the real outputs", len(queries), len(names))
	if len(names) < 25 {
		t.Errorf("only %d metric names in the dashboard", len(names))
	}
}
