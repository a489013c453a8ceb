package region_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/edgechat/edgechat/node/nodetest"
)

// A message committed while the batch before it waits for its PUBACK
// goes out at once (stream.go), not after that PUBACK: over a 300 ms
// one-way delay it reaches bob a moment after the one before, where a
// link sending one batch at a time would deliver it at least a round
// trip (600 ms) later. Both arrive once, in order.
func TestLinkStreamsAcrossBatches(t *testing.T) {
	const oneWay = 300 * time.Millisecond
	eu, us := startRegions(t, 1, "eu", "us", nil)
	us.in.SetDelay(oneWay)
	us.in.setCut(true) // the link reconnects through the delay once restored
	us.in.setCut(false)
	bob := connect(t, us.nodes[0], "bob", "phone", us.newUser(t, "bob"))
	bob.MustSub(t, "user/bob/newMessage")
	alice := connect(t, eu.nodes[0], "alice", "phone", eu.newUser(t, "alice"))
	send := func(cid string) {
		t.Helper()
		if code, _ := alice.Pub(t, "user/bob@us/newMessage", 1, textMsg(cid, "hi")); code != 0 {
			t.Fatalf("send %s: %#x", cid, code)
		}
	}
	send("warm-up") // the link connected through the delay
	if e := decode(t, bob.Next(t).Payload); e.CID != "warm-up" {
		t.Fatalf("got %q first", e.CID)
	}
	leader := eu.nodes[0]
	nodetest.CheckFor(t, 10*time.Second, time.Millisecond, func() error {
		if n := counter(t, leader, "edgechat_region_link_queue_pending", `peer="us"`); n != 0 {
			return fmt.Errorf("%v pending", n)
		}
		return nil
	})

	send("a")
	// a's batch is in flight (a round trip from its PUBACK) when b commits.
	nodetest.CheckFor(t, 10*time.Second, time.Millisecond, func() error {
		if n := counter(t, leader, "edgechat_region_link_queue_pending", `peer="us"`); n != 1 {
			return fmt.Errorf("%v pending", n)
		}
		return nil
	})
	send("b")
	if e := decode(t, bob.Next(t).Payload); e.CID != "a" {
		t.Fatalf("got %q, want a", e.CID)
	}
	at := time.Now()
	if e := decode(t, bob.Next(t).Payload); e.CID != "b" {
		t.Fatalf("got %q, want b", e.CID)
	}
	gap := time.Since(at)
	t.Logf("b arrived %v after a", gap.Round(time.Millisecond))
	if gap >= oneWay {
		t.Fatalf("b arrived %v after a (one way %v): it waited for a's PUBACK", gap, oneWay)
	}
	if extra, ok := bob.TryNext(); ok {
		t.Fatalf("a duplicate delivery: %.60s", extra.Payload)
	}
	nodetest.CheckFor(t, 10*time.Second, time.Millisecond, func() error {
		if b, err := leader.Region.Backlog("us"); err != nil || b != 0 {
			return fmt.Errorf("backlog %d, %v", b, err)
		}
		return nil
	})
}
