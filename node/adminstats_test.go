package node_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/edgechat/edgechat/node"
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

// adminStats is the answer of GET /admin/stats.
type adminStats struct {
	Users          int       `json:"users"`
	Groups         int       `json:"groups"`
	MirroredGroups int       `json:"mirroredGroups"`
	Node           string    `json:"node"`
	Since          time.Time `json:"since"`
	Connections    int       `json:"connections"`
	MessagesStored uint64    `json:"messagesStored"`
}

// GET /admin/stats counted group records, not groups: one whose every
// member was erased (no owner, nobody can reach it) counted for good,
// and a region counted the mirrors of other regions' groups that its
// users are in as its own, so that an operator adding up regions
// counted a group once per region. Its node-scoped figures
// (connections, messagesStored: this node since it started) did not
// say whose they were, so two polls through a load balancer read as a
// count that went down. It now counts the groups of this region that
// have members, the mirrors apart (mirroredGroups), and names the node
// and when it started (node, since).
func TestAdminStatsCountsGroupsAndNamesItsNode(t *testing.T) {
	n := nodetest.StartNode(t, nodetest.WithConfig(func(c *node.Config) { c.AccountDeleteGrace = 0 }))
	admin := n.NewUser(t, "alice")
	bobTok := n.NewUser(t, "bob")
	n.NewUser(t, "carol")
	createGroup(t, n, bobTok, "solo")
	createGroup(t, n, admin, "team", "carol")
	if st := api(t, n, admin, "DELETE", "/admin/users/bob", nil, nil); st != 202 {
		t.Fatalf("DELETE /admin/users/bob: %d, want 202", st)
	}
	waitErased(t, n, "bob", 20*time.Second)
	var s adminStats
	if st := api(t, n, admin, "GET", "/admin/stats", nil, &s); st != 200 || s.Users != 2 || s.Groups != 1 {
		t.Errorf("stats after bob's erasure: %d %+v, want 2 users and 1 group (bob's solo group has nobody left)", st, s)
	}
	if s.Node != n.Config.NodeID || s.Since.IsZero() || s.Since.After(time.Now()) {
		t.Errorf("stats name node %q since %v, want %q and when it started", s.Node, s.Since, n.Config.NodeID)
	}

	// Two regions: a group of eu with a member in us is eu's group; us
	// holds a mirror of it.
	eu, us := nodetest.StartRegionPair(t, "eu", "us")
	euAdmin, usAdmin := eu.NewUser(t, "alice"), us.NewUser(t, "root")
	dave := us.NewUser(t, "dave")
	team := createGroup(t, eu, euAdmin, "team", "dave@us").GroupID
	checkFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		if ids := myGroupIDs(t, us, dave); !slices.Contains(ids, team+"@eu") {
			return fmt.Errorf("dave's groups in us: %v, want %s@eu", ids, team)
		}
		return nil
	})
	for _, c := range []struct {
		n                *nodetest.Node
		tok              string
		groups, mirrored int
	}{{eu, euAdmin, 1, 0}, {us, usAdmin, 0, 1}} {
		var s adminStats
		if st := api(t, c.n, c.tok, "GET", "/admin/stats", nil, &s); st != 200 || s.Groups != c.groups || s.MirroredGroups != c.mirrored {
			t.Errorf("stats of %s: %d %+v, want %d groups and %d mirrored", c.n.Config.Region, st, s, c.groups, c.mirrored)
		}
	}
}
