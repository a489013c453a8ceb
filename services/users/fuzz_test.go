package users

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/edgechat/edgechat/internal/httpapi"
)

// FuzzDecodePatch feeds arbitrary bodies to the PATCH /user/me decoder and
// the field validation behind it. Seeds: testdata/fuzz.
func FuzzDecodePatch(f *testing.F) {
	f.Add([]byte(`{"displayName":"Alice","about":"hi"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := decodePatch(body)
		if err != nil {
			var he *httpapi.Error
			if !errors.As(err, &he) || he.Status < 400 || he.Status > 499 {
				t.Fatalf("decoder error is not a 4xx httpapi.Error: %#v", err)
			}
			return
		}
		b, _ := json.Marshal(req)
		again, err := decodePatch(b)
		if err != nil || !eq(again.DisplayName, req.DisplayName) || !eq(again.About, req.About) {
			t.Fatalf("round trip: %s (%v)", b, err)
		}
		if req.DisplayName != nil {
			if n, err := normalizeDisplayName(*req.DisplayName); err == nil {
				if _, err := normalizeDisplayName(n); err != nil {
					t.Fatalf("normalized name refused: %q", n)
				}
			} else if !errors.Is(err, ErrInvalidDisplayName) {
				t.Fatal(err)
			}
		}
		if req.About != nil {
			if err := validAbout(*req.About); err != nil && !errors.Is(err, ErrInvalidAbout) {
				t.Fatal(err)
			}
		}
	})
}

func eq(a, b *string) bool { return a == nil && b == nil || a != nil && b != nil && *a == *b }
