package httpwire

// SmugglingCase is one request that a strict HTTP/1.1 server refuses.
type SmugglingCase struct {
	Name    string
	Request string
	Err     *Error // what ParseRequest returns (nil: the chunked body is refused)
	Status  int    // the status a server answers with
}

// SmugglingCorpus is the request-smuggling corpus: the classic CL.TE,
// TE.CL and TE.TE desyncs, header-name and line-ending tricks, and every
// ambiguity RFC 9112 names. httpwire's tests check each against the parser
// and edged's engine tests send each to a running edged. Bodies follow the
// head where the attack needs one.
var SmugglingCorpus = []SmugglingCase{
	{"CL.TE", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 13\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nSMUGGLED", ErrLengthAndEncoding, 400},
	{"TE.CL", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n", ErrLengthAndEncoding, 400},
	{"TE.TE xchunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", ErrChunkedNotLast, 400},
	{"TE.TE chunked then other line", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n\r\n", ErrChunkedNotLast, 400},
	{"TE.TE other then chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: x\r\nTransfer-Encoding: chunked\r\n\r\n", ErrUnknownEncoding, 501},
	{"TE.TE chunked twice", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", ErrChunkedTwice, 400},
	{"TE.TE space before colon", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n", ErrSpaceBeforeColon, 400},
	{"TE.TE tab before colon", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding\t: chunked\r\n\r\n", ErrSpaceBeforeColon, 400},
	{"TE.TE obs-fold value", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n", ErrObsFold, 400},
	{"TE.TE leading space name", "POST / HTTP/1.1\r\nHost: a\r\n Transfer-Encoding: chunked\r\n\r\n", ErrObsFold, 400},
	{"TE.TE quoted", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \"chunked\"\r\n\r\n", ErrTransferEncoding, 400},
	{"TE.TE vertical tab", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\x0bchunked\r\n\r\n", ErrFieldValue, 400},
	{"TE.TE form feed", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\x0c\r\n\r\n", ErrFieldValue, 400},
	{"TE.TE NUL", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\x00\r\n\r\n", ErrNUL, 400},
	{"TE.TE empty element", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked,\r\n\r\n", ErrTransferEncoding, 400},
	{"TE.TE empty value", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n\r\n", ErrTransferEncoding, 400},
	{"TE.TE gzip chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", ErrUnknownEncoding, 501},
	{"TE.TE chunked gzip", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", ErrChunkedNotLast, 400},
	{"TE.TE identity", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n", ErrChunkedNotLast, 400},
	{"TE in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", ErrEncodingHTTP10, 400},
	{"TE name with bare CR", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding\r: chunked\r\n\r\n", ErrBareCR, 400},
	{"TE value with bare CR", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\rX: y\r\n\r\n", ErrBareCR, 400},
	{"CL twice conflicting", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", ErrDuplicateLength, 400},
	{"CL twice same", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n", ErrDuplicateLength, 400},
	{"CL list", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\n", ErrContentLength, 400},
	{"CL plus sign", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\n", ErrContentLength, 400},
	{"CL minus sign", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", ErrContentLength, 400},
	{"CL hex", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x3\r\n\r\n", ErrContentLength, 400},
	{"CL inner space", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 2\r\n\r\n", ErrContentLength, 400},
	{"CL empty", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n", ErrContentLength, 400},
	{"CL overflow", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", ErrContentLength, 400},
	{"CL 2^63", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9223372036854775808\r\n\r\n", ErrContentLength, 400},
	{"CL space before colon", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length : 3\r\n\r\nabc", ErrSpaceBeforeColon, 400},
	{"CL obs-fold", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n 3\r\n\r\nabc", ErrObsFold, 400},
	{"obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n\tc\r\n\r\n", ErrObsFold, 400},
	{"header name with slash", "GET / HTTP/1.1\r\nHost: a\r\nX/Y: b\r\n\r\n", ErrFieldName, 400},
	{"header name non-ASCII", "GET / HTTP/1.1\r\nHost: a\r\nX\xc3\xa9: b\r\n\r\n", ErrFieldName, 400},
	{"header name NUL", "GET / HTTP/1.1\r\nHost: a\r\nX\x00Y: b\r\n\r\n", ErrNUL, 400},
	{"empty header name", "GET / HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n", ErrFieldName, 400},
	{"line without colon", "GET / HTTP/1.1\r\nHost: a\r\nnocolon\r\n\r\n", ErrMissingColon, 400},
	{"header value DEL", "GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fb\r\n\r\n", ErrFieldValue, 400},
	{"header value NUL", "GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", ErrNUL, 400},
	{"bare CR line end", "GET / HTTP/1.1\rHost: a\r\n\r\n", ErrBareCR, 400},
	{"bare CR in value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", ErrBareCR, 400},
	{"bare CR empty line", "GET / HTTP/1.1\r\nHost: a\r\n\r\r\n", ErrBareCR, 400},
	{"NUL in target", "GET /a\x00b HTTP/1.1\r\nHost: a\r\n\r\n", ErrNUL, 400},
	{"tab in target", "GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n", ErrTarget, 400},
	{"two spaces", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", ErrRequestLine, 400},
	{"space in target", "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", ErrVersion, 400},
	{"HTTP/0.9", "GET /\r\n\r\n", ErrRequestLine, 400},
	{"lower-case version", "GET / http/1.1\r\nHost: a\r\n\r\n", ErrVersion, 400},
	{"HTTP/2.0", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", ErrVersionUnsupported, 505},
	{"version with trailing space", "GET / HTTP/1.1 \r\nHost: a\r\n\r\n", ErrVersion, 400},
	{"method with slash", "G/ET / HTTP/1.1\r\nHost: a\r\n\r\n", ErrMethod, 400},
	{"missing Host", "GET / HTTP/1.1\r\n\r\n", ErrMissingHost, 400},
	{"two Hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", ErrDuplicateHost, 400},
	{"two same Hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", ErrDuplicateHost, 400},
	{"Host with space", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", ErrHost, 400},
	{"Host with slash", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", ErrHost, 400},
	{"Host with userinfo", "GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", ErrHost, 400},
	{"absolute form other host", "GET http://evil.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n", ErrHostMismatch, 400},
	{"absolute form other port", "GET http://a.example:8080/ HTTP/1.1\r\nHost: a.example\r\n\r\n", ErrHostMismatch, 400},
	{"absolute form userinfo", "GET http://u@a.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n", ErrTarget, 400},
	{"absolute form other scheme", "GET ftp://a.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n", ErrTarget, 400},
	{"absolute form empty host", "GET http:///x HTTP/1.1\r\nHost: a.example\r\n\r\n", ErrTarget, 400},
	{"relative target", "GET x HTTP/1.1\r\nHost: a\r\n\r\n", ErrTarget, 400},
	{"asterisk with GET", "GET * HTTP/1.1\r\nHost: a\r\n\r\n", ErrTarget, 400},
	{"CONNECT other host", "CONNECT evil.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n", ErrHostMismatch, 400},
}

// ChunkedCorpus holds chunked bodies that a strict decoder refuses, each
// sent after a valid "Transfer-Encoding: chunked" request head.
var ChunkedCorpus = []struct {
	Name, Body string
	Err        *Error
}{
	{"size overflow", "10000000000000000\r\nx\r\n0\r\n\r\n", ErrChunkOverflow},
	{"size overflow wraps to small", "fffffffffffffffff1\r\nx\r\n0\r\n\r\n", ErrChunkOverflow},
	{"size 2^63", "8000000000000000\r\n", ErrChunkOverflow},
	{"negative size", "-1\r\nx\r\n0\r\n\r\n", ErrChunkSize},
	{"size with 0x", "0x5\r\nhello\r\n0\r\n\r\n", ErrChunkSize},
	{"empty size", "\r\nhello\r\n0\r\n\r\n", ErrChunkSize},
	{"size with plus", "+5\r\nhello\r\n0\r\n\r\n", ErrChunkSize},
	{"size bare LF", "5\nhello\r\n0\r\n\r\n", ErrChunkSize},
	{"size bare CR", "5\rhello\r\n0\r\n\r\n", ErrBareCR},
	{"data without CRLF", "5\r\nhelloX\r\n0\r\n\r\n", ErrChunkData},
	{"data longer than size", "3\r\nhello\r\n0\r\n\r\n", ErrChunkData},
	{"data bare LF", "5\r\nhello\n0\r\n\r\n", ErrChunkData},
	{"extension without name", "5;\r\nhello\r\n0\r\n\r\n", ErrChunkExtension},
	{"extension bad name", "5;a/b\r\nhello\r\n0\r\n\r\n", ErrChunkExtension},
	{"extension empty value", "5;a=\r\nhello\r\n0\r\n\r\n", ErrChunkExtension},
	{"extension unterminated quote", "5;a=\"b\r\nhello\r\n0\r\n\r\n", ErrChunkExtension},
	{"extension control char", "5;a=b\x01\r\nhello\r\n0\r\n\r\n", ErrChunkExtension},
	{"extension NUL", "5;a\x00\r\nhello\r\n0\r\n\r\n", ErrNUL},
	{"extension bare LF", "5;a=b\nhello\r\n0\r\n\r\n", ErrChunkExtension},
	{"last chunk bare LF", "0\n\r\n", ErrChunkSize},
	{"trailer bare LF", "0\r\nX: y\n\r\n", ErrTrailer},
	{"trailer obs-fold", "0\r\nX: y\r\n z\r\n\r\n", ErrObsFold},
	{"trailer Content-Length", "0\r\nContent-Length: 5\r\n\r\n", ErrTrailer},
	{"trailer Transfer-Encoding", "0\r\nTransfer-Encoding: chunked\r\n\r\n", ErrTrailer},
	{"trailer space before colon", "0\r\nX : y\r\n\r\n", ErrSpaceBeforeColon},
	{"end bare CR", "0\r\n\rX", ErrBareCR},
}
