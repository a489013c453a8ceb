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

// NormalizeDisplayName trims surrounding spaces and checks that 1 to
// MaxDisplayName printable characters remain. Registration (auth) and
// profile edits (users) both use it, so a name one accepts the other does.
func NormalizeDisplayName(name string) (string, error) {
	name = strings.TrimSpace(name)
	n := utf8.RuneCountInString(name)
	bad := n < 1 || n > MaxDisplayName || !utf8.ValidString(name) ||
		strings.IndexFunc(name, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0
	if bad {
		return "", fmt.Errorf("%w: 1 to %d printable characters", ErrInvalidDisplayName, MaxDisplayName)
	}
	return name, nil
}
