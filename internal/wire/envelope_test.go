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
	e := Envelope{CID: "c1", Type: TypeText, Body: strings.Repeat("<", 4000)}
	stored := e.Marshal() // 24 KiB: each '<' is \u003c
	if _, err := ParseEnvelope(stored); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("the client's limit: %v", err)
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
