package region_test

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
)

// Adding a user whose account was erased to one's contacts is 404
// not_found, as for a local user (docs/protocol.md, Deleting an
// account), also when the user is of another region: the profile lookup
// answered the tombstone ("deleted user") and the contact was added
// (201), staged for that region, which then refused it. A block of the
// erased user is accepted, as locally.
func TestContactOfAnErasedUserOfAnotherRegionRefused(t *testing.T) {
	eu, us := startLinked(t, 1, "eu", "us", nil, nil, nodetest.WithConfig(func(c *node.Config) { c.AccountDeleteGrace = 0 }))
	aliceTok, bobTok, daveTok := eu.newUser(t, "alice"), us.newUser(t, "bob"), us.newUser(t, "dave")
	if code := call(t, us.nodes[0], bobTok, "DELETE", "/user/me", map[string]string{"password": nodetest.Password("bob")}, nil); code != http.StatusAccepted {
		t.Fatalf("delete bob: %d", code)
	}
	nodetest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		var p struct {
			Deleted bool `json:"deleted"`
		}
		if code := call(t, us.nodes[0], daveTok, "GET", "/user/bob", nil, &p); code != http.StatusOK || !p.Deleted {
			return fmt.Errorf("bob's profile in us: %d, deleted %v", code, p.Deleted)
		}
		return nil
	})
	refusedAsContact(t, eu, aliceTok, "bob@us", "erased")
}

// refusedAsContact checks that uid (a user of another region, gone as
// what says) is 404 as a contact of tok's user, who has no contact, and
// may still be blocked (201, as a local user).
func refusedAsContact(t *testing.T, r *region, tok, uid, what string) {
	t.Helper()
	if code := call(t, r.nodes[0], tok, "POST", "/user/me/contacts", map[string]string{"uid": uid}, nil); code != http.StatusNotFound {
		t.Errorf("contact %s (%s): %d, want 404", uid, what, code)
	}
	var contacts struct {
		Contacts []struct {
			UserID string `json:"userId"`
		} `json:"contacts"`
	}
	if code := call(t, r.nodes[0], tok, "GET", "/user/me/contacts", nil, &contacts); code != http.StatusOK || len(contacts.Contacts) != 0 {
		t.Errorf("contacts: %d %+v, want none", code, contacts)
	}
	if code := call(t, r.nodes[0], tok, "POST", "/user/me/blocks", map[string]string{"uid": uid}, nil); code != http.StatusCreated {
		t.Errorf("block %s (%s): %d, want 201 as for a local user", uid, what, code)
	}
}

// A user of another region whose account is deleted but not erased yet
// (--account-delete-grace) is refused as a contact as an erased one is
// (404 not_found, as for a local deleted user, docs/protocol.md):
// the profile lookup answered the account as it was, so the contact was
// added (201). A block is still accepted, as locally.
func TestContactOfADeletedUserOfAnotherRegionRefused(t *testing.T) {
	eu, us := startLinked(t, 1, "eu", "us", nil, nil, nodetest.WithConfig(func(c *node.Config) { c.AccountDeleteGrace = time.Hour }))
	aliceTok, bobTok := eu.newUser(t, "alice"), us.newUser(t, "bob")
	if code := call(t, us.nodes[0], bobTok, "DELETE", "/user/me", map[string]string{"password": nodetest.Password("bob")}, nil); code != http.StatusAccepted {
		t.Fatalf("delete bob: %d", code)
	}
	refusedAsContact(t, eu, aliceTok, "bob@us", "deleted, not erased")
}

// So when the profile was cached (up to Config.ProfileTTL) before the
// account was deleted: the add asked the cache, which still had bob as
// he was, and the contact was added (201), staged for us, and committed
// there. A contact asks us again (the cache only when us cannot answer).
func TestContactOfADeletedUserOfAnotherRegionRefusedAfterCachedProfile(t *testing.T) {
	eu, us := startLinked(t, 1, "eu", "us", nil, nil, nodetest.WithConfig(func(c *node.Config) { c.AccountDeleteGrace = time.Hour }))
	aliceTok, bobTok := eu.newUser(t, "alice"), us.newUser(t, "bob")
	var p struct {
		Deleted bool `json:"deleted"`
	}
	if code := call(t, eu.nodes[0], aliceTok, "GET", "/user/bob@us", nil, &p); code != http.StatusOK || p.Deleted {
		t.Fatalf("bob's profile in eu: %d, deleted %v", code, p.Deleted)
	}
	if code := call(t, us.nodes[0], bobTok, "DELETE", "/user/me", map[string]string{"password": nodetest.Password("bob")}, nil); code != http.StatusAccepted {
		t.Fatalf("delete bob: %d", code)
	}
	refusedAsContact(t, eu, aliceTok, "bob@us", "deleted after his profile was cached")
}
