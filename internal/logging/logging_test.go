package logging

import (
	"errors"
	"log/slog"
	"strings"
	"testing"
)

func TestJournalPrefixesAndQuoting(t *testing.T) {
	var b strings.Builder
	log := New(&b, Options{Level: slog.LevelDebug, Journal: true}).With("site", "example.com")
	log.Error("upstream down", "server", "10.0.0.5:8000", "err", errors.New("connection refused"))
	log.Warn("slow", "n", 3)
	log.Info("ok")
	log.Debug("detail", slog.Group("g", "k", "v"))
	want := `<3>upstream down site=example.com server=10.0.0.5:8000 err="connection refused"
<4>slow site=example.com n=3
<6>ok site=example.com
<7>detail site=example.com g.k=v
`
	if b.String() != want {
		t.Fatalf("got\n%s\nwant\n%s", b.String(), want)
	}
}

func TestLevelFilterAndPlainFormat(t *testing.T) {
	var b strings.Builder
	log := New(&b, Options{Level: slog.LevelWarn})
	log.Info("hidden")
	log.Warn("shown\nsecond line")
	out := b.String()
	if strings.Contains(out, "hidden") || !strings.Contains(out, " WARN shown second line\n") {
		t.Fatalf("got %q", out)
	}
	if _, err := ParseLevel("loud"); err == nil {
		t.Fatal("ParseLevel accepted nonsense")
	}
}
