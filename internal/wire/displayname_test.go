package wire

import (
	"errors"
	"testing"
)

func TestCheckNameJoiners(t *testing.T) {
	for _, c := range []struct {
		name       string
		off, on    NameStatus
		normalized string
	}{
		{"  Sara  ", NameOK, NameOK, "Sara"},
		{"Sara 👩\u200d💻", NameNeedsJoiners, NameOK, "Sara 👩\u200d💻"},
		{"🏳️\u200d🌈", NameNeedsJoiners, NameOK, "🏳️\u200d🌈"},
		{"محمد\u200cرضا", NameNeedsJoiners, NameOK, "محمد\u200cرضا"},
		{" \u200dab", NameInvalid, NameInvalid, ""}, // starts with a joiner once trimmed
		{"ab\u200c", NameInvalid, NameInvalid, ""},
		{"\u200d", NameInvalid, NameInvalid, ""},
		{"\u200d\u200c", NameInvalid, NameInvalid, ""},
		{"a\u202eb", NameInvalid, NameInvalid, ""}, // bidi override
		{"a\u2066b\u2069", NameInvalid, NameInvalid, ""},
		{"a\u200eb", NameInvalid, NameInvalid, ""}, // LRM
		{"a\u200bb", NameInvalid, NameInvalid, ""}, // zero-width space
		{"a\u200d\u202eb", NameInvalid, NameInvalid, ""},
		{"", NameInvalid, NameInvalid, ""},
	} {
		if _, st := CheckName(c.name, MaxDisplayName, false); st != c.off {
			t.Errorf("%+q without joiners: %d, want %d", c.name, st, c.off)
		}
		got, st := CheckName(c.name, MaxDisplayName, true)
		if st != c.on || got != c.normalized {
			t.Errorf("%+q with joiners: %q %d, want %q %d", c.name, got, st, c.normalized, c.on)
		}
	}
	if _, err := NormalizeDisplayName("Sara 👩\u200d💻"); !errors.Is(err, ErrInvalidDisplayName) {
		t.Errorf("NormalizeDisplayName took a joiner: %v", err)
	}
}
