package node_test

import (
	"strings"
	"testing"

	"github.com/edgechat/edgechat/node/nodetest"
)

// A user ID written with capitals (Alice: the name as the user typed it
// at sign-up, which registration lowered) is refused by the chat
// endpoints with a message that says IDs are lowercase and names the ID
// meant; it said only "to must be a user id" / "invalid user id in with",
// though alice exists and signs in as Alice.
func TestChatEndpointsSayUserIDsAreLowercase(t *testing.T) {
	n := nodetest.StartNode(t)
	n.NewUser(t, "alice")
	bobTok := n.NewUser(t, "bob")
	type apiErr struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	for _, c := range []struct {
		method, path string
		body         any
	}{
		{"POST", "/chat/messages", map[string]string{"to": "Alice", "cid": "c1", "type": "text", "body": "hi"}},
		{"GET", "/chat/history?with=Alice", nil},
		{"POST", "/chat/read", map[string]string{"with": "Alice", "upTo": "1"}},
	} {
		var out apiErr
		st := api(t, n, bobTok, c.method, c.path, c.body, &out)
		if st != 400 || out.Error.Code != "validation_failed" || !strings.Contains(out.Error.Message, "lowercase: alice") {
			t.Errorf("%s %s with Alice: %d %+v, want 400 validation_failed saying user IDs are lowercase: alice", c.method, c.path, st, out.Error)
		}
	}
}

// The same for a profile and a new contact or block: 404 "no such user"
// (alice exists) now says the IDs are lowercase and names alice.
func TestUserEndpointsSayUserIDsAreLowercase(t *testing.T) {
	n := nodetest.StartNode(t)
	n.NewUser(t, "alice")
	bobTok := n.NewUser(t, "bob")
	for _, c := range []struct {
		method, path string
		body         any
	}{
		{"GET", "/user/Alice", nil},
		{"POST", "/user/me/contacts", map[string]string{"uid": "Alice"}},
		{"POST", "/user/me/blocks", map[string]string{"uid": "Alice"}},
	} {
		var out struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		st := api(t, n, bobTok, c.method, c.path, c.body, &out)
		if st != 404 || out.Error.Code != "not_found" || !strings.Contains(out.Error.Message, "lowercase: alice") {
			t.Errorf("%s %s with Alice: %d %+v, want 404 not_found saying user IDs are lowercase: alice", c.method, c.path, st, out.Error)
		}
	}
}
