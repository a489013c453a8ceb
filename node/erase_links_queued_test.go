package node_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
)

// bob@us writes to alice@eu while her persistent session waits offline
// in eu, then his account is erased: us tells eu, which erases his
// conversations with its users, both sides. The copies of his messages
// still queued in alice's session must go too, as for an erased account
// of eu (erase_queued_test.go): before, the broker took a user of
// another region for one that is never erased here, and alice's
// session, resumed after the erasure, delivered bob@us's messages, which
// no history, sync or conversation list had any more.
func TestErasedRemoteAccountsMessagesQueuedOfflineAreNotDelivered(t *testing.T) {
	eu, us := nodetest.StartRegionPair(t, "eu", "us", nodetest.WithConfig(func(c *node.Config) { c.AccountDeleteGrace = 0 }))
	aliceTok, carolTok := eu.NewUser(t, "alice"), eu.NewUser(t, "carol")
	bobTok := us.NewUser(t, "bob")
	persistent := aliceOfflineSubscribed(t, eu, aliceTok)

	bob := mustConnectV5(t, us.MQTTURL, "bob", "laptop", bobTok)
	for i := range 2 {
		if code, _ := bob.Pub(t, "user/alice@eu/newMessage", 1, textMsg(fmt.Sprint("b", i), "from bob")); code != 0 {
			t.Fatalf("bob → alice@eu: %#x", code)
		}
	}
	checkFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		var hist historyPage
		if st := api(t, eu, aliceTok, "GET", "/chat/history?with=bob@us", nil, &hist); st != 200 || len(hist.Messages) != 2 {
			return fmt.Errorf("alice's history with bob@us: %d, %d messages", st, len(hist.Messages))
		}
		return nil
	})
	if st := api(t, us, bobTok, "DELETE", "/user/me", map[string]string{"password": nodetest.Password("bob")}, nil); st != 202 {
		t.Fatalf("bob deletes his account: %d", st)
	}
	checkFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		if left := erasedKeys(t, eu, "bob@us"); len(left) > 0 {
			return fmt.Errorf("eu: %d keys still name bob@us", len(left))
		}
		var hist historyPage
		if st := api(t, eu, aliceTok, "GET", "/chat/history?with=bob@us", nil, &hist); st != 200 || len(hist.Messages) != 0 {
			return fmt.Errorf("alice's history with bob@us: %d, %d messages", st, len(hist.Messages))
		}
		return nil
	})
	resumeAfterCarol(t, eu, carolTok, persistent, "bob@us")
}
