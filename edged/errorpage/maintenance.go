package errorpage

import (
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"github.com/edgeapp/edgeapp/edged/access"
	"github.com/edgeapp/edgeapp/edged/reqinfo"
)

// DefaultRetryAfter is what a maintenance answer tells clients by default.
const DefaultRetryAfter = 5 * time.Minute

var defaultMaintenance = textPage("503 Service Unavailable: down for maintenance, back soon\n")

func textPage(s string) *Page {
	return &Page{body: []byte(s), ctype: []string{"text/plain; charset=utf-8"}, length: []string{strconv.Itoa(len(s))}}
}

// Maintenance answers 503 with a page and Retry-After, except to the
// clients it allows, whose requests go on as usual.
type Maintenance struct {
	page       *Page
	retryAfter []string
	allow      *access.List // nil: nobody passes
}

// NewMaintenance prepares the answer. page may be nil for the default
// text; allow lists the CIDRs of clients that still reach the site.
func NewMaintenance(page *Page, retryAfter time.Duration, allow []string) (*Maintenance, error) {
	if retryAfter <= 0 {
		retryAfter = DefaultRetryAfter
	}
	m := &Maintenance{page: page, retryAfter: []string{strconv.FormatInt(int64((retryAfter+time.Second-1)/time.Second), 10)}}
	if m.page == nil {
		m.page = defaultMaintenance
	}
	if len(allow) > 0 {
		l, err := access.New(allow, nil)
		if err != nil {
			return nil, err
		}
		m.allow = l
	}
	return m, nil
}

// HasPage reports whether m was given its own page.
func (m *Maintenance) HasPage() bool { return m.page != defaultMaintenance }

// Handler answers for next while in maintenance.
func (m *Maintenance) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if m.allow != nil && m.allow.Allowed(client(r)) {
			next.ServeHTTP(w, r)
			return
		}
		h := w.Header()
		h["Retry-After"] = m.retryAfter
		h["Cache-Control"] = []string{"no-store"}
		m.page.write(w, r, http.StatusServiceUnavailable)
	})
}

func client(r *http.Request) netip.Addr {
	if info := reqinfo.From(r.Context()); info != nil {
		return info.Client
	}
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}
