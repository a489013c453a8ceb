package auth

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/internal/wire"
)

// A refresh whose answer was lost (a phone on a bad network) is sent
// again, with its Idempotency-Key, and the token it spent: within
// refreshRetryGrace of the rotation that is a retry, answered with fresh
// tokens (the ones the lost answer carried stop working), not a reuse
// that ended the session and signed the user out. A follower agrees.
func TestRefreshSentAgainAfterALostAnswerKeepsTheSession(t *testing.T) {
	e := newEnv(t)
	follower, _ := e.follower()
	ctx := context.Background()
	e.register("alice", "password1")
	first := e.login("alice", "password1")
	lost, err := e.svc.RefreshWithKey(ctx, first.RefreshToken, "k-1") // its answer never arrives
	if err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(5 * time.Second)
	req := httpRequest(http.MethodPost, "/auth/refresh", `{"refreshToken":"`+first.RefreshToken+`"}`, "application/json")
	req.Header.Set("Idempotency-Key", "k-1")
	rec := serve(e, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("the refresh sent again: %d %s, want 200", rec.Code, rec.Body)
	}
	var again Tokens
	if err := json.Unmarshal(rec.Body.Bytes(), &again); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.VerifyAccessToken(again.AccessToken); err != nil {
		t.Fatalf("the retry's access token: %v", err)
	}
	// Sent a third time (the second answer lost too): still a retry.
	third, err := e.svc.RefreshWithKey(ctx, first.RefreshToken, "k-1")
	if err != nil {
		t.Fatalf("a third send within the grace: %v", err)
	}
	// The tokens no answer delivered are spent: presenting one is a reuse.
	if _, err := e.svc.Refresh(ctx, lost.RefreshToken); !errors.Is(err, ErrRefreshReused) {
		t.Fatalf("the lost answer's refresh token: %v, want ErrRefreshReused", err)
	}
	if _, err := e.svc.VerifyAccessToken(third.AccessToken); !errors.Is(err, wire.ErrBadToken) {
		t.Fatalf("after a spent token came back, the session's access token: %v, want refused (the session ended)", err)
	}
	for name, db := range map[string]*badger.DB{"leader": e.db, "follower": follower.DB()} {
		if live, revoked := countFamilies(t, db, "alice"); live != 0 || revoked != 1 {
			t.Fatalf("%s: alice has %d live and %d revoked families, want 0 and 1", name, live, revoked)
		}
	}
}

// The key tells the owner's retry from a thief's use of the same token:
// a thief who refreshed a stolen token first sent another key (or none),
// so the owner's refresh is a reuse and ends the session, within the
// grace too; and a retry past the grace is a reuse.
func TestRefreshSentAgainWithAnotherKeyOrLateIsAReuse(t *testing.T) {
	for name, tc := range map[string]struct {
		thiefKey, ownerKey string
		after              time.Duration
	}{
		"thief without a key":    {"", "owner-1", time.Second},
		"thief with its own key": {"thief-1", "owner-1", time.Second},
		"owner without a key":    {"owner-1", "", time.Second},
		"past the grace":         {"owner-1", "owner-1", refreshRetryGrace + time.Second},
	} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			ctx := context.Background()
			e.register("alice", "password1")
			owner := e.login("alice", "password1")
			thief, err := e.svc.RefreshWithKey(ctx, owner.RefreshToken, tc.thiefKey)
			if err != nil {
				t.Fatal(err)
			}
			e.clock.Advance(tc.after)
			if _, err := e.svc.RefreshWithKey(ctx, owner.RefreshToken, tc.ownerKey); !errors.Is(err, ErrRefreshReused) {
				t.Fatalf("the spent token sent again: %v, want ErrRefreshReused", err)
			}
			if _, err := e.svc.VerifyAccessToken(thief.AccessToken); !errors.Is(err, wire.ErrBadToken) {
				t.Fatalf("the other party's access token after the reuse: %v, want refused", err)
			}
			if _, err := e.svc.Refresh(ctx, thief.RefreshToken); !errors.Is(err, ErrRefreshInvalid) {
				t.Fatalf("the other party's refresh token after the reuse: %v, want ErrRefreshInvalid", err)
			}
		})
	}
}
