package reqinfo

import (
	"net/netip"
	"testing"
)

func TestSetClient(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	for _, c := range []struct {
		remote  string
		xff     []string
		peer    string
		trusted bool
		client  string
	}{
		{"192.0.2.1:5000", []string{"203.0.113.9"}, "192.0.2.1", false, "192.0.2.1"}, // untrusted: XFF ignored
		{"10.1.1.1:5000", nil, "10.1.1.1", true, "10.1.1.1"},
		{"10.1.1.1:5000", []string{"203.0.113.9"}, "10.1.1.1", true, "203.0.113.9"},
		{"10.1.1.1:5000", []string{"198.51.100.7, 203.0.113.9, 10.2.2.2"}, "10.1.1.1", true, "203.0.113.9"},
		{"10.1.1.1:5000", []string{"198.51.100.7", "203.0.113.9,10.2.2.2"}, "10.1.1.1", true, "203.0.113.9"},
		{"10.1.1.1:5000", []string{"10.3.3.3, 10.2.2.2"}, "10.1.1.1", true, "10.3.3.3"}, // all trusted: left-most
		{"10.1.1.1:5000", []string{"unknown"}, "10.1.1.1", true, ""},
		{"[::1]:5000", []string{"2001:db8::1"}, "::1", true, "2001:db8::1"},
		{"[::ffff:10.1.1.1]:5000", []string{"::ffff:203.0.113.9"}, "10.1.1.1", true, "203.0.113.9"},
		{"@", nil, "", false, ""}, // unix socket
	} {
		var i Info
		i.SetClient(c.remote, c.xff, trusted)
		str := func(a netip.Addr) string {
			if !a.IsValid() {
				return ""
			}
			return a.String()
		}
		if str(i.Peer) != c.peer || i.Trusted != c.trusted || str(i.Client) != c.client {
			t.Errorf("%s %q: peer %v trusted %v client %v; want %s %v %s", c.remote, c.xff, i.Peer, i.Trusted, i.Client, c.peer, c.trusted, c.client)
		}
	}
}

func TestSetClientAllocatesNothing(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	xff := []string{"198.51.100.7, 203.0.113.9"}
	var i Info
	if n := testing.AllocsPerRun(100, func() { i.SetClient("10.1.1.1:5000", xff, trusted) }); n != 0 {
		t.Fatalf("%v allocations", n)
	}
}
