package node_test

import (
	"strings"
	"testing"

	"github.com/edgechat/edgechat/node/nodetest"
)

// The /admin/users/{uid} endpoints agree on a user ID with capitals
// (Bob: the name as typed at sign-up): GET answered bob's account (it
// lowered the name) while DELETE, PUT .../suspended, .../password and
// .../admin answered 400 "invalid user id", so a script could look bob
// up as Bob and then not delete him. Every one now refuses it as the
// other {uid} endpoints do (GET /user/Bob): 404 not_found saying user
// IDs are lowercase and naming bob; nothing changes. A malformed ID is
// 400 everywhere (GET said 404). POST /admin/push/test/{uid} (`edgechat
// push test Bob`) agrees too: it answered 400 bad_request "invalid
// user ID" to Bob (session 37).
func TestAdminUserEndpointsAgreeOnCapitals(t *testing.T) {
	n := nodetest.StartNode(t)
	root := n.NewUser(t, "root") // the first account: an admin
	n.NewUser(t, "bob")
	type apiErr struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	for _, c := range []struct {
		method, path string
		body         any
	}{
		{"GET", "/admin/users/Bob", nil},
		{"DELETE", "/admin/users/Bob", nil},
		{"PUT", "/admin/users/Bob/suspended", map[string]bool{"suspended": true}},
		{"PUT", "/admin/users/Bob/password", map[string]string{"password": "new-password-1"}},
		{"PUT", "/admin/users/Bob/admin", map[string]bool{"admin": true}},
		{"POST", "/admin/push/test/Bob", nil},
	} {
		var out apiErr
		st := api(t, n, root, c.method, c.path, c.body, &out)
		if st != 404 || out.Error.Code != "not_found" || !strings.Contains(out.Error.Message, "lowercase: bob") {
			t.Errorf("%s %s: %d %+v, want 404 not_found saying user IDs are lowercase: bob", c.method, c.path, st, out.Error)
		}
	}
	for _, c := range []struct{ method, path string }{{"GET", "/admin/users/Not!A.Name"}, {"DELETE", "/admin/users/Not!A.Name"},
		{"POST", "/admin/push/test/Not!A.Name"}} {
		var out apiErr
		if st := api(t, n, root, c.method, c.path, nil, &out); st != 400 || out.Error.Code != "validation_failed" {
			t.Errorf("%s %s: %d %+v, want 400 validation_failed", c.method, c.path, st, out.Error)
		}
	}
	var acct struct {
		UserID    string `json:"userId"`
		Admin     bool   `json:"admin"`
		Suspended bool   `json:"suspended"`
	}
	if st := api(t, n, root, "GET", "/admin/users/bob", nil, &acct); st != 200 || acct.UserID != "bob" || acct.Admin || acct.Suspended {
		t.Fatalf("bob after the refused requests: %d %+v, want him as he was", st, acct)
	}
}
