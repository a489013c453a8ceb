package auth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/cluster/fsm/fsmtest"
	"github.com/edgechat/edgechat/internal/httpapi"
	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/internal/wire"
)

// testEraser stands for a service's eraser: it deletes the keys under
// r/test/{uid}/ within the step's budget.
func testEraser(tx *badger.Txn, uid string, b *fsm.Budget) (bool, func(), error) {
	done, err := fsm.DeleteMatching(tx, []byte("r/test/"+uid+"/"), b, nil)
	return done, nil, err
}

func seedTestKeys(t *testing.T, db *badger.DB, uid string, n int) {
	t.Helper()
	wb := db.NewWriteBatch()
	for i := 0; i < n; i++ {
		if err := wb.Set([]byte(fmt.Sprintf("r/test/%s/%06d", uid, i)), []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	if err := wb.Flush(); err != nil {
		t.Fatal(err)
	}
}

// deleteReq sends DELETE /user/me as uid.
func (e *env) deleteReq(uid, password string) resp {
	e.t.Helper()
	b, _ := json.Marshal(map[string]string{"password": password})
	req := httptest.NewRequest(http.MethodDelete, "/user/me", bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	req.RemoteAddr = "192.0.2.1:40000"
	req = req.WithContext(httpapi.WithPrincipal(req.Context(), wire.Principal{UserID: uid}))
	rec := httptest.NewRecorder()
	e.mux.ServeHTTP(rec, req)
	return resp{Code: rec.Code, Header: rec.Header(), Body: rec.Body.Bytes()}
}

func TestDeleteAccountDisablesAtOnceAndErasesAfterGrace(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.DeleteGrace = time.Hour })
	e.svc.AddEraser("test", testEraser)
	e.register("bob", "bob-password")
	e.register("alice", "alice-password")
	bobTok := e.login("bob", "bob-password")
	aliceTok := e.login("alice", "alice-password")
	seedTestKeys(t, e.db, "bob", 5000) // more than one step's budget
	seedTestKeys(t, e.db, "alice", 3)

	// A wrong password changes nothing.
	before := fsmtest.Dump(t, e.db, "r/")
	if r := e.deleteReq("bob", "not-the-password"); r.Code != http.StatusForbidden || r.errCode() != httpapi.CodeForbidden {
		t.Fatalf("wrong password: %d %s", r.Code, r.Body)
	}
	if after := fsmtest.Dump(t, e.db, "r/"); !maps.Equal(before, after) {
		t.Fatal("a refused deletion changed the state")
	}
	if _, err := e.svc.VerifyAccessToken(bobTok.AccessToken); err != nil {
		t.Fatalf("token refused after a refused deletion: %v", err)
	}

	r := e.deleteReq("bob", "bob-password")
	if r.Code != http.StatusAccepted {
		t.Fatalf("delete: %d %s", r.Code, r.Body)
	}
	var res DeleteResult
	if err := json.Unmarshal(r.Body, &res); err != nil {
		t.Fatal(err)
	}
	if !res.DeleteAt.Equal(e.clock.Now().Add(time.Hour)) || len(res.Kept) == 0 || res.Kept[0].What != "group_messages" {
		t.Fatalf("answer %+v", res)
	}
	// Disabled everywhere at once.
	if _, err := e.svc.VerifyAccessToken(bobTok.AccessToken); !errors.Is(err, wire.ErrBadToken) {
		t.Fatalf("token of a deleted account: %v", err)
	}
	if _, err := e.svc.Login(context.Background(), "bob", "bob-password", "192.0.2.9"); !errors.Is(err, ErrInvalidCredentials) {
		t.Fatalf("login of a deleted account: %v", err)
	}
	if _, err := e.svc.Refresh(context.Background(), bobTok.RefreshToken); !errors.Is(err, ErrRefreshInvalid) {
		t.Fatalf("refresh of a deleted account: %v", err)
	}
	if ok, _ := e.svc.UserExists("bob"); ok {
		t.Fatal("a deleted account still exists for senders")
	}
	if r := e.deleteReq("bob", "bob-password"); r.Code != http.StatusNotFound {
		t.Fatalf("deleting again: %d %s", r.Code, r.Body)
	}
	if _, err := e.svc.VerifyAccessToken(aliceTok.AccessToken); err != nil {
		t.Fatalf("someone else's token: %v", err)
	}

	// Not due yet: the sweeper waits, and a step proposed early is refused.
	if wait := e.svc.EraseDue(context.Background()); wait <= 0 || wait > time.Hour {
		t.Fatalf("next erase in %v", wait)
	}
	if n := len(fsmtest.Dump(t, e.db, "r/test/bob/")); n != 5000 {
		t.Fatalf("erased before the grace period: %d keys left", n)
	}
	if _, err := e.prop.Propose(context.Background(), wire.CmdAccountErase, mustJSON(t,
		accountEraseCmd{V: 1, UID: "bob", At: e.clock.Now()})); !errors.Is(err, ErrNotDue) {
		t.Fatalf("early step: %v", err)
	}

	e.clock.Advance(time.Hour)
	e.svc.EraseDue(context.Background())
	if n := len(fsmtest.Dump(t, e.db, "r/test/bob/")); n != 0 {
		t.Fatalf("%d keys of bob left", n)
	}
	if n := len(fsmtest.Dump(t, e.db, "r/test/alice/")); n != 3 {
		t.Fatalf("alice's keys: %d", n)
	}
	if _, found, _ := e.svc.readAccount("bob"); found {
		t.Fatal("account record left")
	}
	for k, v := range fsmtest.Dump(t, e.db, prefixRefresh) {
		if strings.Contains(v, `"uid":"bob"`) {
			t.Fatalf("refresh family %s of bob left", k)
		}
	}
	if len(fsmtest.Dump(t, e.db, prefixRefresh)) == 0 {
		t.Fatal("alice's refresh family went too")
	}
	if n := len(fsmtest.Dump(t, e.db, prefixUserFamily+"bob/")); n != 0 {
		t.Fatalf("%d session index entries of bob left", n)
	}
	if len(fsmtest.Dump(t, e.db, prefixUserFamily+"alice/")) == 0 {
		t.Fatal("alice's session index went too")
	}
	if g, ok := e.svc.gone.get("bob"); !ok || g.ErasedAt == nil {
		t.Fatalf("tombstone %+v %v", g, ok)
	}
	// The user ID stays reserved.
	if r := e.post("/auth/register", map[string]string{"username": "bob", "password": "another-password"}); r.Code != http.StatusConflict {
		t.Fatalf("re-registering bob: %d %s", r.Code, r.Body)
	}
	if _, err := e.prop.Propose(context.Background(), wire.CmdAccountCreate, mustJSON(t,
		accountCreateCmd{UID: "bob", Hash: "x", At: e.clock.Now()})); !errors.Is(err, ErrUsernameTaken) {
		t.Fatalf("account create of a tombstone: %v", err)
	}
}

// An erase step of an erased account writes nothing, and a follower
// applying the same log ends with the same state (steps are
// deterministic).
func TestEraseStepsReplayIdentically(t *testing.T) {
	e := newEnv(t)
	e.svc.AddEraser("test", testEraser)
	follower := e.prop.NewFollower(t)
	fsvc, err := New(Config{KeyDir: t.TempDir() + "/keys", Argon2: tinyArgon},
		Deps{DB: follower.DB(), Proposer: e.prop, FSM: follower, Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	fsvc.AddEraser("test", testEraser)
	e.register("bob", "bob-password")
	e.login("bob", "bob-password")
	seedTestKeys(t, e.db, "bob", 4500)
	seedTestKeys(t, follower.DB(), "bob", 4500)

	if _, err := e.svc.DeleteAccount(context.Background(), "bob", "bob-password", "192.0.2.1"); err != nil {
		t.Fatal(err)
	}
	e.svc.EraseDue(context.Background())
	if n := len(fsmtest.Dump(t, e.db, "r/test/")); n != 0 {
		t.Fatalf("%d keys left", n)
	}
	steps := 0
	for _, l := range e.prop.Logs() {
		cmds, _ := fsm.DecodeBatch(l.Data)
		for _, c := range cmds {
			if c.Type == wire.CmdAccountErase {
				steps++
			}
		}
	}
	if steps != 3 {
		t.Fatalf("%d erase steps for 4500 keys at %d a step, want 3", steps, eraseStepWrites)
	}
	state := fsmtest.Dump(t, e.db, "r/")
	if got := fsmtest.Dump(t, follower.DB(), "r/"); !maps.Equal(state, got) {
		t.Fatalf("the follower's state differs: %d keys vs %d", len(got), len(state))
	}
	if !fsvc.Deleted("bob") {
		t.Fatal("the follower does not know bob is deleted")
	}
	// Once more: done, nothing written.
	v, err := e.prop.Propose(context.Background(), wire.CmdAccountErase, mustJSON(t, accountEraseCmd{V: 1, UID: "bob", At: e.clock.Now()}))
	if done, known := stepDone(v); err != nil || !known || !done {
		t.Fatalf("repeated step: %v %v", v, err)
	}
	if got := fsmtest.Dump(t, e.db, "r/"); !maps.Equal(state, got) {
		t.Fatal("a repeated step changed the state")
	}
}

func TestAccountCommandsOfAnotherVersionAreRefused(t *testing.T) {
	e := newEnv(t)
	e.register("bob", "bob-password")
	before := fsmtest.Dump(t, e.db, "r/")
	now := e.clock.Now()
	for _, c := range []struct {
		t byte
		v any
	}{
		{wire.CmdAccountDelete, accountDeleteCmd{V: 2, UID: "bob", At: now, DeleteAt: now}},
		{wire.CmdAccountDelete, accountDeleteCmd{UID: "bob", At: now, DeleteAt: now}},
		{wire.CmdAccountErase, accountEraseCmd{V: 2, UID: "bob", At: now}},
		{wire.CmdAccountDelete, accountDeleteCmd{V: 1, UID: "Bob!", At: now, DeleteAt: now}},
		{wire.CmdAccountDelete, accountDeleteCmd{V: 1, UID: "bob", At: now, DeleteAt: now.Add(-time.Second)}},
	} {
		if _, err := e.prop.Propose(context.Background(), c.t, mustJSON(t, c.v)); !errors.Is(err, errBadCommand) {
			t.Errorf("%#x %+v: %v, want a malformed command", c.t, c.v, err)
		}
	}
	if _, err := e.prop.Propose(context.Background(), wire.CmdAccountErase, []byte(`{"v":1,"uid":"bob"`)); !errors.Is(err, errBadCommand) {
		t.Errorf("truncated payload: %v", err)
	}
	if _, err := e.prop.Propose(context.Background(), wire.CmdAccountErase, mustJSON(t, accountEraseCmd{V: 1, UID: "bob", At: now})); !errors.Is(err, ErrNoAccount) {
		t.Errorf("erasing an account not deleted: %v", err)
	}
	if after := fsmtest.Dump(t, e.db, "r/"); !maps.Equal(before, after) {
		t.Fatal("a refused command changed the state")
	}
	if e.svc.Deleted("bob") {
		t.Fatal("bob is deleted")
	}
}

func TestDeleteAccountWrongPasswordsAreRateLimited(t *testing.T) {
	e := newEnv(t)
	e.register("bob", "bob-password")
	limited := false
	for i := 0; i < 20 && !limited; i++ {
		r := e.deleteReq("bob", "wrong-password")
		switch r.Code {
		case http.StatusForbidden:
		case http.StatusTooManyRequests:
			limited = true
		default:
			t.Fatalf("attempt %d: %d %s", i, r.Code, r.Body)
		}
	}
	if !limited {
		t.Fatal("20 wrong passwords were never rate limited")
	}
	if e.svc.Deleted("bob") {
		t.Fatal("deleted with wrong passwords")
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// An eraser that finished is not run again in later steps (its reads
// would be paid in every step of a long erasure).
func TestFinishedErasersAreSkipped(t *testing.T) {
	e := newEnv(t)
	calls := 0
	e.svc.AddEraser("small", func(tx *badger.Txn, uid string, b *fsm.Budget) (bool, func(), error) {
		calls++
		done, err := fsm.DeleteMatching(tx, []byte("r/small/"+uid+"/"), b, nil)
		return done, nil, err
	})
	e.svc.AddEraser("test", testEraser)
	e.register("bob", "bob-password")
	seedTestKeys(t, e.db, "bob", 4500)
	if err := e.db.Update(func(tx *badger.Txn) error { return tx.Set([]byte("r/small/bob/1"), nil) }); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.DeleteAccount(context.Background(), "bob", "bob-password", "192.0.2.1"); err != nil {
		t.Fatal(err)
	}
	e.svc.EraseDue(context.Background())
	if n := len(fsmtest.Dump(t, e.db, "r/test/")) + len(fsmtest.Dump(t, e.db, "r/small/")); n != 0 {
		t.Fatalf("%d keys left", n)
	}
	if calls != 1 {
		t.Fatalf("the finished eraser ran in %d steps", calls)
	}
}

// An admin deletes an account without its password: disabled at once
// (its tokens and password refused), erased after the grace period as a
// user's own deletion; an unknown, deleted or malformed user is refused
// and nothing changes.
func TestAdminDeletesAnAccount(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.DeleteGrace = time.Hour })
	e.register("bob", "bob-password")
	e.register("alice", "alice-password")
	bobTok, aliceTok := e.login("bob", "bob-password"), e.login("alice", "alice-password")
	for _, c := range []struct {
		path   string
		status int
	}{{"/admin/users/nobody", 404}, {"/admin/users/Not!A.Name", 400}} {
		if r := e.as("root", http.MethodDelete, c.path, ""); r.Code != c.status {
			t.Fatalf("DELETE %s: %d %s", c.path, r.Code, r.Body)
		}
	}
	r := e.as("root", http.MethodDelete, "/admin/users/bob", "")
	var res DeleteResult
	if r.Code != http.StatusAccepted || json.Unmarshal(r.Body, &res) != nil || res.UserID != "bob" || !res.DeleteAt.Equal(e.clock.Now().Add(time.Hour)) {
		t.Fatalf("admin delete: %d %s", r.Code, r.Body)
	}
	if _, err := e.svc.VerifyAccessToken(bobTok.AccessToken); !errors.Is(err, wire.ErrBadToken) {
		t.Fatalf("bob's token after the deletion: %v", err)
	}
	if r := e.post("/auth/login", map[string]string{"username": "bob", "password": "bob-password"}); r.Code != http.StatusUnauthorized {
		t.Fatalf("bob's login after the deletion: %d", r.Code)
	}
	if _, err := e.svc.VerifyAccessToken(aliceTok.AccessToken); err != nil {
		t.Fatalf("alice's token: %v", err)
	}
	if r := e.as("root", http.MethodDelete, "/admin/users/bob", ""); r.Code != http.StatusNotFound {
		t.Fatalf("deleting bob again: %d %s", r.Code, r.Body)
	}
	e.clock.Advance(time.Hour)
	e.svc.EraseDue(context.Background())
	if g, ok := e.svc.gone.get("bob"); !ok || g.ErasedAt == nil {
		t.Fatalf("bob's tombstone after the grace period: %+v %v", g, ok)
	}
}

// A deleted account is unknown to the admin endpoints that change an
// account: granting it the admin role (PUT /admin/users/{uid}/admin)
// answered 200 and wrote the role, though GET /admin/users/{uid} answers
// 404 for it and the contract says 404 unknown user; the log refuses
// every account update of a deleted account, also one a node proposes
// before it has applied the deletion (a suspension, a password reset).
func TestAccountUpdatesOfADeletedAccountAreRefused(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.register("root", "password0")
	e.register("bob", "password1")
	if _, err := e.svc.DeleteAccountByAdmin(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.SetAdmin(ctx, "bob", true); !errors.Is(err, ErrNoAccount) || !errors.Is(err, wire.ErrNotFound) {
		t.Errorf("granting a deleted account the admin role: %v, want not found", err)
	}
	// As a node that has not applied the deletion yet proposes them.
	for name, cmd := range map[string]accountUpdateCmd{
		"suspend": {UID: "bob", Suspended: ptr(true), SignOut: true, At: e.clock.Now()},
		"reset":   {UID: "bob", Hash: ptr("$argon2id$x"), SignOut: true, At: e.clock.Now()},
	} {
		b, _ := json.Marshal(cmd)
		if _, err := e.prop.Propose(ctx, wire.CmdAccountUpdate, b); !errors.Is(err, ErrNoAccount) {
			t.Errorf("%s of a deleted account: %v, want ErrNoAccount", name, err)
		}
	}
	if e.svc.Suspended("bob") {
		t.Error("the deleted account was suspended")
	}
	var a account
	if err := e.db.View(func(tx *badger.Txn) error { _, err := getJSON(tx, prefixAccount+"bob", &a); return err }); err != nil {
		t.Fatal(err)
	}
	if a.Admin || a.Hash == "$argon2id$x" {
		t.Errorf("the deleted account was changed: %+v", a)
	}
}

func ptr[T any](v T) *T { return &v }

// A sign-up's Idempotency-Key stays with the account while it is
// deleted (a retry of the sign-up is then refused as a taken name, as
// any sign-up of a deleted user ID) and goes with it when it is erased.
func TestSignUpKeyGoesWithTheErasedAccount(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.DeleteGrace = time.Hour })
	ctx := context.Background()
	if _, replay, err := e.svc.CreateAccountKeyed(ctx, "bob", "bob-password", "", "k1"); err != nil || replay {
		t.Fatalf("sign-up: %v %v", replay, err)
	}
	if uid, replay, err := e.svc.CreateAccountKeyed(ctx, "bob", "bob-password", "", "k1"); err != nil || !replay || uid != "bob" {
		t.Fatalf("sign-up sent again: %s %v %v", uid, replay, err)
	}
	if r := e.deleteReq("bob", "bob-password"); r.Code != http.StatusAccepted {
		t.Fatalf("delete: %d %s", r.Code, r.Body)
	}
	if _, _, err := e.svc.CreateAccountKeyed(ctx, "bob", "bob-password", "", "k1"); !errors.Is(err, ErrUsernameTaken) {
		t.Fatalf("sign-up sent again after the deletion: %v", err)
	}
	if n := len(fsmtest.Dump(t, e.db, prefixRegisterKey)); n != 1 {
		t.Fatalf("%d sign-up keys before the erase", n)
	}
	e.clock.Advance(time.Hour)
	e.svc.EraseDue(ctx)
	if n := len(fsmtest.Dump(t, e.db, prefixRegisterKey)); n != 0 {
		t.Fatalf("%d sign-up keys after the erase", n)
	}
}

// flippingLeader is a Leadership that this node gains while an erasure
// pass runs: the pass's first IsLeader answers false, and the change is
// announced right after it.
type flippingLeader struct {
	mu     sync.Mutex
	leader bool
	ch     chan struct{}
	asked  int
}

func (f *flippingLeader) IsLeader() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asked++
	was := f.leader
	if !f.leader {
		f.leader = true
		if f.ch != nil {
			close(f.ch)
			f.ch = nil
		}
	}
	return was
}

func (f *flippingLeader) MembersChanged() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ch == nil {
		f.ch = make(chan struct{})
	}
	return f.ch
}

// A node that becomes the leader while an erasure pass runs (the pass
// saw it follow) erases what is due at once: the sweeper watched for
// member changes only after its pass, so that change was missed and the
// erasure waited up to eraseMaxSleep (a minute). Seen in CI as
// TestAccountErasureIdenticalOnEveryNode's "keys still name bob" after
// 30 s.
func TestErasureRunsOnALeadershipGainedDuringAPass(t *testing.T) {
	e := newEnv(t) // no grace: the deletion is due at once
	e.register("bob", "bob-password")
	if _, err := e.svc.DeleteAccount(context.Background(), "bob", "bob-password", "192.0.2.1"); err != nil {
		t.Fatal(err)
	}
	select { // the deletion's own wake-up would hide the missed change
	case <-e.svc.wake:
	default:
	}
	e.svc.lead = &flippingLeader{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.svc.RunErasure(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if g, ok := e.svc.gone.get("bob"); !ok || g.ErasedAt == nil {
			return fmt.Errorf("bob is not erased: %+v %v", g, ok)
		}
		return nil
	})
}
