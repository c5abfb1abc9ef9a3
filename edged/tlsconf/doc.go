// Package tlsconf gives edged its certificates: ACME certificates managed by
// certmagic (HTTP-01 on the http listener, TLS-ALPN-01 on the https
// listener), on-demand certificates for names not known in advance (only
// behind an "ask" hook, rate limited), certificates from a local CA that
// edged keeps in its storage ("internal"), and certificate files the user
// provides ("manual", re-read on every Apply, i.e. on SIGHUP).
//
// One Manager lives for the whole process. Its TLSConfig is a single
// *tls.Config whose GetCertificate picks the certificate by SNI from the
// routing table that the latest Apply built, so a reload never replaces the
// listener's configuration, only the table behind it.
//
// Issuance and renewal never block Apply: names are handed to certmagic's
// background management, which keeps serving the certificate it has while a
// CA is unreachable or rate limiting, and retries with backoff (1 min, 2 min,
// ... up to 6 h between attempts). Every change of a host's state is logged
// once, with the host and the CA's error, and shown by Status and the
// metrics.
//
// # Sharing one storage between several edged (a cluster)
//
// Several edged may share one Storage directory so that only one of them
// orders a certificate for a name and all of them serve it: certmagic takes
// a lock file in the storage before ordering or renewing, and HTTP-01 and
// TLS-ALPN-01 challenges are written to the storage too, so whichever
// instance the CA reaches can answer them (TestSharedStorage checks both
// with two processes and Pebble). The locks are files created with
// O_EXCL and refreshed while held; that is only as safe as the shared file
// system's create-exclusive and its cache coherence.
//
// Safe: a local directory (one machine, several processes), or a cluster file
// system with coherent metadata and atomic O_EXCL create (CephFS, GlusterFS
// with default settings, GFS2/OCFS2 on shared block storage).
//
// Not safe: NFS (attribute caching delays lock-file visibility between
// clients, so two instances can both believe they hold the lock, and
// stale-lock cleanup can delete a live lock), Amazon EFS and other NFS-based
// services (the same semantics), and object-store mounts (s3fs, gcsfuse)
// which have no atomic exclusive create at all. On those the worst case is
// duplicate orders, which count against the CA's rate limits.
//
// For a real cluster, Options.Backend replaces the directory with a
// certmagic.Storage whose locks are linearizable: edged/cluster keeps
// everything in etcd, with locks on leases (a crashed holder's lock
// expires) and a local read-through copy for when etcd is unreachable
// ([tls] storage = "etcd"). The internal CA's certificates and keys and the
// on-demand issuance budget live in the same Storage, so a cluster has one
// internal CA and one budget; only the internal root's exported copy is
// written to the local directory.
package tlsconf
