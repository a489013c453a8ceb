package users

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/internal/wire"
)

// fakeRemote answers profiles of us's users: bob exists, nobody does
// not, and every other name is "link down".
type fakeRemote struct{}

func (fakeRemote) Local() string { return "eu" }
func (fakeRemote) RemoteProfile(_ context.Context, addr string) ([]byte, error) {
	switch addr {
	case "bob@us":
		return []byte(`{"userId":"bob@us","displayName":"Bob"}`), nil
	case "nobody@us":
		return nil, fmt.Errorf("no such user: %w", wire.ErrNotFound)
	}
	return nil, fmt.Errorf("link down: %w", wire.ErrUnavailable)
}

// unlinkedUS is eu after its link to us was taken away.
type unlinkedUS struct{}

func (unlinkedUS) Local() string             { return "eu" }
func (unlinkedUS) Linked(region string) bool { return false }

// Contacts and blocks of users of other regions: kept here under the
// qualified name, checked with the remote profile lookup (no such user:
// 404; link down: kept unchecked), an unknown region 404, handed to the
// hook in the change's transaction (adds and removals); name@eu is the
// local user.
func TestRemoteContactsAndBlocks(t *testing.T) {
	e := newEnv(t)
	e.users("alice", "carl")
	if r := e.do(http.MethodPost, "/user/me/blocks", `{"uid":"bob@us"}`, "alice"); r.Code != http.StatusNotFound {
		t.Fatalf("bob@us without links: %d %s", r.Code, r.Body)
	}
	e.svc.SetRegions(fakeRegions{})
	e.svc.SetRemoteProfiles(fakeRemote{})
	var mu sync.Mutex
	var heard []string
	e.svc.SetRelationHook(func(tx *badger.Txn, kind, owner, uid string, add bool, at time.Time) (func(), error) {
		if at.IsZero() {
			t.Error("no time")
		}
		return func() {
			mu.Lock()
			heard = append(heard, fmt.Sprint(kind, " ", owner, " ", uid, " ", add))
			mu.Unlock()
		}, nil
	})
	for _, c := range []struct {
		path, uid string
		code      int
	}{
		{"/user/me/blocks", "bob@asia", http.StatusNotFound}, // not linked
		{"/user/me/blocks", "bob@", http.StatusNotFound},
		{"/user/me/contacts", "nobody@us", http.StatusNotFound},
		{"/user/me/contacts", "alice@eu", http.StatusBadRequest}, // herself
		{"/user/me/contacts", "bob@us", http.StatusCreated},
		{"/user/me/blocks", "bob@us", http.StatusCreated},
		{"/user/me/blocks", "dan@us", http.StatusCreated}, // the link cannot tell: kept
		{"/user/me/contacts", "carl@eu", http.StatusCreated},
	} {
		if r := e.do(http.MethodPost, c.path, `{"uid":"`+c.uid+`"}`, "alice"); r.Code != c.code {
			t.Fatalf("POST %s %s: %d %s, want %d", c.path, c.uid, r.Code, r.Body, c.code)
		} else if c.code == http.StatusCreated && c.uid == "bob@us" && !strings.Contains(string(r.Body), `"displayName":"Bob"`) {
			t.Fatalf("POST %s bob@us: %s", c.path, r.Body)
		}
	}
	if !e.svc.IsBlocked("alice", "bob@us") || !e.svc.IsContact("alice", "bob@us") || !e.svc.IsContact("alice", "carl") || !e.svc.IsBlocked("alice", "dan@us") {
		t.Fatal("relations not kept")
	}
	if r := e.do(http.MethodGet, "/user/me/blocks", "", "alice"); !strings.Contains(string(r.Body), `"userId":"bob@us"`) || !strings.Contains(string(r.Body), `"userId":"dan@us"`) {
		t.Fatalf("blocks: %s", r.Body)
	}
	if r := e.do(http.MethodDelete, "/user/me/blocks/bob@us", "", "alice"); r.Code != http.StatusNoContent || e.svc.IsBlocked("alice", "bob@us") {
		t.Fatalf("unblock: %d %s", r.Code, r.Body)
	}
	// An entry of a region no longer linked can still be removed, and
	// nothing is staged for it.
	e.svc.SetRegions(unlinkedUS{})
	if r := e.do(http.MethodDelete, "/user/me/blocks/dan@us", "", "alice"); r.Code != http.StatusNoContent || e.svc.IsBlocked("alice", "dan@us") {
		t.Fatalf("unblock of an unlinked region's user: %d %s", r.Code, r.Body)
	}
	mu.Lock()
	got := strings.Join(heard, "; ")
	mu.Unlock()
	if want := "contact alice bob@us true; block alice bob@us true; block alice dan@us true; block alice bob@us false"; got != want {
		t.Fatalf("hook heard %q, want %q", got, want)
	}
}

// What another region's link brings: alice@eu's block of carl is kept
// as hers (IsBlocked("alice@eu", "carl")), refused for a user we do not
// have or a malformed owner, and lifted by the removal; it refuses
// carl's adding alice@eu to a group, as a local block does.
func TestApplyRemoteRelation(t *testing.T) {
	e := newEnv(t)
	e.users("carl", "owen")
	e.svc.SetRegions(fakeRegions{})
	ctx := context.Background()
	at := time.Unix(1700000000, 0).UTC()
	if err := e.svc.ApplyRemoteRelation(ctx, "block", "alice@us", "nobody", true, at); !errors.Is(err, wire.ErrNotFound) {
		t.Fatalf("block of a user we do not have: %v", err)
	}
	for _, bad := range [][2]string{{"block", "alice"}, {"mute", "alice@us"}, {"block", "alice@"}} {
		if err := e.svc.ApplyRemoteRelation(ctx, bad[0], bad[1], "carl", true, at); !errors.Is(err, wire.ErrInvalid) {
			t.Fatalf("%v: %v", bad, err)
		}
	}
	if err := e.svc.ApplyRemoteRelation(ctx, "block", "alice@us", "carl", true, at); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.ApplyRemoteRelation(ctx, "contact", "alice@us", "owen", true, at); err != nil {
		t.Fatal(err)
	}
	if !e.svc.IsBlocked("alice@us", "carl") || e.svc.IsBlocked("alice@us", "owen") || !e.svc.IsContact("alice@us", "owen") {
		t.Fatal("remote relations not kept")
	}
	if r := e.do(http.MethodPost, "/user/groups", `{"name":"x","members":["alice@us"]}`, "carl"); r.Code != http.StatusForbidden {
		t.Fatalf("carl adds alice@us who blocked him: %d %s", r.Code, r.Body)
	}
	if r := e.do(http.MethodPost, "/user/groups", `{"name":"x","members":["alice@us"]}`, "owen"); r.Code != http.StatusCreated {
		t.Fatalf("owen adds alice@us: %d %s", r.Code, r.Body)
	}
	if err := e.svc.ApplyRemoteRelation(ctx, "block", "alice@us", "carl", false, at); err != nil || e.svc.IsBlocked("alice@us", "carl") {
		t.Fatalf("unblock: %v", err)
	}
}

// An incoming contact of a user whose account is deleted and waiting
// for its erasure is refused (not found), as a local contact of that
// user is (relate): only the profile's existence was checked, so a
// region whose profile lookup was cached before the deletion had its
// contact committed here. A block and a removal still go through.
func TestApplyRemoteContactOfDeletedAccountRefused(t *testing.T) {
	e := newEnv(t)
	e.users("bob", "carl")
	e.svc.SetRegions(fakeRegions{})
	e.svc.SetAccounts(deletedAccounts{"bob": true})
	ctx := context.Background()
	at := time.Unix(1700000000, 0).UTC()
	if err := e.svc.ApplyRemoteRelation(ctx, "contact", "alice@eu", "bob", true, at); !errors.Is(err, wire.ErrNotFound) {
		t.Errorf("contact of a deleted account: %v, want not found", err)
	}
	if e.svc.IsContact("alice@eu", "bob") {
		t.Error("contact of a deleted account kept")
	}
	if err := e.svc.ApplyRemoteRelation(ctx, "block", "alice@eu", "bob", true, at); err != nil || !e.svc.IsBlocked("alice@eu", "bob") {
		t.Errorf("block of a deleted account: %v", err)
	}
	if err := e.svc.ApplyRemoteRelation(ctx, "contact", "alice@eu", "bob", false, at); err != nil {
		t.Errorf("removal: %v", err)
	}
	if err := e.svc.ApplyRemoteRelation(ctx, "contact", "alice@eu", "carl", true, at); err != nil || !e.svc.IsContact("alice@eu", "carl") {
		t.Errorf("contact of carl: %v", err)
	}
}
