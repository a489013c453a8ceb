package node_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
)

// The erasure of a group's owner hands the group to a member who can
// act: an admin (or member) whose own account is deleted and waiting for
// its erasure is passed over, or the group would be owned by an account
// nobody can sign in to until that erasure, days later (nobody could
// name admins or transfer it meanwhile).
func TestErasedOwnersGroupSkipsAnHeirDeletedInItsGrace(t *testing.T) {
	const grace = 6 * time.Second
	n := nodetest.StartNode(t, nodetest.WithConfig(func(c *node.Config) { c.AccountDeleteGrace = grace }))
	aliceTok, bobTok, carolTok := n.NewUser(t, "alice"), n.NewUser(t, "bob"), n.NewUser(t, "carol")
	g := createGroup(t, n, aliceTok, "team", "bob", "carol")
	path := "/user/groups/" + g.GroupID
	if st := api(t, n, aliceTok, "POST", path+"/members", map[string]string{"uid": "bob", "role": "admin"}, nil); st != 200 {
		t.Fatalf("promote bob: %d", st)
	}
	// alice deletes her account, then bob, the group's only admin, his:
	// alice's erasure comes first, while bob waits for his.
	if st := api(t, n, aliceTok, "DELETE", "/user/me", map[string]string{"password": nodetest.Password("alice")}, nil); st != 202 {
		t.Fatalf("alice's delete: %d", st)
	}
	time.Sleep(grace / 2) // the gap between the two erasures is what is tested
	if st := api(t, n, bobTok, "DELETE", "/user/me", map[string]string{"password": nodetest.Password("bob")}, nil); st != 202 {
		t.Fatalf("bob's delete: %d", st)
	}
	var after group
	checkFor(t, grace+20*time.Second, 20*time.Millisecond, func() error {
		after = group{}
		if st := api(t, n, carolTok, "GET", path, nil, &after); st != 200 {
			return fmt.Errorf("carol's GET of the group: %d", st)
		}
		if after.Owner == "alice" {
			return errors.New("alice not erased yet")
		}
		return nil
	})
	if after.Owner != "carol" {
		t.Fatalf("after alice's erasure the group is owned by %q (bob deleted his account), want carol: %+v", after.Owner, after)
	}
}
