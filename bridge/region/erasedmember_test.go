package region_test

import (
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
)

// bob of us, a member of a group of eu, deletes his account: once us
// erased it, the group's home no longer lists bob@us (us tells it, as
// when he leaves), instead of keeping a member who is gone for good.
func TestErasedMemberLeavesGroupOfAnotherRegion(t *testing.T) {
	eu, us := startLinked(t, 1, "eu", "us", nil, nil, nodetest.WithConfig(func(c *node.Config) { c.AccountDeleteGrace = 0 }))
	aliceTok, bobTok, daveTok := eu.newUser(t, "alice"), us.newUser(t, "bob"), us.newUser(t, "dave")
	g := newGroup(t, eu.nodes[0], aliceTok, "team", "bob@us", "dave@us")
	members := func(n *nodetest.Node, tok, gid string) ([]string, int) {
		var out struct {
			Members []struct {
				UserID string `json:"userId"`
			} `json:"members"`
		}
		code := call(t, n, tok, "GET", "/user/groups/"+gid+"/members", nil, &out)
		var ids []string
		for _, m := range out.Members {
			ids = append(ids, m.UserID)
		}
		slices.Sort(ids)
		return ids, code
	}
	nodetest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if ids, code := members(us.nodes[0], daveTok, g.GroupID+"@eu"); code != http.StatusOK || !slices.Equal(ids, []string{"alice@eu", "bob", "dave"}) {
			return fmt.Errorf("mirror in us: %d %v", code, ids)
		}
		return nil
	})
	if code := call(t, us.nodes[0], bobTok, "DELETE", "/user/me", map[string]string{"password": nodetest.Password("bob")}, nil); code != http.StatusAccepted {
		t.Fatalf("delete bob: %d", code)
	}
	nodetest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if ids, code := members(eu.nodes[0], aliceTok, g.GroupID); code != http.StatusOK || !slices.Equal(ids, []string{"alice", "dave@us"}) {
			return fmt.Errorf("the group at home after bob@us was erased: %d %v, want alice and dave@us", code, ids)
		}
		return nil
	})
	nodetest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if ids, code := members(us.nodes[0], daveTok, g.GroupID+"@eu"); code != http.StatusOK || !slices.Equal(ids, []string{"alice@eu", "dave"}) {
			return fmt.Errorf("mirror in us after bob was erased: %d %v", code, ids)
		}
		return nil
	})
}
