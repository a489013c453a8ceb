package auth

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/edgechat/edgechat/internal/wire"
)

// BenchmarkVerifyAccessToken is the check every HTTP request and MQTT
// CONNECT makes: signature, claims, and the lookups of deleted accounts,
// sign-outs, revoked keys and ended sessions.
func BenchmarkVerifyAccessToken(b *testing.B) {
	e := newEnv(b)
	tok, err := e.svc.MintAccessToken("alice", false)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := e.svc.VerifyAccessToken(tok); err != nil {
			b.Fatal(err)
		}
	}
}

// A token verified once is remembered, but its times are still checked
// at every use, and a token that differs from it in any byte (its
// payload changed, its signature kept) is not taken for it.
func TestVerifiedTokensStillExpireAndMatchWholly(t *testing.T) {
	e := newEnv(t)
	tok, err := e.svc.MintAccessToken("alice", true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.VerifyAccessToken(tok); err != nil {
		t.Fatal(err)
	}
	if _, ok := e.svc.verified.get(sha256.Sum256([]byte(tok))); !ok {
		t.Fatal("a verified token is not remembered")
	}
	// The same signature on another payload (bob instead of alice).
	parts := strings.Split(tok, ".")
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
	forged := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(strings.Replace(string(payload), `"alice"`, `"bob"`, 1))) + "." + parts[2]
	if _, err := e.svc.VerifyAccessToken(forged); !errors.Is(err, wire.ErrBadToken) {
		t.Fatalf("a payload changed under a remembered signature: %v", err)
	}
	e.clock.Advance(e.svc.cfg.AccessTTL + verifyLeeway - time.Second)
	if _, err := e.svc.VerifyAccessToken(tok); err != nil {
		t.Fatalf("within the leeway: %v", err)
	}
	e.clock.Advance(time.Second)
	if _, err := e.svc.VerifyAccessToken(tok); !errors.Is(err, wire.ErrBadToken) {
		t.Fatalf("a remembered token after its expiry: %v", err)
	}
	// Not valid yet (nbf) is checked on a remembered token too.
	nbf := claimsFor("alice", "edgechat", e.clock.Now(), time.Hour)
	nbf.NotBefore = jwt.NewNumericDate(e.clock.Now().Add(time.Minute))
	early := signWith(t, e.svc.keys().signer.priv, nbf, e.svc.keys().signer.kid)
	if _, err := e.svc.VerifyAccessToken(early); !errors.Is(err, wire.ErrBadToken) {
		t.Fatalf("a token before its nbf: %v", err)
	}
	e.svc.verified.put(sha256.Sum256([]byte(early)), verifiedToken{claims: nbf, kid: e.svc.keys().signer.kid})
	if _, err := e.svc.VerifyAccessToken(early); !errors.Is(err, wire.ErrBadToken) {
		t.Fatalf("a remembered token before its nbf: %v", err)
	}
	e.clock.Advance(time.Minute)
	if _, err := e.svc.VerifyAccessToken(early); err != nil {
		t.Fatalf("a remembered token after its nbf: %v", err)
	}
}

// The cache stays within its bound.
func TestVerifiedTokensAreBounded(t *testing.T) {
	c := newVerifiedTokens(64)
	for i := range 1000 {
		c.put(sha256.Sum256([]byte{byte(i), byte(i >> 8)}), verifiedToken{})
	}
	if n := len(c.m); n > 64 {
		t.Fatalf("%d entries, bound 64", n)
	}
	if _, ok := c.get(sha256.Sum256([]byte{byte(999 % 256), byte(999 >> 8)})); !ok {
		t.Fatal("the newest entry was dropped")
	}
}

// A token of a key this node has not heard of yet (another node
// published it a moment ago) is verified after this node catches up
// with the cluster; tokens of unknown keys make it wait a bounded number
// of times, however many come.
func TestUnknownKeyCatchesUpOnce(t *testing.T) {
	var barriers int
	var publish func()
	e := newEnvWithBarrier(t, Config{KeyDir: t.TempDir() + "/keys", Argon2: tinyArgon}, func(context.Context) error {
		barriers++
		if publish != nil {
			publish() // what the cluster committed and this node had not applied
			publish = nil
		}
		return nil
	})
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	kid := thumbprint(pub)
	publish = func() {
		b, _ := json.Marshal(signingKeyCmd{Kid: kid, X: base64.RawURLEncoding.EncodeToString(pub), At: e.clock.Now()})
		if _, err := e.prop.Propose(context.Background(), wire.CmdSigningKey, b); err != nil {
			t.Fatal(err)
		}
	}
	tok := signWith(t, priv, claimsFor("alice", "edgechat", e.clock.Now(), time.Hour), kid)
	if p, err := e.svc.VerifyAccessToken(tok); err != nil || p.KeyID != kid {
		t.Fatalf("a token of a key published a moment ago: %+v %v", p, err)
	}
	if barriers != 1 {
		t.Fatalf("%d catch-ups, want 1", barriers)
	}
	// Unknown keys, many: refused, and the catch-ups stop at the burst.
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	for i := range 50 {
		forged := signWith(t, other, claimsFor("alice", "edgechat", e.clock.Now(), time.Hour), fmt.Sprintf("%043d", i))
		if _, err := e.svc.VerifyAccessToken(forged); !errors.Is(err, wire.ErrBadToken) {
			t.Fatalf("a token of an unknown key: %v", err)
		}
	}
	if barriers > 1+unknownKidCatchUps.Burst {
		t.Fatalf("%d catch-ups for 50 unknown keys, want at most %d", barriers, 1+unknownKidCatchUps.Burst)
	}
}
