// Package accesslog writes one record per request: a line in nginx's
// combined format, a line of an nginx-like template ($remote_addr,
// $upstream_addr, ...), or a JSON object of chosen fields, to a file,
// stdout/stderr, or natively to the systemd journal with one structured
// field per value (HTTP_STATUS=502, HTTP_CLIENT=192.0.2.1, ...).
//
// Every value comes from the request and its reqinfo.Info: the client
// address is the one after trusted_proxies, and the upstream, its status
// and time, the cache status and bytes are what the proxy and cache wrote.
//
// Lines are kept in a few independent buffers (a request takes one chosen
// at random, so concurrent requests rarely meet on a lock) and written a
// buffer at a time, whole lines only, when one fills up and once a second
// (Flush). Files are reopened on demand (SIGUSR1) so logrotate can move
// them away; no line is lost across a reopen.
package accesslog

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/edgeapp/edgeapp/edged/reqinfo"
)

// Options say where and how to log.
type Options struct {
	// Output is "off", "stdout", "stderr", "journal" or an absolute file path.
	Output string
	// Format is "combined", "json", or a template with $variables.
	Format string
	// Fields are the JSON object's keys and the journal's structured
	// fields; nil means DefaultFields.
	Fields []string
	// Log receives write failures (at most one line a minute).
	Log *slog.Logger
}

// Check validates o without opening anything.
func Check(o Options) error {
	_, err := compile(o)
	return err
}

// Entry is one request as logged. Request and Info are read during Log
// only.
type Entry struct {
	Time           time.Time
	Request        *http.Request
	Info           *reqinfo.Info
	Status         int
	BytesOut       int64 // response body bytes written
	Duration       time.Duration
	ResponseHeader http.Header
}

// Logger writes entries; a nil *Logger logs nothing.
type Logger struct {
	tmpl    []part  // text line (combined, template); also the journal's MESSAGE
	fields  []field // JSON keys / journal fields
	json    bool
	journal bool
	records chan journalRecord // to the journal writer (journal.go)
	closing chan struct{}      // closed by Close
	sent    chan struct{}      // closed when the journal writer is done

	shards []shard

	out     sync.Mutex // serialises writes and reopening
	path    string     // "" for stdout/stderr
	w       io.Writer
	f       *os.File
	log     *slog.Logger
	lastErr atomic.Int64 // unix seconds of the last reported failure
}

// shard is one line buffer; padded so neighbours do not share a cache line.
type shard struct {
	mu  sync.Mutex
	buf []byte
	_   [64]byte
}

// flushAt is the buffer size that triggers a write.
const flushAt = 32 << 10

// part of a text template: a literal, or a field.
type part struct {
	lit   string
	f     field
	isLit bool
}

type compiled struct {
	tmpl   []part
	fields []field
	json   bool
}

func compile(o Options) (*compiled, error) {
	c := &compiled{}
	switch o.Output {
	case "", "off", "stdout", "stderr", "journal":
	default:
		if !filepath.IsAbs(o.Output) {
			return nil, fmt.Errorf("output %q: want \"off\", \"stdout\", \"stderr\", \"journal\" or an absolute file path", o.Output)
		}
	}
	var err error
	switch {
	case o.Format == "" || o.Format == "combined":
		c.tmpl, err = parseTemplate(Combined)
	case o.Format == "json":
		c.json = true
		c.tmpl, err = parseTemplate(Combined) // the journal's MESSAGE
	case strings.ContainsRune(o.Format, '$'):
		c.tmpl, err = parseTemplate(o.Format)
	default:
		err = fmt.Errorf("format %q: want \"combined\", \"json\" or a template with $variables", o.Format)
	}
	if err != nil {
		return nil, err
	}
	names := o.Fields
	if names == nil {
		names = DefaultFields
	}
	seen := map[string]bool{}
	for _, n := range names {
		f, err := parseField(n, false)
		if err != nil {
			return nil, err
		}
		if seen[f.name] {
			return nil, fmt.Errorf("field %q is listed twice", n)
		}
		seen[f.name] = true
		f.journal = f.journalName()
		c.fields = append(c.fields, f)
	}
	return c, nil
}

// parseTemplate splits "$a [$b] ${c}d" into literals and fields.
func parseTemplate(t string) ([]part, error) {
	var parts []part
	lit := func(s string) {
		if s != "" {
			parts = append(parts, part{lit: s, isLit: true})
		}
	}
	for t != "" {
		i := strings.IndexByte(t, '$')
		if i < 0 {
			lit(t)
			break
		}
		lit(t[:i])
		t = t[i+1:]
		var name string
		if strings.HasPrefix(t, "{") {
			j := strings.IndexByte(t, '}')
			if j < 0 {
				return nil, errors.New("template: ${ without }")
			}
			name, t = t[1:j], t[j+1:]
		} else {
			j := 0
			for j < len(t) && (t[j] >= 'a' && t[j] <= 'z' || t[j] >= 'A' && t[j] <= 'Z' || t[j] >= '0' && t[j] <= '9' || t[j] == '_') {
				j++
			}
			name, t = t[:j], t[j:]
		}
		if name == "" {
			return nil, errors.New("template: $ without a variable name (write ${name} next to letters)")
		}
		f, err := parseField(strings.ToLower(name), true)
		if err != nil {
			return nil, fmt.Errorf("template: %w", err)
		}
		parts = append(parts, part{f: f})
	}
	return parts, nil
}

// Open makes a logger. Output "off" (or "") returns nil.
func Open(o Options) (*Logger, error) {
	c, err := compile(o)
	if err != nil {
		return nil, err
	}
	l := &Logger{tmpl: c.tmpl, fields: c.fields, json: c.json, log: o.Log}
	if l.log == nil {
		l.log = slog.New(slog.DiscardHandler)
	}
	switch o.Output {
	case "off", "":
		return nil, nil
	case "journal":
		if err := journalAvailable(); err != nil {
			return nil, err
		}
		l.journal = true
		l.records, l.closing, l.sent = make(chan journalRecord, journalQueue), make(chan struct{}), make(chan struct{})
		go l.sendRecords()
		return l, nil
	case "stdout":
		l.w = os.Stdout
	case "stderr":
		l.w = os.Stderr
	default:
		l.path = o.Output
		if err := l.Reopen(); err != nil {
			return nil, err
		}
	}
	l.shards = make([]shard, 2*runtime.GOMAXPROCS(0))
	return l, nil
}

// Reopen closes and reopens the log file (after rotation).
func (l *Logger) Reopen() error {
	if l == nil || l.path == "" {
		return nil
	}
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("opening access log %s: %w", l.path, err)
	}
	l.Flush() // what was logged before the reopen goes to the old file
	l.out.Lock()
	defer l.out.Unlock()
	if l.f != nil {
		l.f.Close()
	}
	l.f, l.w = f, f
	return nil
}

// Flush writes buffered lines out.
func (l *Logger) Flush() error {
	if l == nil {
		return nil
	}
	var first error
	for i := range l.shards {
		sh := &l.shards[i]
		sh.mu.Lock()
		if err := l.write(sh.buf); err != nil && first == nil {
			first = err
		}
		sh.buf = sh.buf[:0]
		sh.mu.Unlock()
	}
	return first
}

// Close flushes and closes the file.
func (l *Logger) Close() error {
	if l == nil {
		return nil
	}
	if l.journal {
		close(l.closing) // the records queued so far are still sent
		<-l.sent
		return nil
	}
	err := l.Flush()
	l.out.Lock()
	defer l.out.Unlock()
	if l.f != nil {
		if cerr := l.f.Close(); err == nil {
			err = cerr
		}
		l.f = nil
	}
	l.w = io.Discard
	return err
}

// write sends whole lines in one write(2); O_APPEND keeps the buffers of
// different shards from overlapping.
func (l *Logger) write(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	l.out.Lock()
	_, err := l.w.Write(b)
	l.out.Unlock()
	if err != nil {
		l.report("writing the access log failed; these lines are lost, logging goes on", err, len(b))
	}
	return err
}

// report logs a failure at most once a minute.
func (l *Logger) report(msg string, err error, bytes int) {
	now := time.Now().Unix()
	if last := l.lastErr.Load(); now-last >= 60 && l.lastErr.CompareAndSwap(last, now) {
		l.log.Error(msg, "output", l.path, "bytes", bytes, "err", err)
	}
}

// Log records one entry.
func (l *Logger) Log(e *Entry) {
	if l == nil {
		return
	}
	if l.journal {
		l.send(e)
		return
	}
	sh := &l.shards[rand.IntN(len(l.shards))]
	sh.mu.Lock()
	if l.json {
		sh.buf = l.appendJSON(sh.buf, e)
	} else {
		sh.buf = l.appendText(sh.buf, e)
	}
	sh.buf = append(sh.buf, '\n')
	if len(sh.buf) >= flushAt {
		l.write(sh.buf)
		sh.buf = sh.buf[:0]
	}
	sh.mu.Unlock()
}

// appendText writes the template line, escaping values as nginx does and
// writing "-" for empty ones.
func (l *Logger) appendText(b []byte, e *Entry) []byte {
	for i := range l.tmpl {
		p := &l.tmpl[i]
		if p.isLit {
			b = append(b, p.lit...)
			continue
		}
		if s, ok := p.f.text(e); ok {
			if s == "" {
				b = append(b, '-')
			} else {
				b = appendEscaped(b, s)
			}
			continue
		}
		if p.f.id == fRequest {
			r := e.Request
			b = append(appendEscaped(b, r.Method), ' ')
			b = append(appendEscaped(b, r.RequestURI), ' ')
			b = appendEscaped(b, r.Proto)
			continue
		}
		start := len(b)
		var empty bool
		b, empty = p.f.appendRaw(b, e, false)
		if empty {
			b = append(b[:start], '-')
		}
	}
	return b
}

func needsEscape(c byte) bool { return c < 0x20 || c == '"' || c == '\\' || c >= 0x7f }

// appendEscaped writes s with quotes, backslashes, control and non-ASCII
// bytes as \xHH, as nginx does, so a request cannot forge log lines.
func appendEscaped(b []byte, s string) []byte {
	const hex = "0123456789ABCDEF"
	for i := 0; i < len(s); i++ {
		c := s[i]
		if needsEscape(c) {
			b = append(b, '\\', 'x', hex[c>>4], hex[c&15])
			continue
		}
		b = append(b, c)
	}
	return b
}

func (l *Logger) appendJSON(b []byte, e *Entry) []byte {
	b = append(b, '{')
	for i := range l.fields {
		f := &l.fields[i]
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '"')
		b = append(b, f.name...)
		b = append(b, `":`...)
		if s, ok := f.text(e); ok {
			b = appendJSONString(b, s)
			continue
		}
		if f.isNumber() {
			start := len(b)
			var empty bool
			b, empty = f.appendRaw(b, e, true)
			if empty {
				b = append(b[:start], "null"...)
			}
			continue
		}
		b = append(b, '"')
		start := len(b)
		var empty bool
		b, empty = f.appendRaw(b, e, true)
		if empty {
			b = b[:start]
		} else if f.id == fRequest {
			raw := string(b[start:])
			b = appendJSONString(b[:start-1], raw)
			continue
		}
		b = append(b, '"')
	}
	return append(b, '}')
}

// appendJSONString quotes s for JSON. UTF-8 passes; a byte that is not
// UTF-8 becomes \u00XX (its value), so the line stays valid JSON whatever
// the request contained.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20 || c == 0x7f:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&15])
		case c >= 0x80:
			r, n := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && n == 1 {
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&15])
				continue
			}
			b = append(b, s[i:i+n]...)
			i += n - 1
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}
