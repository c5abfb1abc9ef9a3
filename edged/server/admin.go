package server

import (
	"encoding/json"
	"net/http"
	"net/url"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/edgeapp/edgeapp/edged/cluster"
	"github.com/edgeapp/edgeapp/edged/limit"
	"github.com/edgeapp/edgeapp/edged/proxy"
	"github.com/edgeapp/edgeapp/edged/tlsconf"
)

// Status is what GET /status on the admin socket returns.
type Status struct {
	Version      string                          `json:"version"`
	Config       string                          `json:"config"`
	Generation   int                             `json:"generation"`
	LoadedAt     time.Time                       `json:"loaded_at"`
	LastReload   *reloadResult                   `json:"last_reload_error,omitempty"`
	Upstreams    map[string][]proxy.ServerStatus `json:"upstreams"`
	Certificates []tlsconf.CertStatus            `json:"certificates"`
	Caches       []string                        `json:"caches"`
	Limits       []limit.Status                  `json:"limits"`
	Cluster      *cluster.Status                 `json:"cluster,omitempty"`
}

func (s *Server) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.Status())
	})
	mux.Handle("GET "+dashPrefix, s.dashboardHandler(dashPrefix))
	mux.HandleFunc("GET /appd/metrics", s.appdMetrics) // dashboard.go
	mux.HandleFunc("POST /purge", s.handlePurge)
	mux.HandleFunc("POST /reload", func(w http.ResponseWriter, r *http.Request) {
		if err := s.Reload(); err != nil {
			writeJSON(w, http.StatusUnprocessableEntity, map[string]string{"error": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, map[string]int{"generation": s.current.Load().generation})
	})
	return mux
}

// Status reports the running state.
func (s *Server) Status() Status {
	rt := s.current.Load()
	st := Status{
		Version: s.opts.Version, Config: s.opts.ConfigPath, Generation: rt.generation, LoadedAt: rt.loadedAt,
		LastReload: s.lastError.Load(), Upstreams: map[string][]proxy.ServerStatus{},
		Certificates: s.tls.Status(),
	}
	for name, p := range rt.pools {
		st.Upstreams[name] = p.Status()
	}
	if s.cluster != nil {
		cs := s.cluster.Status()
		st.Cluster = &cs
	}
	for _, z := range rt.zoneList() {
		st.Limits = append(st.Limits, z.Status())
	}
	s.cacheMu.Lock()
	for name := range s.caches {
		st.Caches = append(st.Caches, name)
	}
	s.cacheMu.Unlock()
	sort.Strings(st.Caches)
	return st
}

// handlePurge removes cached responses:
//
//	POST /purge?url=https://example.com/a?b=c   one URL, every variant
//	POST /purge?prefix=https://example.com/img/ a path prefix
//	POST /purge?all=1                            everything
//
// in every cache, or in ?cache=NAME only.
func (s *Server) handlePurge(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	pg := cluster.Purge{Cache: q.Get("cache"), URL: q.Get("url"), Prefix: q.Get("prefix"), All: q.Get("all") != ""}
	for key, v := range map[string]string{"url": pg.URL, "prefix": pg.Prefix} {
		if v != "" {
			u, err := url.Parse(v)
			if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
				writeJSON(w, http.StatusBadRequest, map[string]string{"error": key + " must be an absolute http(s) URL"})
				return
			}
		}
	}
	if pg.URL != "" {
		pg.Prefix, pg.All = "", false
	} else if pg.Prefix != "" {
		pg.All = false
	}
	if pg.URL == "" && pg.Prefix == "" && !pg.All {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "say what to purge: url=, prefix= or all=1"})
		return
	}
	total, ok := s.purgeLocal(pg)
	if !ok {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no cache named " + pg.Cache + " is in use"})
		return
	}
	s.log.Info("cache purged", "url", pg.URL, "prefix", pg.Prefix, "all", pg.All, "entries", total)
	out := map[string]any{"purged": total}
	if c := s.publishPurge(pg); c != "" {
		out["cluster"] = c
	}
	writeJSON(w, http.StatusOK, out)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
