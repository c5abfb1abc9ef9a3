package httpwire

import "bytes"

// Body says how a message's body is delimited (RFC 9112 §6.3).
type Body uint8

const (
	// BodyNone: the message has no body.
	BodyNone Body = iota
	// BodyLength: ContentLength bytes follow the head.
	BodyLength
	// BodyChunked: the chunked coding follows the head.
	BodyChunked
	// BodyUntilClose: the body is everything until the connection closes
	// (responses only).
	BodyUntilClose
)

// TargetForm is the form of a request target (RFC 9112 §3.2).
type TargetForm uint8

const (
	OriginForm    TargetForm = iota // /path?query
	AbsoluteForm                    // http://host/path?query
	AuthorityForm                   // host:port, CONNECT only
	AsteriskForm                    // *, OPTIONS only
)

// Request is a parsed request head. Its slices point into the buffer given
// to ParseRequest and are valid as long as that buffer is.
type Request struct {
	Method []byte
	Target []byte
	Form   TargetForm
	// Authority is the target's host[:port] in absolute and authority
	// form, otherwise nil.
	Authority []byte
	// Minor is the HTTP/1 minor version: 0 or 1.
	Minor int
	// Host is the Host field's value; HasHost tells an empty Host from none.
	Host    []byte
	HasHost bool
	// Fields are the header field lines in order, Host included.
	Fields []Field

	Body          Body
	ContentLength int64 // -1 unless Body is BodyLength
	// Close: the connection closes after this exchange (Connection: close,
	// or HTTP/1.0 without keep-alive).
	Close bool
	// Upgrade: an Upgrade field with "upgrade" in Connection.
	Upgrade bool
	// Expect100: Expect: 100-continue. ExpectOther: any other expectation,
	// which a server refuses with 417.
	Expect100, ExpectOther bool
}

// ParseRequest parses the request head at the start of buf into req,
// reusing req.Fields' storage, and returns the length of the head. It
// returns ErrIncomplete when buf holds only part of a head, and an *Error
// for anything RFC 9112 calls invalid or ambiguous; an error found in the
// part already received is reported at once. Empty lines before the
// request line are skipped (RFC 9112 §2.2). Lines may end in CRLF or LF;
// a CR anywhere else is refused.
func ParseRequest(buf []byte, req *Request) (int, error) {
	fields := req.Fields[:0]
	*req = Request{Fields: fields, ContentLength: -1}
	pos := 0
	for pos < len(buf) && (buf[pos] == '\n' || buf[pos] == '\r' && pos+1 < len(buf) && buf[pos+1] == '\n') {
		pos++
	}
	end, lf, ok := lineEnd(buf, pos)
	if !ok {
		// Refuse garbage before waiting for the rest of it.
		if err := checkPartialRequestLine(buf[pos:]); err != nil {
			return 0, err
		}
		return 0, ErrIncomplete
	}
	if err := req.parseLine(buf[pos:end]); err != nil {
		return 0, err
	}
	var fr framing
	fr.reset()
	fields, n, err := parseFields(buf, lf+1, fields, &fr, true)
	req.Fields = fields
	if err != nil {
		return 0, err
	}
	if err := req.decide(&fr); err != nil {
		return 0, err
	}
	return n, nil
}

// checkPartialRequestLine refuses a request line that cannot become valid.
func checkPartialRequestLine(b []byte) error {
	if len(b) > 0 && b[len(b)-1] == '\r' {
		b = b[:len(b)-1] // the LF may follow
	}
	for _, c := range b {
		if class[c]&cTarget == 0 && c != ' ' {
			return badByte(c, ErrRequestLine)
		}
	}
	return nil
}

func (req *Request) parseLine(line []byte) error {
	sp := bytes.IndexByte(line, ' ')
	if sp <= 0 {
		if sp < 0 {
			for _, c := range line {
				if class[c]&cToken == 0 {
					return badByte(c, ErrRequestLine)
				}
			}
		}
		return ErrRequestLine
	}
	method := line[:sp]
	for _, c := range method {
		if class[c]&cToken == 0 {
			return badByte(c, ErrMethod)
		}
	}
	rest := line[sp+1:]
	sp = bytes.IndexByte(rest, ' ')
	if sp <= 0 {
		return ErrRequestLine
	}
	target, version := rest[:sp], rest[sp+1:]
	for _, c := range target {
		if class[c]&cTarget == 0 {
			return badByte(c, ErrTarget)
		}
	}
	minor, err := parseVersion(version)
	if err != nil {
		return err
	}
	req.Method, req.Target, req.Minor = method, target, minor
	return nil
}

// parseVersion parses "HTTP/1.x" exactly; a well-formed version other
// than 1.x is unsupported (505), 1.x above 1.1 is served as 1.1.
func parseVersion(v []byte) (int, error) {
	if len(v) != 8 || string(v[:5]) != "HTTP/" || v[6] != '.' || !isDigit(v[5]) || !isDigit(v[7]) {
		for _, c := range v {
			if class[c]&cValue == 0 {
				return 0, badByte(c, ErrVersion)
			}
		}
		return 0, ErrVersion
	}
	if v[5] != '1' {
		return 0, ErrVersionUnsupported
	}
	return min(int(v[7]-'0'), 1), nil
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// decide applies RFC 9112's rules for a request's framing, connection and
// target to what the field lines said.
func (req *Request) decide(fr *framing) error {
	if fr.te {
		switch {
		case req.Minor == 0:
			return ErrEncodingHTTP10
		case fr.contentLength >= 0:
			return ErrLengthAndEncoding
		case !fr.teChunked:
			return ErrChunkedNotLast
		case fr.teOther:
			return ErrUnknownEncoding
		}
		req.Body = BodyChunked
	} else if fr.contentLength >= 0 {
		req.Body, req.ContentLength = BodyLength, fr.contentLength
	}
	if req.Minor == 0 {
		req.Close = !fr.keepAlive || fr.close
	} else {
		req.Close = fr.close
		if !fr.hostSeen {
			return ErrMissingHost
		}
	}
	req.Host, req.HasHost = fr.host, fr.hostSeen
	req.Upgrade = fr.upgrade && fr.connUpgrade
	req.Expect100, req.ExpectOther = fr.expect100, fr.expectOther
	return req.checkTarget()
}

// checkTarget decides the target's form (RFC 9112 §3.2) and refuses an
// authority that disagrees with Host.
func (req *Request) checkTarget() error {
	t := req.Target
	connect := string(req.Method) == "CONNECT"
	switch {
	case connect:
		if !validAuthority(t) || bytes.IndexByte(t, ':') < 0 {
			return ErrTarget
		}
		req.Form, req.Authority = AuthorityForm, t
		if req.HasHost && !sameAuthority(t, req.Host, "") {
			return ErrHostMismatch
		}
		return nil
	case t[0] == '/':
		req.Form = OriginForm
		return nil
	case len(t) == 1 && t[0] == '*':
		if string(req.Method) != "OPTIONS" {
			return ErrTarget
		}
		req.Form = AsteriskForm
		return nil
	}
	var scheme string
	switch {
	case hasPrefixFold(t, "http://"):
		scheme, t = "http", t[7:]
	case hasPrefixFold(t, "https://"):
		scheme, t = "https", t[8:]
	default:
		return ErrTarget
	}
	end := len(t)
	for i, c := range t {
		if c == '/' || c == '?' || c == '#' {
			end = i
			break
		}
	}
	auth := t[:end]
	if !validAuthority(auth) {
		return ErrTarget
	}
	req.Form, req.Authority = AbsoluteForm, auth
	if req.HasHost && !sameAuthority(auth, req.Host, scheme) {
		return ErrHostMismatch
	}
	return nil
}

func hasPrefixFold(b []byte, prefix string) bool {
	return len(b) >= len(prefix) && equalFold(b[:len(prefix)], prefix)
}

// validAuthority accepts host[:port] without userinfo.
func validAuthority(a []byte) bool {
	if len(a) == 0 {
		return false
	}
	for _, c := range a {
		if class[c]&cHost == 0 {
			return false // '@' (userinfo) is not in the class either
		}
	}
	return true
}

// sameAuthority compares a target's authority with a Host value, ignoring
// case and a default port on either side.
func sameAuthority(auth, host []byte, scheme string) bool {
	if bytes.EqualFold(auth, host) {
		return true
	}
	ah, ap := splitPort(auth)
	hh, hp := splitPort(host)
	if !bytes.EqualFold(ah, hh) {
		return false
	}
	return isDefaultPort(ap, scheme) && isDefaultPort(hp, scheme)
}

func splitPort(a []byte) (host, port []byte) {
	i := bytes.LastIndexByte(a, ':')
	if i < 0 || bytes.IndexByte(a[i:], ']') >= 0 {
		return a, nil
	}
	return a[:i], a[i+1:]
}

func isDefaultPort(port []byte, scheme string) bool {
	switch string(port) {
	case "":
		return true
	case "80":
		return scheme == "http" || scheme == ""
	case "443":
		return scheme == "https" || scheme == ""
	}
	return false
}
