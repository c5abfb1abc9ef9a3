package tomlconf

import (
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Size is a byte count written as an integer or with a unit: "512", "64KiB",
// "256MiB", "10GiB", "1.5GB", "100k". Binary (KiB) and decimal (kB) units are
// both accepted; a bare k/m/g means binary, as in nginx.
type Size int64

var sizeUnits = map[string]float64{
	"": 1, "b": 1,
	"k": 1 << 10, "kib": 1 << 10, "kb": 1e3,
	"m": 1 << 20, "mib": 1 << 20, "mb": 1e6,
	"g": 1 << 30, "gib": 1 << 30, "gb": 1e9,
	"t": 1 << 40, "tib": 1 << 40, "tb": 1e12,
}

// ParseSize parses a size such as "256MiB".
func ParseSize(s string) (Size, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '.') {
		i++
	}
	num, unit := t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	mult, ok := sizeUnits[unit]
	if num == "" || !ok {
		return 0, fmt.Errorf("invalid size %q: want a number of bytes with an optional unit (KiB, MiB, GiB, TiB, kB, MB, GB)", s)
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, fmt.Errorf("invalid size %q: %w", s, err)
	}
	v := f * mult
	if v > math.MaxInt64 {
		return 0, fmt.Errorf("invalid size %q: too large", s)
	}
	return Size(v), nil
}

// UnmarshalTOML accepts an integer (bytes) or a string with a unit.
func (s *Size) UnmarshalTOML(v any) error {
	switch x := v.(type) {
	case int64:
		if x < 0 {
			return fmt.Errorf("invalid size %d: must not be negative", x)
		}
		*s = Size(x)
		return nil
	case string:
		p, err := ParseSize(x)
		if err != nil {
			return err
		}
		*s = p
		return nil
	}
	return fmt.Errorf("invalid size %v: want a number of bytes or a string like \"256MiB\"", v)
}

// String formats the size with the largest exact binary unit.
func (s Size) String() string {
	for _, u := range []struct {
		name string
		n    int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if int64(s) >= u.n && int64(s)%u.n == 0 {
			return fmt.Sprintf("%d%s", int64(s)/u.n, u.name)
		}
	}
	return strconv.FormatInt(int64(s), 10)
}

// Duration is a time span written as Go writes it ("500ms", "30s", "6h",
// "1h30m"), with "d" for days allowed too ("7d").
type Duration time.Duration

// ParseDuration parses "30s", "6h", "7d" and the like.
func ParseDuration(s string) (time.Duration, error) {
	t := strings.TrimSpace(s)
	if days, ok := strings.CutSuffix(t, "d"); ok && days != "" {
		n, err := strconv.ParseFloat(days, 64)
		if err == nil {
			if n < 0 {
				return 0, fmt.Errorf("invalid duration %q: must not be negative", s)
			}
			if v := n * float64(24*time.Hour); v < math.MaxInt64 {
				return time.Duration(v), nil
			}
			return 0, fmt.Errorf("invalid duration %q: too long", s)
		}
	}
	d, err := time.ParseDuration(t)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q: want a number with a unit, e.g. \"500ms\", \"30s\", \"5m\", \"6h\", \"7d\"", s)
	}
	if d < 0 {
		return 0, fmt.Errorf("invalid duration %q: must not be negative", s)
	}
	return d, nil
}

// UnmarshalTOML accepts only strings with a unit: a bare number is ambiguous.
func (d *Duration) UnmarshalTOML(v any) error {
	s, ok := v.(string)
	if !ok {
		return fmt.Errorf("invalid duration %v: write it as a string with a unit, e.g. \"%vs\"", v, v)
	}
	p, err := ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(p)
	return nil
}

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// Prefix is an address range written as a CIDR ("10.0.0.0/8") or a single
// address ("192.0.2.7", "::1"), decoded once, with its line on error.
type Prefix netip.Prefix

// ParsePrefix accepts a CIDR (masked to its network) or a single address.
func ParsePrefix(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q: want an address or CIDR such as 10.0.0.0/8", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// UnmarshalTOML accepts a string.
func (p *Prefix) UnmarshalTOML(v any) error {
	s, ok := v.(string)
	if !ok {
		return fmt.Errorf("%v: want an address or CIDR string such as \"10.0.0.0/8\"", v)
	}
	pfx, err := ParsePrefix(s)
	if err != nil {
		return err
	}
	*p = Prefix(pfx)
	return nil
}

// String is the prefix as written by netip.
func (p Prefix) String() string { return netip.Prefix(p).String() }

// Prefixes converts a decoded list for the packages that use it.
func Prefixes(ps []Prefix) []netip.Prefix {
	if len(ps) == 0 {
		return nil
	}
	out := make([]netip.Prefix, len(ps))
	for i, p := range ps {
		out[i] = netip.Prefix(p)
	}
	return out
}
