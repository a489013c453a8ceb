package node_test

import (
	"testing"

	"github.com/edgechat/edgechat/node/nodetest"
)

// A user who deleted their account (disabled at once, erased after the
// grace period) is no such user: 0x90 over MQTT and 404 over HTTP, as
// protocol.md says, also when they had blocked the sender.
func TestAMessageToADeletedAccountThatBlockedTheSenderIsNoSuchUser(t *testing.T) {
	n := nodetest.StartNode(t)
	aliceTok, bobTok := n.NewUser(t, "alice"), n.NewUser(t, "bob")
	if st := api(t, n, bobTok, "POST", "/user/me/blocks", map[string]string{"uid": "alice"}, nil); st/100 != 2 {
		t.Fatalf("bob blocks alice: %d", st)
	}
	if st := api(t, n, bobTok, "DELETE", "/user/me", map[string]string{"password": nodetest.Password("bob")}, nil); st != 202 {
		t.Fatalf("bob deletes his account: %d", st)
	}
	alice := mustConnectV5(t, n.MQTTURL, "alice", "laptop", aliceTok)
	code, pr := alice.Pub(t, "user/bob/newMessage", 1, textMsg("c1", "hi"))
	reason := ""
	if pr != nil && pr.Properties != nil {
		reason = pr.Properties.ReasonString
	}
	var out struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	st := api(t, n, aliceTok, "POST", "/chat/messages", map[string]string{"to": "bob", "cid": "h1", "type": "text", "body": "hi"}, &out)
	if code != 0x90 || st != 404 {
		t.Errorf("a message to bob, deleted, who had blocked alice: PUBACK %#x %q, HTTP %d %+v; want 0x90 and 404 (no such user)", code, reason, st, out.Error)
	}
	// Typing and a delivered receipt: as to a user who never was.
	for _, c := range []struct{ what, payload string }{{"typing", `{"state":"typing"}`}, {"receipts", `{"type":"delivered","upTo":"1"}`}} {
		nobody, _ := alice.Pub(t, "user/nobody/"+c.what, 1, c.payload)
		if code, pr := alice.Pub(t, "user/bob/"+c.what, 1, c.payload); code != nobody {
			t.Errorf("%s to bob, deleted, who had blocked alice: PUBACK %#x %+v, want %#x as to nobody", c.what, code, pr.Properties, nobody)
		}
	}
}
