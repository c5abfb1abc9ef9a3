package compress

import "testing"

// FuzzRank checks that any Accept-Encoding value yields distinct, in-range
// offers, and that Negotiate agrees with Rank's first choice.
func FuzzRank(f *testing.F) {
	for _, s := range []string{"", "gzip", "gzip;q=0.5, zstd", "*;q=0", "br;q=1.000, *", ";;,,q=", "gzip;q=0.1234"} {
		f.Add(s)
	}
	offers := []string{"zstd", "gzip", "br"}
	f.Fuzz(func(t *testing.T, ae string) {
		r := Rank(ae, offers, nil)
		seen := map[int]bool{}
		for _, i := range r {
			if i < 0 || i >= len(offers) || seen[i] {
				t.Fatalf("Rank(%q) = %v", ae, r)
			}
			seen[i] = true
		}
		n := Negotiate(ae, offers)
		if (len(r) == 0) != (n == "") || (len(r) > 0 && offers[r[0]] != n) {
			t.Fatalf("Negotiate(%q) = %q, Rank = %v", ae, n, r)
		}
	})
}
