package auth

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/edgechat/edgechat/cluster/fsm/fsmtest"
	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/internal/wire"
)

// twoNodes builds two services, each with its own key and database, fed
// by one log (every command is applied on both replicas in order).
func twoNodes(t *testing.T) (a, b *env) {
	t.Helper()
	a = newEnv(t)
	fB := a.prop.NewFollower(t)
	dbB := fB.DB()
	b = &env{t: t, db: dbB, prop: a.prop, clock: a.clock, profiles: a.profiles, keyDir: t.TempDir()}
	svc, err := New(Config{KeyDir: b.keyDir, Argon2: tinyArgon}, Deps{DB: dbB, Proposer: a.prop, FSM: fB, Now: a.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	b.svc = svc
	return a, b
}

func TestSigningKeysReplicate(t *testing.T) {
	a, b := twoNodes(t)
	ctx := context.Background()
	if a.svc.keys().signer.kid == b.svc.keys().signer.kid {
		t.Fatal("nodes share a key")
	}
	tokA, _ := a.svc.MintAccessToken("alice", false)
	tokB, _ := b.svc.MintAccessToken("bob", false)
	if _, err := b.svc.VerifyAccessToken(tokA); !errors.Is(err, wire.ErrBadToken) {
		t.Fatalf("unpublished key verified: %v", err)
	}
	if err := a.svc.PublishKey(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.svc.PublishKey(ctx); err != nil {
		t.Fatal(err)
	}
	if p, err := b.svc.VerifyAccessToken(tokA); err != nil || p.UserID != "alice" {
		t.Fatalf("A's token on B: %+v %v", p, err)
	}
	if p, err := a.svc.VerifyAccessToken(tokB); err != nil || p.UserID != "bob" {
		t.Fatalf("B's token on A: %+v %v", p, err)
	}
	for _, s := range []*Service{a.svc, b.svc} {
		jwks := s.JWKS()
		if len(jwks) != 2 || jwks[0].Kid != s.keys().signer.kid {
			t.Fatalf("JWKS: %+v", jwks)
		}
	}
	// Publishing again proposes nothing new.
	n := a.prop.Index()
	if err := a.svc.PublishKey(ctx); err != nil || a.prop.Index() != n {
		t.Fatalf("republish: %v, proposals %d -> %d", err, n, a.prop.Index())
	}
	// A key whose kid does not match is refused by the handler.
	bad, _ := json.Marshal(signingKeyCmd{Kid: "forged", X: base64.RawURLEncoding.EncodeToString(make([]byte, 32))})
	if _, err := a.prop.Propose(ctx, wire.CmdSigningKey, bad); !errors.Is(err, errBadCommand) {
		t.Fatalf("forged key: %v", err)
	}
	if len(a.svc.replicatedKIDs()) != 2 {
		t.Fatal("forged key stored")
	}
}

func TestRunPublishesWhenClusterReady(t *testing.T) {
	a, b := twoNodes(t)
	a.prop.SetErr(fsmtest.ErrDown)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.svc.Run(ctx) }()
	tok, _ := a.svc.MintAccessToken("alice", false)
	a.prop.SetErr(nil)
	testutil.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if _, err := b.svc.VerifyAccessToken(tok); err != nil {
			return fmt.Errorf("not yet published: %w", err)
		}
		return nil
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
