package cluster

import (
	"context"
	"testing"
	"time"

	"github.com/edgeapp/edgeapp/internal/etcdtest"
)

type purgeLog struct {
	applied chan Purge
	dropped chan string
}

func newPurgeLog() *purgeLog {
	return &purgeLog{applied: make(chan Purge, 100), dropped: make(chan string, 10)}
}

func (l *purgeLog) handlers() PurgeHandlers {
	return PurgeHandlers{
		Apply:   func(p Purge) { l.applied <- p },
		DropAll: func(why string) { l.dropped <- why },
	}
}

func (l *purgeLog) next(t *testing.T) Purge {
	t.Helper()
	select {
	case p := <-l.applied:
		return p
	case why := <-l.dropped:
		t.Fatalf("caches dropped (%s) where a purge was expected", why)
	case <-time.After(60 * time.Second):
		t.Fatal("no purge arrived within 60s")
	}
	return Purge{}
}

func openAt(t *testing.T, endpoints []string, node, dir string) *Cluster {
	t.Helper()
	c, err := Open(Options{Endpoints: endpoints, Node: node, Prefix: "/t/", StateDir: dir}, nil)
	if err != nil {
		t.Fatal(err)
	}
	waitUp(t, c, true)
	return c
}

func TestPurgeFanOutAndCatchUp(t *testing.T) {
	etcd := etcdtest.Start(t, 1)
	ctx := context.Background()
	a := openTest(t, etcd.Endpoints(), "a")
	la := newPurgeLog()
	pa := a.StartPurger(la.handlers())

	bdir := t.TempDir()
	b := openAt(t, etcd.Endpoints(), "b", bdir)
	lb := newPurgeLog()
	b.StartPurger(lb.handlers())
	// b's watch starts at the revision current when it asked; wait until
	// it has asked (its revision file exists) before a publishes.
	waitRev(t, b)

	must(t, pa.Publish(ctx, Purge{URL: "https://example.com/a"}))
	if got := lb.next(t); got.URL != "https://example.com/a" || got.Node != "a" {
		t.Fatalf("b applied %+v", got)
	}
	select {
	case p := <-la.applied:
		t.Fatalf("a applied its own purge again: %+v", p)
	default:
	}

	// b goes away; purges made meanwhile reach it when it comes back.
	b.Close()
	must(t, pa.Publish(ctx, Purge{Prefix: "https://example.com/img/"}))
	must(t, pa.Publish(ctx, Purge{All: true, Cache: "c1"}))
	b = openAt(t, etcd.Endpoints(), "b", bdir)
	lb = newPurgeLog()
	b.StartPurger(lb.handlers())
	if got := lb.next(t); got.Prefix != "https://example.com/img/" {
		t.Fatalf("first purge replayed: %+v", got)
	}
	if got := lb.next(t); !got.All || got.Cache != "c1" {
		t.Fatalf("second purge replayed: %+v", got)
	}

	// b goes away again, and etcd forgets the history it would need: b
	// cannot know what it missed, so it drops its caches.
	b.Close()
	must(t, pa.Publish(ctx, Purge{URL: "https://example.com/lost"}))
	resp, err := a.cli.Put(ctx, "/t/other", "x")
	must(t, err)
	if _, err := a.cli.Compact(ctx, resp.Header.Revision); err != nil {
		t.Fatal(err)
	}
	b = openAt(t, etcd.Endpoints(), "b", bdir)
	defer b.Close()
	lb = newPurgeLog()
	b.StartPurger(lb.handlers())
	select {
	case why := <-lb.dropped:
		t.Logf("dropped: %s", why)
	case p := <-lb.applied:
		t.Fatalf("applied %+v from a compacted history", p)
	case <-time.After(60 * time.Second):
		t.Fatal("b neither dropped its caches nor applied anything after missing compacted purges")
	}
	// And it follows new purges from there on.
	must(t, pa.Publish(ctx, Purge{URL: "https://example.com/after"}))
	if got := lb.next(t); got.URL != "https://example.com/after" {
		t.Fatalf("after the drop: %+v", got)
	}
}

func waitRev(t *testing.T, c *Cluster) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for c.Status().PurgeRevision == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the purge watch did not start within 60s")
		}
		time.Sleep(10 * time.Millisecond) // polling a state with no event to wait on
	}
}
