package cache

import (
	"net/http"
	"testing"
	"time"
)

func TestParseHTTPDate(t *testing.T) {
	want := time.Date(1994, time.November, 6, 8, 49, 37, 0, time.UTC)
	for _, v := range []string{
		"Sun, 06 Nov 1994 08:49:37 GMT",  // IMF-fixdate
		"Sunday, 06-Nov-94 08:49:37 GMT", // rfc850-date
		"Sun Nov  6 08:49:37 1994",       // asctime-date
	} {
		got, ok := parseHTTPDate(v)
		if !ok || !got.Equal(want) {
			t.Errorf("%q = %v, %v; want %v", v, got, ok, want)
		}
	}
	if got, ok := parseHTTPDate("Sat, 31 Dec 2016 23:59:60 GMT"); !ok || !got.Equal(time.Date(2017, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("leap second: %v %v", got, ok)
	}
	for _, v := range []string{
		"",
		"0",
		"-1",
		"Sun, 06 Nov 1994 8:49:37 GMT",    // one-digit hour
		"Sun,  06 Nov 1994 08:49:37 GMT",  // extra space
		"Sun, 06 Nov 1994  08:49:37 GMT",  // extra space
		" Sun, 06 Nov 1994 08:49:37 GMT",  // leading space
		"Sun, 06 Nov 1994 08:49:37 GMT ",  // trailing space
		"Sun, 6 Nov 1994 08:49:37 GMT",    // one-digit day
		"Sun, 06 Nov 94 08:49:37 GMT",     // two-digit year
		"Sun, 06 Nov 1994 08:49:37 UTC",   // not GMT
		"Sun, 06 Nov 1994 08:49:37 gmt",   // case
		"sun, 06 Nov 1994 08:49:37 GMT",   // case
		"Sun, 06 nov 1994 08:49:37 GMT",   // case
		"Sun, 06 Nov 1994 08:49:37 +0000", // numeric zone
		"Sun, 06 Nov 1994 24:00:00 GMT",   // hour out of range
		"Sun, 06 Nov 1994 08:60:00 GMT",   // minute out of range
		"Sun, 31 Feb 1994 08:49:37 GMT",   // no such day
		"Sun, 00 Nov 1994 08:49:37 GMT",
		"Sun, 06 Nov 1994 08:49:37GMT",
		"Sun 06 Nov 1994 08:49:37 GMT",
		"Xyz, 06 Nov 1994 08:49:37 GMT",
		"Sunday, 06-Nov-1994 08:49:37 GMT",
		"Sun, 06-Nov-94 08:49:37 GMT",
		"Sunday, 6-Nov-94 08:49:37 GMT",
		"Sun Nov 6 08:49:37 1994",
		"Sun Nov 06 8:49:37 1994",
		"Sun Nov  6 08:49:37 94",
		"Sun, 06 Nov 1994 08:49:3a GMT",
	} {
		if got, ok := parseHTTPDate(v); ok {
			t.Errorf("%q accepted as %v", v, got)
		}
	}
	// rfc850's two-digit year: more than 50 years ahead means the past.
	yy := (time.Now().UTC().Year() + 60) % 100
	v := "Monday, 01-Jan-" + string(rune('0'+yy/10)) + string(rune('0'+yy%10)) + " 00:00:00 GMT"
	if got, ok := parseHTTPDate(v); !ok || got.Year() > time.Now().Year() {
		t.Errorf("%q = %v %v: want a year in the past", v, got, ok)
	}
}

// FuzzParseHTTPDate: whatever the strict parser accepts, net/http's
// lenient one accepts too, as the same instant.
func FuzzParseHTTPDate(f *testing.F) {
	for _, s := range []string{"Sun, 06 Nov 1994 08:49:37 GMT", "Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994", "Sun, 06 Nov 1994 8:49:37 GMT"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, ok := parseHTTPDate(s)
		// rfc850 dates read their two-digit year by RFC 9110's rule, not
		// net/http's; time.Parse refuses leap seconds.
		if !ok || (len(s) != 29 && len(s) != 24) || s[len(s)-6:len(s)-4] == "60" || s[17:19] == "60" {
			return
		}
		ref, err := http.ParseTime(s)
		if err != nil || !ref.Equal(got) {
			t.Fatalf("%q accepted as %v, but net/http says %v, %v", s, got, ref, err)
		}
	})
}
