package auth

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/edgechat/edgechat/cluster/fsm/fsmtest"
	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/internal/wire"
)

// signWith signs c with key under kid.
func signWith(t *testing.T, key any, c accessClaims, kid string) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, c)
	tok.Header["kid"] = kid
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// A revoked key's tokens are refused at once on every node (also one a
// forger signed with a far expiry), the node that signed with it makes
// a new key by itself, whose tokens verify everywhere, the JWKS drops
// the revoked key, and the sessions made with it are told to close.
// Another node's key is not touched; an unknown kid is a 404.
func TestRevokedSigningKeyIsRefusedEverywhere(t *testing.T) {
	e := newEnv(t)
	follower, onFollower := e.follower()
	ctx := context.Background()
	for _, s := range []*Service{e.svc, onFollower} {
		if err := s.PublishKey(ctx); err != nil {
			t.Fatal(err)
		}
	}
	runCtx, stop := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() { ran <- e.svc.Run(runCtx) }()
	t.Cleanup(func() { stop(); <-ran })
	var mu sync.Mutex
	var closed []string
	e.svc.OnSigningKeyRevoked(func(kid string) { mu.Lock(); closed = append(closed, kid); mu.Unlock() })
	e.register("alice", "password1")
	leaderKid, followerKid := e.svc.keys().signer.kid, onFollower.keys().signer.kid
	fromLeader, _ := e.svc.MintAccessToken("alice", false)
	fromFollower, _ := onFollower.MintAccessToken("alice", true)
	forged := signWith(t, e.svc.keys().signer.priv, claimsFor("alice", "edgechat", e.clock.Now(), 365*24*time.Hour), leaderKid)
	if p, err := onFollower.VerifyAccessToken(fromLeader); err != nil || p.KeyID != leaderKid {
		t.Fatalf("the leader's token on the follower before: %+v %v", p, err)
	}

	if r := e.as("root", http.MethodPost, "/admin/keys/not-a-key/revoke", ""); r.Code != http.StatusNotFound {
		t.Fatalf("revoking an unknown kid: %d %s", r.Code, r.Body)
	}
	r := e.as("root", http.MethodPost, "/admin/keys/"+leaderKid+"/revoke", "")
	if r.Code != http.StatusOK {
		t.Fatalf("revoke: %d %s", r.Code, r.Body)
	}
	for name, s := range map[string]*Service{"leader": e.svc, "follower": onFollower} {
		for tname, tok := range map[string]string{"leader's": fromLeader, "forged": forged} {
			if _, err := s.VerifyAccessToken(tok); !errors.Is(err, wire.ErrBadToken) {
				t.Fatalf("the %s token on the %s after the revocation: %v", tname, name, err)
			}
		}
		if _, err := s.VerifyAccessToken(fromFollower); err != nil {
			t.Fatalf("the follower's token on the %s: %v", name, err)
		}
		for _, k := range s.JWKS() {
			if k.Kid == leaderKid {
				t.Fatalf("the %s's JWKS still holds the revoked key", name)
			}
		}
	}
	mu.Lock()
	if len(closed) != 1 || closed[0] != leaderKid {
		t.Fatalf("sessions closed for keys %q, want the revoked one", closed)
	}
	mu.Unlock()
	// The leader makes a new key by itself (Run does); its tokens verify
	// everywhere.
	testutil.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		if e.svc.keys().signer.kid == leaderKid {
			return errors.New("the leader still signs with its revoked key")
		}
		return nil
	})
	if onFollower.keys().signer.kid != followerKid {
		t.Fatal("the follower changed its key")
	}
	tk := e.login("alice", "password1")
	for name, s := range map[string]*Service{"leader": e.svc, "follower": onFollower} {
		if p, err := s.VerifyAccessToken(tk.AccessToken); err != nil || p.KeyID != e.svc.keys().signer.kid {
			t.Fatalf("a token of the leader's new key on the %s: %+v %v", name, p, err)
		}
	}
	// On disk: the new key is the signing key, the old one retired.
	if _, err := os.Stat(filepath.Join(e.keyDir, "retired-"+leaderKid+".key")); err != nil {
		t.Fatalf("the revoked key's file: %v", err)
	}
	if k, err := parseKeyFile(filepath.Join(e.keyDir, SigningKeyFile)); err != nil || k.kid != e.svc.keys().signer.kid {
		t.Fatalf("signing.key after the rotation: %v %v", k, err)
	}
	// The listing says which key is current and which is revoked.
	var listed struct{ Keys []KeyInfo }
	if r := e.as("root", http.MethodGet, "/admin/keys", ""); r.Code != http.StatusOK || json.Unmarshal(r.Body, &listed) != nil {
		t.Fatalf("list: %d %s", r.Code, r.Body)
	}
	byKid := map[string]KeyInfo{}
	for _, k := range listed.Keys {
		byKid[k.Kid] = k
	}
	if k := byKid[leaderKid]; k.Revoked == nil || k.Revoked.Reason != reasonRevoked || k.Current {
		t.Fatalf("the revoked key listed as %+v", k)
	}
	if k := byKid[e.svc.keys().signer.kid]; !k.Current || k.Revoked != nil || k.PublishedAt == nil {
		t.Fatalf("the new key listed as %+v", k)
	}
	if k := byKid[followerKid]; k.Current || k.Revoked != nil || k.PublishedAt == nil {
		t.Fatalf("the follower's key listed as %+v", k)
	}
	if listed.Keys[0].Kid != e.svc.keys().signer.kid {
		t.Fatalf("the current key is not listed first: %+v", listed.Keys)
	}
	// A node that starts on a state where its key is revoked (it was down,
	// or restored a snapshot) makes a new key too; and refuses the old
	// key's tokens from its state.
	dir := t.TempDir()
	old, err := os.ReadFile(filepath.Join(e.keyDir, "retired-"+leaderKid+".key"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, SigningKeyFile), old, 0o600); err != nil {
		t.Fatal(err)
	}
	restarted := e.restartedOn(follower.DB(), dir)
	if _, err := restarted.VerifyAccessToken(fromLeader); !errors.Is(err, wire.ErrBadToken) {
		t.Fatalf("a restarted node's check of the revoked key's token: %v", err)
	}
	if err := restarted.rekeyIfRevoked(ctx); err != nil {
		t.Fatal(err)
	}
	if restarted.keys().signer.kid == leaderKid {
		t.Fatal("a node starting with a revoked key kept it")
	}
}

// A rotation is graceful: the node signs with a new key at once, the old
// key's tokens verify until the access token lifetime (and the leeway)
// has passed, and no session is closed. After that, even a token the
// old key signed with a far expiry is refused. A revocation at once
// overrides the retirement's later time.
func TestRotatedSigningKeyRetiresAfterTheTokenLifetime(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if err := e.svc.PublishKey(ctx); err != nil {
		t.Fatal(err)
	}
	var closed []string
	e.svc.OnSigningKeyRevoked(func(kid string) { closed = append(closed, kid) })
	oldKid := e.svc.keys().signer.kid
	long := signWith(t, e.svc.keys().signer.priv, claimsFor("alice", "edgechat", e.clock.Now(), 24*time.Hour), oldKid)

	r := e.as("root", http.MethodPost, "/admin/keys/rotate", "")
	var rot KeyRotation
	if r.Code != http.StatusOK || json.Unmarshal(r.Body, &rot) != nil || rot.Retired != oldKid || rot.Kid == oldKid || rot.Kid != e.svc.keys().signer.kid {
		t.Fatalf("rotate: %d %s", r.Code, r.Body)
	}
	if want := e.clock.Now().Add(e.svc.cfg.AccessTTL + verifyLeeway); !rot.Until.Equal(want) {
		t.Fatalf("the old key retires at %v, want %v", rot.Until, want)
	}
	fresh, _ := e.svc.MintAccessToken("alice", false)
	if p, err := e.svc.VerifyAccessToken(fresh); err != nil || p.KeyID != rot.Kid {
		t.Fatalf("a token after the rotation: %+v %v", p, err)
	}
	if _, err := e.svc.VerifyAccessToken(long); err != nil {
		t.Fatalf("the old key's token right after the rotation: %v", err)
	}
	if len(closed) != 0 {
		t.Fatalf("a rotation closed sessions of %q", closed)
	}
	// A node restarted now signs with the new key and still verifies the old one.
	copied := t.TempDir()
	files, _ := filepath.Glob(filepath.Join(e.keyDir, "*.key"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(copied, filepath.Base(f)), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	again := e.restartedOn(e.db, copied)
	if again.keys().signer.kid != rot.Kid {
		t.Fatalf("restarted, the node signs with %s, want %s", again.keys().signer.kid, rot.Kid)
	}
	if _, err := again.VerifyAccessToken(long); err != nil {
		t.Fatalf("restarted, the old key's token before its retirement: %v", err)
	}
	e.clock.Advance(e.svc.cfg.AccessTTL + verifyLeeway)
	for name, s := range map[string]*Service{"running": e.svc, "restarted": again} {
		if _, err := s.VerifyAccessToken(long); !errors.Is(err, wire.ErrBadToken) {
			t.Fatalf("%s: the old key's token after its retirement: %v", name, err)
		}
	}
	later, _ := e.svc.MintAccessToken("alice", false)
	if _, err := e.svc.VerifyAccessToken(later); err != nil {
		t.Fatalf("the new key's token: %v", err)
	}

	// A revocation at once beats a later retirement.
	e.clock.Advance(time.Second)
	second, err := e.svc.RotateSigningKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tok := signWith(t, e.svc.keys().byKID[second.Retired].priv, claimsFor("alice", "edgechat", e.clock.Now(), time.Hour), second.Retired)
	if _, err := e.svc.VerifyAccessToken(tok); err != nil {
		t.Fatalf("the retiring key's token: %v", err)
	}
	if _, err := e.svc.RevokeSigningKey(ctx, second.Retired); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.VerifyAccessToken(tok); !errors.Is(err, wire.ErrBadToken) {
		t.Fatalf("the retiring key's token after its revocation: %v", err)
	}
	if len(closed) != 1 || closed[0] != second.Retired {
		t.Fatalf("sessions closed for %q, want the revoked key's", closed)
	}
	// And a later retirement does not undo it.
	b, _ := json.Marshal(keyRevokeCmd{Kid: second.Retired, Until: e.clock.Now().Add(time.Hour), At: e.clock.Now(), Reason: reasonRotated})
	if _, err := e.prop.Propose(ctx, wire.CmdSigningKeyRevoke, b); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.VerifyAccessToken(tok); !errors.Is(err, wire.ErrBadToken) {
		t.Fatalf("a later retirement undid a revocation: %v", err)
	}
	// Malformed commands change nothing.
	for _, c := range []keyRevokeCmd{{Kid: "", Until: e.clock.Now(), At: e.clock.Now()}, {Kid: rot.Kid, Until: e.clock.Now().Add(-time.Second), At: e.clock.Now()}} {
		b, _ := json.Marshal(c)
		if _, err := e.prop.Propose(ctx, wire.CmdSigningKeyRevoke, b); !errors.Is(err, errBadCommand) {
			t.Fatalf("%+v: %v", c, err)
		}
	}
	current, _ := e.svc.MintAccessToken("alice", false)
	if _, err := e.svc.VerifyAccessToken(current); err != nil {
		t.Fatalf("the current key's token after malformed revocations: %v", err)
	}
}

// A rotation whose new key could not be published (no quorum) leaves the
// node signing with its old key; the next rotation keeps both earlier
// key files, so a restarted node still verifies the old key's tokens.
func TestRotationAfterAFailedPublication(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	oldKid := e.svc.keys().signer.kid
	tok, _ := e.svc.MintAccessToken("alice", false)
	e.prop.SetErr(fsmtest.ErrDown)
	if _, err := e.svc.RotateSigningKey(ctx); err == nil {
		t.Fatal("a rotation without quorum succeeded")
	}
	if e.svc.keys().signer.kid != oldKid {
		t.Fatal("the node signs with a key it could not publish")
	}
	e.prop.SetErr(nil)
	rot, err := e.svc.RotateSigningKey(ctx)
	if err != nil || rot.Retired != oldKid {
		t.Fatalf("the rotation after: %+v %v", rot, err)
	}
	restarted := e.restartedOn(e.db, e.keyDir)
	if restarted.keys().signer.kid != rot.Kid {
		t.Fatalf("restarted, the node signs with %s, want %s", restarted.keys().signer.kid, rot.Kid)
	}
	if _, ok := restarted.keys().byKID[oldKid]; !ok {
		t.Fatal("the original key's file is gone")
	}
	if _, err := restarted.VerifyAccessToken(tok); err != nil {
		t.Fatalf("the original key's token after a restart: %v", err)
	}
}

// Revoking a key refuses its tokens from the commit on, on every node,
// whatever that node's clock says: a node whose clock runs behind the
// proposer's (by 2 s here) accepted them until its own clock reached
// the revocation's time, and still listed the key in its JWKS.
func TestRevokedSigningKeyIsRefusedOnANodeWhoseClockIsBehind(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	behind := testutil.NewFakeClock(e.clock.Now().Add(-2 * time.Second))
	f := e.prop.NewFollower(t)
	nodeB, err := New(Config{KeyDir: t.TempDir() + "/keys", Argon2: tinyArgon},
		Deps{DB: f.DB(), Proposer: e.prop, FSM: f, Now: behind.Now})
	if err != nil {
		t.Fatal(err)
	}
	for _, svc := range []*Service{e.svc, nodeB} {
		if err := svc.PublishKey(ctx); err != nil {
			t.Fatal(err)
		}
	}
	e.register("alice", "password1")
	tk := e.login("alice", "password1")
	if _, err := nodeB.VerifyAccessToken(tk.AccessToken); err != nil {
		t.Fatalf("node A's token on node B before the revocation: %v", err)
	}
	kid := e.svc.keys().signer.kid
	if _, err := e.svc.RevokeSigningKey(ctx, kid); err != nil {
		t.Fatal(err)
	}
	if _, err := nodeB.VerifyAccessToken(tk.AccessToken); !errors.Is(err, wire.ErrBadToken) {
		t.Errorf("a token of the revoked key on the node whose clock is behind: %v, want refused", err)
	}
	for _, k := range nodeB.JWKS() {
		if k.Kid == kid {
			t.Errorf("the revoked key is still in the JWKS of the node whose clock is behind")
		}
	}
	// A rotation's retirement still waits for the tokens' lifetime there.
	tkB, err := nodeB.accessToken(account{UID: "alice"}, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := nodeB.RotateSigningKey(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.VerifyAccessToken(tkB); err != nil {
		t.Errorf("a token of node B's rotated (not revoked) key: %v", err)
	}
}

// A key retired by a rotation, revoked after its retirement time (it
// leaked later, say): the revocation answered 200 but closed none of the
// MQTT sessions made with the key's tokens, which the contract promises
// ("the MQTT sessions made with them are closed"), because the earlier
// retirement record was kept and the revocation counted as a no-op.
func TestRevokingARetiredKeyClosesItsSessions(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if err := e.svc.PublishKey(ctx); err != nil {
		t.Fatal(err)
	}
	var closed []string
	e.svc.OnSigningKeyRevoked(func(kid string) { closed = append(closed, kid) })
	rot, err := e.svc.RotateSigningKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	e.clock.Set(rot.Until.Add(time.Minute))
	if _, err := e.svc.RevokeSigningKey(ctx, rot.Retired); err != nil {
		t.Fatal(err)
	}
	if len(closed) != 1 || closed[0] != rot.Retired {
		t.Fatalf("sessions closed for keys %q, want the revoked %s", closed, rot.Retired)
	}
	if e.svc.keys().signer.kid != rot.Kid {
		t.Fatal("revoking the retired key changed the signing key")
	}
}
