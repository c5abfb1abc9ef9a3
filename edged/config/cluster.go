package config

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/edgeapp/edgeapp/edged/cluster"
	"github.com/edgeapp/edgeapp/internal/systemd"
	"github.com/edgeapp/edgeapp/internal/tomlconf"
)

// StorageEtcd is the [tls] storage value that keeps certificates in the
// cluster's etcd.
const StorageEtcd = "etcd"

// Cluster is [cluster]: the etcd cluster several edged nodes share
// certificates, purges, rate limits and registered upstream servers
// through. Empty etcd = a node on its own. The cluster package owns the
// defaults and checks; changes take a restart.
type Cluster struct {
	Etcd              []string          `toml:"etcd"`               // endpoints: "https://10.0.0.1:2379"
	Prefix            string            `toml:"prefix"`             // keys of this cluster; default "/edged/"
	Node              string            `toml:"node"`               // this node's name; default the host name
	Cert              string            `toml:"cert"`               // TLS client certificate for etcd
	Key               string            `toml:"key"`                // its key
	CA                string            `toml:"ca"`                 // roots for etcd's server certificates; default the system's
	Username          string            `toml:"username"`           // etcd authentication, if enabled
	PasswordFile      string            `toml:"password_file"`      // file holding that user's password
	InsecureTransport bool              `toml:"insecure_transport"` // allow http:// endpoints that are not loopback
	LockTTL           tomlconf.Duration `toml:"lock_ttl"`           // certificate locks' lease; default 15s
	DialTimeout       tomlconf.Duration `toml:"dial_timeout"`       // default 5s
	Timeout           tomlconf.Duration `toml:"timeout"`            // each request to etcd; default 5s
	SyncInterval      tomlconf.Duration `toml:"sync_interval"`      // cluster rate limits exchange counts; default 500ms
	PurgeTTL          tomlconf.Duration `toml:"purge_ttl"`          // purges kept for nodes that were away; default 10m
	// LocalDir is this node's own directory: the local copy of the etcd
	// storage, the exported internal root, the last purge applied.
	// Default: [tls] storage when it is a directory, else $STATE_DIRECTORY,
	// else /var/lib/edged.
	LocalDir string `toml:"local_dir"`
}

// Enabled reports whether [cluster] names an etcd cluster.
func (c *Cluster) Enabled() bool { return len(c.Etcd) > 0 }

// ClusterOptions is [cluster] as the cluster package takes it, with
// defaults; stateDir is the node's own directory for local copies.
func (c *Config) ClusterOptions() cluster.Options {
	k := c.Cluster
	return cluster.Options{
		Endpoints: k.Etcd, Prefix: k.Prefix, Node: k.Node,
		CertFile: k.Cert, KeyFile: k.Key, CAFile: k.CA,
		Username: k.Username, PasswordFile: k.PasswordFile, InsecureTransport: k.InsecureTransport,
		LockTTL: k.LockTTL.D(), DialTimeout: k.DialTimeout.D(), OpTimeout: k.Timeout.D(),
		SyncInterval: k.SyncInterval.D(), PurgeTTL: k.PurgeTTL.D(),
		StateDir: c.LocalStateDir(),
	}.WithDefaults()
}

// LocalStateDir is the node's own state directory: [cluster] local_dir,
// else the certificate storage directory, else (storage = "etcd")
// $STATE_DIRECTORY or /var/lib/edged.
func (c *Config) LocalStateDir() string {
	if c.Cluster.LocalDir != "" {
		return c.Cluster.LocalDir
	}
	if c.TLS.Storage == StorageEtcd || c.TLS.Storage == "" {
		return systemd.StateDir("/var/lib/edged")
	}
	return c.TLS.Storage
}

// clusterKeys maps the cluster package's option names onto [cluster] keys.
var clusterKeys = map[string]string{"cert": "cert", "password_file": "password_file", "timeout": "timeout"}

func (c *Config) validateCluster(bad func(string, string, ...any)) {
	k := c.Cluster
	if c.TLS.Storage == StorageEtcd && !k.Enabled() {
		bad("tls.storage", "storage = \"etcd\" needs [cluster] etcd = [endpoints]")
	}
	for name, u := range c.Upstreams {
		if u != nil && u.Registry != "" && !k.Enabled() {
			bad("upstream."+name+".registry", "servers registered in etcd need [cluster] etcd = [endpoints]")
		}
	}
	for name, z := range c.Limits {
		if z != nil && z.Cluster && !k.Enabled() {
			bad("limit."+name+".cluster", "a cluster-wide limit needs [cluster] etcd = [endpoints]")
		}
	}
	if !k.Enabled() {
		return
	}
	if d := k.LocalDir; d != "" && !filepath.IsAbs(d) {
		bad("cluster.local_dir", "%q: want an absolute directory", d)
	}
	err := c.ClusterOptions().Check()
	for _, e := range unjoinErrs(err) {
		if oe, ok := e.(*cluster.OptionError); ok {
			key := oe.Key
			if mapped, ok := clusterKeys[key]; ok {
				key = mapped
			}
			bad("cluster."+key, "%v", oe.Err)
		} else {
			bad("cluster", "%v", e)
		}
	}
}

func unjoinErrs(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// checkDiscovery validates an upstream's discovery keys.
func checkDiscovery(bad func(string, string, ...any), key string, u *Upstream) {
	for i, d := range u.Resolve {
		if _, _, err := splitHostPort(d); err != nil {
			bad(fmt.Sprintf("%s.resolve[%d]", key, i), "%v", err)
		}
	}
	for i, d := range u.ResolveSRV {
		if !strings.HasPrefix(d, "_") || strings.ContainsAny(d, ":/ ") {
			bad(fmt.Sprintf("%s.resolve_srv[%d]", key, i), "%q: want an SRV name such as _http._tcp.app.example.com", d)
		}
	}
	if r := u.Registry; r != "" && (strings.ContainsAny(r, "/ ") || r == "." || r == "..") {
		bad(key+".registry", "%q: want a name without slashes", r)
	}
	for i, r := range u.Resolvers {
		if r == "" || strings.ContainsAny(r, " /") {
			bad(fmt.Sprintf("%s.resolvers[%d]", key, i), "%q: want host or host:port", r)
		}
	}
}

func splitHostPort(s string) (string, string, error) {
	i := strings.LastIndexByte(s, ':')
	if i <= 0 || i == len(s)-1 || strings.HasPrefix(s, "unix:") {
		return "", "", fmt.Errorf("%q: want name:port (the name is resolved to A and AAAA records)", s)
	}
	return strings.Trim(s[:i], "[]"), s[i+1:], nil
}
