package region_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
	"github.com/edgechat/edgechat/node/nodetest"
)

// linkState is a state of eu's group g1 as eu's link sends it: seq (its
// outbox position + 1) first; seq 0 leaves it out, as a region of an
// earlier version sends it.
func linkState(seq uint64, members ...string) string {
	ms := `{"id":"alice","role":"owner"}`
	for _, m := range members {
		ms += fmt.Sprintf(`,{"id":%q,"role":"member"}`, m)
	}
	s := ""
	if seq > 0 {
		s = fmt.Sprintf(`"seq":%d,`, seq)
	}
	return `{` + s + `"group":{"groupId":"g1","name":"g","owner":"alice"},"members":[` + ms + `],"by":"alice"}`
}

// drainUntil returns what c received until a message on topic arrived (it
// included), failing the test when none comes.
func drainUntil(t *testing.T, c *mqtttest.Client, topic string) []string {
	t.Helper()
	var got []string
	nodetest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		for {
			m, ok := c.TryNext()
			if !ok {
				return fmt.Errorf("no message on %s yet; received %q", topic, got)
			}
			got = append(got, m.Topic+" "+string(m.Payload))
			if m.Topic == topic {
				return nil
			}
		}
	})
	return got
}

// A link sends a batch again when a frame after it failed to commit, its
// PUBACK was lost or the connection ended: the group states in it come
// again, after newer ones. Applied again, they turned the mirror back to
// the older state and forward (carol got member_removed and
// member_added, and lost her subscription, so the group's next message
// did not reach her live). With their seq they are skipped; a state
// without seq (a region of an earlier version) is still applied.
func TestResentGroupStatesLeaveTheMirrorAsItIs(t *testing.T) {
	_, us := startRegions(t, 1, "eu", "us", nil)
	us.newUser(t, "bob")
	carolTok := us.newUser(t, "carol")
	carol := connect(t, us.nodes[0], "carol", "phone", carolTok)
	carol.MustSub(t, "user/carol/events")
	link := mqttLinkAsEU(t, us)
	batch := `[{"k":"group","p":` + linkState(1, "bob@us") + `},{"k":"group","p":` + linkState(2, "bob@us", "carol@us") + `}]`
	if code, ack := link.Pub(t, "$link/eu/batch", 1, batch); code != 0 {
		t.Fatalf("batch: %#x %q", code, ack.Properties.ReasonString)
	}
	if e := nextEvent(t, carol, "carol"); e.Type != "group.member_added" {
		t.Fatalf("carol got %v, want member_added", e)
	}
	carol.MustSub(t, "group/g1@eu/newMessage")

	// The same batch again, as the link resends it, then a message.
	if code, ack := link.Pub(t, "$link/eu/batch", 1, batch); code != 0 {
		t.Fatalf("batch again: %#x %q", code, ack.Properties.ReasonString)
	}
	gm := `{"id":"7211938138472448777","from":"alice@eu","group":"g1@eu","cid":"c1","type":"text","body":"after"}`
	if code, ack := link.Pub(t, "$link/eu/gmsg", 1, gm); code != 0 {
		t.Fatalf("gmsg: %#x %q", code, ack.Properties.ReasonString)
	}
	if got := drainUntil(t, carol, "group/g1@eu/newMessage"); len(got) != 1 {
		t.Fatalf("the resent batch (nothing new) gave carol %q before the next message", got[:len(got)-1])
	}

	// A region of an earlier version sends no seq: applied as before.
	if code, ack := link.Pub(t, "$link/eu/batch", 1, `[{"k":"group","p":`+linkState(0, "carol@us")+`}]`); code != 0 {
		t.Fatalf("state without seq: %#x %q", code, ack.Properties.ReasonString)
	}
	if e := nextEvent(t, carol, "carol"); e.Type != "group.member_removed" || e.Data.UID != "bob" {
		t.Fatalf("carol got %v, want bob's member_removed", e)
	}
}

// A member's leave comes again the same way. Applied again it removed a
// member the home had added again since. With its seq a resend changes
// nothing, also when the first one had nothing to do; a later leave
// applies, and so does a leave without seq (a region of an earlier
// version).
func TestResentLeaveKeepsAMemberAddedAgain(t *testing.T) {
	_, us := startRegions(t, 1, "eu", "us", nil)
	bobTok := us.newUser(t, "bob")
	g := newGroup(t, us.nodes[0], bobTok, "g", "alice@eu")
	members := func() string {
		var out struct {
			Members []struct {
				ID string `json:"userId"`
			} `json:"members"`
		}
		call(t, us.nodes[0], bobTok, "GET", "/user/groups/"+g.GroupID+"/members", nil, &out)
		var ids []string
		for _, m := range out.Members {
			ids = append(ids, m.ID)
		}
		return strings.Join(ids, " ")
	}
	add := func() {
		t.Helper()
		if code := call(t, us.nodes[0], bobTok, "POST", "/user/groups/"+g.GroupID+"/members", map[string]any{"uid": "alice@eu"}, nil); code != 200 {
			t.Fatalf("add alice@eu: %d", code)
		}
	}
	link := mqttLinkAsEU(t, us)
	leave := func(seq int) {
		t.Helper()
		s := ""
		if seq > 0 {
			s = fmt.Sprintf(`,"seq":%d`, seq)
		}
		if code, ack := link.Pub(t, "$link/eu/batch", 1, `[{"k":"gleave","p":{"group":"`+g.GroupID+`@us","uid":"alice@eu"`+s+`}}]`); code != 0 {
			t.Fatalf("leave %d: %#x %q", seq, code, ack.Properties.ReasonString)
		}
	}
	want := func(step, m string) {
		t.Helper()
		if got := members(); got != m {
			t.Fatalf("%s: members %q, want %q", step, got, m)
		}
	}
	leave(1)
	want("after alice@eu's leave", "bob")
	add()
	leave(1) // its PUBACK was lost: the link sends it again
	want("the leave resent after alice@eu was added again", "alice@eu bob")

	leave(3)
	want("a new leave", "bob")
	leave(4) // nothing to do: she is out already
	add()
	leave(4)
	want("a resent leave that had nothing to do", "alice@eu bob")

	leave(0)
	want("a leave without seq", "bob")
}
