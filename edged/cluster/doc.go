// Package cluster lets several edged nodes behind DNS or a layer-4
// balancer act as one, through an etcd cluster beside them (never a store
// of edged's own): one certificate storage (Storage, with locks on etcd
// leases), purges that reach every node, rate limits that hold for the
// cluster, and upstream servers that app nodes register under a lease.
//
// A node that cannot reach etcd keeps serving with what it has: the
// certificates in memory and in a local read-through copy, its cache, the
// upstream servers it last knew. It logs that once, shows it in
// edged_cluster_etcd_up and `edged status`, and picks up again by itself
// when etcd answers. docs/cluster.md is the operator's side of this.
package cluster
