package wire

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

// ParseEnvelopeWithin takes a larger whole-payload limit (a stored
// envelope, its <, >, & escaped, forwarded by a region link) and still
// holds the body to MaxBodyBytes.
func TestParseEnvelopeWithin(t *testing.T) {
	e := Envelope{CID: "c1", Type: TypeText, Body: strings.Repeat("<", MaxBodyBytes)}
	stored := e.Marshal() // 48 KiB: each '<' is \u003c
	// The client's limit takes a body of MaxBodyBytes at its worst
	// escaping, and no more.
	if got, err := ParseEnvelope(stored); err != nil || got.Body != e.Body {
		t.Fatalf("the client's limit, a body of %d bytes escaped to %d: %v", MaxBodyBytes, len(stored), err)
	}
	padded := `{"cid":"c1","type":"text","body":"x","from":"` + strings.Repeat("a", MaxEnvelopeBytes) + `"}`
	if _, err := ParseEnvelope([]byte(padded)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("the client's limit, %d bytes: %v", len(padded), err)
	}
	got, err := ParseEnvelopeWithin(stored, 64<<10)
	if err != nil || got.Body != e.Body {
		t.Fatalf("within 64 KiB: %v", err)
	}
	if _, err := ParseEnvelopeWithin(stored, len(stored)-1); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("over the limit given: %v", err)
	}
	e.Body = strings.Repeat("<", MaxBodyBytes+1)
	if _, err := ParseEnvelopeWithin(e.Marshal(), 64<<10); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("a body over %d bytes: %v", MaxBodyBytes, err)
	}
}

// invisibleSamples are characters a device ID or cid of new input may
// not hold: C1 controls, bidi controls, zero-width and other format
// characters, separators, spaces other than U+0020, invalid UTF-8.
var invisibleSamples = map[string]string{
	"NEL (C1)":             "\u0085",
	"CSI (C1)":             "\u009b",
	"RLO (bidi)":           "\u202e",
	"LRI (bidi)":           "\u2066",
	"zero-width space":     "\u200b",
	"zero-width joiner":    "\u200d",
	"BOM":                  "\ufeff",
	"soft hyphen":          "\u00ad",
	"line separator":       "\u2028",
	"no-break space":       "\u00a0",
	"private use":          "\ue000",
	"a lone surrogate":     "\xed\xa0\x80",
	"a stray continuation": "\x85",
}

// A client's cid (new input) holds only printable characters: C1
// controls, bidi controls and other invisible characters end up in the
// sender's devices, logs and push payloads. An envelope a region link
// forwards (stored before the rule, ParseEnvelopeWithin) still passes.
func TestClientCIDRefusesInvisibleCharacters(t *testing.T) {
	for name, c := range invisibleSamples {
		cid := "c-1" + c + "x"
		payload := []byte(`{"cid":"` + cid + `","type":"text","body":"hi"}`)
		_, err := ParseEnvelope(payload)
		if !utf8.ValidString(cid) {
			if err == nil { // refused as not UTF-8
				t.Errorf("cid with %s (%+q) taken", name, cid)
			}
			continue // a link's payload is UTF-8 too
		}
		if !errors.Is(err, ErrMissingCID) {
			t.Errorf("cid with %s (%+q): %v, want ErrMissingCID", name, cid, err)
		}
		stored := (&Envelope{CID: cid, Type: TypeText, Body: "hi"}).Marshal()
		if got, err := ParseEnvelopeWithin(stored, 64<<10); err != nil || got.CID != cid {
			t.Errorf("a stored envelope with a cid with %s, from a link: %+v, %v; want it taken", name, got, err)
		}
	}
	for _, cid := range []string{"c-7f3a", "ünïcödé 1", "日本語", "emoji 😀", "a b"} {
		if _, err := ParseEnvelope([]byte(`{"cid":"` + cid + `","type":"text","body":"hi"}`)); err != nil {
			t.Errorf("cid %q: %v", cid, err)
		}
	}
}

// A device ID a client names anew (CONNECT, login, push registration)
// follows the same rule; ParseClientID, which splits the IDs of
// sessions and registrations made before the rule, does not.
func TestNewDeviceIDRefusesInvisibleCharacters(t *testing.T) {
	for name, c := range invisibleSamples {
		dev := "phone" + c
		if err := ValidNewDeviceID(dev); !errors.Is(err, ErrInvalidName) {
			t.Errorf("device with %s (%+q): %v, want ErrInvalidName", name, dev, err)
		}
		if _, _, err := ParseNewClientID("alice/" + dev); !errors.Is(err, ErrInvalidName) {
			t.Errorf("client ID with %s: %v, want ErrInvalidName", name, err)
		}
		if c[0] >= 0x20 && utf8.ValidString(c) {
			if _, _, err := ParseClientID("alice/" + dev); err != nil {
				t.Errorf("ParseClientID of a client ID with %s (stored before the rule): %v", name, err)
			}
		}
	}
	for _, dev := range []string{"phone", "Alice's iPhone", "téléphone-2", "手机", "📱"} {
		if err := ValidNewDeviceID(dev); err != nil {
			t.Errorf("device %q: %v", dev, err)
		}
	}
	for _, dev := range []string{"", "a/b", "a+", "#", strings.Repeat("d", 65), "a\x01", "a\x7f"} {
		if err := ValidNewDeviceID(dev); err == nil {
			t.Errorf("device %q taken", dev)
		}
	}
}
