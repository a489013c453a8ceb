package broker

import (
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

	// What the node allows costs no barrier; a refusal that stands after
	// one is still refused; a publish to presence (only the server
	// publishes there) waits for nothing.
	before := lag.Barriers()
	alice.Sub(t, "group/g1/newMessage")
	alice.Pub(t, "group/g1/newMessage", 1, `{"cid":"c2","type":"text","body":"hi"}`)
	if got := lag.Barriers() - before; got != 0 {
		t.Fatalf("allowed access took %d barriers", got)
	}
	if code := alice.Sub(t, "group/g3/newMessage")[0]; code != 0x87 {
		t.Fatalf("non-member subscription: 0x%02x", code)
	}
	if code, _ := alice.Pub(t, "presence/alice", 1, `{}`); code != 0x87 {
		t.Fatalf("presence publish: 0x%02x", code)
	}
	if got := lag.Barriers() - before; got != 1 {
		t.Fatalf("refusals took %d barriers, want 1 (the subscription's)", got)
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
// a client takes as final: it would stop following the group); other
// filters of the same SUBSCRIBE keep their answers, a 3.1.1 client gets
// 0x80 (its only failure code), and once the node is back the
// subscription is granted.
func TestSubscriptionOnANodeThatCannotCatchUpIsToldToRetry(t *testing.T) {
	lag := &testutil.LaggingNode{}
	e := startBrokerWith(t, nil, func(d *Deps) { d.ReadBarrier = lag.Barrier })
	e.members("g1", "bob", "alice")
	e.members("g2", "bob")
	alice := mustV5(t, e.addr, "alice", "phone")
	lag.SetDown(errors.New("no leader"))

	codes := alice.Sub(t, "group/g2/newMessage", "group/g1/newMessage", "user/bob/newMessage")
	if want := []byte{0x83, 0x01, 0x87}; string(codes) != string(want) {
		t.Fatalf("SUBACK codes % x, want % x (unverifiable, allowed, never allowed)", codes, want)
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
