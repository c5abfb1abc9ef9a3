package config

import (
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	"github.com/edgeapp/edgeapp/internal/tomlconf"
)

// DefaultInclude is where the packaged edged.toml takes drop-in files
// from, as nginx's sites-enabled/ and conf.d/.
const DefaultInclude = "/etc/edged/sites.d/*.toml"

// dropIn is what a drop-in file may hold: sites, and what sites use.
// Everything else ([server], [tls], ...) belongs to the main file only.
type dropIn struct {
	Sites     []Site               `toml:"site"`
	Upstreams map[string]*Upstream `toml:"upstream"`
	Caches    map[string]*Cache    `toml:"cache"`
	Limits    map[string]*Limit    `toml:"limit"`
	Streams   []Stream             `toml:"stream"`
}

// loadIncludes reads the drop-in files the main file's include patterns
// name, each pattern's files in name order, and merges them in: sites and
// streams after the main file's, upstreams, caches and limit zones beside
// them, a name defined twice refused. Errors about a drop-in's keys name
// the drop-in, its line and its own key.
func (c *Config) loadIncludes() error {
	var errs tomlconf.Errors
	add := func(err error) {
		var es tomlconf.Errors
		if errors.As(err, &es) {
			errs = append(errs, es...)
		} else {
			errs = append(errs, &tomlconf.Error{File: c.Doc.File, Msg: err.Error()})
		}
	}
	mainAbs, _ := filepath.Abs(c.Doc.File)
	seen := map[string]bool{mainAbs: true}
	for i, pat := range c.Include {
		key := fmt.Sprintf("include[%d]", i)
		if !filepath.IsAbs(pat) {
			pat = filepath.Join(filepath.Dir(c.Doc.File), pat)
		}
		files, err := filepath.Glob(pat)
		if err != nil {
			add(c.Doc.Errorf(key, "%q: %v", c.Include[i], err))
			continue
		}
		sort.Strings(files)
		for _, f := range files {
			abs, _ := filepath.Abs(f)
			if seen[abs] {
				continue
			}
			seen[abs] = true
			var d dropIn
			doc, err := tomlconf.Load(f, &d)
			if err != nil {
				add(explainDropIn(err))
				continue
			}
			c.merge(&d, doc, add)
		}
	}
	return errs.Err()
}

// merge adds one drop-in's contents to c.
func (c *Config) merge(d *dropIn, doc *tomlconf.Doc, fail func(error)) {
	for j, s := range d.Sites {
		c.Doc.Mount(fmt.Sprintf("site[%d]", len(c.Sites)), doc, fmt.Sprintf("site[%d]", j))
		c.Sites = append(c.Sites, s)
	}
	for j, s := range d.Streams {
		c.Doc.Mount(fmt.Sprintf("stream[%d]", len(c.Streams)), doc, fmt.Sprintf("stream[%d]", j))
		c.Streams = append(c.Streams, s)
	}
	mergeMap(&c.Upstreams, d.Upstreams, "upstream", c.Doc, doc, fail)
	mergeMap(&c.Caches, d.Caches, "cache", c.Doc, doc, fail)
	mergeMap(&c.Limits, d.Limits, "limit", c.Doc, doc, fail)
}

func mergeMap[T any](dst *map[string]*T, src map[string]*T, kind string, main, doc *tomlconf.Doc, fail func(error)) {
	names := make([]string, 0, len(src))
	for name := range src {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		key := kind + "." + name
		if _, dup := (*dst)[name]; dup {
			fail(doc.Errorf(key, "[%s] is already defined at %s; each name may be defined once, in one file", key, main.Where(key)))
			continue
		}
		if *dst == nil {
			*dst = map[string]*T{}
		}
		(*dst)[name] = src[name]
		main.Mount(key, doc, key)
	}
}

// explainDropIn says what a drop-in may hold when it holds something else.
func explainDropIn(err error) error {
	var es tomlconf.Errors
	if !errors.As(err, &es) {
		return err
	}
	for _, e := range es {
		if e.Msg == "unknown key" && !strings.ContainsAny(e.Key, ".[") {
			e.Msg = "not allowed in a drop-in file, which holds [[site]], [upstream.NAME], [cache.NAME], [limit.NAME] and [[stream]]; put it in the main file"
		}
	}
	return es
}
