package node_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/edgechat/edgechat/node/nodetest"
)

// A delivered receipt names at most the newest message of the
// conversation, as a read receipt does, and one in a conversation
// without messages is acknowledged and delivered to nobody. Before, a
// delivered receipt went out with whatever upTo its publisher wrote, to
// anyone: a peer could have the sender's messages not sent yet shown as
// delivered as they went out (the web client keeps the highest upTo it
// got) however long their devices stayed offline, and a stranger could
// send receipts about messages that never were.
func TestDeliveredReceiptStopsAtTheNewestMessage(t *testing.T) {
	n := nodetest.StartNode(t)
	aliceTok, bobTok, carolTok := n.NewUser(t, "alice"), n.NewUser(t, "bob"), n.NewUser(t, "carol")
	alice := mustConnectV5(t, n.MQTTURL, "alice", "d1", aliceTok)
	alice.MustSub(t, "user/alice/receipts")
	alice.MustSub(t, "user/alice/typing")
	var sent envelope
	if st := api(t, n, aliceTok, "POST", "/chat/messages", map[string]string{"to": "bob", "cid": "c1", "type": "text", "body": "hi"}, &sent); st != 201 {
		t.Fatalf("POST /chat/messages: %d", st)
	}
	const far = "9223372036854775807"
	// carol has no conversation with alice: her receipt tells nothing.
	// Her typing, published after it on the same connection, shows
	// when it would have been delivered.
	carol := mustConnectV5(t, n.MQTTURL, "carol", "d1", carolTok)
	if code, _ := carol.Pub(t, "user/alice/receipts", 1, `{"type":"delivered","upTo":"`+far+`"}`); code != 0 {
		t.Fatalf("carol's receipt PUBACK %#x, want 0 (acknowledged, delivered to nobody)", code)
	}
	if code, _ := carol.Pub(t, "user/alice/typing", 1, `{"state":"typing"}`); code != 0 {
		t.Fatalf("carol's typing PUBACK %#x", code)
	}
	bob := mustConnectV5(t, n.MQTTURL, "bob", "d1", bobTok)
	if code, _ := bob.Pub(t, "user/alice/receipts", 1, `{"type":"delivered","upTo":"`+far+`"}`); code != 0 {
		t.Fatalf("bob's receipt PUBACK %#x", code)
	}
	type receipt struct{ Type, UpTo, Peer string }
	var got []receipt
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		got = got[:0]
		for _, m := range alice.Received("user/alice/receipts") {
			var r receipt
			if err := json.Unmarshal(m.Payload, &r); err != nil {
				return fmt.Errorf("receipt %s: %v", m.Payload, err)
			}
			got = append(got, r)
		}
		if len(alice.Received("user/alice/typing")) == 0 || len(got) == 0 || got[len(got)-1].Peer != "bob" {
			return fmt.Errorf("alice got receipts %+v and %d typing, want bob's receipt and carol's typing", got, len(alice.Received("user/alice/typing")))
		}
		return nil
	})
	if want := (receipt{Type: "delivered", UpTo: sent.ID, Peer: "bob"}); len(got) != 1 || got[0] != want {
		t.Fatalf("alice got receipts %+v, want only %+v (bob's, up to the newest message)", got, want)
	}
}
