package httpwire

import "errors"

// Error is a message that RFC 9112 calls invalid or ambiguous. Every refusal
// the parsers make is one of the values below, so a caller answers with
// Status (a server) or treats the upstream as broken (a client), and tests
// compare with errors.Is.
type Error struct {
	// Status is the response a server sends for this error in a request:
	// 400, or 501 (a transfer coding it does not implement), 505 (an HTTP
	// version it does not speak).
	Status int
	Reason string
}

func (e *Error) Error() string { return "malformed HTTP/1 message: " + e.Reason }

// ErrIncomplete says the head (or a chunk line) is not complete yet: read
// more and call again. It is not an *Error.
var ErrIncomplete = errors.New("incomplete HTTP/1 message head")

func bad(reason string) *Error { return &Error{Status: 400, Reason: reason} }

// The refusals. A request with any of them is answered with its Status and
// the connection is closed; a response with any of them is a bad upstream.
var (
	ErrBareCR             = bad("bare CR")
	ErrNUL                = bad("NUL byte")
	ErrRequestLine        = bad("malformed request line")
	ErrStatusLine         = bad("malformed status line")
	ErrMethod             = bad("invalid method")
	ErrTarget             = bad("invalid request target")
	ErrVersion            = bad("malformed HTTP version")
	ErrVersionUnsupported = &Error{Status: 505, Reason: "unsupported HTTP version"}
	ErrFieldName          = bad("invalid header field name")
	ErrFieldValue         = bad("invalid header field value")
	ErrSpaceBeforeColon   = bad("whitespace between header field name and colon")
	ErrObsFold            = bad("obsolete line folding")
	ErrMissingColon       = bad("header field line without a colon")
	ErrContentLength      = bad("invalid Content-Length")
	ErrDuplicateLength    = bad("more than one Content-Length")
	ErrLengthAndEncoding  = bad("both Content-Length and Transfer-Encoding")
	ErrTransferEncoding   = bad("invalid Transfer-Encoding")
	ErrChunkedNotLast     = bad("Transfer-Encoding without chunked as the final coding")
	ErrChunkedTwice       = bad("chunked applied more than once")
	ErrEncodingHTTP10     = bad("Transfer-Encoding in an HTTP/1.0 message")
	ErrUnknownEncoding    = &Error{Status: 501, Reason: "unsupported transfer coding"}
	ErrMissingHost        = bad("HTTP/1.1 request without Host")
	ErrDuplicateHost      = bad("more than one Host")
	ErrHost               = bad("invalid Host")
	ErrHostMismatch       = bad("absolute-form target disagrees with Host")
	ErrChunkSize          = bad("invalid chunk size")
	ErrChunkOverflow      = bad("chunk size too large")
	ErrChunkExtension     = bad("invalid chunk extension")
	ErrChunkLine          = bad("chunk line too long")
	ErrChunkData          = bad("chunk data not followed by CRLF")
	ErrTrailer            = bad("invalid trailer section")
	ErrTrailerTooLarge    = bad("trailer section too large")
)
