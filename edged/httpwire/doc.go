// Package httpwire is edged's HTTP/1.1 wire format as pure functions of
// bytes: request and response head parsers, the chunked coding (decoder
// and writer) and head serialisation. Nothing here does I/O (ChunkedReader
// is a thin adapter over a bufio.Reader) or allocates on the common path:
// parsed heads are slices of the caller's buffer, header fields a slice of
// (name, value) pairs in the order received, reused from one message to
// the next. Both edged's server engine and its upstream client use it.
//
// The parsers follow RFC 9112 strictly and refuse, with one *Error each,
// what it calls invalid or ambiguous, in the places a request-smuggling
// attack needs a lenient parser:
//
//   - Content-Length together with Transfer-Encoding (requests and
//     responses: nginx refuses both; RFC 9112 §6.3 allows a server to).
//   - Content-Length that is not only digits, that overflows, or that
//     appears more than once (even with the same value, as nginx).
//   - Transfer-Encoding in a request whose final coding is not chunked
//     (400), with chunked twice (400), with any other coding (501), in
//     HTTP/1.0 (400), or with an empty list element; in a response, any
//     Transfer-Encoding other than chunked alone.
//   - obs-fold (a line starting with whitespace), whitespace between a
//     field name and its colon, a field name that is not a token, a field
//     value with a control character (NUL, CR, DEL, ...), a line without
//     a colon.
//   - A CR that is not followed by LF anywhere (lines may end in CRLF or a
//     bare LF, as RFC 9112 §2.2 allows; the chunked coding needs CRLF).
//   - A request line that is not exactly "method SP target SP version",
//     a target with a control character or space, HTTP versions other
//     than 1.x (505).
//   - A missing (HTTP/1.1) or repeated Host, a Host with characters
//     outside RFC 3986's authority, an absolute-form or authority-form
//     target whose authority differs from Host (other than by a default
//     port), userinfo in an authority, "*" other than with OPTIONS.
//   - Chunk sizes that are empty, not hexadecimal or at least 2^63, chunk
//     extensions outside RFC 9112 §7.1.1's grammar, a chunk-size line over
//     4 KiB, chunk data not followed by CRLF, a trailer section over 16
//     KiB, with bare LF, or with Content-Length or Transfer-Encoding.
//
// Tolerated, because real clients send it and it is not ambiguous: empty
// lines before a request line, a status line without a reason phrase (and
// its space), whitespace after a chunk size, bytes 0x80–0xFF in targets
// and values (obs-text), HTTP/1.x minor versions above 1 (served as 1.1).
package httpwire
