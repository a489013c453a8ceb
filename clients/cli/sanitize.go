package cli

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// Text that other users chose (message bodies, media names, the user
// agents of sessions, a server's error messages) must never reach the
// terminal as control characters: an escape sequence in a peer's message
// could write the clipboard (OSC 52), retitle the window, clear the
// screen or answer a terminal query into the input. Everything rendered
// from such text goes through safeText.

// safeText replaces control characters and bidirectional overrides
// (which reorder what follows, disguising a file extension or a line)
// with '?', and tabs with a space. Newlines are kept only when
// keepNewlines is set (the chat pane, which indents the lines after the
// first so that they cannot pass for another message); elsewhere they
// become a space.
func safeText(s string, keepNewlines bool) string {
	clean := true
	for _, r := range s {
		if r == utf8.RuneError || unicode.IsControl(r) || isBidiControl(r) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s {
		switch {
		case r == '\n' && keepNewlines:
			b.WriteRune(r)
		case r == '\n', r == '\t':
			b.WriteByte(' ')
		case r == utf8.RuneError, unicode.IsControl(r), isBidiControl(r):
			b.WriteByte('?')
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

func isBidiControl(r rune) bool {
	return r >= 0x202A && r <= 0x202E || r >= 0x2066 && r <= 0x2069 || r == 0x200E || r == 0x200F || r == 0x061C
}

// displayName makes a name that someone else chose safe to print on one
// line, cut to maxNameCells.
func displayName(name string) string {
	return oneLine(strings.TrimSpace(safeText(name, false)), maxNameCells)
}
