package wire

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxDisplayName is the longest display name, in characters.
const MaxDisplayName = 64

// ErrInvalidDisplayName reports a display name that is not 1 to
// MaxDisplayName printable characters.
var ErrInvalidDisplayName = errors.New("invalid display name")

// The zero-width non-joiner and joiner: format characters (Unicode
// category Cf, not printable) that names need all the same: ZWNJ is part
// of ordinary Persian spelling ("محمد‌رضا"), ZWJ makes emoji sequences
// ("👩‍💻", "🏳️‍🌈"). Names take them from cluster feature level 1 on
// (cluster/featurelevel); every other Cf character (bidi controls,
// U+200B, U+200E/U+200F, ...) is still refused.
const (
	ZWNJ = '\u200C'
	ZWJ  = '\u200D'
)

// NameStatus is what CheckName makes of a display or group name.
type NameStatus int

const (
	NameOK           NameStatus = iota // allowed
	NameInvalid                        // refused at any feature level
	NameNeedsJoiners                   // allowed only where joiners are (see ZWJ); refused now
)

// CheckName trims surrounding spaces from a display or group name and
// checks that 1 to max characters remain, each printable or, when
// joiners is set, a ZWNJ or ZWJ between two other characters (a name
// does not start or end with one). NameNeedsJoiners tells a name refused
// only because joiners is not set.
func CheckName(name string, max int, joiners bool) (string, NameStatus) {
	name = strings.TrimSpace(name)
	n := utf8.RuneCountInString(name)
	if n < 1 || n > max || !utf8.ValidString(name) {
		return "", NameInvalid
	}
	hasJoiner := false
	for _, r := range name {
		if r == ZWNJ || r == ZWJ {
			hasJoiner = true
		} else if !unicode.IsPrint(r) {
			return "", NameInvalid
		}
	}
	if !hasJoiner {
		return name, NameOK
	}
	first, _ := utf8.DecodeRuneInString(name)
	last, _ := utf8.DecodeLastRuneInString(name)
	if first == ZWNJ || first == ZWJ || last == ZWNJ || last == ZWJ {
		return "", NameInvalid
	}
	if !joiners {
		return "", NameNeedsJoiners
	}
	return name, NameOK
}

// NameError is the error of a name CheckName refused: base wrapped, with
// what is allowed.
func NameError(base error, max int, st NameStatus) error {
	if st == NameNeedsJoiners {
		return fmt.Errorf("%w: the zero-width joiner and non-joiner (U+200D, U+200C) are accepted once every node "+
			"of the cluster runs a version that takes them; the cluster is being upgraded", base)
	}
	return fmt.Errorf("%w: 1 to %d printable characters", base, max)
}

// NormalizeDisplayName trims surrounding spaces and checks that 1 to
// MaxDisplayName printable characters remain (no ZWNJ or ZWJ: see
// NormalizeDisplayNameJoiners).
func NormalizeDisplayName(name string) (string, error) {
	return NormalizeDisplayNameJoiners(name, false)
}

// NormalizeDisplayNameJoiners is NormalizeDisplayName that also takes
// ZWNJ and ZWJ between other characters when joiners is set (the
// cluster's feature level allows them). Registration (auth) and profile
// edits (users) both use it, so a name one accepts the other does.
func NormalizeDisplayNameJoiners(name string, joiners bool) (string, error) {
	name, st := CheckName(name, MaxDisplayName, joiners)
	if st != NameOK {
		return "", NameError(ErrInvalidDisplayName, MaxDisplayName, st)
	}
	return name, nil
}
