package httpwire

import (
	"net/http"
	"strconv"
)

// statusLines caches "HTTP/1.1 NNN Reason\r\n" for every status net/http
// knows.
var statusLines = func() (t [600][]byte) {
	for code := 100; code < 600; code++ {
		if text := http.StatusText(code); text != "" {
			t[code] = []byte("HTTP/1.1 " + strconv.Itoa(code) + " " + text + "\r\n")
		}
	}
	return t
}()

// AppendStatusLine appends an HTTP/1.1 status line. A code without a
// known reason phrase gets an empty one.
func AppendStatusLine(dst []byte, code int) []byte {
	if code >= 0 && code < len(statusLines) && statusLines[code] != nil {
		return append(dst, statusLines[code]...)
	}
	dst = append(dst, "HTTP/1.1 "...)
	dst = strconv.AppendInt(dst, int64(code%1000), 10)
	return append(dst, " \r\n"...)
}

// AppendRequestLine appends "METHOD target HTTP/1.1\r\n".
func AppendRequestLine[S ~string | ~[]byte](dst []byte, method, target S) []byte {
	dst = append(dst, method...)
	dst = append(dst, ' ')
	dst = append(dst, target...)
	return append(dst, " HTTP/1.1\r\n"...)
}

// AppendField appends one field line. A name that is not a token is
// dropped, and CR, LF and NUL in a value become spaces, so nothing a
// handler or an upstream puts in a header can split the message (net/http
// does the same).
func AppendField[S ~string | ~[]byte](dst []byte, name, value S) []byte {
	if len(name) == 0 {
		return dst
	}
	for i := 0; i < len(name); i++ {
		if class[name[i]]&cToken == 0 {
			return dst
		}
	}
	dst = append(dst, name...)
	dst = append(dst, ':', ' ')
	start := len(dst)
	dst = append(dst, value...)
	for i := start; i < len(dst); i++ {
		if c := dst[i]; c < ' ' && c != '\t' {
			dst[i] = ' '
		}
	}
	return append(dst, '\r', '\n')
}

// AppendHeader appends every field of h, in map order (the order of field
// lines with different names carries no meaning; values of one name keep
// theirs).
func AppendHeader(dst []byte, h http.Header) []byte {
	for name, values := range h {
		for _, v := range values {
			dst = AppendField(dst, name, v)
		}
	}
	return dst
}
