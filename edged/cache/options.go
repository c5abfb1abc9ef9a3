package cache

import (
	"log/slog"
	"time"
)

// Options configures one named cache. Zero values get the defaults below.
type Options struct {
	Name         string
	MemoryBytes  int64  // memory tier bound (default 64 MiB)
	DiskDir      string // "" = no disk tier; else the directory this cache owns
	DiskMaxBytes int64  // disk tier bound (default 1 GiB when DiskDir is set)
	// MaxObjectSize: larger responses pass through uncached, streamed
	// (default 64 MiB with a disk tier, MemoryBytes/8 without).
	MaxObjectSize int64
	// MemoryObjectMax: bodies up to this size are held in memory; larger
	// ones are streamed to a file as they arrive (default 1 MiB with a disk
	// tier, MaxObjectSize without).
	MemoryObjectMax int64
	// Heuristic enables heuristic freshness (RFC 9111 4.2.2: 10% of the
	// Last-Modified age, at most a day) for responses without explicit
	// expiration. Off by default.
	Heuristic bool
	// Defaults used when a response carries no stale-while-revalidate /
	// stale-if-error directive of its own.
	StaleWhileRevalidate, StaleIfError time.Duration
	// LockTimeout bounds how long a request waits for another request's
	// origin fetch of the same key before going to the origin itself
	// (default 5s).
	LockTimeout time.Duration
	// IgnoreQuery lists query parameters dropped from the cache key;
	// SortQuery sorts the remaining parameters.
	IgnoreQuery []string
	SortQuery   bool
	// OwnCacheControl is edged's own targeted cache-control field (RFC
	// 9213), obeyed before CDN-Cache-Control and Cache-Control and removed
	// from responses; default DefaultOwnCacheControl, "-" for none.
	OwnCacheControl string
	// IgnoreCDNCacheControl makes this cache follow Cache-Control even when
	// a response carries CDN-Cache-Control (for a CDN in front of edged
	// that the field is meant for).
	IgnoreCDNCacheControl bool
	Log                   *slog.Logger
	// Now is the clock (default time.Now); tests inject their own.
	Now func() time.Time
}

const (
	defaultMemoryBytes = 64 << 20
	defaultDiskMax     = 1 << 30
	defaultLockTimeout = 5 * time.Second
	maxVariants        = 16               // per URL; the oldest goes first
	hitForMissTTL      = 30 * time.Second // uncacheable keys skip coalescing this long
	heuristicCap       = 24 * time.Hour
)

func (o *Options) setDefaults() {
	if o.Name == "" {
		o.Name = "default"
	}
	if o.MemoryBytes <= 0 {
		o.MemoryBytes = defaultMemoryBytes
	}
	if o.DiskDir != "" && o.DiskMaxBytes <= 0 {
		o.DiskMaxBytes = defaultDiskMax
	}
	if o.MaxObjectSize <= 0 {
		if o.DiskDir != "" {
			o.MaxObjectSize = 64 << 20
		} else {
			o.MaxObjectSize = o.MemoryBytes / 8
		}
	}
	if o.MemoryObjectMax <= 0 {
		if o.DiskDir != "" {
			o.MemoryObjectMax = 1 << 20
		} else {
			o.MemoryObjectMax = o.MaxObjectSize
		}
	}
	o.MemoryObjectMax = min(o.MemoryObjectMax, o.MaxObjectSize, o.MemoryBytes/4)
	if o.LockTimeout <= 0 {
		o.LockTimeout = defaultLockTimeout
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.OwnCacheControl == "" {
		o.OwnCacheControl = DefaultOwnCacheControl
	}
}
