package httpwire

// Byte classes of RFC 9110 §5.6.2 (tchar) and §5.5 (field-vchar, obs-text).
const (
	cToken  = 1 << iota // tchar
	cValue              // VCHAR, obs-text, SP, HTAB: allowed inside a field value
	cTarget             // allowed in a request target: VCHAR and obs-text
	cHost               // allowed in Host and in an authority
)

var class = func() (t [256]uint8) {
	for c := 0x21; c < 0x7f; c++ {
		t[c] |= cValue | cTarget
	}
	for c := 0x80; c < 0x100; c++ {
		t[c] |= cValue | cTarget
	}
	t[' '] |= cValue
	t['\t'] |= cValue
	for _, c := range "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ" {
		t[c] |= cToken
	}
	// RFC 3986 reg-name, IP-literal and port characters; what
	// golang.org/x/net/http/httpguts.ValidHostHeader allows.
	for _, c := range "!$&'()*+,-.0123456789:;=ABCDEFGHIJKLMNOPQRSTUVWXYZ[]_abcdefghijklmnopqrstuvwxyz~%" {
		t[c] |= cHost
	}
	return t
}()

func isToken(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if class[c]&cToken == 0 {
			return false
		}
	}
	return true
}

// lower folds ASCII letters only.
func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// equalFold reports whether b equals the lower-case ASCII string s, ignoring
// ASCII case.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range b {
		if lower(b[i]) != s[i] {
			return false
		}
	}
	return true
}

// trimOWS removes optional whitespace (SP, HTAB) at both ends.
func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// nextListElement splits a comma-separated list (RFC 9110 §5.6.1): it
// returns the first element, trimmed, and the rest after its comma.
func nextListElement(b []byte) (elem, rest []byte, more bool) {
	for i, c := range b {
		if c == ',' {
			return trimOWS(b[:i]), b[i+1:], true
		}
	}
	return trimOWS(b), nil, false
}
