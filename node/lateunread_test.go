package node_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
)

// A direct message taken by a node whose clock is behind carries an ID
// below the recipient's read cursor when the recipient had read up to
// his own later message: it was not there when he read, so it is
// unread, as the same message in a group is. Before, the direct one
// counted as read (unread 0), and the reader was never shown it as new.
// A read at the cursor again (the conversation opened) clears it.
func TestADirectReplyFromANodeWithASlowClockIsUnread(t *testing.T) {
	ns := nodetest.StartCluster(t, 2, nodetest.WithConfig(func(c *node.Config) {
		if c.NodeID == "n2" {
			c.IDClock = func() time.Time { return time.Now().Add(-10 * time.Second) }
		}
	}))
	n1, n2 := ns[0], ns[1]
	aliceTok, bobTok := n1.NewUser(t, "alice"), n1.NewUser(t, "bob")
	var g struct{ GroupID string }
	if st := api(t, n1, bobTok, "POST", "/user/groups", map[string]any{"name": "g", "members": []string{"alice"}}, &g); st != 201 {
		t.Fatalf("group: %d", st)
	}
	send := func(n *nodetest.Node, tok string, body map[string]string) envelope {
		t.Helper()
		var e envelope
		if st := api(t, n, tok, "POST", "/chat/messages", body, &e); st != 201 {
			t.Fatalf("send %v: %d", body, st)
		}
		return e
	}
	read := func(body map[string]string) {
		t.Helper()
		if st := api(t, n1, bobTok, "POST", "/chat/read", body, nil); st != 204 {
			t.Fatalf("read %v: %d", body, st)
		}
	}
	unread := func() (direct, group int) {
		t.Helper()
		var c struct {
			Conversations []struct {
				Peer, Group string
				Unread      int
			}
		}
		if st := api(t, n1, bobTok, "GET", "/chat/conversations", nil, &c); st != 200 {
			t.Fatalf("conversations: %d", st)
		}
		for _, cv := range c.Conversations {
			if cv.Peer == "alice" {
				direct = cv.Unread
			} else if cv.Group == g.GroupID {
				group = cv.Unread
			}
		}
		return direct, group
	}
	// bob writes (through n1), and his client marks the conversations read
	// up to their newest message, his own.
	b1 := send(n1, bobTok, map[string]string{"to": "alice", "cid": "b1", "type": "text", "body": "are you there?"})
	bg := send(n1, bobTok, map[string]string{"group": g.GroupID, "cid": "bg", "type": "text", "body": "anyone?"})
	read(map[string]string{"with": "alice", "upTo": b1.ID})
	read(map[string]string{"group": g.GroupID, "upTo": bg.ID})
	// alice answers through n2, whose clock is 10 s behind.
	a1 := send(n2, aliceTok, map[string]string{"to": "bob", "cid": "a1", "type": "text", "body": "yes"})
	send(n2, aliceTok, map[string]string{"group": g.GroupID, "cid": "ag", "type": "text", "body": "here"})
	if a1.ID >= b1.ID {
		t.Fatalf("alice's reply %s is not below bob's message %s: n2's clock is not behind", a1.ID, b1.ID)
	}
	checkFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		if d, gr := unread(); d != 1 || gr != 1 {
			return fmt.Errorf("bob's unread: %d in the direct conversation, %d in the group; want 1 and 1 (alice's replies)", d, gr)
		}
		return nil
	})
	// bob opens the conversation: his client marks its newest message read again.
	read(map[string]string{"with": "alice", "upTo": b1.ID})
	if d, _ := unread(); d != 0 {
		t.Fatalf("after bob read the conversation again: %d unread, want 0", d)
	}
}
