// Package compress is edged's dynamic response compression middleware
// (gzip and zstd via klauspost/compress).
//
// It compresses a response only when all of these hold: the client accepts
// one of the configured codings (q>0), the Content-Type matches
// Options.Types and is not an already-compressed type (see Incompressible),
// the body is at least MinSize bytes, the response has no Content-Encoding
// and no "Cache-Control: no-transform", the status is not 1xx/204/206/304,
// and the request carries no Range. Responses that could have been
// compressed carry "Vary: Accept-Encoding" whether or not they were.
//
// A compressed response loses Content-Length and Accept-Ranges, and a
// strong ETag becomes weak (W/"..."), which still revalidates with
// If-None-Match; a 304 to a client that negotiated a coding gets the same
// weak tag. HEAD gets the headers its GET would get. Flush flushes the
// encoder (SSE works); Hijack and Unwrap reach the underlying writer, and
// ReadFrom passes through to it when the response is not compressed, so
// sendfile survives the middleware.
//
// Encoders are pooled (sync.Pool). Measured by TestEncoderMemory: one zstd
// encoder (level 3, 256 KiB window, concurrency 1, low-memory mode) holds
// about 1.7 MiB, one gzip encoder (level 5) about 1 MiB; the pool holds
// roughly as many as there are responses being compressed at once.
package compress

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// Options configure the middleware. The zero value means the defaults.
type Options struct {
	// Types are media types to compress: "type/subtype", or with one '*'
	// ("text/*", "application/*+json"). Default DefaultTypes.
	Types []string
	// MinSize is the smallest body compressed, in bytes. Bodies whose size
	// is not announced are buffered up to MinSize before deciding.
	// 0 means the default, 1024.
	MinSize int64
	// Encodings in server preference order, used to break q-value ties.
	// Known: "zstd", "gzip". Default ["zstd", "gzip"].
	Encodings []string
	// GzipLevel is 1 (fastest) to 9 (best); 0 means 5.
	GzipLevel int
	// ZstdLevel is 1 to 22 as with the zstd tool, mapped onto the
	// encoder's four speeds (1-2 fastest, 3-5 default, 6-9 better,
	// 10+ best); 0 means 3.
	ZstdLevel int
}

// Defaults.
const (
	DefaultMinSize   = 1024
	DefaultGzipLevel = 5
	DefaultZstdLevel = 3
	// zstdWindow bounds each pooled zstd encoder's history; HTTP bodies
	// are small and RFC 8878 caps HTTP windows at 8 MiB anyway.
	zstdWindow = 256 << 10
)

// DefaultEncodings is the server preference when Options.Encodings is empty.
var DefaultEncodings = []string{"zstd", "gzip"}

type encoder interface {
	Write(p []byte) (int, error)
	Flush() error
	Close() error
}

// coding is one content-coding with its pool of encoders.
type coding struct {
	name  string
	value []string // shared header value, e.g. []string{"gzip"}
	pool  sync.Pool
	reset func(e any, w *responseWriter) encoder
}

type middleware struct {
	types   typeMatcher
	minSize int
	codings []*coding
	names   []string // codings' names, the offers for Rank
	writers sync.Pool
}

// New validates o and returns the middleware.
func New(o Options) (func(http.Handler) http.Handler, error) {
	m, err := newMiddleware(o)
	if err != nil {
		return nil, err
	}
	return m.wrap, nil
}

// Check reports each problem with o through bad, with the setting's name
// under [compress] ("gzip_level", "encodings[1]"), without building
// anything: configuration validation calls it, New too.
func (o Options) Check(bad func(field string, err error)) {
	for i, t := range o.Types {
		if _, err := compileTypes([]string{t}); err != nil {
			bad(fmt.Sprintf("types[%d]", i), err)
		}
	}
	if o.MinSize < 0 {
		bad("min_size", fmt.Errorf("%d: must not be negative", o.MinSize))
	} else if o.MinSize > 64<<20 {
		bad("min_size", fmt.Errorf("%d: at most 64MiB (it is buffered per response)", o.MinSize))
	}
	if l := o.GzipLevel; l != 0 && (l < 1 || l > 9) {
		bad("gzip_level", fmt.Errorf("%d: want 1 to 9", l))
	}
	if l := o.ZstdLevel; l != 0 && (l < 1 || l > 22) {
		bad("zstd_level", fmt.Errorf("%d: want 1 to 22", l))
	}
	if len(o.Encodings) > maxOffers {
		bad("encodings", fmt.Errorf("%d encodings: at most %d", len(o.Encodings), maxOffers))
	}
	seen := map[string]bool{}
	for i, name := range o.Encodings {
		name = strings.ToLower(strings.TrimSpace(name))
		switch {
		case seen[name]:
			bad(fmt.Sprintf("encodings[%d]", i), fmt.Errorf("%q is listed twice", name))
		case name != "gzip" && name != "zstd":
			bad(fmt.Sprintf("encodings[%d]", i), fmt.Errorf("%q: known encodings are zstd and gzip", name))
		}
		seen[name] = true
	}
}

func newMiddleware(o Options) (*middleware, error) {
	var errs []error
	o.Check(func(field string, err error) { errs = append(errs, fmt.Errorf("compress: %s: %w", field, err)) })
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	types := o.Types
	if len(types) == 0 {
		types = DefaultTypes
	}
	tm, err := compileTypes(types)
	if err != nil {
		return nil, err
	}
	m := &middleware{types: tm, minSize: DefaultMinSize}
	if o.MinSize < 0 {
		return nil, fmt.Errorf("compress: min size %d: must not be negative", o.MinSize)
	}
	if o.MinSize > 0 {
		if o.MinSize > 64<<20 {
			return nil, fmt.Errorf("compress: min size %d: at most 64MiB (it is buffered per response)", o.MinSize)
		}
		m.minSize = int(o.MinSize)
	}
	gl, zl := o.GzipLevel, o.ZstdLevel
	if gl == 0 {
		gl = DefaultGzipLevel
	}
	if zl == 0 {
		zl = DefaultZstdLevel
	}
	if gl < 1 || gl > 9 {
		return nil, fmt.Errorf("compress: gzip level %d: want 1 to 9", gl)
	}
	if zl < 1 || zl > 22 {
		return nil, fmt.Errorf("compress: zstd level %d: want 1 to 22", zl)
	}
	encs := o.Encodings
	if len(encs) == 0 {
		encs = DefaultEncodings
	}
	if len(encs) > maxOffers {
		return nil, fmt.Errorf("compress: %d encodings: at most %d", len(encs), maxOffers)
	}
	seen := map[string]bool{}
	for _, name := range encs {
		name = strings.ToLower(strings.TrimSpace(name))
		if seen[name] {
			return nil, fmt.Errorf("compress: encoding %q listed twice", name)
		}
		seen[name] = true
		var c *coding
		switch name {
		case "gzip":
			c = newGzip(gl)
		case "zstd":
			c = newZstd(zl)
		default:
			return nil, fmt.Errorf("compress: encoding %q: known encodings are zstd and gzip", name)
		}
		// Build one encoder now so that a bad setting fails here, not
		// on the first request.
		e := c.pool.Get()
		if err, ok := e.(error); ok {
			return nil, fmt.Errorf("compress: creating %s encoder: %w", name, err)
		}
		c.pool.Put(e)
		m.codings = append(m.codings, c)
		m.names = append(m.names, name)
	}
	m.writers.New = func() any { return &responseWriter{m: m} }
	return m, nil
}

func newGzip(level int) *coding {
	c := &coding{name: "gzip", value: []string{"gzip"}}
	c.pool.New = func() any {
		w, err := gzip.NewWriterLevel(nil, level)
		if err != nil {
			return err
		}
		return w
	}
	c.reset = func(e any, w *responseWriter) encoder {
		g := e.(*gzip.Writer)
		g.Reset(sink{w})
		return g
	}
	return c
}

func newZstd(level int) *coding {
	c := &coding{name: "zstd", value: []string{"zstd"}}
	c.pool.New = func() any {
		// Concurrency 1: Write compresses synchronously on the request's
		// goroutine, no helper goroutines per encoder. Lower memory: pooled
		// encoders sit idle most of the time.
		e, err := zstd.NewWriter(nil,
			zstd.WithEncoderLevel(zstd.EncoderLevelFromZstd(level)),
			zstd.WithEncoderConcurrency(1),
			zstd.WithWindowSize(zstdWindow),
			zstd.WithLowerEncoderMem(true),
			zstd.WithZeroFrames(true),
		)
		if err != nil {
			return err
		}
		return e
	}
	c.reset = func(e any, w *responseWriter) encoder {
		z := e.(*zstd.Encoder)
		z.Reset(sink{w})
		return z
	}
	return c
}

// sink is what encoders write to: the underlying ResponseWriter, reached
// through the responseWriter so that its bytes are counted.
type sink struct{ w *responseWriter }

func (s sink) Write(p []byte) (int, error) { return s.w.rw.Write(p) }

func (m *middleware) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := r.Header
		// Upgrades hand the connection over; ranges are byte offsets into
		// the identity body. Neither may be touched.
		if len(h["Upgrade"]) > 0 || len(h["Range"]) > 0 {
			next.ServeHTTP(w, r)
			return
		}
		enc := -1
		if ae := h["Accept-Encoding"]; len(ae) > 0 {
			v := ae[0]
			if len(ae) > 1 {
				v = strings.Join(ae, ",")
			}
			var buf [maxOffers]int
			if ranked := Rank(v, m.names, buf[:0]); len(ranked) > 0 {
				enc = ranked[0]
			}
		}
		cw := m.writers.Get().(*responseWriter)
		cw.rw = w
		cw.enc = enc
		cw.head = r.Method == http.MethodHead
		next.ServeHTTP(cw, r)
		cw.finish()
		cw.release()
		m.writers.Put(cw)
	})
}
