package node_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/edgechat/edgechat/node/nodetest"
)

// A read receipt names at most the newest message of the conversation:
// the reader's cursor stops there, and so does what the peer is told.
// Before, the cursor was clamped but the receipt went out with the
// upTo the reader wrote, so a reader could have the sender's messages
// not sent yet shown as read (the web client keeps the highest upTo it
// got), over MQTT and over POST /chat/read alike.
func TestReadReceiptStopsAtTheNewestMessage(t *testing.T) {
	n := nodetest.StartNode(t)
	aliceTok, bobTok := n.NewUser(t, "alice"), n.NewUser(t, "bob")
	alice := mustConnectV5(t, n.MQTTURL, "alice", "d1", aliceTok)
	alice.MustSub(t, "user/alice/receipts")
	var sent envelope
	if st := api(t, n, aliceTok, "POST", "/chat/messages", map[string]string{"to": "bob", "cid": "c1", "type": "text", "body": "hi"}, &sent); st != 201 {
		t.Fatalf("POST /chat/messages: %d", st)
	}
	const far = "9223372036854775807"
	bob := mustConnectV5(t, n.MQTTURL, "bob", "d1", bobTok)
	if code, _ := bob.Pub(t, "user/alice/receipts", 1, `{"type":"read","upTo":"`+far+`"}`); code != 0 {
		t.Fatalf("receipt PUBACK %#x", code)
	}
	if st := api(t, n, bobTok, "POST", "/chat/read", map[string]string{"with": "alice", "upTo": far}, nil); st != 204 {
		t.Fatalf("POST /chat/read: %d", st)
	}
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if got := len(alice.Received("user/alice/receipts")); got < 2 {
			return fmt.Errorf("%d receipts delivered, want 2", got)
		}
		return nil
	})
	for i, m := range alice.Received("user/alice/receipts") {
		var r struct{ Type, UpTo, Peer string }
		if err := json.Unmarshal(m.Payload, &r); err != nil {
			t.Fatal(err)
		}
		if r.Type != "read" || r.Peer != "bob" || r.UpTo != sent.ID {
			t.Fatalf("receipt %d: %s, want read up to %s (the newest message) from bob", i, m.Payload, sent.ID)
		}
	}
}
