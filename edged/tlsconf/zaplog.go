package tlsconf

import (
	"context"
	"log/slog"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// newZapLogger hands certmagic's own (chatty) log lines to slog at debug
// level; the Manager logs each state change itself at info/warn/error.
func newZapLogger(l *slog.Logger) *zap.Logger {
	return zap.New(&slogCore{l: l})
}

type slogCore struct {
	l      *slog.Logger
	fields []zapcore.Field
}

func (c *slogCore) Enabled(zapcore.Level) bool {
	return c.l.Enabled(context.Background(), slog.LevelDebug)
}

func (c *slogCore) With(fields []zapcore.Field) zapcore.Core {
	if !c.Enabled(zapcore.DebugLevel) {
		// certmagic derives loggers on every handshake; with debug off
		// their fields are never printed, so keep the hot path free.
		return c
	}
	f := make([]zapcore.Field, 0, len(c.fields)+len(fields))
	f = append(append(f, c.fields...), fields...)
	return &slogCore{l: c.l, fields: f}
}

func (c *slogCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c *slogCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range c.fields {
		f.AddTo(enc)
	}
	for _, f := range fields {
		f.AddTo(enc)
	}
	attrs := make([]slog.Attr, 0, len(enc.Fields)+1)
	attrs = append(attrs, slog.String("level", e.Level.String()))
	for k, v := range enc.Fields {
		attrs = append(attrs, slog.Any(k, v))
	}
	c.l.LogAttrs(context.Background(), slog.LevelDebug, "certmagic "+e.LoggerName+": "+e.Message, attrs...)
	return nil
}

func (c *slogCore) Sync() error { return nil }
