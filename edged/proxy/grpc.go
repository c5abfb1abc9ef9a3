package proxy

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http2"
)

// gRPC through the proxy. A gRPC call is an HTTP/2 request whose
// Content-Type is application/grpc (or application/grpc+proto, ...,
// application/grpc-web): its bodies are streams of messages in both
// directions at once, so neither is ever buffered, every piece of the
// response is flushed as it comes, and the result arrives in trailers
// (grpc-status, grpc-message), which pass through. The call's deadline
// (grpc-timeout) bounds the upstream exchange; the header passes on too,
// so the server knows it.
//
// What edged answers itself to a gRPC call is a gRPC status, as the gRPC
// HTTP/2 protocol asks: HTTP status 200, Content-Type application/grpc and
// grpc-status with grpc-message in the header block that ends the stream
// ("Trailers-Only"), or, once the upstream's response has begun, in the
// trailers. No server available, connecting failed or the server went
// away: UNAVAILABLE; a timeout or the call's deadline: DEADLINE_EXCEEDED;
// a response that is not HTTP: INTERNAL; a request body over the route's
// limit: RESOURCE_EXHAUSTED.

// gRPC status codes (google.golang.org/grpc/codes).
const (
	grpcOK                = 0
	grpcCanceled          = 1
	grpcUnknown           = 2
	grpcDeadlineExceeded  = 4
	grpcPermissionDenied  = 7
	grpcResourceExhausted = 8
	grpcUnimplemented     = 12
	grpcInternal          = 13
	grpcUnavailable       = 14
	grpcUnauthenticated   = 16
)

// isGRPC reports whether a request or response is gRPC, by its
// Content-Type.
func isGRPC(h http.Header) bool {
	ct := h["Content-Type"]
	return len(ct) > 0 && len(ct[0]) >= 16 && strings.EqualFold(ct[0][:16], "application/grpc")
}

// grpcTimeout reads a gRPC call's deadline from its grpc-timeout field:
// at most eight digits and a unit (H, M, S, m, u, n). A value that is not
// one is not applied (the server will refuse it).
func grpcTimeout(h http.Header) (time.Duration, bool) {
	v := h["Grpc-Timeout"]
	if len(v) == 0 {
		return 0, false
	}
	s := v[0]
	if len(s) < 2 || len(s) > 9 {
		return 0, false
	}
	var n int64
	for _, c := range []byte(s[:len(s)-1]) {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	var unit time.Duration
	switch s[len(s)-1] {
	case 'H':
		unit = time.Hour
	case 'M':
		unit = time.Minute
	case 'S':
		unit = time.Second
	case 'm':
		unit = time.Millisecond
	case 'u':
		unit = time.Microsecond
	case 'n':
		unit = time.Nanosecond
	default:
		return 0, false
	}
	const maxDur = time.Duration(1<<63 - 1)
	if n > int64(maxDur/unit) {
		return maxDur, true // 99999999H: no deadline worth a timer, but a deadline
	}
	return time.Duration(n) * unit, true
}

// IsGRPC reports whether a request is a gRPC call (or a gRPC-Web one), by
// its Content-Type.
func IsGRPC(h http.Header) bool { return isGRPC(h) }

// GRPCCodeForHTTP is the gRPC status for an HTTP error that edged answers
// a gRPC call with outside the proxy (a limit, access control, no route,
// maintenance): the mapping gRPC's clients apply to an HTTP status
// (gRPC's http-grpc-status-mapping), with the statuses it leaves at
// UNKNOWN that have a closer code named.
func GRPCCodeForHTTP(status int) int {
	switch status {
	case http.StatusBadRequest, http.StatusInternalServerError:
		return grpcInternal
	case http.StatusUnauthorized:
		return grpcUnauthenticated
	case http.StatusForbidden:
		return grpcPermissionDenied
	case http.StatusNotFound, http.StatusMethodNotAllowed, http.StatusNotImplemented:
		return grpcUnimplemented
	case http.StatusRequestTimeout:
		return grpcDeadlineExceeded
	case http.StatusRequestEntityTooLarge:
		return grpcResourceExhausted
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return grpcUnavailable
	case 499:
		return grpcCanceled
	}
	return grpcUnknown
}

// GRPCMessage encodes s as a grpc-message value.
func GRPCMessage(s string) string { return grpcMessage(s) }

// grpcCodeFor is the gRPC status for one of the proxy's own HTTP answers.
func grpcCodeFor(httpStatus, cause int) int {
	switch httpStatus {
	case http.StatusGatewayTimeout, http.StatusRequestTimeout:
		if cause == causeConnectTimeout {
			return grpcUnavailable // the server could not be reached
		}
		return grpcDeadlineExceeded
	case http.StatusBadGateway:
		if cause == causeProtocol {
			return grpcInternal
		}
		return grpcUnavailable
	case http.StatusServiceUnavailable:
		return grpcUnavailable
	case http.StatusRequestEntityTooLarge:
		return grpcResourceExhausted
	case 499:
		return grpcCanceled
	}
	return grpcInternal
}

// writeGRPCError answers a gRPC call with a status and no message: the
// header block ends the stream (Trailers-Only).
func writeGRPCError(w http.ResponseWriter, code int, msg string) {
	h := w.Header()
	for _, k := range [...]string{"Content-Length", "Content-Encoding", "Etag", "Last-Modified", "Content-Range", "Trailer"} {
		delete(h, k)
	}
	h["Content-Type"] = []string{"application/grpc"}
	h["Grpc-Status"] = []string{strconv.Itoa(code)}
	if msg != "" {
		h["Grpc-Message"] = []string{grpcMessage(msg)}
	}
	w.WriteHeader(http.StatusOK)
}

// setGRPCTrailer ends a gRPC response that has begun with a status of
// edged's in its trailers, replacing whatever the upstream sent.
func setGRPCTrailer(w http.ResponseWriter, code int, msg string) {
	h := w.Header()
	h[http.TrailerPrefix+"Grpc-Status"] = []string{strconv.Itoa(code)}
	h[http.TrailerPrefix+"Grpc-Message"] = []string{grpcMessage(msg)}
}

// grpcMessage percent-encodes a grpc-message value as the protocol asks:
// bytes outside printable ASCII, and '%'.
func grpcMessage(s string) string {
	clean := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' || c > '~' || c == '%' {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	const hex = "0123456789ABCDEF"
	b := make([]byte, 0, len(s)+16)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < ' ' || c > '~' || c == '%' {
			b = append(b, '%', hex[c>>4], hex[c&15])
			continue
		}
		b = append(b, c)
	}
	return string(b)
}

// grpcCodeForStreamError maps a reset of the upstream stream to the status
// the client sees, as gRPC's own clients map a reset.
func grpcCodeForStreamError(err error) int {
	var se http2.StreamError
	if !errors.As(err, &se) {
		return grpcUnavailable // the connection ended: the server went away
	}
	switch se.Code {
	case http2.ErrCodeRefusedStream:
		return grpcUnavailable
	case http2.ErrCodeCancel:
		return grpcCanceled
	case http2.ErrCodeEnhanceYourCalm:
		return grpcResourceExhausted
	case http2.ErrCodeInadequateSecurity:
		return grpcPermissionDenied
	}
	return grpcInternal
}
