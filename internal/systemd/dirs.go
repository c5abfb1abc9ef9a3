package systemd

import (
	"os"
	"strings"
)

// The directories systemd makes for a service (RuntimeDirectory=,
// StateDirectory=, CacheDirectory=) and passes in the environment, each
// variable possibly listing several, colon-separated: the first is the
// service's own. Without systemd, each falls back to the packaged path.

// RuntimeDir is $RUNTIME_DIRECTORY's first entry, else fallback
// (/run/edged, /run/appd).
func RuntimeDir(fallback string) string { return firstDir("RUNTIME_DIRECTORY", fallback) }

// StateDir is $STATE_DIRECTORY's first entry, else fallback
// (/var/lib/edged).
func StateDir(fallback string) string { return firstDir("STATE_DIRECTORY", fallback) }

// CacheDir is $CACHE_DIRECTORY's first entry, else fallback
// (/var/cache/edged).
func CacheDir(fallback string) string { return firstDir("CACHE_DIRECTORY", fallback) }

// FromSystemd reports whether systemd made dir for this service, through
// one of the three variables; a directory it made exists and is ours.
func FromSystemd(dir string) bool {
	for _, v := range []string{"RUNTIME_DIRECTORY", "STATE_DIRECTORY", "CACHE_DIRECTORY"} {
		for d := range strings.SplitSeq(os.Getenv(v), ":") {
			if d != "" && d == dir {
				return true
			}
		}
	}
	return false
}

func firstDir(env, fallback string) string {
	if v := os.Getenv(env); v != "" {
		first, _, _ := strings.Cut(v, ":")
		if first != "" {
			return first
		}
	}
	return fallback
}
