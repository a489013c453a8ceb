package httpapi

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestIdempotencyKey(t *testing.T) {
	for _, c := range []struct {
		hdr  []string
		want string
		ok   bool
	}{
		{nil, "", true},
		{[]string{"8e03978e-40d5-43e8-bc93-6894a57f9324"}, "8e03978e-40d5-43e8-bc93-6894a57f9324", true},
		{[]string{`"quoted-key"`}, "quoted-key", true}, // the IETF draft's sf-string
		{[]string{strings.Repeat("k", 64)}, strings.Repeat("k", 64), true},
		{[]string{strings.Repeat("k", 65)}, "", false},
		{[]string{""}, "", false},
		{[]string{`""`}, "", false},
		{[]string{"has space"}, "", false},
		{[]string{"caf\u00e9"}, "", false},
		{[]string{`a"b`}, "", false},
		{[]string{"a", "b"}, "", false},
	} {
		r := httptest.NewRequest(http.MethodPost, "/", nil)
		for _, h := range c.hdr {
			r.Header.Add(HeaderIdempotencyKey, h)
		}
		got, err := IdempotencyKey(r)
		if got != c.want || (err == nil) != c.ok {
			t.Errorf("%q: %q, %v; want %q, ok %v", c.hdr, got, err, c.want, c.ok)
		}
		if err != nil {
			if he, ok := err.(*Error); !ok || he.Status != http.StatusBadRequest || he.Code != CodeValidation {
				t.Errorf("%q: error %v, want 400 validation_failed", c.hdr, err)
			}
		}
	}
}

func TestFingerprintTellsRequestsApart(t *testing.T) {
	a := Fingerprint([]any{"Team", "", "", []string{"max", "mia"}})
	if a != Fingerprint([]any{"Team", "", "", []string{"max", "mia"}}) {
		t.Fatal("the same request, another fingerprint")
	}
	if a == Fingerprint([]any{"Team", "", "", []string{"max"}}) || a == Fingerprint([]any{"Team2", "", "", []string{"max", "mia"}}) {
		t.Fatal("two requests, one fingerprint")
	}
}
