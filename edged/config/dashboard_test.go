package config

import (
	"strings"
	"testing"
)

// TestStatusPageNeedsProtection: a status_page route is refused unless
// an allow list that does not allow everyone, or authentication, keeps
// strangers out, on the route or its site.
func TestStatusPageNeedsProtection(t *testing.T) {
	const hash = `"$2y$10$abcdefghijklmnopqrstuuJ8Xb0P5wqZQm4gS1iYx4hY8mM3sVvG2"`
	const refused = "the status page would be open to anyone"
	for _, c := range []struct {
		name, site, route, want string
	}{
		{"nothing", "", "", refused},
		{"allow all", "", `allow = ["all"]`, refused},
		{"allow 0/0", "", `allow = ["0.0.0.0/0", "10.0.0.0/8"]`, refused},
		{"deny only", "", `deny = ["192.0.2.1"]`, refused},
		{"auth off on the route", "basic_auth = { users = { ops = " + hash + " } }", "auth = false", refused},
		{"satisfy any with an open list", "", "satisfy = \"any\"\n  allow = [\"all\"]\n  basic_auth = { users = { ops = " + hash + " } }", refused},
		{"allow list", "", `allow = ["127.0.0.1", "10.0.0.0/8"]`, ""},
		{"site allow list", `allow = ["192.0.2.0/24"]`, "", ""},
		{"basic auth", "", "basic_auth = { users = { ops = " + hash + " } }", ""},
		{"site basic auth", "basic_auth = { users = { ops = " + hash + " } }", "", ""},
		{"forward auth", "", `forward_auth = { url = "http://127.0.0.1:9/auth" }`, ""},
		{"satisfy any with a real list", "", "satisfy = \"any\"\n  allow = [\"10.0.0.0/8\"]\n  basic_auth = { users = { ops = " + hash + " } }", ""},
		{"route list replaces an open site list", `allow = ["all"]`, `allow = ["10.0.0.0/8"]`, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			src := "[[site]]\nhosts = [\"a.example\"]\ntls = \"off\"\n" + c.site + "\n  [[site.route]]\n  path = \"/_status/\"\n  status_page = true\n  " + c.route + "\n"
			_, err := Parse("edged.toml", []byte(src))
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case c.want != "" && err == nil:
				t.Fatal("accepted")
			case c.want != "" && !strings.Contains(err.Error(), "edged.toml:7: site[0].route[0].status_page: "+c.want):
				t.Fatalf("error %q does not say %q at the route's status_page", err, c.want)
			}
		})
	}
}

func TestStatusPageRouteShape(t *testing.T) {
	for _, c := range []struct{ route, want string }{
		{"path = \"/status\"\n  exact = true", "site[0].route[0].path: \"/status\": a status page is a prefix route ending in /"},
		{"path = \"/status\"", "a status page is a prefix route ending in /"},
		{"path = \"/s/\"\n  upstream = \"app\"", "route has several handlers (status_page, upstream)"},
	} {
		src := "[[site]]\nhosts = [\"a.example\"]\ntls = \"off\"\nallow = [\"127.0.0.1\"]\n  [[site.route]]\n  status_page = true\n  " + c.route + "\n[upstream.app]\nservers = [\"127.0.0.1:9\"]\n"
		_, err := Parse("edged.toml", []byte(src))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want %q", c.route, err, c.want)
		}
	}
}

func TestDashboardAppd(t *testing.T) {
	site := "[[site]]\nhosts = [\"a.example\"]\ntls = \"off\"\n  [[site.route]]\n  path = \"/\"\n  respond = \"x\"\n"
	c, err := Parse("edged.toml", []byte(site))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Dashboard.Appd) != 1 || c.Dashboard.Appd[0] != "/run/appd/*.ctl" {
		t.Errorf("default dashboard.appd = %q", c.Dashboard.Appd)
	}
	c, err = Parse("edged.toml", []byte("[dashboard]\nappd = []\n"+site))
	if err != nil || len(c.Dashboard.Appd) != 0 {
		t.Errorf("appd = []: %v %q", err, c.Dashboard.Appd)
	}
	_, err = Parse("edged.toml", []byte("[dashboard]\nappd = [\"run/*.ctl\", \"/run/[x.ctl\"]\n"+site))
	for _, want := range []string{"edged.toml:2: dashboard.appd[0]: \"run/*.ctl\": want an absolute path", "dashboard.appd[1]: \"/run/[x.ctl\": syntax error in pattern"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("got %v, want %q", err, want)
		}
	}
}
