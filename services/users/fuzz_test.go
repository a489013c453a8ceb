package users

import (
	"encoding/json"
	"errors"
	"github.com/edgechat/edgechat/internal/wire"
	"slices"
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
			if n, err := wire.NormalizeDisplayName(*req.DisplayName); err == nil {
				if _, err := wire.NormalizeDisplayName(n); err != nil {
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

// FuzzDecodeGroupRequests feeds arbitrary bodies to the decoders of the
// contact, block and group routes (kind picks one) and the
// field validation behind them: errors are 4xx, accepted values survive a
// round trip and validation never panics. Seeds: testdata/fuzz.
func FuzzDecodeGroupRequests(f *testing.F) {
	f.Add(byte(0), []byte(`{"name":"Team","members":["bob","carol"],"avatar":"https://x/a.png","description":"d"}`))
	f.Add(byte(1), []byte(`{"name":"New","avatar":"","description":null}`))
	f.Add(byte(2), []byte(`{"uids":["bob","carol"],"role":"admin"}`))
	f.Add(byte(3), []byte(`{"uid":"bob"}`))
	f.Fuzz(func(t *testing.T, kind byte, body []byte) {
		var v any
		var err error
		switch kind % 4 {
		case 0:
			var req createGroupRequest
			if req, err = decodeCreateGroup(body); err == nil {
				if len(dedupe(req.Members, "")) > MaxInitialMembers+1 {
					t.Fatalf("%d members accepted", len(req.Members))
				}
				checkGroupFields(t, &req.Name, &req.Avatar, &req.Description)
				d := dedupe(req.Members, "x")
				if !slices.IsSorted(d) || slices.Contains(d, "x") {
					t.Fatalf("dedupe: %v", d)
				}
			}
			v = req
		case 1:
			var req patchGroupRequest
			if req, err = decodePatchGroup(body); err == nil {
				checkGroupFields(t, req.Name, req.Avatar, req.Description)
			}
			v = req
		case 2:
			var req membersRequest
			if req, err = decodeMembers(body); err == nil {
				if len(req.UIDs) == 0 || len(req.UIDs) > MaxMemberBatch || req.Role == "" {
					t.Fatalf("accepted %+v", req)
				}
				// The rules only ever refuse with their own errors.
				for _, actor := range []Role{"", RoleMember, RoleAdmin, RoleOwner} {
					rerr := memberRule("me", actor, req.UIDs[0], RoleMember, false, req.Role)
					var rule *RuleError
					if rerr != nil && !errors.As(rerr, &rule) && !errors.Is(rerr, ErrInvalidRole) && !errors.Is(rerr, ErrNoGroup) {
						t.Fatalf("memberRule: %v", rerr)
					}
				}
			}
			v = req
		default:
			var req uidRequest
			err = httpapi.DecodeJSONBytes(body, &req)
			v = req
		}
		if err != nil {
			var he *httpapi.Error
			if !errors.As(err, &he) || he.Status < 400 || he.Status > 499 {
				t.Fatalf("decoder error is not a 4xx httpapi.Error: %#v", err)
			}
			return
		}
		if _, err := json.Marshal(v); err != nil {
			t.Fatalf("accepted value does not encode: %v", err)
		}
	})
}

// checkGroupFields: validation either accepts (and then accepts its own
// normalized output) or refuses with the field's sentinel.
func checkGroupFields(t *testing.T, name, avatar, desc *string) {
	t.Helper()
	if name != nil {
		if n, err := normalizeGroupName(*name, true); err == nil {
			if _, err := normalizeGroupName(n, true); err != nil {
				t.Fatalf("normalized name refused: %q", n)
			}
		} else if !errors.Is(err, ErrInvalidGroupName) {
			t.Fatal(err)
		}
	}
	if avatar != nil {
		if err := validAvatar(*avatar); err != nil && !errors.Is(err, ErrInvalidAvatar) {
			t.Fatal(err)
		}
	}
	if desc != nil {
		if err := validDescription(*desc); err != nil && !errors.Is(err, ErrInvalidDescription) {
			t.Fatal(err)
		}
	}
}
