package cluster

import (
	"net/netip"
	"testing"
	"time"

	"github.com/edgeapp/edgeapp/edged/limit"
	"github.com/edgeapp/edgeapp/internal/etcdtest"
)

func TestLimitsShareAdmissions(t *testing.T) {
	etcd := etcdtest.Start(t, 1)
	zone := func() *limit.Zone {
		z, err := limit.NewZone(limit.Config{Name: "api", Rate: "1r/m", Burst: 4, NoDelay: true}, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		return z
	}
	a, b := openTest(t, etcd.Endpoints(), "a"), openTest(t, etcd.Endpoints(), "b")
	za, zb := zone(), zone()
	a.Limits().Attach(za)
	b.Limits().Attach(zb)
	k := limit.Key{Addr: netip.MustParseAddr("192.0.2.7")}
	other := limit.Key{Str: "token-1"}

	now := time.Now()
	for i := range 5 {
		if d := za.RateLimiter().Reserve(k, now); !d.OK {
			t.Fatalf("a refused request %d of its burst of 5", i+1)
		}
	}
	if d := za.RateLimiter().Reserve(other, now); !d.OK {
		t.Fatal("a refused another key")
	}
	// b has admitted nothing, but hears of a's five: k is spent there too.
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, spent := zb.Exhausted(k, time.Now()); spent {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("b was not charged with a's admissions within 60s")
		}
		time.Sleep(20 * time.Millisecond) // the charge has no event to wait on from here
	}
	if d := zb.RateLimiter().Reserve(k, time.Now()); d.OK {
		t.Fatal("b admitted a request for a key the cluster had spent")
	}
	if d := zb.RateLimiter().Reserve(other, time.Now()); !d.OK {
		t.Fatal("b refused a key with allowance left (one of five spent)")
	}
}

func TestKeyEncoding(t *testing.T) {
	for _, k := range []limit.Key{{Addr: netip.MustParseAddr("2001:db8::1")}, {Addr: netip.MustParseAddr("10.1.2.3")}, {Str: "a/b c"}} {
		got, ok := limit.DecodeKey(limit.EncodeKey(k))
		if !ok || got != k {
			t.Errorf("%v came back as %v, %v", k, got, ok)
		}
	}
	if _, ok := limit.DecodeKey("x"); ok {
		t.Error("DecodeKey accepted garbage")
	}
}
