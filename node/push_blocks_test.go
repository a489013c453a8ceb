package node_test

import (
	"testing"
)

// bob blocked alice: a message of hers that still reaches him (in a
// group they share, where a block does not stop her) never puts her name
// and text on his lock screen.
func TestPushNotForAGroupMessageOfABlockedMember(t *testing.T) {
	f := startPushFlow(t, 0)
	g := createGroup(t, f.n, f.alice, "team", "bob")
	if st := api(t, f.n, f.bob, "POST", "/user/me/blocks", map[string]string{"uid": "alice"}, nil); st/100 != 2 {
		t.Fatalf("bob blocks alice: %d", st)
	}
	id := f.send(t, "group/"+g.GroupID+"/newMessage", "you cannot hide from me")
	f.outboxEmpty(t)
	if n := f.pushesFor(f.phone, id); n != 0 {
		t.Errorf("bob's phone got %d pushes of a group message of alice, whom he blocked", n)
	}
}

// bob blocks alice during the grace period of her direct message (it was
// accepted before the block): it is not pushed after the block.
func TestPushNotForADirectMessageOfASenderBlockedDuringTheGrace(t *testing.T) {
	f := startPushFlowGrace(t, 0, changeGrace)
	id := f.send(t, "user/bob/newMessage", "one last thing")
	if st := api(t, f.n, f.bob, "POST", "/user/me/blocks", map[string]string{"uid": "alice"}, nil); st/100 != 2 {
		t.Fatalf("bob blocks alice: %d", st)
	}
	f.outboxEmpty(t)
	if n := f.pushesFor(f.phone, id); n != 0 {
		t.Errorf("bob's phone got %d pushes of alice's message after he blocked her", n)
	}
}
