package auth

import (
	"context"
	"testing"
	"time"
)

// A revoked admin role is refused at once on every node applying the log
// and after a restart, in the tokens issued before the revocation only.
func TestDemotionRefusesTheRoleOfEarlierTokensOnEveryNode(t *testing.T) {
	e := newEnv(t)
	_, follower := e.follower()
	if err := e.svc.PublishKey(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.register("ada", "password-ada") // the first account: an admin
	old := e.login("ada", "password-ada").AccessToken
	for _, svc := range []*Service{e.svc, follower} {
		if p, err := svc.VerifyAccessToken(old); err != nil || !p.Admin {
			t.Fatalf("before the revocation: %+v %v", p, err)
		}
	}
	e.clock.Advance(time.Second)
	if err := e.svc.SetAdmin(context.Background(), "ada", false); err != nil {
		t.Fatal(err)
	}
	restarted := e.restartedOn(e.db, t.TempDir()+"/keys")
	for i, svc := range []*Service{e.svc, follower, restarted} {
		if p, err := svc.VerifyAccessToken(old); err != nil || p.Admin || p.UserID != "ada" {
			t.Fatalf("node %d, the token of before the revocation: %+v %v (want a user's, not an admin's)", i, p, err)
		}
	}
	e.clock.Advance(time.Second)
	if err := e.svc.SetAdmin(context.Background(), "ada", true); err != nil {
		t.Fatal(err)
	}
	if p, err := follower.VerifyAccessToken(e.login("ada", "password-ada").AccessToken); err != nil || !p.Admin {
		t.Fatalf("granted again, a new token: %+v %v", p, err)
	}
}
