package dashboard

import "time"

// Snapshot is what status.json and each event carry: everything the page
// shows, at one moment. Field names are the page's contract (app.js).
type Snapshot struct {
	Time  time.Time `json:"time"`
	Edged *Edged    `json:"edged,omitempty"`
	Apps  []App     `json:"apps"`
}

// Edged is the edge's state.
type Edged struct {
	Version    string    `json:"version"`
	Host       string    `json:"host"`
	PID        int       `json:"pid"`
	Started    time.Time `json:"started"`
	Generation int       `json:"generation"`
	LoadedAt   time.Time `json:"loaded_at"`
	// LastReload is the outcome of the last reload; nil before any.
	LastReload *Reload `json:"last_reload,omitempty"`
	// Connections open now, by listener (http, https, quic).
	Connections map[string]float64 `json:"connections"`
	// ConnectionsRefused by the caps, by reason (max, per_ip), since start.
	ConnectionsRefused map[string]float64 `json:"connections_refused"`
	Sites              []Site             `json:"sites"`
	Upstreams          []Upstream         `json:"upstreams"`
	Certificates       []Certificate      `json:"certificates"`
	Caches             []Cache            `json:"caches"`
	Limits             []Limit            `json:"limits"`
}

// Reload is a reload's outcome.
type Reload struct {
	At    time.Time `json:"at"`
	OK    bool      `json:"ok"`
	Error string    `json:"error,omitempty"`
}

// Site is a [[site]] and its routes.
type Site struct {
	Name   string   `json:"name"`
	Hosts  []string `json:"hosts"`
	TLS    bool     `json:"tls"`
	Routes []Route  `json:"routes"`
}

// Route is a [[site.route]] and its recent traffic.
type Route struct {
	Name    string `json:"name"` // the metrics' route label
	Path    string `json:"path"`
	Handler string `json:"handler"` // "upstream app, cache main", "static", ...
	Stats
}

// Upstream is an [upstream.NAME] pool.
type Upstream struct {
	Name    string   `json:"name"`
	Policy  string   `json:"policy"`
	Servers []Server `json:"servers"`
}

// Server is one upstream server.
type Server struct {
	Addr   string `json:"addr"`
	State  string `json:"state"` // up, down, backup
	Reason string `json:"reason,omitempty"`
	// Since is when the page's source saw the state change (zero: not
	// since it started watching); LastChange says from what and why.
	Since      time.Time `json:"since,omitzero"`
	LastChange string    `json:"last_change,omitempty"`
	Weight     int       `json:"weight"`
	Backup     bool      `json:"backup,omitempty"`
	Active     int64     `json:"active"` // requests in flight
	Fails      int       `json:"fails"`  // failures in the current fail_timeout window
	Requests   uint64    `json:"requests"`
	LastCheck  time.Time `json:"last_check,omitzero"`
}

// Certificate is one host's certificate.
type Certificate struct {
	Host     string    `json:"host"`
	Mode     string    `json:"mode"` // acme, internal, manual
	OnDemand bool      `json:"on_demand,omitempty"`
	Issuer   string    `json:"issuer,omitempty"`
	NotAfter time.Time `json:"not_after,omitzero"`
	// State: pending, obtaining, valid, expired, failed.
	State     string    `json:"state"`
	LastError string    `json:"last_error,omitempty"`
	Since     time.Time `json:"since,omitzero"`
	// Alarm: failing, expired, or closer to expiry than it should be
	// (renewal overdue, or less than AlarmLeft to go); the page shows
	// it red.
	Alarm bool `json:"alarm"`
}

// AlarmLeft: a certificate this close to expiry is shown red even when
// nothing said it failed. Managed certificates renew at a third of their
// lifetime left (30 days of Let's Encrypt's 90, 2 of the internal CA's
// 7), so one that gets here did not renew; renewal_overdue says so
// sooner where the lifetime is long.
const AlarmLeft = 24 * time.Hour

// Cache is a [cache.NAME].
type Cache struct {
	Name        string  `json:"name"`
	Hits        float64 `json:"hits"`
	Misses      float64 `json:"misses"`
	HitRatio    float64 `json:"hit_ratio"` // hits / (hits + misses) since start; 0 without traffic
	MemoryBytes float64 `json:"memory_bytes"`
	MemoryMax   int64   `json:"memory_max"`
	DiskBytes   float64 `json:"disk_bytes"`
	DiskMax     int64   `json:"disk_max"`
	Objects     float64 `json:"objects"`
	Evictions   float64 `json:"evictions"`
}

// Limit is a [limit.NAME] zone.
type Limit struct {
	Name       string     `json:"name"`
	Key        string     `json:"key"`
	Rate       string     `json:"rate,omitempty"`
	Burst      int        `json:"burst"`
	Concurrent int        `json:"concurrent,omitempty"`
	DryRun     bool       `json:"dry_run,omitempty"`
	Keys       int        `json:"keys"`
	MaxKeys    int        `json:"max_keys"`
	Refused    float64    `json:"refused"` // requests refused since start
	Busiest    []LimitKey `json:"busiest,omitempty"`
}

// LimitKey is a key being held back (KeyLabel hides header and cookie
// values).
type LimitKey struct {
	Key    string  `json:"key"`
	Tokens float64 `json:"tokens"`
	Active int     `json:"active"`
}

// App is one appd, as its control socket reports it.
type App struct {
	Name    string `json:"name"`
	Socket  string `json:"socket"`
	Error   string `json:"error,omitempty"` // the control socket did not answer
	PID     int    `json:"pid,omitempty"`
	Message string `json:"message,omitempty"` // its STATUS= line
	// Generation is the newest; Serving the last one that fully served.
	Generation int        `json:"generation"`
	Serving    int        `json:"serving_generation"`
	Target     int        `json:"workers"`
	Ready      int        `json:"ready"`
	Reloading  bool       `json:"reloading,omitempty"`
	Limited    bool       `json:"limited"` // workers are in cgroups with limits
	MemoryMax  int64      `json:"memory_max_bytes,omitempty"`
	LastReload *AppReload `json:"last_reload,omitempty"`
	Workers    []Worker   `json:"workers_table"`
}

// AppReload is appd's last reload: started, done, rolled_back, invalid.
type AppReload struct {
	At         time.Time `json:"at"`
	Result     string    `json:"result"`
	Generation int       `json:"generation,omitempty"`
	Detail     string    `json:"detail,omitempty"`
}

// Worker is one row of appd's worker table.
type Worker struct {
	Slot       int     `json:"slot"` // -1: a zygote
	PID        int     `json:"pid,omitempty"`
	Generation int     `json:"generation,omitempty"`
	State      string  `json:"state"`
	Uptime     float64 `json:"uptime_seconds"`
	Memory     int64   `json:"memory_bytes"`
	CPU        float64 `json:"cpu_seconds"`
	Restarts   int     `json:"restarts"`
	LastExit   string  `json:"last_exit,omitempty"`
	Recycle    string  `json:"recycle,omitempty"`
	Status     string  `json:"status,omitempty"`
}
