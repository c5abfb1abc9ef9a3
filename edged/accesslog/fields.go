package accesslog

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// A field is one value of an entry. Names are the JSON keys; nginx's
// variable names are accepted as aliases in templates and field lists.
type field struct {
	id      fieldID
	name    string // JSON key and, upper-cased after HTTP_, journal field
	header  string // canonical header name for header fields
	journal string // journal field name
}

type fieldID uint8

const (
	fTime fieldID = iota
	fTimeLocal
	fTimeISO
	fMsec
	fClient
	fPeer
	fUser
	fHost
	fMethod
	fURI
	fPath
	fQuery
	fProto
	fRequest
	fStatus
	fBytesOut
	fBytesIn
	fDuration
	fReferer
	fUserAgent
	fRequestID
	fSite
	fRoute
	fUpstream
	fUpstreamStatus
	fUpstreamTime
	fCache
	fTLS
	fReqHeader
	fRespHeader
)

// canonical is each field's name: its JSON key, and after HTTP_ its
// journal field.
var canonical = [...]string{
	fTime: "time", fTimeLocal: "time_local", fTimeISO: "time_iso8601", fMsec: "msec",
	fClient: "client", fPeer: "peer", fUser: "user", fHost: "host", fMethod: "method", fURI: "uri",
	fPath: "path", fQuery: "query", fProto: "proto", fRequest: "request", fStatus: "status",
	fBytesOut: "bytes_out", fBytesIn: "bytes_in", fDuration: "duration", fReferer: "referer",
	fUserAgent: "user_agent", fRequestID: "request_id", fSite: "site", fRoute: "route",
	fUpstream: "upstream", fUpstreamStatus: "upstream_status", fUpstreamTime: "upstream_time",
	fCache: "cache", fTLS: "tls",
}

// nginxNames are nginx's variable names for the same values.
var nginxNames = map[string]fieldID{
	"remote_addr": fClient, "realip_remote_addr": fPeer, "remote_user": fUser,
	"request_method": fMethod, "request_uri": fURI, "uri": fPath, "args": fQuery,
	"server_protocol": fProto, "body_bytes_sent": fBytesOut, "request_length": fBytesIn,
	"request_time": fDuration, "http_referer": fReferer, "http_user_agent": fUserAgent,
	"upstream_addr": fUpstream, "upstream_response_time": fUpstreamTime,
	"upstream_cache_status": fCache, "ssl_protocol": fTLS,
}

// DefaultFields are the JSON and journal fields when none are configured.
var DefaultFields = []string{
	"time", "client", "host", "method", "uri", "proto", "status", "bytes_in", "bytes_out", "duration",
	"referer", "user_agent", "request_id", "site", "route", "upstream", "upstream_status", "upstream_time",
	"cache", "user",
}

// Combined is the "combined" format: nginx's combined, then the request
// time in seconds and the request ID.
const Combined = `$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent" $request_time $request_id`

// parseField resolves a field name: a canonical name, header:NAME or
// resp_header:NAME; with nginx true (templates) nginx's variable names
// too, http_NAME and sent_http_NAME included. nginx's $uri is the path.
func parseField(name string, nginx bool) (field, error) {
	if nginx {
		if id, ok := nginxNames[name]; ok {
			return field{id: id, name: canonical[id]}, nil
		}
	}
	for id, n := range canonical {
		if n == name {
			return field{id: fieldID(id), name: n}, nil
		}
	}
	hdr := func(id fieldID, prefix, h string, underscores bool) (field, error) {
		if underscores {
			h = strings.ReplaceAll(h, "_", "-")
		}
		if h == "" || !validToken(h) {
			return field{}, fmt.Errorf("field %q: %q is not a header name", name, h)
		}
		h = http.CanonicalHeaderKey(h)
		return field{id: id, header: h, name: prefix + strings.ToLower(strings.ReplaceAll(h, "-", "_"))}, nil
	}
	switch {
	case strings.HasPrefix(name, "header:"):
		return hdr(fReqHeader, "header_", name[len("header:"):], false)
	case strings.HasPrefix(name, "resp_header:"):
		return hdr(fRespHeader, "resp_header_", name[len("resp_header:"):], false)
	case nginx && strings.HasPrefix(name, "http_"):
		return hdr(fReqHeader, "header_", name[len("http_"):], true)
	case nginx && strings.HasPrefix(name, "sent_http_"):
		return hdr(fRespHeader, "resp_header_", name[len("sent_http_"):], true)
	}
	return field{}, fmt.Errorf("unknown field %q (known: %s, header:NAME, resp_header:NAME)", name, strings.Join(canonical[:], ", "))
}

func validToken(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte("\"(),/:;<=>?@[\\]{}", c) >= 0 {
			return false
		}
	}
	return true
}

// text returns a string field's value without allocating, or ok false for
// fields that are appended (numbers, times, addresses).
func (f *field) text(e *Entry) (string, bool) {
	r, info := e.Request, e.Info
	switch f.id {
	case fUser:
		return info.User, true
	case fHost:
		return r.Host, true
	case fMethod:
		return r.Method, true
	case fURI:
		return r.RequestURI, true
	case fPath:
		return r.URL.Path, true
	case fQuery:
		return r.URL.RawQuery, true
	case fProto:
		return r.Proto, true
	case fReferer:
		return first(r.Header["Referer"]), true
	case fUserAgent:
		return first(r.Header["User-Agent"]), true
	case fRequestID:
		return info.RequestID, true
	case fSite:
		return info.Site, true
	case fRoute:
		return info.Route, true
	case fUpstream:
		return info.Upstream, true
	case fCache:
		return info.CacheStatus, true
	case fTLS:
		if r.TLS == nil {
			return "", true
		}
		return tlsVersion(r.TLS.Version), true
	case fReqHeader:
		return first(r.Header[f.header]), true
	case fRespHeader:
		return first(e.ResponseHeader[f.header]), true
	}
	return "", false
}

func first(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

func tlsVersion(v uint16) string {
	switch v {
	case 0x0304:
		return "TLSv1.3"
	case 0x0303:
		return "TLSv1.2"
	case 0x0302:
		return "TLSv1.1"
	case 0x0301:
		return "TLSv1"
	}
	return "unknown"
}

// isNumber: fields written bare in JSON.
func (f *field) isNumber() bool {
	switch f.id {
	case fMsec, fStatus, fBytesOut, fBytesIn, fDuration, fUpstreamStatus, fUpstreamTime:
		return true
	}
	return false
}

// appendRaw appends a non-text field's value; empty reports that it has
// none (an unknown address, no upstream), which text formats show as "-".
func (f *field) appendRaw(b []byte, e *Entry, precise bool) (out []byte, empty bool) {
	info := e.Info
	secs := func(d time.Duration) []byte {
		if precise {
			return strconv.AppendFloat(b, d.Seconds(), 'f', 6, 64)
		}
		return strconv.AppendFloat(b, d.Seconds(), 'f', 3, 64)
	}
	switch f.id {
	case fTime:
		ts := timeStrings(e.Time)
		ms := e.Time.Nanosecond() / 1e6
		b = append(b, ts.isoSec...)
		b = append(b, '.', byte('0'+ms/100), byte('0'+ms/10%10), byte('0'+ms%10))
		return append(b, ts.zone...), false
	case fTimeLocal:
		return append(b, timeStrings(e.Time).local...), false
	case fTimeISO:
		ts := timeStrings(e.Time)
		return append(append(b, ts.isoSec...), ts.zone...), false
	case fMsec:
		ms := e.Time.UnixMilli()
		b = strconv.AppendInt(b, ms/1000, 10)
		b = append(b, '.')
		frac := ms % 1000
		b = append(b, byte('0'+frac/100), byte('0'+frac/10%10), byte('0'+frac%10))
		return b, false
	case fClient:
		if !info.Client.IsValid() {
			return b, true
		}
		return info.Client.AppendTo(b), false
	case fPeer:
		if !info.Peer.IsValid() {
			return b, true
		}
		return info.Peer.AppendTo(b), false
	case fRequest:
		r := e.Request
		b = append(b, r.Method...)
		b = append(b, ' ')
		b = append(b, r.RequestURI...)
		b = append(b, ' ')
		return append(b, r.Proto...), false
	case fStatus:
		return strconv.AppendInt(b, int64(e.Status), 10), false
	case fBytesOut:
		return strconv.AppendInt(b, e.BytesOut, 10), false
	case fBytesIn:
		return strconv.AppendInt(b, info.BytesIn, 10), false
	case fDuration:
		return secs(e.Duration), false
	case fUpstreamStatus:
		if info.UpstreamStatus == 0 {
			return b, true
		}
		return strconv.AppendInt(b, int64(info.UpstreamStatus), 10), false
	case fUpstreamTime:
		if info.Upstream == "" {
			return b, true
		}
		return secs(info.UpstreamTime), false
	}
	return b, true
}

// secondStrings are one second's time stamps, formatted once: nginx
// caches its time strings the same way.
type secondStrings struct {
	unix   int64
	loc    *time.Location
	local  string // 02/Jan/2006:15:04:05 -0700
	isoSec string // 2006-01-02T15:04:05
	zone   string // Z07:00
}

var lastSecond atomic.Pointer[secondStrings]

func timeStrings(t time.Time) *secondStrings {
	sec := t.Unix()
	if ts := lastSecond.Load(); ts != nil && ts.unix == sec && ts.loc == t.Location() {
		return ts
	}
	ts := &secondStrings{
		unix: sec, loc: t.Location(),
		local:  t.Format("02/Jan/2006:15:04:05 -0700"),
		isoSec: t.Format("2006-01-02T15:04:05"),
		zone:   t.Format("Z07:00"),
	}
	lastSecond.Store(ts)
	return ts
}
