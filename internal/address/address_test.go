package address

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for in, want := range map[string]Address{
		"bob":         {Name: "bob"},
		"bob@us":      {Name: "bob", Region: "us"},
		"bob@eu-west": {Name: "bob", Region: "eu-west"},
		"b@A1":        {Name: "b", Region: "A1"},
	} {
		got, err := Parse(in)
		if err != nil || got != want {
			t.Errorf("Parse(%q) = %+v, %v; want %+v", in, got, err, want)
		}
		if got.String() != in {
			t.Errorf("Parse(%q).String() = %q", in, got.String())
		}
	}
	for _, in := range []string{"", "@us", "bob@", "bob@us@eu", "bob@-us", "bob@u s", "bob@u/s", "bob@" + strings.Repeat("a", 33), "bob@é"} {
		if a, err := Parse(in); err == nil {
			t.Errorf("Parse(%q) = %+v, want an error", in, a)
		}
	}
}

func TestValidRegion(t *testing.T) {
	for _, ok := range []string{"local", "us", "eu-1", "X", strings.Repeat("a", 32)} {
		if err := ValidRegion(ok); err != nil {
			t.Errorf("ValidRegion(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "-us", "us_1", "u.s", "us/", "$link", strings.Repeat("a", 33)} {
		if ValidRegion(bad) == nil {
			t.Errorf("ValidRegion(%q) accepted", bad)
		}
	}
}

func TestIsLocalAndRegionOf(t *testing.T) {
	if !(Address{Name: "bob"}).IsLocal("eu") || !(Address{Name: "bob", Region: "eu"}).IsLocal("eu") || (Address{Name: "bob", Region: "us"}).IsLocal("eu") {
		t.Fatal("IsLocal")
	}
	if RegionOf("bob@us") != "us" || RegionOf("bob") != "" || Qualify("bob", "us") != "bob@us" {
		t.Fatal("RegionOf/Qualify")
	}
}

// FuzzParse: Parse never panics, and what it accepts prints back to its
// input, holds one '@' at most and a valid region.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"bob", "bob@us", "@", "a@b@c", "bob@-x", "x@" + strings.Repeat("z", 40)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := Parse(s)
		if err != nil {
			return
		}
		if a.String() != s {
			t.Fatalf("Parse(%q).String() = %q", s, a.String())
		}
		if strings.Contains(a.Name, "@") || strings.Contains(a.Region, "@") {
			t.Fatalf("Parse(%q) = %+v: '@' left in a part", s, a)
		}
		if a.Region != "" && ValidRegion(a.Region) != nil {
			t.Fatalf("Parse(%q) accepted region %q", s, a.Region)
		}
		if RegionOf(s) != a.Region {
			t.Fatalf("RegionOf(%q) = %q, Parse says %q", s, RegionOf(s), a.Region)
		}
	})
}
