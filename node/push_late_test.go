package node_test

import (
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/edgechat/edgechat/bridge/push/pushtest"
	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
)

// A reply taken by a node whose clock is behind carries an ID below the
// recipient's read cursor when he had read up to his own later message.
// It counts as unread (TestADirectReplyFromANodeWithASlowClockIsUnread),
// so his offline phone is pushed for it as for any unread message; the
// bridge took it as read before, by its ID, and the phone never heard of
// it. A message the reader did read is still not pushed.
func TestPushForAReplyFromANodeWithASlowClock(t *testing.T) {
	opt, m := withPushMocks(t)
	ns := nodetest.StartCluster(t, 2, opt, nodetest.WithConfig(func(c *node.Config) {
		c.PushGrace = flowGrace
		if c.NodeID == "n2" {
			c.IDClock = func() time.Time { return time.Now().Add(-10 * time.Second) }
		}
	}))
	n1, n2 := ns[0], ns[1]
	aliceTok, bobTok := n1.NewUser(t, "alice"), n1.NewUser(t, "bob")
	phone := pushtest.NewDeviceToken()
	if st := api(t, n1, bobTok, http.MethodPost, "/user/me/devices",
		map[string]any{"device": "phone", "platform": "apns", "token": phone}, nil); st != http.StatusOK {
		t.Fatalf("register bob's phone: %d", st)
	}
	var g struct{ GroupID string }
	if st := api(t, n1, bobTok, http.MethodPost, "/user/groups", map[string]any{"name": "g", "members": []string{"alice"}}, &g); st != 201 {
		t.Fatalf("group: %d", st)
	}
	send := func(n *nodetest.Node, tok string, body map[string]string) envelope {
		t.Helper()
		var e envelope
		if st := api(t, n, tok, http.MethodPost, "/chat/messages", body, &e); st != 201 {
			t.Fatalf("send %v: %d", body, st)
		}
		return e
	}
	read := func(body map[string]string) {
		t.Helper()
		if st := api(t, n1, bobTok, http.MethodPost, "/chat/read", body, nil); st != 204 {
			t.Fatalf("read %v: %d", body, st)
		}
	}
	pushed := func(id string) int { return m.apnsPushes(phone, id) }
	// bob writes from his laptop (through n1) and has read up to his own
	// newest messages; his phone is offline.
	b1 := send(n1, bobTok, map[string]string{"to": "alice", "cid": "b1", "type": "text", "body": "are you there?"})
	bg := send(n1, bobTok, map[string]string{"group": g.GroupID, "cid": "bg", "type": "text", "body": "anyone?"})
	read(map[string]string{"with": "alice", "upTo": b1.ID})
	read(map[string]string{"group": g.GroupID, "upTo": bg.ID})
	// alice answers through n2, whose clock is 10 s behind.
	a1 := send(n2, aliceTok, map[string]string{"to": "bob", "cid": "a1", "type": "text", "body": "yes"})
	ag := send(n2, aliceTok, map[string]string{"group": g.GroupID, "cid": "ag", "type": "text", "body": "here"})
	if a1.ID >= b1.ID || ag.ID >= bg.ID {
		t.Fatalf("alice's replies %s, %s are not below bob's messages %s, %s: n2's clock is not behind", a1.ID, ag.ID, b1.ID, bg.ID)
	}
	checkFor(t, 15*time.Second, 20*time.Millisecond, func() error {
		if pushed(a1.ID) == 0 || pushed(ag.ID) == 0 {
			return errors.New("no push yet for alice's direct and group replies")
		}
		return nil
	})

	// bob reads them (at the cursor again, the conversations opened);
	// another late reply is pushed, one he read before its push is not.
	read(map[string]string{"with": "alice", "upTo": b1.ID})
	read(map[string]string{"group": g.GroupID, "upTo": bg.ID})
	a2 := send(n2, aliceTok, map[string]string{"to": "bob", "cid": "a2", "type": "text", "body": "still here"})
	checkFor(t, 15*time.Second, 20*time.Millisecond, func() error {
		if pushed(a2.ID) == 0 {
			return errors.New("no push yet for alice's second late reply")
		}
		return nil
	})
	b2 := send(n1, bobTok, map[string]string{"to": "alice", "cid": "b2", "type": "text", "body": "ok"})
	read(map[string]string{"with": "alice", "upTo": b2.ID})
	a3 := send(n2, aliceTok, map[string]string{"to": "bob", "cid": "a3", "type": "text", "body": "bye"})
	read(map[string]string{"with": "alice", "upTo": b2.ID}) // bob's laptop shows it at once
	a4 := send(n1, aliceTok, map[string]string{"to": "bob", "cid": "a4", "type": "text", "body": "on time"})
	checkFor(t, 15*time.Second, 20*time.Millisecond, func() error {
		if pushed(a4.ID) == 0 {
			return errors.New("no push yet for alice's last message")
		}
		return nil
	})
	if n := pushed(a3.ID); n != 0 {
		t.Errorf("a late reply bob read within the grace period was pushed %d times", n)
	}
}
