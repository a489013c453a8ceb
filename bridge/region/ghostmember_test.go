package region_test

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/edgechat/edgechat/node/nodetest"
)

// A group of eu lists a user of us who does not exist (eu cannot check:
// a typo, or an account erased there). us keeps no such member in its
// mirror: someone who signs up under that name in us later is not a
// member and does not read the group's history.
func TestMirrorKeepsNoUnknownMember(t *testing.T) {
	eu, us := startRegions(t, 1, "eu", "us", nil)
	aliceTok, bobTok := eu.newUser(t, "alice"), us.newUser(t, "bob")
	g := newGroup(t, eu.nodes[0], aliceTok, "team", "bob@us", "ghost@us")
	mirror := g.GroupID + "@eu"
	alice := connect(t, eu.nodes[0], "alice", "phone", aliceTok)
	if code, _ := alice.Pub(t, "group/"+g.GroupID+"/newMessage", 1, textMsg("s1", "only for the team")); code != 0 {
		t.Fatalf("PUBACK %#x", code)
	}
	nodetest.CheckFor(t, 20e9, 20e6, func() error {
		var h struct {
			Messages []groupEnvelope `json:"messages"`
		}
		if code := call(t, us.nodes[0], bobTok, "GET", "/chat/history?limit=200&group="+mirror, nil, &h); code != http.StatusOK || len(h.Messages) != 1 {
			return fmt.Errorf("bob's history of %s: %d %+v", mirror, code, h.Messages)
		}
		return nil
	})
	var members struct {
		Members []struct {
			UserID string `json:"userId"`
		} `json:"members"`
	}
	if code := call(t, us.nodes[0], bobTok, "GET", "/user/groups/"+mirror+"/members", nil, &members); code != http.StatusOK {
		t.Fatalf("members: %d", code)
	}
	for _, m := range members.Members {
		if m.UserID == "ghost" {
			t.Errorf("us's mirror lists ghost, who has no account in us: %+v", members.Members)
		}
	}

	ghostTok := us.newUser(t, "ghost") // signs up later
	var hist struct {
		Messages []groupEnvelope `json:"messages"`
	}
	code := call(t, us.nodes[0], ghostTok, "GET", "/chat/history?limit=200&group="+mirror, nil, &hist)
	if code == http.StatusOK && len(hist.Messages) > 0 {
		t.Fatalf("ghost, who signed up after the message, reads %s's history: %+v", mirror, hist.Messages)
	}
}
