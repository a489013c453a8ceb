package region_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/edgechat/edgechat/node/nodetest"
)

// How far bob@us read alice's messages shows in alice's conversation
// list in eu (peerRead) after a reload too, as for a peer of her own
// region: a read receipt that crosses the link moves bob@us's side of
// the conversation as eu keeps it. Before, eu kept no cursor of a peer
// of another region: alice's messages showed as read only while she
// remembered the live receipt, and as sent after every reload.
func TestAReadOfAPeerOfAnotherRegionShowsInTheConversationList(t *testing.T) {
	eu, us := startRegions(t, 1, "eu", "us", nil)
	aliceTok, bobTok := eu.newUser(t, "alice"), us.newUser(t, "bob")
	alice := connect(t, eu.nodes[0], "alice", "phone", aliceTok)
	alice.MustSub(t, "user/alice/receipts")
	if code, ack := alice.Pub(t, "user/bob@us/newMessage", 1, textMsg("c1", "hi bob")); code != 0 {
		t.Fatalf("PUBACK %#x %q", code, ack.Properties.ReasonString)
	}
	msgID := ""
	nodetest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		h := history(t, us.nodes[0], bobTok, "alice@eu")
		if len(h) == 0 {
			return fmt.Errorf("not in bob's history yet")
		}
		msgID = h[0].ID
		return nil
	})
	bob := connect(t, us.nodes[0], "bob", "phone", bobTok)
	// Receipts are live only: sent again until one crosses the link.
	retry(t, func() { bob.Pub(t, "user/alice@eu/receipts", 1, `{"type":"read","upTo":"`+msgID+`"}`) }, alice, "user/alice/receipts")
	nodetest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		var list struct {
			Conversations []struct{ Peer, PeerRead string }
		}
		if c := call(t, eu.nodes[0], aliceTok, "GET", "/chat/conversations", nil, &list); c != 200 {
			return fmt.Errorf("GET /chat/conversations: %d", c)
		}
		if len(list.Conversations) != 1 || list.Conversations[0].Peer != "bob@us" || list.Conversations[0].PeerRead != msgID {
			return fmt.Errorf("alice's conversations %+v, want bob@us's with peerRead %s", list.Conversations, msgID)
		}
		return nil
	})
}
