package auth

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/edgechat/edgechat/internal/wire"
)

// FuzzVerifyAccessToken: the token a client presents (an HTTP bearer
// token, an MQTT CONNECT password) is refused with wire.ErrBadToken, or
// it is one this node minted and names that token's user with that
// token's role: whatever a client makes of a real token (another
// payload, another header, alg none or HMAC, another issuer's key, an
// expired copy), it never verifies as anyone else, nor as an admin.
func FuzzVerifyAccessToken(f *testing.F) {
	e := newEnv(f)
	alice, err := e.svc.MintAccessToken("alice", false)
	if err != nil {
		f.Fatal(err)
	}
	root, err := e.svc.MintAccessToken("root", true)
	if err != nil {
		f.Fatal(err)
	}
	enc := base64.RawURLEncoding.EncodeToString
	parts := strings.Split(alice, ".")
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
	asAdmin := strings.Replace(string(payload), `"sub":"alice"`, `"sub":"alice","adm":true`, 1)
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	otherTok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, jwt.MapClaims{"iss": DefaultIssuer, "sub": "alice", "adm": true,
		"exp": e.clock.Now().Add(time.Hour).Unix()})
	var header struct{ Kid string }
	if b, err := base64.RawURLEncoding.DecodeString(parts[0]); err != nil || json.Unmarshal(b, &header) != nil {
		f.Fatalf("header of %q", alice)
	}
	otherTok.Header["kid"] = header.Kid // this node's key ID, another key
	forged, _ := otherTok.SignedString(other)
	for _, seed := range []string{
		alice, root, "", ".", "a.b.c", "Bearer " + alice,
		parts[0] + "." + enc([]byte(asAdmin)) + "." + parts[2], // another payload under alice's signature
		enc([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + enc([]byte(asAdmin)) + ".",
		enc([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + parts[1] + "." + parts[2],
		forged, // another key
	} {
		f.Add(seed)
	}
	minted := map[string]bool{"alice": false, "root": true} // user → admin
	f.Fuzz(func(t *testing.T, tok string) {
		p, err := e.svc.VerifyAccessToken(tok)
		if err != nil {
			if !errors.Is(err, wire.ErrBadToken) {
				t.Fatalf("%q refused with %v, want wire.ErrBadToken", tok, err)
			}
			return
		}
		if admin, ok := minted[p.UserID]; !ok || admin != p.Admin {
			t.Fatalf("%q verified as %+v: no such token was minted", tok, p)
		}
	})
}
