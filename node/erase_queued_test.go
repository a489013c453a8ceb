package node_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
)

// With --account-delete-grace 0 the account is erased at once, its
// direct conversations with it, both sides. The copies of its direct
// messages still queued in a peer's persistent session left offline
// must go too: before, alice's session, resumed after the erasure,
// delivered bob's messages, which no history, sync or conversation list
// had any more.
func TestErasedAccountsMessagesQueuedOfflineAreNotDelivered(t *testing.T) {
	n := nodetest.StartNode(t, nodetest.WithConfig(func(c *node.Config) { c.AccountDeleteGrace = 0 }))
	aliceTok, bobTok, carolTok := n.NewUser(t, "alice"), n.NewUser(t, "bob"), n.NewUser(t, "carol")
	persistent := aliceOfflineSubscribed(t, n, aliceTok)

	bob := mustConnectV5(t, n.MQTTURL, "bob", "laptop", bobTok)
	for i := range 2 {
		if code, _ := bob.Pub(t, "user/alice/newMessage", 1, textMsg(fmt.Sprint("b", i), "from bob")); code != 0 {
			t.Fatalf("bob → alice: %#x", code)
		}
	}
	// And a receipt of bob's (delivered: told as sent).
	if code, _ := bob.Pub(t, "user/alice/receipts", 1, `{"type":"delivered","upTo":"1"}`); code != 0 {
		t.Fatalf("bob's receipt: %#x", code)
	}
	if st := api(t, n, bobTok, "DELETE", "/user/me", map[string]string{"password": nodetest.Password("bob")}, nil); st != 202 {
		t.Fatalf("bob deletes his account: %d", st)
	}
	waitErased(t, n, "bob", 20*time.Second)
	var hist historyPage
	if st := api(t, n, aliceTok, "GET", "/chat/history?with=bob", nil, &hist); st != 200 || len(hist.Messages) != 0 {
		t.Fatalf("alice's history with bob after the erasure: %d %d", st, len(hist.Messages))
	}
	back := resumeAfterCarol(t, n, carolTok, persistent, "bob")
	if got := back.Received("user/alice/receipts"); len(got) != 0 {
		t.Fatalf("alice's resumed session delivered bob's receipt %s after his account was erased", got[0].Payload)
	}
}

// resumeAfterCarol has carol send alice a message, resumes alice's
// persistent session and waits for carol's message (queued after the
// erased user's): the resumed session must deliver nothing from erased.
func resumeAfterCarol(t *testing.T, n *nodetest.Node, carolTok string, persistent mqtttest.Options, erased string) *mqtttest.Client {
	t.Helper()
	carol := mustConnectV5(t, n.MQTTURL, "carol", "laptop", carolTok)
	if code, _ := carol.Pub(t, "user/alice/newMessage", 1, textMsg("c0", "from carol")); code != 0 {
		t.Fatalf("carol → alice: %#x", code)
	}
	back, ack, err := mqtttest.Dial(t, n.MQTTURL, persistent)
	if err != nil {
		t.Fatal(err)
	}
	if !ack.SessionPresent {
		t.Fatal("alice's session was not resumed")
	}
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		for _, m := range back.Received("user/alice/newMessage") {
			if decodeEnvelope(t, m.Payload).From == "carol" {
				return nil
			}
		}
		return errors.New("carol's message has not come")
	})
	for _, m := range back.Received("user/alice/newMessage") {
		if e := decodeEnvelope(t, m.Payload); e.From == erased {
			t.Fatalf("alice's resumed session delivered %s's message %q after the erasure", erased, e.CID)
		}
	}
	return back
}

// aliceOfflineSubscribed gives alice a persistent session on n,
// subscribed to her messages and receipts, whose connection is then
// lost: the session waits offline. It answers the options that resume it.
func aliceOfflineSubscribed(t *testing.T, n *nodetest.Node, aliceTok string) mqtttest.Options {
	t.Helper()
	persistent := mqtttest.Options{ClientID: "alice/phone", Username: "alice", Password: aliceTok,
		KeepSession: true, SessionExpiry: 600}
	alice := mqtttest.MustDial(t, n.MQTTURL, persistent)
	alice.MustSub(t, "user/alice/newMessage", "user/alice/receipts")
	_ = alice.Conn.Close() // lost: the session waits offline, subscribed
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if n.Broker.UserConnections("alice") != 0 {
			return errors.New("alice's connection is still counted")
		}
		return nil
	})
	return persistent
}
