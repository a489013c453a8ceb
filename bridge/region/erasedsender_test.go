package region_test

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
)

// alice of eu writes to bob@us while eu's link into us is down, then
// deletes her account, which eu erases (grace 0) before the link is
// back. The erasure takes "the whole history of each of the user's
// direct conversations" (docs/protocol.md): her message still waiting in
// the link's outbox goes with it. It used to stay there, on every node
// of eu, and reach bob when the link came back, after the account it
// came from had been erased.
func TestErasedSendersQueuedMessagesStayBehind(t *testing.T) {
	eu, us := startLinked(t, 1, "eu", "us", nil, nil, nodetest.WithConfig(func(c *node.Config) { c.AccountDeleteGrace = 0 }))
	aliceTok, carolTok, bobTok := eu.newUser(t, "alice"), eu.newUser(t, "carol"), us.newUser(t, "bob")
	alice := connect(t, eu.nodes[0], "alice", "phone", aliceTok)
	carol := connect(t, eu.nodes[0], "carol", "phone", carolTok)
	bob := connect(t, us.nodes[0], "bob", "phone", bobTok)
	bob.MustSub(t, "user/bob/newMessage")

	us.in.setCut(true)
	if code, _ := alice.Pub(t, "user/bob@us/newMessage", 1, textMsg("a1", "from alice, queued")); code != 0 {
		t.Fatalf("PUBACK %#x", code)
	}
	if code, _ := alice.Pub(t, "user/carol/newMessage", 1, textMsg("a2", "to carol")); code != 0 {
		t.Fatalf("PUBACK %#x", code)
	}
	if code, _ := carol.Pub(t, "user/bob@us/newMessage", 1, textMsg("c1", "from carol, queued")); code != 0 {
		t.Fatalf("PUBACK %#x", code)
	}
	if b, err := eu.nodes[0].Region.Backlog("us"); err != nil || b != 2 {
		t.Fatalf("backlog before the erasure: %d, %v; want 2", b, err)
	}
	if code := call(t, eu.nodes[0], aliceTok, "DELETE", "/user/me", map[string]string{"password": nodetest.Password("alice")}, nil); code != http.StatusAccepted {
		t.Fatalf("delete alice: %d", code)
	}
	// The archive's part is erased last of the region's (node/erase.go):
	// once carol's conversation with alice is gone, the erasure is done.
	nodetest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		var out struct {
			Conversations []struct {
				Peer string `json:"peer"`
			} `json:"conversations"`
		}
		if c := call(t, eu.nodes[0], carolTok, "GET", "/chat/conversations", nil, &out); c != http.StatusOK {
			return fmt.Errorf("conversations: %d", c)
		}
		for _, cv := range out.Conversations {
			if cv.Peer == "alice" {
				return fmt.Errorf("carol still lists her conversation with alice")
			}
		}
		return nil
	})
	// carol's message and, behind it, alice's erasure for us (which
	// holds her conversation with bob: erasure.go).
	if b, err := eu.nodes[0].Region.Backlog("us"); err != nil || b != 2 {
		t.Errorf("backlog after alice's erasure: %d, %v; want 2 (carol's message, the erasure)", b, err)
	}

	us.in.setCut(false)
	// carol's message, queued after alice's, arrives: alice's would have
	// come first.
	got := decode(t, bob.Next(t).Payload)
	if got.From != "carol@eu" {
		t.Fatalf("bob got %+v from the queue of an erased account, want carol's message only", got)
	}
	if h := history(t, us.nodes[0], bobTok, "alice@eu"); len(h) != 0 {
		t.Fatalf("bob's history with the erased alice@eu: %+v", h)
	}
	nodetest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if b, err := eu.nodes[0].Region.Backlog("us"); err != nil || b != 0 {
			return fmt.Errorf("backlog %d, %v", b, err)
		}
		return nil
	})
}
