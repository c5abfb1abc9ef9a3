package cache

import "testing"

func TestCanonicalAE(t *testing.T) {
	for in, want := range map[string]string{
		"gzip":                        "gzip",
		"gzip, deflate, br, zstd":     "br, deflate, gzip, zstd",
		"zstd,br , GZIP,deflate":      "br, deflate, gzip, zstd",
		"gzip;q=1.0, br;q=0.50":       "br;q=0.5, gzip",
		"gzip; q=0.500, *;q=0":        "*;q=0, gzip;q=0.5",
		"identity;q=0, gzip":          "gzip, identity;q=0",
		"gzip;level=9":                "gzip;level=9", // not a weight: left alone
		"gzip;q=2":                    "gzip;q=2",
		"gzip;q=0.12345":              "gzip;q=0.12345",
		"gzip, \"quoted\"":            "gzip, \"quoted\"",
		", gzip,,":                    "gzip",
		"br;q=0.001, gzip;Q=0.999":    "br;q=0.001, gzip;q=0.999",
		"deflate, gzip;q=1, gzip;q=0": "deflate, gzip, gzip;q=0",
	} {
		if got := canonicalAE(in); got != want {
			t.Errorf("canonicalAE(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestAETableHitDoesNotAllocate: the hit path's Accept-Encoding lookup.
func TestAETableHitDoesNotAllocate(t *testing.T) {
	c, err := Open(Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	v := "gzip, deflate, br, zstd"
	if got := c.ae.canonical(v); got != "br, deflate, gzip, zstd" {
		t.Fatal(got)
	}
	if n := testing.AllocsPerRun(100, func() { c.ae.canonical(v) }); n != 0 {
		t.Fatalf("%v allocations per lookup of a known value", n)
	}
}
