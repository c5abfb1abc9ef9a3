package config

import (
	"fmt"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/edgeapp/edgeapp/edged/limit"
	"github.com/edgeapp/edgeapp/internal/tomlconf"
)

// Limit is a [limit.NAME] zone: a rate and/or a concurrency cap per client
// key (nginx limit_req_zone + limit_req, limit_conn_zone + limit_conn).
// The limit package owns the defaults and checks.
type Limit struct {
	Key        string `toml:"key"`         // client_ip (default), header:NAME, cookie:NAME
	Rate       string `toml:"rate"`        // "10r/s", "30r/m"
	Burst      int    `toml:"burst"`       // requests over the rate that are queued (or served, with nodelay)
	Delay      int    `toml:"delay"`       // of the burst, served without waiting (nginx delay=)
	NoDelay    bool   `toml:"nodelay"`     // the whole burst is served without waiting
	Concurrent int    `toml:"concurrent"`  // requests in flight per key (limit_conn)
	MaxKeys    int    `toml:"max_keys"`    // keys remembered; default 100000
	Status     int    `toml:"status"`      // default 429 (nginx limit_req_status)
	IPv6Prefix int    `toml:"ipv6_prefix"` // IPv6 clients grouped by; default 64
	DryRun     bool   `toml:"dry_run"`     // count and log, refuse nothing (limit_req_dry_run)
	Cluster    bool   `toml:"cluster"`     // the rate holds for the whole cluster ([cluster]), approximately
}

// LimitConfig is z as the limit package takes it.
func (z *Limit) LimitConfig(name string) limit.Config {
	return limit.Config{
		Name: name, Key: z.Key, Rate: z.Rate, Burst: z.Burst, Delay: z.Delay, NoDelay: z.NoDelay,
		Concurrent: z.Concurrent, MaxKeys: z.MaxKeys, Status: z.Status, IPv6Prefix: z.IPv6Prefix, DryRun: z.DryRun,
	}.WithDefaults()
}

// Shield is what a site or a route may set to hold clients back. A
// route's setting replaces its site's, except error_pages, which add to
// the site's per status; unset keys inherit.
type Shield struct {
	Limit           []string          `toml:"limit"`            // [limit.NAME] zones applied, all of them
	Allow           []string          `toml:"allow"`            // client CIDRs allowed (nginx allow)
	Deny            []string          `toml:"deny"`             // client CIDRs denied (nginx deny)
	BasicAuth       *BasicAuth        `toml:"basic_auth"`       // nginx auth_basic
	ForwardAuth     *ForwardAuth      `toml:"forward_auth"`     // nginx auth_request, Caddy forward_auth
	Auth            *bool             `toml:"auth"`             // route only: false serves it without the site's auth
	Satisfy         string            `toml:"satisfy"`          // "all" (default): allow/deny and auth; "any": either (nginx satisfy)
	ErrorPages      map[string]string `toml:"error_pages"`      // "404" or "5xx" = file (nginx error_page)
	InterceptErrors *bool             `toml:"intercept_errors"` // error pages replace upstream errors too (nginx proxy_intercept_errors)
	Maintenance     *Maintenance      `toml:"maintenance"`
}

// BasicAuth checks a user name and password against bcrypt hashes.
type BasicAuth struct {
	Realm     string            `toml:"realm"`      // default "restricted"
	Users     map[string]string `toml:"users"`      // name = bcrypt hash
	Htpasswd  string            `toml:"htpasswd"`   // file of name:hash lines (htpasswd -B)
	FailRate  string            `toml:"fail_rate"`  // failed attempts allowed per client; default "10r/m"
	FailBurst int               `toml:"fail_burst"` // default 10
}

// ForwardAuth asks another service whether a request may pass.
type ForwardAuth struct {
	URL         string            `toml:"url"`          // http(s)://host/path asked GET with the client's headers
	CopyHeaders []string          `toml:"copy_headers"` // response headers put on the request when it passes
	Timeout     tomlconf.Duration `toml:"timeout"`      // default 5s
}

// Maintenance answers 503 with a page and Retry-After without asking the
// application. `maintenance = true` is the short form.
type Maintenance struct {
	Enabled    bool              `toml:"enabled"`
	Page       string            `toml:"page"`        // HTML file; default a short text
	RetryAfter tomlconf.Duration `toml:"retry_after"` // default 5m
	Allow      []string          `toml:"allow"`       // clients (CIDRs) that still reach the site
}

// UnmarshalTOML accepts a bool or a table.
func (m *Maintenance) UnmarshalTOML(v any) error {
	switch x := v.(type) {
	case bool:
		m.Enabled = x
		return nil
	case map[string]any:
		for k, val := range x {
			switch k {
			case "enabled":
				b, ok := val.(bool)
				if !ok {
					return fmt.Errorf("maintenance.enabled: want true or false")
				}
				m.Enabled = b
			case "page":
				s, ok := val.(string)
				if !ok {
					return fmt.Errorf("maintenance.page: want a file path")
				}
				m.Page = s
			case "retry_after":
				if err := m.RetryAfter.UnmarshalTOML(val); err != nil {
					return fmt.Errorf("maintenance.retry_after: %w", err)
				}
			case "allow":
				list, ok := val.([]any)
				if !ok {
					return fmt.Errorf("maintenance.allow: want a list of CIDRs")
				}
				for _, e := range list {
					s, ok := e.(string)
					if !ok {
						return fmt.Errorf("maintenance.allow: want a list of CIDRs")
					}
					m.Allow = append(m.Allow, s)
				}
			default:
				return fmt.Errorf("maintenance.%s: unknown key (want enabled, page, retry_after, allow)", k)
			}
		}
		return nil
	}
	return fmt.Errorf("maintenance: want true, false or a table, not %T", v)
}

// validateLimits checks the [limit.NAME] zones.
func (c *Config) validateLimits(bad func(string, string, ...any)) {
	for name, z := range c.Limits {
		if z == nil {
			continue
		}
		if err := z.LimitConfig(name).Check(); err != nil {
			for _, e := range strings.Split(err.Error(), "\n") {
				bad("limit."+name, "%s", e)
			}
		}
	}
}

// validateShield checks a site's or a route's shield keys; key is
// "site[i]" or "site[i].route[j]".
func (c *Config) validateShield(bad func(string, string, ...any), key string, s Shield, isRoute bool) {
	seen := map[string]bool{}
	for i, name := range s.Limit {
		if _, ok := c.Limits[name]; !ok {
			bad(fmt.Sprintf("%s.limit[%d]", key, i), "no [limit.%s] is defined", name)
		}
		if seen[name] {
			bad(fmt.Sprintf("%s.limit[%d]", key, i), "%q is listed twice: each request would count twice", name)
		}
		seen[name] = true
	}
	for _, l := range []struct {
		name string
		list []string
	}{{"allow", s.Allow}, {"deny", s.Deny}} {
		for i, p := range l.list {
			if p == "all" {
				continue
			}
			if _, err := ParsePrefix(p); err != nil {
				bad(fmt.Sprintf("%s.%s[%d]", key, l.name, i), "%v (or \"all\")", err)
			}
		}
	}
	if s.Auth != nil && !isRoute {
		bad(key+".auth", "auth = false goes on a route, to serve it without the site's authentication")
	}
	switch s.Satisfy {
	case "", "all", "any":
	default:
		bad(key+".satisfy", "%q: want \"all\" or \"any\"", s.Satisfy)
	}
	if s.BasicAuth != nil && s.ForwardAuth != nil {
		bad(key, "basic_auth and forward_auth are exclusive: choose one")
	}
	if b := s.BasicAuth; b != nil {
		if len(b.Users) == 0 && b.Htpasswd == "" {
			bad(key+".basic_auth", "give users = { name = \"bcrypt hash\" } or htpasswd = \"/path\"")
		}
		if b.Htpasswd != "" && !filepath.IsAbs(b.Htpasswd) {
			bad(key+".basic_auth.htpasswd", "%q: want an absolute path", b.Htpasswd)
		}
		if b.FailRate != "" {
			if _, err := limit.ParseRate(b.FailRate); err != nil {
				bad(key+".basic_auth.fail_rate", "%v", err)
			}
		}
		if b.FailBurst < 0 {
			bad(key+".basic_auth.fail_burst", "must not be negative")
		}
	}
	if f := s.ForwardAuth; f != nil {
		if u, err := url.Parse(f.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad(key+".forward_auth.url", "%q: want an http(s) URL", f.URL)
		}
		for i, h := range f.CopyHeaders {
			if !validHeaderName(h) {
				bad(fmt.Sprintf("%s.forward_auth.copy_headers[%d]", key, i), "%q is not a valid header name", h)
			}
		}
	}
	for code, file := range s.ErrorPages {
		if _, err := ParseStatusPattern(code); err != nil {
			bad(key+".error_pages", "%v", err)
		}
		if !filepath.IsAbs(file) {
			bad(key+".error_pages", "%s = %q: want an absolute file path", code, file)
		}
	}
	if m := s.Maintenance; m != nil {
		if m.Page != "" && !filepath.IsAbs(m.Page) {
			bad(key+".maintenance.page", "%q: want an absolute file path", m.Page)
		}
		for i, p := range m.Allow {
			if _, err := ParsePrefix(p); err != nil {
				bad(fmt.Sprintf("%s.maintenance.allow[%d]", key, i), "%v", err)
			}
		}
		if m.RetryAfter < 0 {
			bad(key+".maintenance.retry_after", "must not be negative")
		}
	}
}

// ParseStatusPattern reads an error_pages key: a status ("404") or a
// class ("5xx"); it returns the lowest and highest status matched.
func ParseStatusPattern(s string) ([2]int, error) {
	if len(s) == 3 && s[1:] == "xx" && s[0] >= '4' && s[0] <= '5' {
		lo := int(s[0]-'0') * 100
		return [2]int{lo, lo + 99}, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 400 || n > 599 {
		return [2]int{}, fmt.Errorf("%q: want an error status (400 to 599) or a class (4xx, 5xx)", s)
	}
	return [2]int{n, n}, nil
}
