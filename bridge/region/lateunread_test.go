package region_test

import (
	"fmt"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/edgechat/edgechat/node/nodetest"
)

// A message that waited in the link's outbox during an outage arrives
// with its origin ID, below the reader's cursor when the reader read
// his own later reply meanwhile: it counts as unread (it was not read),
// and a read at the cursor again clears it.
func TestLateMessageBelowCursorCountsAsUnread(t *testing.T) {
	eu, us := startRegions(t, 1, "eu", "us", nil)
	aliceTok, bobTok := eu.newUser(t, "alice"), us.newUser(t, "bob")
	alice := connect(t, eu.nodes[0], "alice", "phone", aliceTok)
	bob := connect(t, us.nodes[0], "bob", "phone", bobTok)
	bob.MustSub(t, "user/bob/newMessage")
	if code, _ := alice.Pub(t, "user/bob@us/newMessage", 1, textMsg("warm", "before")); code != 0 {
		t.Fatalf("PUBACK %#x", code)
	}
	warm := decode(t, bob.Next(t).Payload)
	if c := call(t, us.nodes[0], bobTok, "POST", "/chat/read", map[string]string{"with": "alice@eu", "upTo": warm.ID}, nil); c != http.StatusNoContent {
		t.Fatalf("read: %d", c)
	}

	us.in.setCut(true) // eu's link into us is down; us's into eu is up
	code, ack := alice.Pub(t, "user/bob@us/newMessage", 1, textMsg("late", "sent during the outage"))
	if code != 0 {
		t.Fatalf("PUBACK %#x", code)
	}
	lateID, _ := strconv.ParseUint(ack.Properties.User.Get("id"), 10, 64)
	// bob writes later (a larger ID) and reads up to his own reply.
	var replyID string
	for i := 0; ; i++ {
		code, ack := bob.Pub(t, "user/alice@eu/newMessage", 1, textMsg(fmt.Sprintf("r%d", i), "anyone there?"))
		if code != 0 {
			t.Fatalf("reply PUBACK %#x", code)
		}
		replyID = ack.Properties.User.Get("id")
		if id, _ := strconv.ParseUint(replyID, 10, 64); id > lateID {
			break
		}
	}
	if c := call(t, us.nodes[0], bobTok, "POST", "/chat/read", map[string]string{"with": "alice@eu", "upTo": replyID}, nil); c != http.StatusNoContent {
		t.Fatalf("read: %d", c)
	}
	unread := func() int {
		var out struct {
			Conversations []struct {
				Peer   string `json:"peer"`
				Unread int    `json:"unread"`
			} `json:"conversations"`
		}
		if c := call(t, us.nodes[0], bobTok, "GET", "/chat/conversations", nil, &out); c != http.StatusOK || len(out.Conversations) != 1 {
			t.Fatalf("conversations: %d %+v", c, out)
		}
		return out.Conversations[0].Unread
	}
	if n := unread(); n != 0 {
		t.Fatalf("unread before the link healed: %d", n)
	}

	us.in.setCut(false)
	for e := decode(t, bob.Next(t).Payload); e.CID != "late"; e = decode(t, bob.Next(t).Payload) {
		if e.From != "bob" { // his own copies of his replies come first
			t.Fatalf("bob got %+v", e)
		}
	}
	nodetest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if n := unread(); n != 1 {
			return fmt.Errorf("bob's conversation with alice@eu shows %d unread after her late message, want 1", n)
		}
		return nil
	})
	// Reading the newest message again (the cursor cannot move) clears it.
	if c := call(t, us.nodes[0], bobTok, "POST", "/chat/read", map[string]string{"with": "alice@eu", "upTo": replyID}, nil); c != http.StatusNoContent {
		t.Fatalf("read: %d", c)
	}
	if n := unread(); n != 0 {
		t.Fatalf("unread after reading again: %d", n)
	}
}
