package node_test

import (
	"errors"
	"testing"
	"time"

	"github.com/edgechat/edgechat/node/nodetest"
)

// A cid is unique per sender: a publish with a cid the sender already
// used is a retry. A client that reuses one for a message to someone
// else (per-conversation counters, README's {"cid":"1"} copied for a
// second peer) sends another message, not a retry: it must be refused
// (0x99, HTTP 400 invalid_envelope) so that the client picks a new cid,
// not acknowledged while nothing is stored or delivered.
func TestCIDReusedForAnotherConversationIsRefusedNotDropped(t *testing.T) {
	n := nodetest.StartNode(t)
	aliceTok, bobTok, carolTok := n.NewUser(t, "alice"), n.NewUser(t, "bob"), n.NewUser(t, "carol")
	g := createGroup(t, n, aliceTok, "team", "bob", "carol")
	carol := mustConnectV5(t, n.MQTTURL, "carol", "phone", carolTok)
	carol.MustSub(t, "user/carol/newMessage", "group/"+g.GroupID+"/newMessage")
	alice := mustConnectV5(t, n.MQTTURL, "alice", "laptop", aliceTok)

	if code, _ := alice.Pub(t, "user/bob/newMessage", 1, textMsg("1", "hi bob")); code != 0 {
		t.Fatalf("first message: PUBACK %#x", code)
	}
	// The same message again is a retry: acknowledged, stored once.
	if code, _ := alice.Pub(t, "user/bob/newMessage", 1, textMsg("1", "hi bob")); code != 0 {
		t.Fatalf("retry to bob: PUBACK %#x, want 0", code)
	}
	code, pr := alice.Pub(t, "user/carol/newMessage", 1, textMsg("1", "hi carol"))
	if code != 0x99 {
		t.Errorf("cid 1 again, to carol: PUBACK %#x %q, want 0x99 (nothing was stored for carol)", code, pr.Properties.ReasonString)
	}
	code, pr = alice.Pub(t, "group/"+g.GroupID+"/newMessage", 1, textMsg("1", "hi team"))
	if code != 0x99 {
		t.Errorf("cid 1 again, to the group: PUBACK %#x %q, want 0x99", code, pr.Properties.ReasonString)
	}
	var errBody struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	st := api(t, n, aliceTok, "POST", "/chat/messages", map[string]string{"to": "carol", "cid": "1", "type": "text", "body": "hi carol"}, &errBody)
	if st != 400 || errBody.Error.Code != "invalid_envelope" {
		t.Errorf("POST /chat/messages to carol with cid 1: %d %+v, want 400 invalid_envelope", st, errBody)
	}

	// A new cid goes through: carol gets it, and only it.
	if code, _ := alice.Pub(t, "user/carol/newMessage", 1, textMsg("2", "hi carol")); code != 0 {
		t.Fatalf("new cid to carol: PUBACK %#x", code)
	}
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if len(carol.Received("user/carol/newMessage")) < 1 {
			return errors.New("carol got nothing")
		}
		return nil
	})
	for _, m := range carol.Received("") {
		if e := decodeEnvelope(t, m.Payload); e.CID != "2" || e.To != "carol" {
			t.Errorf("carol got %s on %s, want only cid 2 to carol", m.Payload, m.Topic)
		}
	}
	var page historyPage
	if st := api(t, n, bobTok, "GET", "/chat/history?with=alice", nil, &page); st != 200 || len(page.Messages) != 1 || page.Messages[0].Body != "hi bob" {
		t.Errorf("bob's history: %d %+v, want the one message", st, page.Messages)
	}
}
