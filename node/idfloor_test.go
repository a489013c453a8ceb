package node_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
)

// A node whose clock went back across a restart (an NTP step, a VM
// restored) still gives new messages IDs above every stored one, so that
// history and sync keep their order (LESSONS 13): the generator starts
// from the highest stored ID. Here the first run's ID clock is an hour
// ahead; the second run has the real one.
func TestMessageIDsStayAboveTheStoredOnesAfterTheClockWentBack(t *testing.T) {
	dir := t.TempDir()
	ahead := func() time.Time { return time.Now().Add(time.Hour) }
	n := nodetest.StartNode(t, nodetest.WithDataDir(dir), nodetest.WithConfig(func(c *node.Config) { c.IDClock = ahead }))
	aliceTok, bobTok := n.NewUser(t, "alice"), n.NewUser(t, "bob")
	send := func(n *nodetest.Node, cid string) snowflake.ID {
		t.Helper()
		var m envelope
		if st := api(t, n, aliceTok, "POST", "/chat/messages", map[string]string{"to": "bob", "cid": cid, "type": "text", "body": cid}, &m); st != 201 {
			t.Fatalf("send %s: %d", cid, st)
		}
		id, err := snowflake.Parse(m.ID)
		if err != nil {
			t.Fatalf("id of %s: %v", cid, err)
		}
		return id
	}
	first := send(n, "before")
	if err := n.Stop(); err != nil {
		t.Fatal(err)
	}
	n = nodetest.StartNode(t, nodetest.WithDataDir(dir))
	second := send(n, "after")
	if second <= first {
		t.Fatalf("the message sent after the restart has ID %d (%v), not above %d (%v) stored before",
			second, second.Time(), first, first.Time())
	}
	var h historyPage
	if st := api(t, n, bobTok, "GET", "/chat/history?with=alice", nil, &h); st != 200 || len(h.Messages) != 2 {
		t.Fatalf("history: %d %+v", st, h)
	}
	if got := fmt.Sprint(h.Messages[0].Body, ",", h.Messages[1].Body); got != "after,before" {
		t.Fatalf("history newest first: %s, want after,before", got)
	}
}
