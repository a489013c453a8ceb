package node_test

import (
	"testing"

	"github.com/edgechat/edgechat/node/nodetest"
)

// A direct message to a user who blocked the sender and a group message
// of someone who is not a member were refused with the bare "not
// authorized" (v5 PUBACK 0x87) and 403 "not allowed" over HTTP, where
// the other refusals say why (session 36, mochi patch 61). They now
// say why, in words that tell no more than the refusal's code already
// does: a direct message to a user who exists and is refused 0x87 is
// a block (no such user is 0x90), so "bob does not accept your
// messages" (the web app's words, and those of a group add a block
// refuses: "does not accept being added by you"); a group that does
// not exist is refused as one the sender is not a member of, so that
// group IDs do not leak.
func TestRefusedMessagesSayWhy(t *testing.T) {
	n := nodetest.StartNode(t)
	aliceTok, bobTok, carolTok := n.NewUser(t, "alice"), n.NewUser(t, "bob"), n.NewUser(t, "carol")
	g := createGroup(t, n, carolTok, "team", "bob")
	if st := api(t, n, bobTok, "POST", "/user/me/blocks", map[string]string{"uid": "alice"}, nil); st/100 != 2 {
		t.Fatalf("bob blocks alice: %d", st)
	}
	alice := mustConnectV5(t, n.MQTTURL, "alice", "laptop", aliceTok)
	const noGroup = "zzzzzzzzzzzzzzzz"
	for _, c := range []struct {
		topic, want string
	}{
		{"user/bob/newMessage", "not authorized: bob does not accept your messages"},
		{"group/" + g.GroupID + "/newMessage", "not authorized: not a member of group " + g.GroupID},
		{"group/" + noGroup + "/newMessage", "not authorized: not a member of group " + noGroup},
	} {
		code, pr := alice.Pub(t, c.topic, 1, textMsg("c-"+c.topic, "hi"))
		if code != 0x87 || pr.Properties == nil || pr.Properties.ReasonString != c.want {
			reason := ""
			if pr != nil && pr.Properties != nil {
				reason = pr.Properties.ReasonString
			}
			t.Errorf("%s: PUBACK %#x %q, want 0x87 %q", c.topic, code, reason, c.want)
		}
	}
	// Typing and a delivered receipt to bob: the same words.
	for _, c := range []struct{ topic, payload, what string }{
		{"user/bob/typing", `{"state":"typing"}`, "typing"},
		{"user/bob/receipts", `{"type":"delivered","upTo":"1"}`, "receipts"},
	} {
		want := "not authorized: bob does not accept your " + c.what
		if code, pr := alice.Pub(t, c.topic, 1, c.payload); code != 0x87 || pr.Properties.ReasonString != want {
			t.Errorf("%s: PUBACK %#x %+v, want 0x87 %q", c.topic, code, pr.Properties, want)
		}
	}
	// Over HTTP the same words, 403 forbidden.
	for _, c := range []struct {
		body map[string]string
		want string
	}{
		{map[string]string{"to": "bob", "cid": "h1", "type": "text", "body": "hi"}, "bob does not accept your messages"},
		{map[string]string{"group": g.GroupID, "cid": "h2", "type": "text", "body": "hi"}, "not a member of group " + g.GroupID},
		{map[string]string{"group": noGroup, "cid": "h3", "type": "text", "body": "hi"}, "not a member of group " + noGroup},
	} {
		var out struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		if st := api(t, n, aliceTok, "POST", "/chat/messages", c.body, &out); st != 403 || out.Error.Code != "forbidden" || out.Error.Message != c.want {
			t.Errorf("POST /chat/messages %v: %d %+v, want 403 forbidden %q", c.body, st, out.Error, c.want)
		}
	}
	// No such user stays what it was: 0x90, 404.
	if code, pr := alice.Pub(t, "user/nobody/newMessage", 1, textMsg("n1", "hi")); code != 0x90 || pr.Properties.ReasonString != "topic name invalid: no such user" {
		t.Errorf("to nobody: PUBACK %#x %+v, want 0x90 no such user", code, pr.Properties)
	}
}
