package access

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"

	"github.com/edgeapp/edgeapp/edged/reqinfo"
)

func TestMostSpecificWins(t *testing.T) {
	for _, c := range []struct {
		allow, deny []string
		addr        string
		want        bool
	}{
		{nil, nil, "192.0.2.1", true},
		{[]string{"10.0.0.0/8"}, nil, "10.1.2.3", true},
		{[]string{"10.0.0.0/8"}, nil, "192.0.2.1", false},
		{nil, []string{"10.0.0.0/8"}, "10.1.2.3", false},
		{nil, []string{"10.0.0.0/8"}, "192.0.2.1", true},
		// An exception inside a denied range, and a hole in an allowed one.
		{[]string{"10.1.2.3"}, []string{"10.0.0.0/8"}, "10.1.2.3", true},
		{[]string{"10.1.2.3"}, []string{"10.0.0.0/8"}, "10.1.2.4", false},
		{[]string{"10.0.0.0/8"}, []string{"10.6.0.0/16"}, "10.6.1.1", false},
		{[]string{"10.0.0.0/8"}, []string{"10.6.0.0/16"}, "10.7.1.1", true},
		// Both lists name the same prefix: deny.
		{[]string{"10.0.0.0/8"}, []string{"10.0.0.0/8"}, "10.1.1.1", false},
		// nginx's "allow x; deny all;".
		{[]string{"192.0.2.0/24"}, []string{"all"}, "192.0.2.9", true},
		{[]string{"192.0.2.0/24"}, []string{"all"}, "2001:db8::1", false},
		{[]string{"2001:db8::/32"}, nil, "2001:db8:5::1", true},
		// IPv4-mapped IPv6 is the IPv4 address.
		{[]string{"192.0.2.0/24"}, nil, "::ffff:192.0.2.7", true},
		{nil, []string{"192.0.2.0/24"}, "::ffff:192.0.2.7", false},
	} {
		l, err := New(c.allow, c.deny)
		if err != nil {
			t.Fatal(err)
		}
		if got := l.Allowed(netip.MustParseAddr(c.addr)); got != c.want {
			t.Errorf("allow %v deny %v: %s allowed = %v, want %v", c.allow, c.deny, c.addr, got, c.want)
		}
	}
	l, _ := New([]string{"10.0.0.0/8"}, nil)
	if l.Allowed(netip.Addr{}) {
		t.Error("an unknown address passed an allow list")
	}
	if _, err := New([]string{"10.0.0.0/33"}, nil); err == nil {
		t.Error("bad CIDR accepted")
	}
}

func TestHandlerUsesClientAfterTrustedProxies(t *testing.T) {
	l, _ := New([]string{"203.0.113.0/24"}, nil)
	h := Handler(l, nil, "s", "r", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("in")) }))
	serve := func(client string) int {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = "127.0.0.1:9" // the trusted proxy
		info := &reqinfo.Info{Peer: netip.MustParseAddr("127.0.0.1"), Client: netip.MustParseAddr(client), Trusted: true}
		r = r.WithContext(reqinfo.NewContext(r.Context(), info))
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w.Code
	}
	if serve("203.0.113.5") != 200 || serve("198.51.100.5") != 403 {
		t.Fatal("the handler does not decide on the client address")
	}
}

func BenchmarkAllowed(b *testing.B) {
	var allow []string
	for i := range 1000 {
		allow = append(allow, netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}).String()+"/24")
	}
	l, _ := New(allow, []string{"10.0.0.0/8", "192.168.0.0/16", "2001:db8::/32"})
	a := netip.MustParseAddr("10.3.5.7")
	b.ReportAllocs()
	for b.Loop() {
		l.Allowed(a)
	}
}
