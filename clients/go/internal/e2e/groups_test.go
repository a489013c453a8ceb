package e2e_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"testing"

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
