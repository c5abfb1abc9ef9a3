package config

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/edgeapp/edgeapp/edged/dashboard"
)

// Dashboard is [dashboard]: what the status page shows beyond edged
// itself. The page is served on the admin socket (/dashboard/), by
// `edged dashboard` and by routes with status_page = true.
type Dashboard struct {
	// Appd lists glob patterns of appd control sockets whose workers the
	// page shows. Default ["/run/appd/*.ctl"]; [] shows none.
	Appd []string `toml:"appd"`
}

func (c *Config) dashboardDefaults() {
	if !c.Doc.IsDefined("dashboard", "appd") {
		c.Dashboard.Appd = append([]string(nil), dashboard.DefaultAppd...)
	}
}

func (c *Config) validateDashboard(bad func(string, string, ...any)) {
	for i, p := range c.Dashboard.Appd {
		if !filepath.IsAbs(p) {
			bad(fmt.Sprintf("dashboard.appd[%d]", i), "%q: want an absolute path (a glob such as /run/appd/*.ctl)", p)
		} else if _, err := filepath.Match(p, ""); err != nil {
			bad(fmt.Sprintf("dashboard.appd[%d]", i), "%q: %v", p, err)
		}
	}
}

// validateStatusPage refuses a status page that anybody could read: the
// route (or its site) must keep strangers out with an allow list that
// does not allow everyone, or with basic or forward authentication. With
// satisfy = "any" the allow list lets its clients in without
// authentication, so it must be a real restriction itself.
func (c *Config) validateStatusPage(bad func(string, string, ...any), key string, site Shield, r Route) {
	if !r.StatusPage {
		return
	}
	if r.Exact || !strings.HasSuffix(r.Path, "/") {
		bad(key+".path", "%q: a status page is a prefix route ending in / (its page, status.json and events live under it)", r.Path)
	}
	allow, deny := site.Allow, site.Deny
	if r.Allow != nil || r.Deny != nil {
		allow, deny = r.Allow, r.Deny
	}
	_ = deny // a deny list alone lets everybody else in: it protects nothing
	restricted := len(allow) > 0
	for _, a := range allow {
		if a == "all" || a == "0.0.0.0/0" || a == "::/0" {
			restricted = false
		}
	}
	authed := site.BasicAuth != nil || site.ForwardAuth != nil
	if r.BasicAuth != nil || r.ForwardAuth != nil {
		authed = true
	}
	if r.Auth != nil && !*r.Auth {
		authed = false
	}
	satisfy := site.Satisfy
	if r.Satisfy != "" {
		satisfy = r.Satisfy
	}
	protected := restricted || authed
	if satisfy == "any" && len(allow)+len(deny) > 0 && authed {
		protected = restricted
	}
	if !protected {
		bad(key+".status_page", "the status page would be open to anyone: put it behind allow = [your networks] or basic_auth (on the route or its site), or use `edged dashboard` through an SSH tunnel")
	}
}
