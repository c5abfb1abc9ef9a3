package cluster

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io/fs"
	"reflect"
	"testing"
	"time"

	"github.com/edgeapp/edgeapp/internal/etcdtest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func openTest(t *testing.T, endpoints []string, node string) *Cluster {
	t.Helper()
	c, err := Open(Options{Endpoints: endpoints, Node: node, Prefix: "/t/", LockTTL: 3 * time.Second, StateDir: t.TempDir()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	waitUp(t, c, true)
	return c
}

// waitUp waits (bounded) for the health probe to say want.
func waitUp(t *testing.T, c *Cluster, want bool) {
	t.Helper()
	deadline := time.After(60 * time.Second)
	for c.Up() != want {
		ch := c.upChange()
		if c.Up() == want {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("etcd up = %v after 60s, want %v", c.Up(), want)
		}
	}
}

func TestStorageValues(t *testing.T) {
	etcd := etcdtest.Start(t, 1)
	c := openTest(t, etcd.Endpoints(), "a")
	st := c.Storage()
	ctx := context.Background()

	if _, err := st.Load(ctx, "certificates/x/a.crt"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Load of a missing key: %v, want fs.ErrNotExist", err)
	}
	if st.Exists(ctx, "certificates") {
		t.Fatal("Exists on an empty storage")
	}
	small := []byte("-----BEGIN CERTIFICATE-----\nsmall\n")
	big := make([]byte, 2*ChunkSize+12345)
	rand.Read(big)
	must(t, st.Store(ctx, "certificates/x/a.com/a.com.crt", small))
	must(t, st.Store(ctx, "certificates/x/a.com/a.com.key", big))
	must(t, st.Store(ctx, "certificates/x/b.com/b.com.crt", small))
	must(t, st.Store(ctx, "acme/account.json", small))

	got, err := st.Load(ctx, "certificates/x/a.com/a.com.key")
	must(t, err)
	if !bytes.Equal(got, big) {
		t.Fatalf("chunked value read back with %d bytes, want %d equal", len(got), len(big))
	}
	// Overwriting a chunked value with a small one removes its chunks.
	must(t, st.Store(ctx, "certificates/x/a.com/a.com.key", small))
	cr, err := c.cli.Get(ctx, st.chunkPfx("certificates/x/a.com/a.com.key"), clientv3.WithPrefix())
	must(t, err)
	if len(cr.Kvs) != 0 {
		t.Fatalf("%d chunks left after overwriting", len(cr.Kvs))
	}

	ki, err := st.Stat(ctx, "certificates/x/a.com/a.com.crt")
	must(t, err)
	if !ki.IsTerminal || ki.Size != int64(len(small)) || time.Since(ki.Modified) > time.Minute {
		t.Fatalf("Stat = %+v", ki)
	}
	if ki, err := st.Stat(ctx, "certificates/x"); err != nil || ki.IsTerminal {
		t.Fatalf("Stat of a directory = %+v, %v", ki, err)
	}
	list, err := st.List(ctx, "certificates/x", false)
	must(t, err)
	if want := []string{"certificates/x/a.com", "certificates/x/b.com"}; !reflect.DeepEqual(list, want) {
		t.Fatalf("List = %q, want %q", list, want)
	}
	list, err = st.List(ctx, "certificates", true)
	must(t, err)
	if len(list) != 6 { // x, a.com, b.com and three files
		t.Fatalf("recursive List = %q", list)
	}
	if _, err := st.List(ctx, "nothing", false); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("List of a missing prefix: %v", err)
	}
	// Deleting a directory deletes what is under it, and only that.
	must(t, st.Delete(ctx, "certificates/x/a.com"))
	if st.Exists(ctx, "certificates/x/a.com/a.com.crt") || !st.Exists(ctx, "certificates/x/b.com/b.com.crt") {
		t.Fatal("Delete of a directory removed the wrong keys")
	}
}

func TestStorageLocalCopyWhenEtcdIsDown(t *testing.T) {
	etcd := etcdtest.Start(t, 1)
	c := openTest(t, etcd.Endpoints(), "a")
	st := c.Storage()
	ctx := context.Background()
	must(t, st.Store(ctx, "certificates/x/a.com/a.com.crt", []byte("cert")))

	etcd.Kill(0)
	waitUp(t, c, false)
	got, err := st.Load(ctx, "certificates/x/a.com/a.com.crt")
	if err != nil || string(got) != "cert" {
		t.Fatalf("Load with etcd down = %q, %v; want the local copy", got, err)
	}
	if !st.Exists(ctx, "certificates/x/a.com/a.com.crt") {
		t.Fatal("Exists with etcd down: the local copy has it")
	}
	if err := st.Store(ctx, "certificates/x/b.com/b.com.crt", []byte("b")); err == nil {
		t.Fatal("Store succeeded with etcd down; writes must go to etcd")
	}
	lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := st.Lock(lctx, "issue_cert_b.com"); err == nil {
		t.Fatal("Lock succeeded with etcd down")
	}

	must(t, etcd.Restart(0))
	waitUp(t, c, true)
	must(t, st.Store(ctx, "certificates/x/b.com/b.com.crt", []byte("b")))
}

func TestStorageLocks(t *testing.T) {
	etcd := etcdtest.Start(t, 1)
	a := openTest(t, etcd.Endpoints(), "a").Storage()
	b := openTest(t, etcd.Endpoints(), "b").Storage()
	ctx := context.Background()

	must(t, a.Lock(ctx, "issue_cert_x"))
	got := make(chan error, 1)
	go func() { got <- b.Lock(ctx, "issue_cert_x") }()
	// The same process locking the same name waits too.
	short, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	if err := a.Lock(short, "issue_cert_x"); err == nil {
		t.Fatal("a second Lock in the same process did not wait")
	}
	cancel()
	select {
	case err := <-got:
		t.Fatalf("b took a's lock: %v", err)
	default:
	}
	must(t, a.Unlock(ctx, "issue_cert_x"))
	select {
	case err := <-got:
		must(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("b did not get the lock after a released it")
	}
	must(t, b.Unlock(ctx, "issue_cert_x"))

	// A holder that stops keeping its lease alive (a crashed node) holds
	// the lock for at most the lease.
	must(t, a.Lock(ctx, "issue_cert_y"))
	a.mu.Lock()
	a.lease.cancel()
	a.lease.sess.Orphan()
	a.mu.Unlock()
	start := time.Now()
	lctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	must(t, b.Lock(lctx, "issue_cert_y"))
	if waited := time.Since(start); waited > 60*time.Second {
		t.Fatalf("waited %v for an abandoned lock", waited)
	}
	must(t, b.Unlock(ctx, "issue_cert_y"))
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// A lock outlives an election of etcd: the holder keeps its lease alive
// through it (the client's own keep-alive gives a lease up after one TTL
// without an answer, and an election under load takes longer), so no
// other node is granted the lock while the holder still works.
func TestStorageLockSurvivesElection(t *testing.T) {
	etcd := etcdtest.Start(t, 3)
	a := openTest(t, etcd.Endpoints(), "a").Storage()
	b := openTest(t, etcd.Endpoints(), "b").Storage()
	ctx := context.Background()

	must(t, a.Lock(ctx, "issue_cert_x"))
	leader, err := etcd.Leader(ctx)
	must(t, err)
	etcd.Kill(leader)
	// For several lease TTLs (3s) after the leader died, b keeps asking
	// (a request may fail while etcd elects) and must never be granted.
	for until := time.Now().Add(20 * time.Second); time.Now().Before(until); {
		short, cancel := context.WithDeadline(ctx, until)
		err := b.Lock(short, "issue_cert_x")
		cancel()
		if err == nil {
			t.Fatal("b was granted the lock a holds, after etcd's leader was killed")
		}
	}
	must(t, a.Unlock(ctx, "issue_cert_x"))
	lctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	must(t, b.Lock(lctx, "issue_cert_x"))
	must(t, b.Unlock(ctx, "issue_cert_x"))
}

// A node that counts etcd as unreachable only since a moment (an election,
// or before its first probe answered) reads what its local copy lacks from
// etcd: another node's ACME challenge must not become a 404.
func TestStorageBriefOutageReadsEtcd(t *testing.T) {
	etcd := etcdtest.Start(t, 1)
	a := openTest(t, etcd.Endpoints(), "a")
	b := openTest(t, etcd.Endpoints(), "b")
	ctx := context.Background()
	key := "acme/ca/challenge_tokens/shop.test.json"
	must(t, a.Storage().Store(ctx, key, []byte("token")))

	b.setUp(false, errors.New("two probes failed"), false)
	got, err := b.Storage().Load(ctx, key)
	if err != nil || string(got) != "token" {
		t.Fatalf("Load during a brief outage = %q, %v; want the value in etcd", got, err)
	}
	b.setUp(false, errors.New("two probes failed"), false)
	if !b.Storage().Exists(ctx, key) {
		t.Fatal("Exists during a brief outage: the key is in etcd")
	}
}

// A process holding a lock (certmagic checking whether another node
// already obtained the certificate) is never told "no" on a guess: when
// etcd cannot answer, Exists says yes, and certmagic orders nothing.
func TestStorageExistsUnderLockWhenEtcdCannotTell(t *testing.T) {
	etcd := etcdtest.Start(t, 1)
	c := openTest(t, etcd.Endpoints(), "a")
	st := c.Storage()
	ctx := context.Background()
	key := "certificates/x/c.com/c.com.crt"

	must(t, st.Lock(ctx, "issue_cert_c.com"))
	etcd.Kill(0)
	waitUp(t, c, false)
	start := time.Now()
	if !st.Exists(ctx, key) {
		t.Fatal("Exists under a lock with etcd down answered no, which would order the certificate again")
	}
	t.Logf("Exists under a lock answered after %v", time.Since(start))
	st.Unlock(ctx, "issue_cert_c.com") // fails with etcd down; the lock goes with its lease
	start = time.Now()
	if st.Exists(ctx, key) {
		t.Fatal("Exists without a lock, etcd down and the key in no copy, answered yes")
	}
	t.Logf("Exists without a lock answered after %v", time.Since(start))
}
