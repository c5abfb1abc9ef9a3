package config

import (
	"path/filepath"

	"github.com/edgeapp/edgeapp/edged/compress"
	"github.com/edgeapp/edgeapp/edged/static"
)

// The packages that use a setting own its default and its check; config
// maps its tables onto their options and calls them.

// Options is [compress] as the compress package takes it.
func (c Compress) Options() compress.Options {
	return compress.Options{Types: c.Types, MinSize: int64(c.MinSize), Encodings: c.Encodings, GzipLevel: c.GzipLevel, ZstdLevel: c.ZstdLevel}
}

// StaticOptions is a static route as the static package takes it (the
// caller adds the logger and, for try_files, the next handler).
func (r Route) StaticOptions() static.Options {
	prefix := r.Path
	if r.Exact {
		prefix = filepath.Dir(r.Path)
	}
	return static.Options{
		Root: r.Static, Prefix: prefix, Index: r.Index, Browse: r.Browse, Fallback: r.Fallback,
		Precompressed: r.Precompressed, AllowSymlinksOutsideRoot: r.FollowSymlink,
		CacheControl: r.CacheControl, ServeHidden: r.ServeHidden,
	}
}
