package node_test

import (
	"testing"

	"github.com/edgechat/edgechat/node/nodetest"
)

// GET /admin/stats counts the accounts that GET /admin/users lists: a
// deleted account, disabled at once and refused by every admin endpoint
// (404), is not one while it waits out the grace period before its
// erasure. It was counted for that whole week.
func TestAdminStatsLeavesDeletedAccountsOut(t *testing.T) {
	n := nodetest.StartNode(t)
	admin := n.NewUser(t, "alice") // the first account: an admin
	n.NewUser(t, "bob")
	n.NewUser(t, "carol")

	type stats struct {
		Users int `json:"users"`
	}
	var before stats
	if st := api(t, n, admin, "GET", "/admin/stats", nil, &before); st != 200 || before.Users != 3 {
		t.Fatalf("stats: %d %+v, want 200 with 3 users", st, before)
	}
	if st := api(t, n, admin, "DELETE", "/admin/users/carol", nil, nil); st != 202 {
		t.Fatalf("DELETE /admin/users/carol: %d, want 202", st)
	}
	var list struct {
		Users []struct{ UserID string } `json:"users"`
	}
	if st := api(t, n, admin, "GET", "/admin/users", nil, &list); st != 200 || len(list.Users) != 2 {
		t.Fatalf("GET /admin/users after the deletion: %d %+v, want alice and bob", st, list)
	}
	var after stats
	if st := api(t, n, admin, "GET", "/admin/stats", nil, &after); st != 200 || after.Users != len(list.Users) {
		t.Errorf("stats after deleting carol: %d %+v, want %d users, as GET /admin/users lists", st, after, len(list.Users))
	}
}
