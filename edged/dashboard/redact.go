package dashboard

import (
	"crypto/sha256"
	"encoding/hex"
	"net/url"
	"regexp"
	"strings"
)

// The snapshot is built from running state, not from the configuration's
// secrets; what it carries as free text (a reload's error, a server's
// last failure, a certificate's CA error, a worker's STATUS= line) may
// still quote one, so each such text goes through Redact.

var (
	// URLs: credentials and the query (where tokens travel, as in an
	// on-demand ask URL) are cut.
	urlRE = regexp.MustCompile(`\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s"'<>]+`)
	// Password hashes: bcrypt, Apache MD5, SHA-crypt, {SHA}.
	hashRE = regexp.MustCompile(`\$2[abxy]?\$\d\d\$[./A-Za-z0-9]{53}|\$apr1\$[./A-Za-z0-9]{1,8}\$[./A-Za-z0-9]{22}|\$[56]\$(?:rounds=\d+\$)?[./A-Za-z0-9]{1,16}\$[./A-Za-z0-9]{43,86}|\{SHA\}[A-Za-z0-9+/]{27}=`)
	// Authorization values and key = value pairs whose name says secret.
	bearerRE = regexp.MustCompile(`(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}`)
	secretRE = regexp.MustCompile(`(?i)\b([a-z0-9_-]*(?:token|secret|password|passwd|apikey|api_key|auth)[a-z0-9_-]*)(\s*[=:]\s*)("[^"]*"|'[^']*'|[^\s,;&)]+)`)
)

const redacted = "[redacted]"

// Redact removes from s what might be a secret.
func Redact(s string) string {
	if s == "" {
		return s
	}
	s = urlRE.ReplaceAllStringFunc(s, redactURL)
	s = hashRE.ReplaceAllString(s, redacted)
	s = bearerRE.ReplaceAllString(s, "$1 "+redacted)
	s = secretRE.ReplaceAllString(s, "$1$2"+redacted)
	return s
}

func redactURL(raw string) string {
	u, err := url.Parse(strings.TrimRight(raw, ".,;:)]}"))
	if err != nil {
		return redacted
	}
	tail := raw[len(strings.TrimRight(raw, ".,;:)]}")):]
	hadUser := u.User != nil
	u.User = nil
	u.Fragment = ""
	out := u.String()
	if hadUser {
		out = strings.Replace(out, "://", "://"+redacted+"@", 1)
	}
	if u.RawQuery != "" {
		out = strings.TrimSuffix(out, u.RawQuery) + redacted
	}
	return out + tail
}

// KeyLabel is how the page names a limit zone's key: client addresses as
// they are, header and cookie values (API keys, session cookies) only by a
// short hash, so an operator can tell them apart without learning them.
func KeyLabel(zoneKey, key string) string {
	if zoneKey == "" || zoneKey == "client_ip" {
		return key
	}
	sum := sha256.Sum256([]byte(key))
	return "sha256:" + hex.EncodeToString(sum[:6])
}
