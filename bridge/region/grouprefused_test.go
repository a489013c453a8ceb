package region_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/edgechat/edgechat/node/nodetest"
)

// A member of another region removed from a group while the link was
// down still writes to the group in his region (its mirror lists him
// until the link brings the new state): his region commits the message
// (PUBACK 0x00), and the home refuses it for good once the link is back.
// He is told as a sender of a refused direct message is
// (docs/regions.md, Undeliverable messages): the undeliverable event on
// user/bob/events, with the group instead of "to", and the stored
// message's status in his region's history. Nothing told him: the
// message stayed in his region's mirror as if delivered.
func TestGroupMessageRefusedByTheHomeAfterAnOutage(t *testing.T) {
	eu, us := startRegions(t, 1, "eu", "us", nil)
	aliceTok, bobTok := eu.newUser(t, "alice"), us.newUser(t, "bob")
	g := newGroup(t, eu.nodes[0], aliceTok, "across", "bob@us")
	gid, mirror := g.GroupID, g.GroupID+"@eu"
	nodetest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if code := call(t, us.nodes[0], bobTok, "GET", "/user/groups/"+mirror, nil, nil); code != http.StatusOK {
			return fmt.Errorf("%s in us: %d", mirror, code)
		}
		return nil
	})
	bob := connect(t, us.nodes[0], "bob", "phone", bobTok)
	bob.MustSub(t, "user/bob/events")

	eu.in.setCut(true) // both links down
	us.in.setCut(true)
	if code := call(t, eu.nodes[0], aliceTok, "DELETE", "/user/groups/"+gid+"/members/bob@us", nil, nil); code != http.StatusNoContent {
		t.Fatalf("remove bob@us: %d", code)
	}
	code, ack := bob.Pub(t, "group/"+mirror+"/newMessage", 1, textMsg("late", "still here?"))
	if code != 0 {
		t.Fatalf("bob's PUBACK %#x (his region's mirror still lists him)", code)
	}
	id := ack.Properties.User.Get("id")
	eu.in.setCut(false)
	us.in.setCut(false)

	nodetest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if n := counter(t, eu.nodes[0], "edgechat_region_link_received_total", `result="forbidden"`); n == 0 {
			return fmt.Errorf("eu refused no message of us yet")
		}
		return nil
	})
	ev := undeliverableEvent(t, bob, "user/bob/events", id)
	if ev["group"] != mirror || ev["reason"] != "forbidden" || ev["to"] != "" {
		t.Fatalf("event %v, want group %s, reason forbidden, no to", ev, mirror)
	}
	nodetest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		var out struct {
			Messages []json.RawMessage `json:"messages"`
		}
		if code := call(t, us.nodes[0], bobTok, "GET", "/chat/history?group="+mirror, nil, &out); code != http.StatusOK {
			// bob is no member of the mirror any more: the status is read
			// by the sender's sync.
			return nil
		}
		for _, m := range out.Messages {
			var e struct{ ID, Status string }
			if json.Unmarshal(m, &e) == nil && e.ID == id && e.Status != "undeliverable" {
				return fmt.Errorf("history: %s", m)
			}
		}
		return nil
	})
}
