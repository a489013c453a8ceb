package users

import (
	"net/http"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"
)

// bob deleted his account: a group change that adds him (or hands him
// the group), checked on a node that had not applied the deletion yet
// and applied after it, is refused (400 unknown_users) as on a node that
// had: the rules are checked again on the committed state (protocol.md,
// Role rules), and a deleted account is an unknown user to whoever would
// add it. Before, he became a member who never reads (or the owner
// nobody can act as) until his erasure, days later.
func TestGroupChangesForAnAccountDeletedOnTheCommittedStateRefused(t *testing.T) {
	e := newEnv(t)
	e.users("owen", "adam", "bob")
	e.svc.SetAccounts(laggingAccounts{})
	g := e.createGroup("owen", "Team", "adam")
	withBob := e.createGroup("owen", "Club", "bob")
	if err := e.db.Update(func(tx *badger.Txn) error { return tx.Set([]byte("r/auth/gone/bob"), []byte(`{}`)) }); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ name, path, body string }{
		{"a group with bob", "/user/groups", `{"name":"x","members":["adam","bob"]}`},
		{"adding bob", "/user/groups/" + g.ID + "/members", `{"uid":"bob"}`},
		{"handing the group to bob", "/user/groups/" + withBob.ID + "/owner", `{"uid":"bob"}`},
	} {
		if r := e.do(http.MethodPost, c.path, c.body, "owen"); r.Code != http.StatusBadRequest || !strings.Contains(string(r.Body), "unknown_users") {
			t.Errorf("%s: %d %s, want 400 unknown_users", c.name, r.Code, r.Body)
		}
	}
	if _, ok := e.svc.Role(g.ID, "bob"); ok {
		t.Error("the deleted bob was added")
	}
	if gr, err := e.svc.Group(withBob.ID); err != nil || gr.Owner != "owen" {
		t.Errorf("the club after: %+v %v, want owen still its owner", gr, err)
	}
	// His role may still change, and he may still be removed.
	if r := e.do(http.MethodPost, "/user/groups/"+withBob.ID+"/members", `{"uid":"bob","role":"admin"}`, "owen"); r.Code != http.StatusOK {
		t.Errorf("making the deleted bob an admin: %d %s", r.Code, r.Body)
	}
	if r := e.do(http.MethodDelete, "/user/groups/"+withBob.ID+"/members/bob", "", "owen"); r.Code != http.StatusNoContent {
		t.Errorf("removing the deleted bob: %d %s", r.Code, r.Body)
	}
}
