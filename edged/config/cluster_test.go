package config

import (
	"strings"
	"testing"
)

const clusterBase = `
[server]
http = ["127.0.0.1:8080"]
[[site]]
  [[site.route]]
  path = "/"
  upstream = "app"
[limit.api]
rate = "60r/m"
cluster = true
`

func TestClusterKeys(t *testing.T) {
	good := clusterBase + `
[tls]
storage = "etcd"
[cluster]
etcd = ["http://127.0.0.1:2379", "https://10.0.0.2:2379"]
prefix = "/edged/prod/"
node = "edge1"
lock_ttl = "10s"
[upstream.app]
resolve = ["app.internal:8000"]
resolve_srv = ["_http._tcp.app.internal"]
registry = "app"
`
	c, err := Parse("edged.toml", []byte(good))
	if err != nil {
		t.Fatalf("good cluster config refused: %v", err)
	}
	o := c.ClusterOptions()
	if o.Node != "edge1" || o.Prefix != "/edged/prod/" || o.LockTTL.String() != "10s" || len(o.Endpoints) != 2 {
		t.Fatalf("options %+v", o)
	}
	if !c.Upstreams["app"].Discovers() {
		t.Fatal("an upstream with resolve discovers")
	}

	for _, tc := range []struct{ src, want string }{
		{clusterBase + "[tls]\nstorage = \"etcd\"\n[upstream.app]\nservers = [\"127.0.0.1:9\"]\n", "tls.storage"},
		{clusterBase + "[upstream.app]\nregistry = \"app\"\n", "upstream.app.registry"},
		{clusterBase + "[cluster]\netcd = [\"http://10.0.0.1:2379\"]\n[upstream.app]\nservers = [\"127.0.0.1:9\"]\n", "cluster.etcd[0]"},
		{clusterBase + "[cluster]\netcd = [\"127.0.0.1:2379\"]\n[upstream.app]\nservers = [\"127.0.0.1:9\"]\n", "cluster.etcd[0]"},
		{clusterBase + "[cluster]\netcd = [\"http://127.0.0.1:2379\"]\nlock_ttl = \"1s\"\n[upstream.app]\nservers = [\"127.0.0.1:9\"]\n", "cluster.lock_ttl"},
		{clusterBase + "[cluster]\netcd = [\"http://127.0.0.1:2379\"]\ncert = \"/nonexistent.crt\"\n[upstream.app]\nservers = [\"127.0.0.1:9\"]\n", "cluster.cert"},
		{clusterBase + "[cluster]\netcd = [\"http://127.0.0.1:2379\"]\n[upstream.app]\nresolve = [\"app.internal\"]\n", "upstream.app.resolve[0]"},
		{clusterBase + "[cluster]\netcd = [\"http://127.0.0.1:2379\"]\n[upstream.app]\nresolve_srv = [\"app.internal\"]\n", "upstream.app.resolve_srv[0]"},
		{clusterBase + "[upstream.app]\n", "upstream.app.servers"},
	} {
		_, err := Parse("edged.toml", []byte(tc.src))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("config refused with %v; want an error naming %s", err, tc.want)
		}
	}
}
