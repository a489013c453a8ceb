package wire

import (
	"errors"
	"strings"
	"testing"
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
