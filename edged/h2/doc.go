// Package h2 is edged's HTTP/2 server (RFC 9113) for client connections,
// in front of an http.Handler (the route chain). Frames and header
// compression are golang.org/x/net/http2's Framer and hpack; the
// connection's state, stream scheduling, flow control and the hand-off to
// the handler are this package's.
//
// A connection has a reader goroutine (the one that calls ServeConn), a
// writer while it has output, and one goroutine per request while its
// handler runs; writers and handlers run on goroutines from a pool, which
// keep the stacks they grew. Handlers do not write to the socket: they
// append frames to the connection's output buffer under its lock and make
// sure a writer runs, which sends everything queued with one write. An
// idle connection holds its reader goroutine and little else. Under load the writer therefore
// sends many streams' frames in one TLS record and one system call, as
// nginx does at the end of an event-loop turn, and a handler never waits
// for the network unless the client holds back flow-control credit or the
// output buffer is full.
//
// A response is buffered until its handler returns, flushes, or writes more
// than one frame's worth, so a small response leaves as one HEADERS frame
// (with Content-Length) and one DATA frame carrying END_STREAM.
//
// What the server refuses, as RFC 9113 asks: frames larger than the
// advertised SETTINGS_MAX_FRAME_SIZE (FRAME_SIZE_ERROR), connection-specific
// header fields and TE other than "trailers", malformed or missing
// pseudo-header fields, a Content-Length that the DATA frames do not add
// up to (stream errors, PROTOCOL_ERROR); streams beyond
// SETTINGS_MAX_CONCURRENT_STREAMS are refused (REFUSED_STREAM), and a
// client that resets streams faster than their handlers end (CVE-2023-44487)
// loses the connection (ENHANCE_YOUR_CALM). Request header lists larger
// than MaxHeaderBytes are answered 431.
//
// Timeouts follow nginx: client_body_timeout between two reads of a body
// (the handler's Read returns os.ErrDeadlineExceeded), send_timeout between
// two writes to the socket and for a stream waiting for flow-control
// credit. Each runs from the wait's start or last progress: frames that
// bring neither body bytes nor credit (PING, empty DATA) do not extend
// them. A body's reader and a response's writer wait apart, so a
// full-duplex handler's two sides never take each other's wake-ups.
// IdleTimeout closes a connection that has had no open stream for
// that long. Shutdown is graceful in two steps, so that no request already
// on its way is lost: GOAWAY with the largest stream ID and a PING, then,
// once the PING comes back (the client has seen the first GOAWAY), GOAWAY
// with the last stream actually received; the connection closes when its
// streams are done.
package h2
