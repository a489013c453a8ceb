package auth

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/edgechat/edgechat/internal/wire"
)

func claimsFor(uid, iss string, now time.Time, ttl time.Duration) accessClaims {
	return accessClaims{RegisteredClaims: jwt.RegisteredClaims{
		Issuer: iss, Subject: uid, IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
	}}
}

func TestVerifyAccessToken(t *testing.T) {
	e := newEnv(t)
	now := e.clock.Now()
	kid := e.svc.keys().signer.kid
	_, otherKey, _ := ed25519.GenerateKey(rand.Reader)

	sign := func(m jwt.SigningMethod, key any, c accessClaims, kid string) string {
		t.Helper()
		tok := jwt.NewWithClaims(m, c)
		if kid != "" {
			tok.Header["kid"] = kid
		}
		s, err := tok.SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}

	good, err := e.svc.MintAccessToken("alice", true)
	if err != nil {
		t.Fatal(err)
	}
	p, err := e.svc.VerifyAccessToken(good)
	if err != nil || p != (wire.Principal{UserID: "alice", Admin: true, KeyID: kid}) {
		t.Fatalf("good token: %+v %v", p, err)
	}
	// Our own signature with a hand-built token verifies too (the checks
	// below fail for their stated reason, not for a harness mistake).
	if _, err := e.svc.VerifyAccessToken(sign(jwt.SigningMethodEdDSA, e.svc.keys().signer.priv, claimsFor("bob", "edgechat", now, time.Minute), kid)); err != nil {
		t.Fatalf("hand-built token: %v", err)
	}

	noExp := claimsFor("bob", "edgechat", now, time.Minute)
	noExp.ExpiresAt = nil
	pub := []byte(e.svc.keys().signer.pub)
	bad := map[string]string{
		"forged (other key, our kid)": sign(jwt.SigningMethodEdDSA, otherKey, claimsFor("alice", "edgechat", now, time.Minute), kid),
		"unknown kid":                 sign(jwt.SigningMethodEdDSA, otherKey, claimsFor("alice", "edgechat", now, time.Minute), "nope"),
		"no kid":                      sign(jwt.SigningMethodEdDSA, e.svc.keys().signer.priv, claimsFor("alice", "edgechat", now, time.Minute), ""),
		"alg none":                    sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claimsFor("alice", "edgechat", now, time.Minute), kid),
		"HS256 with public key":       sign(jwt.SigningMethodHS256, pub, claimsFor("alice", "edgechat", now, time.Minute), kid),
		"wrong issuer":                sign(jwt.SigningMethodEdDSA, e.svc.keys().signer.priv, claimsFor("alice", "evil", now, time.Minute), kid),
		"no exp":                      sign(jwt.SigningMethodEdDSA, e.svc.keys().signer.priv, noExp, kid),
		"bad subject":                 sign(jwt.SigningMethodEdDSA, e.svc.keys().signer.priv, claimsFor("Not A User", "edgechat", now, time.Minute), kid),
		"garbage":                     "not.a.jwt",
		"empty":                       "",
		"tampered":                    good[:len(good)-4] + "AAAA",
	}
	// alg none with the header swapped onto a real token's claims.
	parts := strings.Split(good, ".")
	hdr := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT","kid":"` + kid + `"}`))
	bad["alg none, real claims"] = hdr + "." + parts[1] + "."

	for name, tok := range bad {
		if _, err := e.svc.VerifyAccessToken(tok); !errors.Is(err, wire.ErrBadToken) {
			t.Errorf("%s: err = %v, want ErrBadToken", name, err)
		}
	}

	// Expiry, with the leeway.
	e.clock.Advance(DefaultAccessTTL + verifyLeeway/2)
	if _, err := e.svc.VerifyAccessToken(good); err != nil {
		t.Fatalf("within leeway: %v", err)
	}
	e.clock.Advance(verifyLeeway)
	if _, err := e.svc.VerifyAccessToken(good); !errors.Is(err, wire.ErrBadToken) {
		t.Fatalf("expired: %v", err)
	}
	// Not yet valid.
	early := claimsFor("alice", "edgechat", e.clock.Now(), time.Hour)
	early.NotBefore = jwt.NewNumericDate(e.clock.Now().Add(10 * time.Minute))
	if _, err := e.svc.VerifyAccessToken(sign(jwt.SigningMethodEdDSA, e.svc.keys().signer.priv, early, kid)); !errors.Is(err, wire.ErrBadToken) {
		t.Fatalf("nbf: %v", err)
	}
	if _, err := e.svc.MintAccessToken("Bad Name", false); err == nil {
		t.Fatal("minted for an invalid uid")
	}
}

func TestTokenClaims(t *testing.T) {
	e := newEnv(t)
	tok, err := e.svc.MintAccessToken("alice", false)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(tok, ".")
	var hdr map[string]any
	var cl map[string]any
	for i, v := range []*map[string]any{&hdr, &cl} {
		b, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatal(err)
		}
	}
	if hdr["alg"] != "EdDSA" || hdr["kid"] != e.svc.keys().signer.kid {
		t.Fatalf("header: %v", hdr)
	}
	for _, k := range []string{"iss", "sub", "iat", "exp", "jti", "adm"} {
		if _, ok := cl[k]; !ok {
			t.Errorf("claim %s missing: %v", k, cl)
		}
	}
	if cl["exp"].(float64)-cl["iat"].(float64) != DefaultAccessTTL.Seconds() {
		t.Fatalf("ttl: %v", cl)
	}
	tok2, _ := e.svc.MintAccessToken("alice", false)
	if tok2 == tok {
		t.Fatal("two tokens identical (jti not random)")
	}
}

func TestKeysPersistAcrossRestart(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	e1 := newEnvWith(t, Config{KeyDir: dir, Argon2: tinyArgon})
	tok, err := e1.svc.MintAccessToken("alice", false)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(dir)
	if err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("key dir: %v %v", st.Mode(), err)
	}
	st, err = os.Stat(filepath.Join(dir, SigningKeyFile))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", st.Mode(), err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("key dir holds %d entries (temp file left?)", len(entries))
	}

	e2 := newEnvWith(t, Config{KeyDir: dir, Argon2: tinyArgon})
	if e2.svc.keys().signer.kid != e1.svc.keys().signer.kid {
		t.Fatal("a new key was made on restart")
	}
	if p, err := e2.svc.VerifyAccessToken(tok); err != nil || p.UserID != "alice" {
		t.Fatalf("old token after restart: %+v %v", p, err)
	}

	// A retired key in the directory still verifies, but does not sign.
	e3dir := filepath.Join(t.TempDir(), "keys3")
	e3 := newEnvWith(t, Config{KeyDir: e3dir, Argon2: tinyArgon})
	tok3, _ := e3.svc.MintAccessToken("carol", false)
	if _, err := e2.svc.VerifyAccessToken(tok3); err == nil {
		t.Fatal("foreign key verified")
	}
	b, _ := os.ReadFile(filepath.Join(e3dir, SigningKeyFile))
	if err := os.WriteFile(filepath.Join(dir, "retired-1.key"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	e4 := newEnvWith(t, Config{KeyDir: dir, Argon2: tinyArgon})
	if _, err := e4.svc.VerifyAccessToken(tok3); err != nil {
		t.Fatalf("retired key: %v", err)
	}
	if e4.svc.keys().signer.kid != e1.svc.keys().signer.kid || len(e4.svc.JWKS()) != 2 || e4.svc.JWKS()[0].Kid != e1.svc.keys().signer.kid {
		t.Fatalf("JWKS: %+v", e4.svc.JWKS())
	}

	// A corrupt key file is a clear error, not a silent new key.
	bad := filepath.Join(t.TempDir(), "bad")
	os.MkdirAll(bad, 0o700)
	os.WriteFile(filepath.Join(bad, SigningKeyFile), []byte("junk"), 0o600)
	if _, err := loadOrCreateKeys(bad); err == nil {
		t.Fatal("corrupt key accepted")
	}
}

func TestMintFromKeyDir(t *testing.T) {
	e := newEnv(t)
	tok, err := MintFromKeyDir(e.keyDir, "", Account{UserID: "bob", Admin: true}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// The offline minter uses the wall clock; verify at that time.
	e.clock.Set(time.Now())
	p, err := e.svc.VerifyAccessToken(tok)
	if err != nil || p != (wire.Principal{UserID: "bob", Admin: true, KeyID: e.svc.keys().signer.kid}) {
		t.Fatalf("verify: %+v %v", p, err)
	}
	empty := t.TempDir()
	if _, err := MintFromKeyDir(empty, "edgechat", Account{UserID: "bob"}, time.Hour); err == nil {
		t.Fatal("minted without a key")
	}
	if _, err := os.Stat(filepath.Join(empty, SigningKeyFile)); !os.IsNotExist(err) {
		t.Fatal("MintFromKeyDir created a key")
	}
	if _, err := MintFromKeyDir(e.keyDir, "", Account{UserID: "Bad Name"}, time.Hour); err == nil {
		t.Fatal("minted for an invalid uid")
	}
}

func TestJWKSEndpoint(t *testing.T) {
	e := newEnv(t)
	r := e.do(http.MethodGet, "/auth/jwks.json", "", "192.0.2.1")
	if r.Code != 200 || !strings.Contains(r.Header.Get("Cache-Control"), "max-age") {
		t.Fatalf("jwks: %d %v", r.Code, r.Header)
	}
	var doc struct {
		Keys []JWK `json:"keys"`
	}
	if err := json.Unmarshal(r.Body, &doc); err != nil || len(doc.Keys) != 1 {
		t.Fatalf("doc: %s %v", r.Body, err)
	}
	k := doc.Keys[0]
	if k.Kty != "OKP" || k.Crv != "Ed25519" || k.Alg != "EdDSA" || k.Use != "sig" || k.Kid == "" {
		t.Fatalf("jwk: %+v", k)
	}
	x, err := base64.RawURLEncoding.DecodeString(k.X)
	if err != nil || len(x) != ed25519.PublicKeySize {
		t.Fatalf("x: %v", err)
	}
	// An independent verifier using only the JWKS accepts our tokens.
	tok, _ := e.svc.MintAccessToken("alice", false)
	parsed, err := jwt.Parse(tok, func(t *jwt.Token) (any, error) {
		if t.Header["kid"] != k.Kid {
			return nil, errors.New("kid mismatch")
		}
		return ed25519.PublicKey(x), nil
	}, jwt.WithValidMethods([]string{"EdDSA"}), jwt.WithTimeFunc(e.clock.Now))
	if err != nil || !parsed.Valid {
		t.Fatalf("independent verify: %v", err)
	}
}

// `edgechat token` mints from the account the node reports (LookupAccount,
// GET /admin/users/{uid}) through the same mint as login: an admin's
// token says adm, like their login token, and a plain user's does not.
func TestCLITokenClaimsMatchLoginTokens(t *testing.T) {
	e := newEnv(t)
	e.register("alice", "password1") // the first account: an admin
	e.register("bob", "password2")
	e.clock.Set(time.Now()) // MintFromKeyDir uses the wall clock
	claims := func(tok string) accessClaims {
		t.Helper()
		var c accessClaims
		if _, _, err := jwt.NewParser().ParseUnverified(tok, &c); err != nil {
			t.Fatal(err)
		}
		return c
	}
	for _, u := range []struct{ name, pw string }{{"alice", "password1"}, {"bob", "password2"}} {
		r := e.do(http.MethodGet, "/admin/users/"+u.name, "", "192.0.2.1")
		var acct Account
		if r.Code != 200 || json.Unmarshal(r.Body, &acct) != nil {
			t.Fatalf("GET /admin/users/%s: %d %s", u.name, r.Code, r.Body)
		}
		cli, err := MintFromKeyDir(e.keyDir, "", acct, e.svc.cfg.AccessTTL)
		if err != nil {
			t.Fatal(err)
		}
		c, l := claims(cli), claims(e.login(u.name, u.pw).AccessToken)
		if c.Issuer != l.Issuer || c.Subject != l.Subject || c.Admin != l.Admin ||
			c.ExpiresAt.Sub(c.IssuedAt.Time) != l.ExpiresAt.Sub(l.IssuedAt.Time) || c.ID == "" || c.ID == l.ID {
			t.Errorf("%s: CLI token claims %+v, login token claims %+v", u.name, c, l)
		}
		if c.Admin != (u.name == "alice") {
			t.Errorf("%s: adm %v", u.name, c.Admin)
		}
		p, err := e.svc.VerifyAccessToken(cli)
		if err != nil || p != (wire.Principal{UserID: u.name, Admin: u.name == "alice", KeyID: e.svc.keys().signer.kid}) {
			t.Errorf("%s: verify %+v %v", u.name, p, err)
		}
	}
	// Look-ups normalize like login; unknown users are 404.
	if a, err := e.svc.LookupAccount("Alice"); err != nil || a != (Account{UserID: "alice", Admin: true}) {
		t.Fatalf("LookupAccount(Alice) = %+v %v", a, err)
	}
	if r := e.do(http.MethodGet, "/admin/users/nobody", "", "192.0.2.1"); r.Code != 404 || r.errCode() != "not_found" {
		t.Fatalf("unknown user: %d %s", r.Code, r.Body)
	}
}
