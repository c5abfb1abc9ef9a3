// Package enginetest lets the test suites run against either engine:
// $EDGED_TEST_ENGINE ("edged" or "net/http") picks the engine that edged
// configurations and front servers use; unset, edged's default.
package enginetest

import (
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"

	"github.com/edgeapp/edgeapp/edged/engine"
)

// Name returns the engine under test.
func Name() string {
	if n := os.Getenv("EDGED_TEST_ENGINE"); n != "" {
		if err := engine.CheckName(n); err != nil {
			panic("EDGED_TEST_ENGINE: " + err.Error())
		}
		return n
	}
	return engine.Default
}

// Config sets engine = Name() in an edged.toml text: in its [server]
// table, or in one added at the top. Unchanged when the variable is unset
// or the text sets an engine already.
func Config(cfg string) string {
	if os.Getenv("EDGED_TEST_ENGINE") == "" {
		return cfg
	}
	line := "engine = \"" + Name() + "\"\n"
	lines := strings.SplitAfter(cfg, "\n")
	for _, l := range lines {
		if strings.HasPrefix(l, "engine = ") {
			return cfg // set already (a test writes back what it read)
		}
	}
	for i, l := range lines {
		if strings.TrimSpace(l) == "[server]" {
			return strings.Join(lines[:i+1], "") + line + strings.Join(lines[i+1:], "")
		}
	}
	return "[server]\n" + line + "\n" + cfg
}

// NewServer is httptest.NewServer with h served by the engine under test.
func NewServer(h http.Handler) *httptest.Server {
	ts := httptest.NewUnstartedServer(h)
	if Name() == engine.NetHTTP {
		ts.Start()
		return ts
	}
	// httptest's server keeps its URL, client and Close; its own
	// net/http server gets a listener that never accepts, and the engine
	// serves the real one until Close.
	real := ts.Listener
	s := engine.New(engine.Options{Handler: h})
	ts.Listener = &idleListener{Listener: real, done: make(chan struct{}), stop: s}
	ts.Start()
	go s.Serve(real)
	return ts
}

// idleListener blocks Accept until Close, which also stops the engine.
type idleListener struct {
	net.Listener
	done chan struct{}
	once sync.Once
	stop *engine.Server
}

func (l *idleListener) Accept() (net.Conn, error) {
	<-l.done
	return nil, net.ErrClosed
}

func (l *idleListener) Close() error {
	l.once.Do(func() {
		close(l.done)
		l.stop.Close()
	})
	return nil
}
