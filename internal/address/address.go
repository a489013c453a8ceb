// Package address reads the addresses of users across regions: a user is
// "name" inside their home region and "name@region" everywhere else
// (docs/regions.md). It checks the region part only; the name
// part is a user ID, whose rules belong to internal/wire (which uses this
// package to accept qualified names in topics).
package address

import (
	"errors"
	"strings"
)

// MaxRegionLen bounds a region name.
const MaxRegionLen = 32

// Errors of Parse and ValidRegion.
var (
	ErrRegion  = errors.New("address: region must be 1 to 32 letters, digits or '-', starting with a letter or digit")
	ErrAddress = errors.New("address: want name or name@region")
)

// ValidRegion checks a region name: 1 to 32 ASCII letters, digits and
// '-', not starting with '-'.
func ValidRegion(s string) error {
	if len(s) == 0 || len(s) > MaxRegionLen || s[0] == '-' {
		return ErrRegion
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return ErrRegion
		}
	}
	return nil
}

// Address is a parsed address: Region is empty for an unqualified name.
type Address struct {
	Name   string
	Region string
}

// Parse splits "name" or "name@region". The name must be non-empty and
// hold no '@'; the region must pass ValidRegion. Parse does not check the
// name's own rules (wire.ValidUserID).
func Parse(s string) (Address, error) {
	name, region, qualified := strings.Cut(s, "@")
	if name == "" {
		return Address{}, ErrAddress
	}
	if !qualified {
		return Address{Name: name}, nil
	}
	if err := ValidRegion(region); err != nil {
		return Address{}, err // also catches a second '@'
	}
	return Address{Name: name, Region: region}, nil
}

// String is the address as Parse reads it.
func (a Address) String() string {
	if a.Region == "" {
		return a.Name
	}
	return a.Name + "@" + a.Region
}

// IsLocal tells whether a names a user of region own: unqualified, or
// qualified with own.
func (a Address) IsLocal(own string) bool { return a.Region == "" || a.Region == own }

// Qualify is name@region.
func Qualify(name, region string) string { return name + "@" + region }

// RegionOf returns the region part of s ("" when s is unqualified or
// malformed); cheap, for hot paths that only ask "is this remote".
func RegionOf(s string) string {
	i := strings.IndexByte(s, '@')
	if i < 0 {
		return ""
	}
	return s[i+1:]
}
