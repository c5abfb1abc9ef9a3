// Package engine is edged's HTTP/1.1 server for client connections, plain
// and TLS, in front of an http.Handler (the route chain). HTTP/2 (ALPN "h2"
// on TLS, prior knowledge on plain connections when enabled) is handed to
// edged/h2 with the same handler.
//
// One goroutine serves a connection while a request is in progress; a
// connection waiting for its next request holds no buffer (plain TCP
// waits for readability through the poller before taking one from the
// pool). Request heads are parsed by edged/httpwire, strictly: an
// ambiguous or malformed request is answered 400 (431, 501, 505, 417 where
// those fit) and its connection closed. A request's header map, URL and
// strings come from one copy of its head; its context is the connection's,
// reset per request and cancelled when the handler returns, so that
// carrying the edged/reqinfo record costs no allocation.
//
// What a handler can reach beyond http.ResponseWriter is the standard
// optional interfaces: http.Flusher, http.Hijacker, io.ReaderFrom
// (sendfile(2) on plain connections), io.StringWriter, and the deadline
// and full-duplex methods http.ResponseController uses. WriteHeader with a
// 1xx status sends an interim response; 100 Continue is sent by the engine
// the first time a handler reads a body that the client holds back.
// Responses follow RFC 9112: HEAD, 1xx, 204 and 304 carry no body, a body
// of unknown length is chunked (or ends with the connection for HTTP/1.0),
// trailers are sent after a chunked body; pipelined requests are answered
// in order, and the buffered responses leave in one write when the
// pipeline is drained.
//
// Timeouts follow nginx: read_header_timeout from a head's first byte,
// idle_timeout between requests, client_body_timeout between two reads of
// a body and send_timeout between two writes. Deadlines are kept in a
// window of 10% above the configured value, so a steady stream of
// requests does not reset the connection's timer each time.
package engine
