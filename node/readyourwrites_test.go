package node_test

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/edgechat/edgechat/node/nodetest"
)

// Behind a load balancer a client's next request may reach any node:
// what one node acknowledged a moment ago, every other node answers for
// at once. A sign-up through one node signs in on the next and reads its
// profile on the third; a group made through one node is read there,
// and its new member's first message is accepted by a third. (The unit
// tests of auth, archive, broker and gateway hold the follower back
// deterministically; here real Raft decides how far it lags.)
func TestEveryNodeAnswersForWhatAnotherJustCommitted(t *testing.T) {
	nodes := nodetest.StartCluster(t, 3)
	for i := range 12 {
		reg, login, read := nodes[i%3], nodes[(i+1)%3], nodes[(i+2)%3]
		name := fmt.Sprintf("user%d", i)
		creds := map[string]string{"username": name, "password": nodetest.Password(name)}
		if code := api(t, reg, "", http.MethodPost, "/auth/register", creds, nil); code != http.StatusCreated {
			t.Fatalf("%s: register on %s: %d", name, reg.Config.NodeID, code)
		}
		var tok struct{ AccessToken string }
		if code := api(t, login, "", http.MethodPost, "/auth/login", creds, &tok); code != http.StatusOK {
			t.Fatalf("%s: login on %s right after signing up on %s: %d", name, login.Config.NodeID, reg.Config.NodeID, code)
		}
		var me struct {
			UserID string `json:"userId"`
		}
		if code := api(t, read, tok.AccessToken, http.MethodGet, "/user/me", nil, &me); code != http.StatusOK || me.UserID != name {
			t.Fatalf("%s: /user/me on %s: %d %+v", name, read.Config.NodeID, code, me)
		}
	}

	// Each group is checked once on the next node, so that no check
	// finds the node caught up by the one before: its list, itself, its
	// new member's first message, or a member added by its owner.
	ownerTok := nodes[0].Token(t, "user0")
	for i := range 12 {
		owner, reader := nodes[i%3], nodes[(i+1)%3]
		var g struct {
			GID string `json:"groupId"`
		}
		member := fmt.Sprintf("user%d", i%11+1)
		memberTok := reader.Token(t, member)
		if code := api(t, owner, ownerTok, http.MethodPost, "/user/groups",
			map[string]any{"name": fmt.Sprintf("g%d", i), "members": []string{member}}, &g); code != http.StatusCreated {
			t.Fatalf("create group on %s: %d", owner.Config.NodeID, code)
		}
		switch i % 4 {
		case 0:
			var mine struct {
				Groups []struct {
					ID string `json:"groupId"`
				} `json:"groups"`
			}
			code := api(t, reader, ownerTok, http.MethodGet, "/user/groups", nil, &mine)
			listed := false
			for _, lg := range mine.Groups {
				listed = listed || lg.ID == g.GID
			}
			if code != http.StatusOK || len(mine.Groups) != i+1 || !listed {
				t.Fatalf("user0's groups on %s right after creating %s on %s: %d %+v", reader.Config.NodeID, g.GID, owner.Config.NodeID, code, mine)
			}
		case 1:
			if code := api(t, reader, ownerTok, http.MethodGet, "/user/groups/"+g.GID, nil, nil); code != http.StatusOK {
				t.Fatalf("group %s on %s right after its creation on %s: %d", g.GID, reader.Config.NodeID, owner.Config.NodeID, code)
			}
		case 2:
			c := mustConnectV5(t, reader.MQTTURL, member, fmt.Sprintf("d%d", i), memberTok)
			if code, _ := c.Pub(t, "group/"+g.GID+"/newMessage", 1, textMsg(fmt.Sprintf("c%d", i), "hi")); code >= 0x80 {
				t.Fatalf("new member's message on %s right after the group's creation on %s: 0x%02x", reader.Config.NodeID, owner.Config.NodeID, code)
			}
		case 3:
			var added map[string]any
			if code := api(t, reader, ownerTok, http.MethodPost, "/user/groups/"+g.GID+"/members",
				map[string]any{"uid": fmt.Sprintf("user%d", (i+4)%11+1)}, &added); code != http.StatusOK {
				t.Fatalf("owner adds a member on %s right after creating %s on %s: %d %v", reader.Config.NodeID, g.GID, owner.Config.NodeID, code, added)
			}
		}
	}
}
