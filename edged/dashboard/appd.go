package dashboard

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/protobuf/proto"
)

// DefaultAppd is where appd puts its instances' control sockets
// (appd.toml(5): app.control, $RUNTIME_DIRECTORY/NAME.ctl).
var DefaultAppd = []string{"/run/appd/*.ctl"}

// appdTimeout bounds one control socket's answer: a stuck appd shows as
// an error on the page instead of holding it up.
const appdTimeout = 2 * time.Second

// appdStatus is the part of appd's GET /status (appd/supervisor.Status)
// the page shows; the JSON names are appd's.
type appdStatus struct {
	Name       string    `json:"name"`
	PID        int       `json:"pid"`
	Message    string    `json:"message"`
	Generation int       `json:"generation"`
	Serving    int       `json:"serving_generation"`
	Workers    int       `json:"workers"`
	Ready      int       `json:"ready"`
	Reloading  bool      `json:"reloading"`
	Cgroup     string    `json:"cgroup"`
	MemoryMax  int64     `json:"memory_max_bytes"`
	LastReload *struct { //
		At         time.Time `json:"at"`
		Result     string    `json:"result"`
		Generation int       `json:"generation"`
		Detail     string    `json:"detail"`
	} `json:"last_reload"`
	Slots   []appdWorker `json:"slots"`
	Zygotes []appdWorker `json:"zygotes"`
}

type appdWorker struct {
	Slot          int     `json:"slot"`
	PID           int     `json:"pid"`
	Generation    int     `json:"generation"`
	State         string  `json:"state"`
	Uptime        float64 `json:"uptime_seconds"`
	Restarts      int     `json:"restarts"`
	LastExit      string  `json:"last_exit"`
	Recycle       string  `json:"recycle"`
	Status        string  `json:"status"`
	MemoryCurrent int64   `json:"memory_current_bytes"`
	CPU           float64 `json:"cpu_seconds"`
}

// AppdSockets lists the control sockets the patterns match, sorted.
func AppdSockets(patterns []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, p := range patterns {
		matches, _ := filepath.Glob(p) // a bad pattern matches nothing; config checks them
		for _, m := range matches {
			if !seen[m] {
				seen[m] = true
				out = append(out, m)
			}
		}
	}
	sort.Strings(out)
	return out
}

// Apps asks every control socket the patterns match for its status, all
// at once; a socket that does not answer is an App with its Error.
func Apps(ctx context.Context, patterns []string) []App {
	socks := AppdSockets(patterns)
	apps := make([]App, len(socks))
	var wg sync.WaitGroup
	for i, s := range socks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			apps[i] = fetchApp(ctx, s)
		}()
	}
	wg.Wait()
	return apps
}

func fetchApp(ctx context.Context, socket string) App {
	app := App{Name: strings.TrimSuffix(filepath.Base(socket), ".ctl"), Socket: socket}
	ctx, cancel := context.WithTimeout(ctx, appdTimeout)
	defer cancel()
	st, err := getAppd(ctx, socket)
	if err != nil {
		app.Error = Redact(err.Error())
		return app
	}
	if st.Name != "" {
		app.Name = st.Name
	}
	app.PID, app.Message = st.PID, Redact(st.Message)
	app.Generation, app.Serving, app.Target, app.Ready, app.Reloading = st.Generation, st.Serving, st.Workers, st.Ready, st.Reloading
	app.Limited, app.MemoryMax = st.Cgroup != "", st.MemoryMax
	if r := st.LastReload; r != nil {
		app.LastReload = &AppReload{At: r.At, Result: r.Result, Generation: r.Generation, Detail: Redact(r.Detail)}
	}
	app.Workers = make([]Worker, 0, len(st.Slots)+len(st.Zygotes))
	for _, w := range append(st.Slots, st.Zygotes...) {
		app.Workers = append(app.Workers, Worker{
			Slot: w.Slot, PID: w.PID, Generation: w.Generation, State: w.State, Uptime: w.Uptime,
			Memory: w.MemoryCurrent, CPU: w.CPU, Restarts: w.Restarts,
			LastExit: Redact(w.LastExit), Recycle: Redact(w.Recycle), Status: Redact(w.Status),
		})
	}
	return app
}

func getAppd(ctx context.Context, socket string) (*appdStatus, error) {
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	}, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://appd/status", nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return nil, fmt.Errorf("asking appd at %s: %w", socket, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("appd at %s: %s: %s", socket, resp.Status, strings.TrimSpace(string(b)))
	}
	var st appdStatus
	if err := json.NewDecoder(io.LimitReader(resp.Body, 4<<20)).Decode(&st); err != nil {
		return nil, fmt.Errorf("reading appd's status from %s: %w", socket, err)
	}
	return &st, nil
}

// WriteAppdMetrics writes the Prometheus metrics of every appd the
// patterns match, each series labelled app="NAME", and appd_up{app} (1
// when its control socket answered): one scrape target for every
// application edged can see, since Prometheus cannot scrape appd's unix
// control socket itself (edged serves it as GET /appd/metrics on the
// admin socket).
func WriteAppdMetrics(ctx context.Context, patterns []string, w io.Writer) error {
	socks := AppdSockets(patterns)
	type result struct {
		name string
		fams map[string]*dto.MetricFamily
	}
	results := make([]result, len(socks))
	var wg sync.WaitGroup
	for i, s := range socks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i].name = strings.TrimSuffix(filepath.Base(s), ".ctl")
			ctx, cancel := context.WithTimeout(ctx, appdTimeout)
			defer cancel()
			results[i].fams, _ = getAppdMetrics(ctx, s) // nil: appd_up 0
		}()
	}
	wg.Wait()
	merged := map[string]*dto.MetricFamily{}
	up := &dto.MetricFamily{Name: proto.String("appd_up"), Help: proto.String("1 if the appd's control socket answered edged's scrape."), Type: dto.MetricType_GAUGE.Enum()}
	for _, r := range results {
		label := &dto.LabelPair{Name: proto.String("app"), Value: proto.String(r.name)}
		v := 0.0
		if r.fams != nil {
			v = 1
		}
		up.Metric = append(up.Metric, &dto.Metric{Label: []*dto.LabelPair{label}, Gauge: &dto.Gauge{Value: proto.Float64(v)}})
		for name, mf := range r.fams {
			m := merged[name]
			if m == nil {
				m = &dto.MetricFamily{Name: mf.Name, Help: mf.Help, Type: mf.Type}
				merged[name] = m
			}
			for _, s := range mf.Metric {
				s.Label = append([]*dto.LabelPair{label}, s.Label...)
				m.Metric = append(m.Metric, s)
			}
		}
	}
	merged["appd_up"] = up
	names := make([]string, 0, len(merged))
	for n := range merged {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if _, err := expfmt.MetricFamilyToText(w, merged[n]); err != nil {
			return err
		}
	}
	return nil
}

func getAppdMetrics(ctx context.Context, socket string) (map[string]*dto.MetricFamily, error) {
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	}, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://appd/metrics", nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("appd at %s: %s", socket, resp.Status)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	return p.TextToMetricFamilies(io.LimitReader(resp.Body, 16<<20))
}
