package cache

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

func purgeEnv(t *testing.T) (*env, string) {
	e := newEnv(t, Options{}, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=600")
		w.Header().Set("Vary", "Accept-Language")
		w.Write([]byte(r.URL.String()))
	})
	return e, strings.TrimPrefix(e.front.URL, "http://")
}

func TestPurge(t *testing.T) {
	e, host := purgeEnv(t)
	fill := func() {
		for _, p := range []string{"/img/a.png", "/img/b.png?x=1", "/css/s.css"} {
			e.get(p, "Accept-Language: en")
			e.get(p, "Accept-Language: fr")
		}
	}
	fill()
	if e.hits() != 6 {
		t.Fatalf("hits %d", e.hits())
	}
	u, _ := url.Parse("http://" + strings.ToUpper(host) + "/img/b.png?x=1")
	if n := e.cache.PurgeURL(u); n != 2 {
		t.Fatalf("PurgeURL removed %d, want 2 variants", n)
	}
	e.get("/img/b.png?x=1", "Accept-Language: en")
	e.get("/img/a.png", "Accept-Language: en")
	if e.hits() != 7 {
		t.Fatalf("after PurgeURL: hits %d, want 7", e.hits())
	}
	if n := e.cache.PurgePrefix("http", host, "/img/"); n != 3 {
		t.Fatalf("PurgePrefix removed %d, want 3", n)
	}
	e.get("/css/s.css", "Accept-Language: fr")
	if e.hits() != 7 {
		t.Fatal("PurgePrefix removed more than the prefix")
	}
	e.get("/my%20files/x", "Accept-Language: en")
	if n := e.cache.PurgePrefix("http", host, "/my files/"); n != 1 {
		t.Fatalf("PurgePrefix with a decoded path removed %d, want 1", n)
	}
	if n := e.cache.PurgeAll(); n != 2 {
		t.Fatalf("PurgeAll removed %d, want 2", n)
	}
	if b, n := e.cache.mem.usage(); b != 0 || n != 0 {
		t.Fatalf("memory tier after PurgeAll: %d bytes, %d objects", b, n)
	}
}

func TestAdminHandler(t *testing.T) {
	e, host := purgeEnv(t)
	e.get("/a", "Accept-Language: en")
	e.get("/b/c", "Accept-Language: en")
	admin := httptest.NewServer(AdminHandler(func() []*Cache { return []*Cache{e.cache} }))
	defer admin.Close()
	post := func(q string) (int, int) {
		res, err := http.Post(admin.URL+"/purge?"+q, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var out struct{ Purged int }
		json.NewDecoder(res.Body).Decode(&out)
		return res.StatusCode, out.Purged
	}
	if code, n := post("url=" + url.QueryEscape("http://"+host+"/a")); code != 200 || n != 1 {
		t.Fatalf("purge url: %d, %d", code, n)
	}
	if code, n := post("prefix=" + url.QueryEscape("http://"+host+"/b/")); code != 200 || n != 1 {
		t.Fatalf("purge prefix: %d, %d", code, n)
	}
	if code, _ := post("url=relative"); code != 400 {
		t.Fatalf("bad url: %d", code)
	}
	if code, _ := post("all=1&cache=nope"); code != 404 {
		t.Fatalf("unknown cache: %d", code)
	}
	if code, n := post("all=1&cache=default"); code != 200 || n != 0 {
		t.Fatalf("purge all: %d, %d", code, n)
	}
	res, _ := http.Get(admin.URL + "/purge?all=1")
	res.Body.Close()
	if res.StatusCode != 405 {
		t.Fatalf("GET: %d", res.StatusCode)
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	e, _ := purgeEnv(t)
	e.cache.Close()
	e.open(Options{Name: "m"})
	e.cache.Close()
	c, err := Open(Options{Name: "m", Now: e.clock.Now}, m)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	e.handler.Store(c.Handler(e.proxy, HandlerOptions{}))
	e.get("/x")
	e.get("/x")
	e.get("/x")
	got := gather(t, reg)
	if v := got["edged_cache_hits_total{m}"]; v != 2 {
		t.Fatalf("hits %v (%v)", v, got)
	}
	if v := got["edged_cache_misses_total{m}"]; v != 1 {
		t.Fatalf("misses %v", v)
	}
	if v := got["edged_cache_objects{m,memory}"]; v != 1 {
		t.Fatalf("objects %v", v)
	}
	if v := got["edged_cache_bytes{m,memory}"]; v < 100 {
		t.Fatalf("bytes %v", v)
	}
}

// gather flattens a registry into "name{label values}" -> value.
func gather(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, l.GetValue())
			}
			out[mf.GetName()+"{"+strings.Join(ls, ",")+"}"] = value(m)
		}
	}
	return out
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	}
	return 0
}
