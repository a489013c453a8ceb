package broker

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/internal/wire"
)

// A member added, or a contact made, through another node a moment ago
// subscribes on a node that has not applied it yet: the refusal waits
// for the node to catch up and checks again. (A group message of
// someone the node does not list as a member goes on to the archive,
// which catches up itself: archive's
// TestSendWaitsForWhatThisNodeHasNotAppliedYet.)
func TestAccessRefusedByAnUnappliedChangeIsCheckedAgain(t *testing.T) {
	lag := &testutil.LaggingNode{}
	e := startBrokerWith(t, nil, func(d *Deps) { d.ReadBarrier = lag.Barrier })
	e.members("g1", "bob", "alice")
	alice := mustV5(t, e.addr, "alice", "phone")

	lag.Hold(func() { e.members("g2", "alice") })
	if code := alice.Sub(t, "group/g2/#")[0]; code >= 0x80 {
		t.Fatalf("subscription of a member this node had not applied: 0x%02x", code)
	}
	lag.Hold(func() { e.vis.set("alice", "dave", true) })
	if code := alice.Sub(t, "presence/dave")[0]; code >= 0x80 {
		t.Fatalf("presence of a contact this node had not applied: 0x%02x", code)
	}

	// What the node allows costs no barrier, but for a SUBSCRIBE that
	// names a group: one, granted or not, whatever the number of its
	// group filters (TestAGroupSubscriptionIsCheckedOnTheCaughtUpState);
	// a refusal that stands after it is still refused and waits for no
	// second; a publish to presence (only the server publishes there)
	// waits for nothing.
	before := lag.Barriers()
	alice.Sub(t, "presence/dave")
	alice.Pub(t, "group/g1/newMessage", 1, `{"cid":"c2","type":"text","body":"hi"}`)
	if got := lag.Barriers() - before; got != 0 {
		t.Fatalf("allowed publish and presence subscription took %d barriers", got)
	}
	codes := alice.Sub(t, "group/g1/newMessage", "group/g1/typing", "group/g3/newMessage", "presence/erin")
	if want := []byte{0x01, 0x01, 0x87, 0x87}; string(codes) != string(want) {
		t.Fatalf("SUBACK codes % x, want % x (member, member, non-member, not visible)", codes, want)
	}
	if code, _ := alice.Pub(t, "presence/alice", 1, `{}`); code != 0x87 {
		t.Fatalf("presence publish: 0x%02x", code)
	}
	if got := lag.Barriers() - before; got != 1 {
		t.Fatalf("the SUBSCRIBE and the refusals took %d barriers, want 1 (the SUBSCRIBE's)", got)
	}
}

// A member removed and added back at once through another node, whose
// client subscribes again here as soon as group.member_added reaches it,
// before this node has applied the removal: the SUBSCRIBE is checked
// once the node has caught up (both changes applied), so the removal,
// applied first, cannot take away the subscription granted after it.
// Checked on the local state alone it was granted, then dropped when the
// node applied the removal: SUBACK success, then nothing. A member
// removed and not added back is refused, not granted a subscription the
// removal then takes. (node's
// TestAMemberAddedBackResubscribingOnALaggingFollowerKeepsTheSubscription
// shows it on three real nodes.)
func TestAGroupSubscriptionIsCheckedOnTheCaughtUpState(t *testing.T) {
	lag := &testutil.LaggingNode{}
	e := startBrokerWith(t, nil, func(d *Deps) { d.ReadBarrier = lag.Barrier })
	e.members("g1", "alice", "bob")
	e.members("g2", "alice", "bob")
	alice := mustV5(t, e.addr, "alice", "phone")
	alice.MustSub(t, "group/g1/newMessage")
	bob := mustV5(t, e.addr, "bob", "phone")
	removed := func(gid string) func() {
		return func() {
			e.mem.set(gid, "alice", false)
			e.b.DropGroupSubscriptions(gid, "alice") // what the users service calls as the removal commits
		}
	}

	lag.Hold(removed("g1"))
	lag.Hold(func() { e.mem.set("g1", "alice", true) })
	lag.Hold(removed("g2"))
	codes := alice.Sub(t, "group/g1/newMessage", "group/g2/newMessage")
	// Whatever the node had not applied yet it applies now.
	if err := lag.Barrier(context.Background()); err != nil {
		t.Fatal(err)
	}
	if want := []byte{0x01, 0x87}; string(codes) != string(want) {
		t.Fatalf("SUBACK codes % x, want % x (added back, removed)", codes, want)
	}
	if code, _ := bob.Pub(t, "group/g1/newMessage", 1, `{"cid":"c1","type":"text","body":"hi"}`); code != 0 {
		t.Fatalf("bob's message: PUBACK 0x%02x", code)
	}
	if m := alice.Next(t); m.Topic != "group/g1/newMessage" || envOf(t, m.Payload).CID != "c1" {
		t.Fatalf("alice, added back and subscribed again, got %s %q, want bob's message", m.Topic, m.Payload)
	}
}

// A node that cannot catch up (it reaches no leader) cannot tell whether
// a group message's sender was made a member elsewhere: the message goes
// to the archive, which checks again and answers "server unavailable"
// (0x83, retry) when it cannot catch up either, instead of the ACL's
// "not authorized" (0x87), which a client takes as final. Group typing
// has no check after the ACL: it stays refused.
func TestGroupMessageOnANodeThatCannotCatchUpIsToldToRetry(t *testing.T) {
	lag := &testutil.LaggingNode{}
	e := startBrokerWith(t, nil, func(d *Deps) { d.ReadBarrier = lag.Barrier })
	e.members("g1", "bob")
	alice := mustV5(t, e.addr, "alice", "phone")
	lag.SetDown(errors.New("no leader"))
	e.chat.setErr(fmt.Errorf("archive: catching up: %w", wire.ErrUnavailable))

	if code, _ := alice.Pub(t, "group/g1/newMessage", 1, `{"cid":"c1","type":"text","body":"hi"}`); code != 0x83 {
		t.Fatalf("group message on a node that cannot catch up: 0x%02x, want 0x83", code)
	}
	if calls := e.chat.callCount(); calls != 1 {
		t.Fatalf("ChatStore calls %d, want 1 (the archive decides)", calls)
	}
	if code, _ := alice.Pub(t, "group/g1/typing", 1, `{"state":"typing"}`); code != 0x87 {
		t.Fatalf("group typing on a node that cannot catch up: 0x%02x, want 0x87", code)
	}
}

// A subscription the node cannot check, because it cannot catch up with
// the cluster, is answered 0x83 (retry), not 0x87 (not authorized, which
// a client takes as final: it would stop following the group): a group
// filter, whether this node lists the client as a member or not (a
// member removed and added back elsewhere would be granted a
// subscription the removal then takes away, see
// TestAGroupSubscriptionIsCheckedOnTheCaughtUpState); a subscription the
// client held already stays. Other filters of the same SUBSCRIBE keep
// their answers (a presence filter this node allows is granted), a 3.1.1
// client gets 0x80 (its only failure code), and once the node is back
// the subscription is granted.
func TestSubscriptionOnANodeThatCannotCatchUpIsToldToRetry(t *testing.T) {
	lag := &testutil.LaggingNode{}
	e := startBrokerWith(t, nil, func(d *Deps) { d.ReadBarrier = lag.Barrier })
	e.members("g1", "bob", "alice")
	e.members("g2", "bob")
	alice := mustV5(t, e.addr, "alice", "phone")
	alice.MustSub(t, "group/g1/typing")
	lag.SetDown(errors.New("no leader"))

	before := lag.Barriers()
	codes := alice.Sub(t, "group/g2/newMessage", "group/g1/newMessage", "group/g1/typing", "user/bob/newMessage", "presence/bob")
	if want := []byte{0x83, 0x83, 0x83, 0x87, 0x01}; string(codes) != string(want) {
		t.Fatalf("SUBACK codes % x, want % x (unverifiable, unverifiable, unverifiable, never allowed, allowed)", codes, want)
	}
	if got := lag.Barriers() - before; got != 1 {
		t.Fatalf("the SUBSCRIBE waited for %d barriers, want 1", got)
	}
	cl, _ := e.b.Server().Clients.Get("alice/phone")
	if _, ok := cl.State.Subscriptions.Get("group/g1/typing"); !ok {
		t.Fatal("the subscription alice held before the SUBSCRIBE that could not be checked is gone")
	}
	if _, ok := cl.State.Subscriptions.Get("group/g1/newMessage"); ok {
		t.Fatal("a filter answered 0x83 was subscribed")
	}
	// Refusals to check again wait once a SUBSCRIBE, not once each (up
	// to 2 s each when no leader answers).
	before = lag.Barriers()
	codes = alice.Sub(t, "presence/dave", "presence/erin", "presence/frank")
	if want := []byte{0x83, 0x83, 0x83}; string(codes) != string(want) {
		t.Fatalf("SUBACK codes % x, want % x", codes, want)
	}
	if got := lag.Barriers() - before; got != 1 {
		t.Fatalf("a SUBSCRIBE of three presence filters refused here waited for %d barriers, want 1", got)
	}
	if got := v3SubCode(t, e.addr, "alice", "group/g2/#"); got != 0x80 {
		t.Fatalf("3.1.1 SUBACK %#x, want 0x80", got)
	}

	lag.SetDown(nil)
	lag.Hold(func() { e.members("g2", "alice") })
	if code := alice.Sub(t, "group/g2/newMessage")[0]; code != 0x01 {
		t.Fatalf("subscription once the node caught up: 0x%02x, want 0x01", code)
	}
}
