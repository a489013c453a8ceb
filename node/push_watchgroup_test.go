package node_test

import (
	"errors"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/snowflake"
)

// In a group above --push-group-limit only members who are mentioned,
// whose message it answers or who opted in are pushed, so the node does
// not watch a delivery to any other member's device: a half-open device
// of such a member is not reported unacknowledged (before, every
// delivery to a member with a device was watched and reported through
// Raft, for nothing, and a 10,000-member group at 10 messages/s filled
// the watch's bound). A mention in the same group is still watched, and
// the half-open device pushed for it.
func TestPushWatchesNoDeliveryALargeGroupCannotPush(t *testing.T) {
	const grace = 4 * time.Second // past the ack timeout: a report finds the message still queued
	f := startPushFlowGrace(t, 2, grace)
	f.n.NewUser(t, "carol")
	g := createGroup(t, f.n, f.alice, "big", "bob", "carol") // 3 members > 2
	topic := "group/" + g.GroupID + "/newMessage"
	halfOpenDevice(t, f.n.MQTTAddr(), "bob", "phone", f.bob, topic)
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if !f.n.ClientConnected("bob/phone") {
			return errors.New("the half-open phone is not registered as connected")
		}
		return nil
	})
	plain := f.send(t, topic, "hello everyone")
	mention := f.send(t, topic, "@bob can you look?")
	unacked := func(id string) bool {
		t.Helper()
		sid, err := snowflake.Parse(id)
		if err != nil {
			t.Fatal(err)
		}
		ok, err := f.n.Push.Unacked(sid, "bob/phone")
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if !unacked(mention) {
			return errors.New("the mention's delivery to the half-open phone is not recorded unacknowledged")
		}
		return nil
	})
	// The watch reports a device's deliveries in the order they were
	// made, so the plain message's would be recorded by now.
	if unacked(plain) {
		t.Errorf("a delivery that can never be pushed (bob not mentioned in a group above the limit) was watched and recorded unacknowledged")
	}
	checkFor(t, 15*time.Second, 20*time.Millisecond, func() error {
		if f.pushesFor(f.phone, mention) != 1 {
			return errors.New("bob's half-open phone not pushed for his mention")
		}
		return nil
	})
	f.outboxEmpty(t)
	if n := f.pushesFor(f.phone, plain); n != 0 {
		t.Fatalf("%d pushes for a message that mentions nobody in a large group", n)
	}

	// A member who opted in to the group is pushed for every message of
	// it: watched again from the next message on.
	if st := api(t, f.n, f.bob, "PUT", "/user/me/push/groups/"+g.GroupID, nil, nil); st != 200 {
		t.Fatalf("bob opts in: %d", st)
	}
	optedIn := f.send(t, topic, "hello again")
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if !unacked(optedIn) {
			return errors.New("a delivery to a member who opted in is not recorded unacknowledged")
		}
		return nil
	})
	checkFor(t, 15*time.Second, 20*time.Millisecond, func() error {
		if f.pushesFor(f.phone, optedIn) != 1 {
			return errors.New("bob's half-open phone not pushed after he opted in")
		}
		return nil
	})
}
