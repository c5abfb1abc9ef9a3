// Package logging makes the operator-facing logger both daemons use: one line
// per event on stderr, "message key=value ...". Under systemd each line starts
// with an sd-daemon priority prefix (<3> error, <4> warning, <6> info,
// <7> debug) so the journal files it at the right level, and carries no
// timestamp of its own; run by hand, lines start with the time and level.
package logging

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// Options says how to log.
type Options struct {
	Level   slog.Level
	Journal bool // sd-daemon prefixes instead of timestamps
}

// JournalDetected reports whether stderr is most likely read by systemd
// (JOURNAL_STREAM is set for services whose output goes to the journal).
func JournalDetected() bool { return os.Getenv("JOURNAL_STREAM") != "" }

// New returns a logger writing to w.
func New(w io.Writer, opts Options) *slog.Logger {
	return slog.New(&handler{w: w, opts: opts, mu: &sync.Mutex{}})
}

// ParseLevel maps debug/info/warn/error to a level.
func ParseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("log level %q: want debug, info, warn or error", s)
	}
	return l, nil
}

type handler struct {
	w      io.Writer
	opts   Options
	mu     *sync.Mutex
	prefix string // preformatted attributes from WithAttrs
	group  string
}

func (h *handler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.opts.Level }

func (h *handler) Handle(_ context.Context, r slog.Record) error {
	buf := make([]byte, 0, 256)
	if h.opts.Journal {
		buf = append(buf, '<')
		buf = strconv.AppendInt(buf, int64(priority(r.Level)), 10)
		buf = append(buf, '>')
	} else {
		t := r.Time
		if t.IsZero() {
			t = time.Now()
		}
		buf = t.AppendFormat(buf, "2006-01-02T15:04:05.000Z07:00")
		buf = append(buf, ' ')
		buf = append(buf, r.Level.String()...)
		buf = append(buf, ' ')
	}
	buf = append(buf, strings.ReplaceAll(r.Message, "\n", " ")...)
	buf = append(buf, h.prefix...)
	r.Attrs(func(a slog.Attr) bool {
		buf = appendAttr(buf, h.group, a)
		return true
	})
	buf = append(buf, '\n')
	h.mu.Lock()
	defer h.mu.Unlock()
	_, err := h.w.Write(buf)
	return err
}

func (h *handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	n := *h
	b := []byte(h.prefix)
	for _, a := range attrs {
		b = appendAttr(b, h.group, a)
	}
	n.prefix = string(b)
	return &n
}

func (h *handler) WithGroup(name string) slog.Handler {
	n := *h
	if n.group != "" {
		n.group += "."
	}
	n.group += name
	return &n
}

func priority(l slog.Level) int {
	switch {
	case l >= slog.LevelError:
		return 3
	case l >= slog.LevelWarn:
		return 4
	case l >= slog.LevelInfo:
		return 6
	default:
		return 7
	}
}

func appendAttr(buf []byte, group string, a slog.Attr) []byte {
	a.Value = a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return buf
	}
	if a.Value.Kind() == slog.KindGroup {
		g := a.Key
		if group != "" {
			g = group + "." + g
		}
		for _, ga := range a.Value.Group() {
			buf = appendAttr(buf, g, ga)
		}
		return buf
	}
	buf = append(buf, ' ')
	if group != "" {
		buf = append(buf, group...)
		buf = append(buf, '.')
	}
	buf = append(buf, a.Key...)
	buf = append(buf, '=')
	var s string
	switch a.Value.Kind() {
	case slog.KindDuration:
		s = a.Value.Duration().String()
	case slog.KindTime:
		s = a.Value.Time().Format(time.RFC3339)
	default:
		s = a.Value.String()
	}
	if needsQuote(s) {
		buf = strconv.AppendQuote(buf, s)
	} else {
		buf = append(buf, s...)
	}
	return buf
}

func needsQuote(s string) bool {
	if s == "" {
		return true
	}
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == ' ' || r == '"' || r == '=' || r < 0x20 || r == 0x7f || r == utf8.RuneError {
			return true
		}
		i += size
	}
	return false
}
