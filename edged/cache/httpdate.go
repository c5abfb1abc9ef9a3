package cache

import "time"

// parseHTTPDate parses an HTTP-date exactly as RFC 9110 5.6.7 defines it:
// IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT"), or one of the obsolete
// forms a recipient must still accept, rfc850-date ("Sunday, 06-Nov-94
// 08:49:37 GMT") and asctime-date ("Sun Nov  6 08:49:37 1994"). Anything
// else is invalid: extra or missing spaces, one-digit hours, other time
// zones, lowercase names, impossible dates. (net/http's ParseTime goes
// through time.Parse, which accepts one-digit fields.) It does not
// allocate.
func parseHTTPDate(v string) (time.Time, bool) {
	switch {
	case len(v) == 29:
		return parseIMFFixdate(v)
	case len(v) == 24:
		return parseASCTime(v)
	}
	return parseRFC850(v)
}

// Sun, 06 Nov 1994 08:49:37 GMT
func parseIMFFixdate(v string) (time.Time, bool) {
	if dayName(v[:3]) < 0 || v[3:5] != ", " || v[7] != ' ' || v[11] != ' ' || v[16] != ' ' || v[25:] != " GMT" {
		return time.Time{}, false
	}
	day, ok1 := digits(v[5:7])
	mon := month(v[8:11])
	year, ok2 := digits(v[12:16])
	if !ok1 || !ok2 || mon < 0 {
		return time.Time{}, false
	}
	return makeDate(year, mon, day, v[17:25])
}

// Sun Nov  6 08:49:37 1994
func parseASCTime(v string) (time.Time, bool) {
	if dayName(v[:3]) < 0 || v[3] != ' ' || v[7] != ' ' || v[10] != ' ' || v[19] != ' ' {
		return time.Time{}, false
	}
	mon := month(v[4:7])
	d := v[8:10]
	if d[0] == ' ' {
		d = d[1:] // ( SP DIGIT )
	}
	day, ok1 := digits(d)
	year, ok2 := digits(v[20:24])
	if mon < 0 || !ok1 || !ok2 {
		return time.Time{}, false
	}
	return makeDate(year, mon, day, v[11:19])
}

// Sunday, 06-Nov-94 08:49:37 GMT
func parseRFC850(v string) (time.Time, bool) {
	comma := -1
	for i := 0; i < len(v) && i < 10; i++ {
		if v[i] == ',' {
			comma = i
			break
		}
	}
	if comma < 0 || !longDayName(v[:comma]) {
		return time.Time{}, false
	}
	r := v[comma:]
	// ", 06-Nov-94 08:49:37 GMT"
	if len(r) != 24 || r[:2] != ", " || r[4] != '-' || r[8] != '-' || r[11] != ' ' || r[20:] != " GMT" {
		return time.Time{}, false
	}
	day, ok1 := digits(r[2:4])
	mon := month(r[5:8])
	yy, ok2 := digits(r[9:11])
	if !ok1 || !ok2 || mon < 0 {
		return time.Time{}, false
	}
	// RFC 9110 5.6.7: a two-digit year more than 50 years in the future is
	// the most recent past year with those digits.
	now := time.Now().UTC().Year()
	year := now - now%100 + yy
	if year > now+50 {
		year -= 100
	}
	return makeDate(year, mon, day, r[12:20])
}

// makeDate checks the time of day "hh:mm:ss" and the calendar date.
func makeDate(year, mon, day int, tod string) (time.Time, bool) {
	if tod[2] != ':' || tod[5] != ':' {
		return time.Time{}, false
	}
	h, ok1 := digits(tod[0:2])
	m, ok2 := digits(tod[3:5])
	s, ok3 := digits(tod[6:8])
	if !ok1 || !ok2 || !ok3 || h > 23 || m > 59 || s > 60 || day < 1 || day > 31 {
		return time.Time{}, false
	}
	t := time.Date(year, time.Month(mon+1), day, h, m, s, 0, time.UTC)
	if t.Day() != day && s != 60 { // 31 Feb, for instance (a leap second rolls over)
		return time.Time{}, false
	}
	return t, true
}

// digits parses a fixed-width run of ASCII digits.
func digits(s string) (int, bool) {
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, len(s) > 0
}

var dayNames = [...]string{"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"}
var longDayNames = [...]string{"Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"}
var monthNames = [...]string{"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"}

func dayName(s string) int {
	for i, d := range dayNames {
		if s == d {
			return i
		}
	}
	return -1
}

func longDayName(s string) bool {
	for _, d := range longDayNames {
		if s == d {
			return true
		}
	}
	return false
}

func month(s string) int {
	for i, m := range monthNames {
		if s == m {
			return i
		}
	}
	return -1
}
