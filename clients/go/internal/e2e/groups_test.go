package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	edgechat "github.com/edgechat/edgechat/clients/go"
	"github.com/edgechat/edgechat/node/nodetest"
)

func postJSON(t *testing.T, url, tok string, body any, out any) {
	t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("POST %s: %s", url, resp.Status)
	}
	if out != nil {
		_ = json.NewDecoder(resp.Body).Decode(out)
	}
}

// Group messages reach a connected SDK client live, both for a group it
// is added to while connected and for one it was in when it connected;
// each once.
func TestGroupMessagesReachAConnectedClient(t *testing.T) {
	n := nodetest.StartNode(t)
	aliceTok, bobTok := n.NewUser(t, "alice"), n.NewUser(t, "bob")
	newGroup := func(name string) string {
		var g struct {
			ID string `json:"groupId"`
		}
		postJSON(t, n.HTTPURL+"/user/groups", aliceTok, map[string]any{"name": name, "members": []string{"bob"}}, &g)
		if g.ID == "" {
			t.Fatal("no group id")
		}
		return g.ID
	}
	post := func(gid, cid, body string) edgechat.Message {
		var m edgechat.Message
		postJSON(t, n.HTTPURL+"/chat/messages", aliceTok, map[string]any{"group": gid, "cid": cid, "type": "text", "body": body}, &m)
		return m
	}
	before := newGroup("before") // bob is in it when he connects
	bb := newInbox()
	dial(t, []string{n.WSURL}, "", bobTok, bb, nil)
	during := newGroup("during") // bob is added while connected

	// The first message of each may come through the catch-up that
	// follows the subscription, the second normally live (the unit tests
	// prove the live path on its own).
	for _, gid := range []string{before, during} {
		m1 := post(gid, "c-g1-"+gid, "hi team")
		bb.waitOnce(t, m1.ID)
		m2 := post(gid, "c-g2-"+gid, "still there?")
		bb.waitOnce(t, m2.ID)
	}
}

// Groups lists the groups I am in, with their names, member counts and
// my role, whether or not they have messages (Conversations lists only
// those that do), and not the groups I am not in.
func TestGroupsListsMyGroups(t *testing.T) {
	n := nodetest.StartNode(t)
	aliceTok, bobTok := n.NewUser(t, "alice"), n.NewUser(t, "bob")
	n.NewUser(t, "carol")
	team := newGroup(t, n, aliceTok, "Team", "bob")
	newGroup(t, n, aliceTok, "Alice and Carol", "carol")
	bob := dial(t, []string{n.WSURL}, "", bobTok, nil, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	groups, err := bob.Groups(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(groups) != 1 {
		t.Fatalf("bob's groups %+v, want Team only", groups)
	}
	if g := groups[0]; g.ID != team || g.Name != "Team" || g.MemberCount != 2 || g.Role != "member" || g.Owner != "alice" {
		t.Fatalf("bob's group %+v", g)
	}
}
