// Package accesslog writes one line per request, in the combined format
// nginx and Apache users already parse, or as JSON. Files are reopened on
// demand (SIGUSR1) so logrotate can move them away.
package accesslog

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"time"
)

// Entry is what is logged about one request.
type Entry struct {
	Time      time.Time
	RemoteIP  string
	Method    string
	URI       string
	Proto     string
	Status    int
	Bytes     int64
	Referer   string
	UserAgent string
	Host      string
	Duration  time.Duration
	RequestID string
	Upstream  string // route name
}

// Logger writes entries; a nil *Logger logs nothing.
type Logger struct {
	json bool
	path string // "" for stdout/stderr

	mu  sync.Mutex
	f   *os.File
	w   *bufio.Writer
	out io.Writer
	buf []byte
}

// Open makes a logger for output "stdout", "stderr" or an absolute path, in
// format "combined" or "json". "off" returns nil.
func Open(output, format string) (*Logger, error) {
	l := &Logger{json: format == "json"}
	switch output {
	case "off", "":
		return nil, nil
	case "stdout":
		l.out = os.Stdout
	case "stderr":
		l.out = os.Stderr
	default:
		l.path = output
		if err := l.Reopen(); err != nil {
			return nil, err
		}
	}
	return l, nil
}

// Reopen closes and reopens the log file (after rotation). Lines written
// meanwhile wait on the lock; none are lost.
func (l *Logger) Reopen() error {
	if l == nil || l.path == "" {
		return nil
	}
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("opening access log %s: %w", l.path, err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.w != nil {
		l.w.Flush()
	}
	if l.f != nil {
		l.f.Close()
	}
	l.f = f
	// Buffered so a busy server does one write per few dozen lines; the
	// owner calls Flush about once a second and on shutdown.
	l.w = bufio.NewWriterSize(f, 32<<10)
	l.out = l.w
	return nil
}

// Flush writes buffered lines out.
func (l *Logger) Flush() error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.w != nil {
		return l.w.Flush()
	}
	return nil
}

// Close flushes and closes the file.
func (l *Logger) Close() error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.w != nil {
		l.w.Flush()
	}
	if l.f != nil {
		return l.f.Close()
	}
	return nil
}

// Log writes one entry.
func (l *Logger) Log(e *Entry) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buf[:0]
	if l.json {
		b = appendJSON(b, e)
	} else {
		b = appendCombined(b, e)
	}
	l.buf = b
	l.out.Write(b)
}

func appendCombined(b []byte, e *Entry) []byte {
	b = appendDash(b, e.RemoteIP)
	b = append(b, " - - ["...)
	b = e.Time.AppendFormat(b, "02/Jan/2006:15:04:05 -0700")
	b = append(b, "] \""...)
	b = appendEscaped(b, e.Method)
	b = append(b, ' ')
	b = appendEscaped(b, e.URI)
	b = append(b, ' ')
	b = appendEscaped(b, e.Proto)
	b = append(b, "\" "...)
	b = strconv.AppendInt(b, int64(e.Status), 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, e.Bytes, 10)
	b = append(b, " \""...)
	b = appendEscaped(appendDashEmpty(b, e.Referer), e.Referer)
	b = append(b, "\" \""...)
	b = appendEscaped(appendDashEmpty(b, e.UserAgent), e.UserAgent)
	b = append(b, "\" "...)
	b = strconv.AppendFloat(b, e.Duration.Seconds(), 'f', 3, 64)
	b = append(b, ' ')
	b = appendDash(b, e.RequestID)
	b = append(b, '\n')
	return b
}

func appendDash(b []byte, s string) []byte {
	if s == "" {
		return append(b, '-')
	}
	return appendEscaped(b, s)
}

func appendDashEmpty(b []byte, s string) []byte {
	if s == "" {
		return append(b, '-')
	}
	return b
}

// appendEscaped writes s with quotes, backslashes and control bytes escaped
// as \xHH, as nginx does, so a request cannot forge log lines.
func appendEscaped(b []byte, s string) []byte {
	const hex = "0123456789ABCDEF"
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c == '"' || c == '\\' || c >= 0x7f {
			b = append(b, '\\', 'x', hex[c>>4], hex[c&15])
			continue
		}
		b = append(b, c)
	}
	return b
}

func appendJSON(b []byte, e *Entry) []byte {
	b = append(b, `{"time":"`...)
	b = e.Time.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","remote_ip":`...)
	b = strconv.AppendQuote(b, e.RemoteIP)
	b = append(b, `,"host":`...)
	b = strconv.AppendQuote(b, e.Host)
	b = append(b, `,"method":`...)
	b = strconv.AppendQuote(b, e.Method)
	b = append(b, `,"uri":`...)
	b = strconv.AppendQuote(b, e.URI)
	b = append(b, `,"proto":`...)
	b = strconv.AppendQuote(b, e.Proto)
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(e.Status), 10)
	b = append(b, `,"bytes":`...)
	b = strconv.AppendInt(b, e.Bytes, 10)
	b = append(b, `,"duration_ms":`...)
	b = strconv.AppendFloat(b, float64(e.Duration.Microseconds())/1000, 'f', 3, 64)
	b = append(b, `,"referer":`...)
	b = strconv.AppendQuote(b, e.Referer)
	b = append(b, `,"user_agent":`...)
	b = strconv.AppendQuote(b, e.UserAgent)
	b = append(b, `,"request_id":`...)
	b = strconv.AppendQuote(b, e.RequestID)
	b = append(b, `,"route":`...)
	b = strconv.AppendQuote(b, e.Upstream)
	b = append(b, "}\n"...)
	return b
}
