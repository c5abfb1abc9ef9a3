package main

import (
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	"golang.org/x/net/websocket"
)

// TestWebSocketSurvivesReloads: a WebSocket through edged keeps working
// across reloads (unlike proxies that drop every stream on a config change).
func TestWebSocketSurvivesReloads(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: websocket.Handler(func(c *websocket.Conn) {
		var msg string
		for websocket.Message.Receive(c, &msg) == nil {
			websocket.Message.Send(c, "echo: "+msg)
		}
	})}
	go srv.Serve(ln)
	defer srv.Close()
	conf := func(i int) string {
		return fmt.Sprintf("[server]\nadmin = \"{{ADMIN}}\"\n[[site]]\n[[site.route]]\npath = \"/\"\nupstream = \"ws\"\n[[site.route]]\npath = \"/gen\"\nrespond = \"%d\"\n[upstream.ws]\nservers = [%q]\n", i, ln.Addr().String())
	}
	e := startEdged(t, conf(0))
	wsURL := "ws" + e.httpURL[len("http"):] + "/chat"
	ws, err := websocket.Dial(wsURL, "", e.httpURL)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	for i := 1; i <= 5; i++ {
		e.reload(conf(i))
		ws.SetDeadline(time.Now().Add(10 * time.Second))
		if err := websocket.Message.Send(ws, fmt.Sprint("after reload ", i)); err != nil {
			t.Fatalf("send after reload %d: %v", i, err)
		}
		var got string
		if err := websocket.Message.Receive(ws, &got); err != nil || got != fmt.Sprint("echo: after reload ", i) {
			t.Fatalf("after reload %d: %q %v", i, got, err)
		}
	}
}
