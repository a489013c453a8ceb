package node_test

import (
	"testing"

	"github.com/edgechat/edgechat/node/nodetest"
)

// A contact (or a blocked user) whose account was deleted and waits for
// its erasure is listed marked "deleted": true, as GET /user/{uid}
// marks it: messages to it are refused from the deletion on, so a client
// that offers a chat from the contact list must be able to tell.
func TestContactListMarksAnAccountDeletedInItsGrace(t *testing.T) {
	n := nodetest.StartNode(t)
	aliceTok, bobTok := n.NewUser(t, "alice"), n.NewUser(t, "bob")
	n.NewUser(t, "carol")
	for _, c := range []struct{ path, uid string }{
		{"/user/me/contacts", "bob"}, {"/user/me/contacts", "carol"}, {"/user/me/blocks", "bob"},
	} {
		if st := api(t, n, aliceTok, "POST", c.path, map[string]string{"uid": c.uid}, nil); st != 201 {
			t.Fatalf("POST %s %s: %d", c.path, c.uid, st)
		}
	}
	var ans deleteAnswer
	if st := api(t, n, bobTok, "DELETE", "/user/me", map[string]string{"password": nodetest.Password("bob")}, &ans); st != 202 {
		t.Fatalf("delete: %d %+v", st, ans)
	}
	var one profileView
	if st := api(t, n, aliceTok, "GET", "/user/bob", nil, &one); st != 200 || !one.Deleted {
		t.Fatalf("GET /user/bob: %d %+v", st, one)
	}
	var contacts struct {
		Contacts []profileView `json:"contacts"`
	}
	if st := api(t, n, aliceTok, "GET", "/user/me/contacts", nil, &contacts); st != 200 || len(contacts.Contacts) != 2 {
		t.Fatalf("contacts: %d %+v", st, contacts)
	}
	for _, p := range contacts.Contacts {
		if p.Deleted != (p.UserID == "bob") {
			t.Errorf("alice's contact %s listed with deleted %v, want %v", p.UserID, p.Deleted, p.UserID == "bob")
		}
	}
	var blocks struct {
		Blocks []profileView `json:"blocks"`
	}
	if st := api(t, n, aliceTok, "GET", "/user/me/blocks", nil, &blocks); st != 200 || len(blocks.Blocks) != 1 || !blocks.Blocks[0].Deleted {
		t.Errorf("blocks: %d %+v, want bob marked deleted", st, blocks)
	}
}
