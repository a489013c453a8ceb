package auth

import (
	"encoding/json"
	"errors"
	"github.com/edgechat/edgechat/internal/wire"
	"testing"

	"github.com/edgechat/edgechat/internal/httpapi"
)

// FuzzDecodeRegister feeds arbitrary bodies to the strict request
// decoders and the field validation behind them. Seeds: testdata/fuzz.
func FuzzDecodeRegister(f *testing.F) {
	f.Add([]byte(`{"username":"alice","password":"password1","displayName":"Alice"}`))
	f.Add([]byte(`{"currentPassword":"password1","newPassword":"password9","session":"cookie"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		checkErr := func(err error) {
			var he *httpapi.Error
			if !errors.As(err, &he) || he.Status < 400 || he.Status > 499 || he.Code == "" {
				t.Fatalf("decoder error is not a 4xx httpapi.Error: %#v", err)
			}
		}
		req, err := decodeRegister(body)
		if err != nil {
			checkErr(err)
		} else {
			// A decoded request survives a round trip unchanged.
			b, _ := json.Marshal(req)
			again, err := decodeRegister(b)
			if err != nil || again != req {
				t.Fatalf("round trip: %+v -> %+v (%v)", req, again, err)
			}
			if uid, err := NormalizeUsername(req.Username); err == nil {
				if uid != NormalizeUsernameMust(t, uid) {
					t.Fatalf("normalization not idempotent: %q", uid)
				}
			} else if !errors.Is(err, ErrInvalidUsername) {
				t.Fatal(err)
			}
			if err := validPassword(req.Password); err != nil && !errors.Is(err, ErrInvalidPassword) {
				t.Fatal(err)
			}
			if n, err := wire.NormalizeDisplayName(req.DisplayName); err == nil {
				if _, err := wire.NormalizeDisplayName(n); err != nil {
					t.Fatalf("normalized name refused: %q", n)
				}
			} else if !errors.Is(err, ErrInvalidDisplayName) {
				t.Fatal(err)
			}
		}
		if _, err := decodeLogin(body); err != nil {
			checkErr(err)
		}
		if _, err := decodeLogout(body); err != nil {
			checkErr(err)
		}
		if req, err := decodeChangePassword(body); err != nil {
			checkErr(err)
		} else if err := validPassword(req.NewPassword); err != nil && !errors.Is(err, ErrInvalidPassword) {
			t.Fatal(err)
		}
		if _, err := decodeResetPassword(body); err != nil {
			checkErr(err)
		}
		if r, err := decodeRefresh(body); err != nil {
			checkErr(err)
		} else {
			_, _, _ = parseRefresh(r.RefreshToken)
		}
	})
}

func NormalizeUsernameMust(t *testing.T, s string) string {
	t.Helper()
	u, err := NormalizeUsername(s)
	if err != nil {
		t.Fatalf("NormalizeUsername(%q): %v", s, err)
	}
	return u
}
