package node_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
	"github.com/edgechat/edgechat/node/nodetest"
)

// A member removed from a group and added back at once (DELETE then POST
// through the leader) whose client subscribes to the group's topic again
// on a follower as soon as group.member_added reaches it (as the SDK
// does) gets the group's messages live: the SUBSCRIBE may reach a
// follower that has not applied the removal yet, whose membership check
// then said yes on the state from before the removal, and the removal,
// applied a moment later, dropped the subscription it had just granted
// (SUBACK success, then nothing, silently). The race is one of timing:
// the test goes round until it has had its chance many times.
func TestAMemberAddedBackResubscribingOnALaggingFollowerKeepsTheSubscription(t *testing.T) {
	nodes := nodetest.StartCluster(t, 3)
	var leader, follower *nodetest.Node
	for _, n := range nodes {
		switch {
		case n.IsLeader() && leader == nil:
			leader = n
		case !n.IsLeader() && follower == nil:
			follower = n
		}
	}
	if leader == nil || follower == nil {
		t.Fatal("no leader and follower")
	}
	carolTok, bobTok, daveTok := leader.NewUser(t, "carol"), leader.NewUser(t, "bob"), leader.NewUser(t, "dave")
	g := createGroup(t, leader, carolTok, "team", "bob", "dave")
	topic := "group/" + g.GroupID + "/newMessage"
	members := "/user/groups/" + g.GroupID + "/members"

	// dave, a member throughout, shows the follower delivered each message.
	dave := mustConnectV5(t, follower.MQTTURL, "dave", "phone", daveTok)
	dave.MustSub(t, topic)
	bob := mustConnectV5(t, follower.MQTTURL, "bob", "phone", bobTok)
	bob.MustSub(t, "user/bob/events", topic)
	carol := mustConnectV5(t, leader.MQTTURL, "carol", "phone", carolTok)

	for round := range 30 {
		if st := api(t, leader, carolTok, "DELETE", members+"/bob", nil, nil); st != 204 {
			t.Fatalf("round %d: carol removes bob: %d", round, st)
		}
		if st := api(t, leader, carolTok, "POST", members, map[string]string{"uid": "bob"}, nil); st != 200 {
			t.Fatalf("round %d: carol adds bob back: %d", round, st)
		}
		// As the SDK does: subscribe again as soon as the event says so.
		for {
			m := bob.Next(t)
			var ev struct {
				Type string
				Data struct{ UID string }
			}
			if m.Topic == "user/bob/events" && json.Unmarshal(m.Payload, &ev) == nil && ev.Type == "group.member_added" && ev.Data.UID == "bob" {
				break
			}
		}
		if codes := bob.Sub(t, topic); codes[0] >= 0x80 {
			t.Fatalf("round %d: bob, added back, subscribes to %s on %s: SUBACK %#02x", round, topic, follower.Config.NodeID, codes[0])
		}
		cid := fmt.Sprintf("round-%d", round)
		if code, _ := carol.Pub(t, topic, 1, textMsg(cid, "hello")); code != 0 {
			t.Fatalf("round %d: carol's message: PUBACK %#02x", round, code)
		}
		has := func(c *mqtttest.Client, who string) error {
			for _, m := range c.Received(topic) {
				if decodeEnvelope(t, m.Payload).CID == cid {
					return nil
				}
			}
			return fmt.Errorf("round %d: %s got no live %s of carol's message %s", round, who, topic, cid)
		}
		checkFor(t, 10*time.Second, 5*time.Millisecond, func() error { return has(dave, "dave (a member throughout)") })
		checkFor(t, 2*time.Second, 5*time.Millisecond, func() error {
			if err := has(bob, "bob (removed, added back, subscribed again with SUBACK success)"); err != nil {
				_, member := follower.Users.Role(g.GroupID, "bob")
				return fmt.Errorf("%w; %s lists bob as a member: %v", err, follower.Config.NodeID, member)
			}
			return nil
		})
	}
}
