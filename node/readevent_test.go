package node_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
	"github.com/edgechat/edgechat/node/nodetest"
)

// A conversation read on one device of a user is read on the others:
// each device of the reader gets a conversation.read event on
// user/{me}/events, with the server's unread count after the read,
// whether the read was an MQTT read receipt or POST /chat/read, of a
// direct conversation or of a group. Before, the server told no device
// of the user's own reads: the laptop kept counting unread what the
// phone had read (its badges, its title, its notifications) until it
// read the conversation list again.
func TestAReadOnOneDeviceIsToldToTheOthers(t *testing.T) {
	n := nodetest.StartNode(t)
	aliceTok, bobTok := n.NewUser(t, "alice"), n.NewUser(t, "bob")
	laptop := mustConnectV5(t, n.MQTTURL, "alice", "laptop", aliceTok)
	laptop.MustSub(t, "user/alice/events")
	phone := mustConnectV5(t, n.MQTTURL, "alice", "phone", aliceTok)
	var m1, m2 envelope
	for i, m := range []*envelope{&m1, &m2} {
		if st := api(t, n, bobTok, "POST", "/chat/messages", map[string]string{"to": "alice", "cid": fmt.Sprint("b", i), "type": "text", "body": "hi"}, m); st != 201 {
			t.Fatalf("POST /chat/messages: %d", st)
		}
	}
	var g struct {
		GID string `json:"groupId"`
	}
	if st := api(t, n, bobTok, "POST", "/user/groups", map[string]any{"name": "team", "members": []string{"alice"}}, &g); st != 201 {
		t.Fatalf("POST /user/groups: %d", st)
	}
	var gm envelope
	if st := api(t, n, bobTok, "POST", "/chat/messages", map[string]string{"group": g.GID, "cid": "g0", "type": "text", "body": "all"}, &gm); st != 201 {
		t.Fatalf("POST /chat/messages to the group: %d", st)
	}

	type read struct {
		Peer   string `json:"peer"`
		Group  string `json:"group"`
		UpTo   string `json:"upTo"`
		Unread int    `json:"unread"`
	}
	reads := func() []read {
		var out []read
		for _, m := range laptop.Received("user/alice/events") {
			var e struct {
				Type string `json:"type"`
				Data read   `json:"data"`
			}
			if json.Unmarshal(m.Payload, &e) == nil && e.Type == "conversation.read" {
				out = append(out, e.Data)
			}
		}
		return out
	}
	waitRead := func(i int, want read) {
		t.Helper()
		checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
			got := reads()
			if len(got) <= i {
				return fmt.Errorf("the laptop was told of %d read(s) (%+v), want %d: the %+v one", len(got), got, i+1, want)
			}
			if got[i] != want {
				return fmt.Errorf("read %d told to the laptop: %+v, want %+v", i, got[i], want)
			}
			return nil
		})
	}

	// The phone reads bob's first message (an MQTT read receipt): one
	// is left unread.
	if code, _ := phone.Pub(t, "user/bob/receipts", 1, `{"type":"read","upTo":"`+m1.ID+`"}`); code != 0 {
		t.Fatalf("read receipt PUBACK %#x", code)
	}
	waitRead(0, read{Peer: "bob", UpTo: m1.ID, Unread: 1})
	// Then the rest, over HTTP; a read that moves nothing tells nothing.
	if st := api(t, n, aliceTok, "POST", "/chat/read", map[string]string{"with": "bob", "upTo": m1.ID}, nil); st != 204 {
		t.Fatalf("POST /chat/read: %d", st)
	}
	if st := api(t, n, aliceTok, "POST", "/chat/read", map[string]string{"with": "bob", "upTo": m2.ID}, nil); st != 204 {
		t.Fatalf("POST /chat/read: %d", st)
	}
	waitRead(1, read{Peer: "bob", UpTo: m2.ID, Unread: 0})
	// A group.
	if st := api(t, n, aliceTok, "POST", "/chat/read", map[string]string{"group": g.GID, "upTo": gm.ID}, nil); st != 204 {
		t.Fatalf("POST /chat/read of the group: %d", st)
	}
	waitRead(2, read{Group: g.GID, UpTo: gm.ID, Unread: 0})
	if got := reads(); len(got) != 3 {
		t.Fatalf("the laptop was told %+v, want 3 reads", got)
	}
}

// In a cluster each device of the reader hears of a read once, whichever
// node it is connected to and whichever node the read went through:
// every node tells its own subscribers from its own apply.
func TestAReadIsToldOnceToDevicesOnOtherNodes(t *testing.T) {
	nodes := nodetest.StartCluster(t, 3)
	aliceTok, bobTok := nodes[0].NewUser(t, "alice"), nodes[0].NewUser(t, "bob")
	var m envelope
	if st := api(t, nodes[0], bobTok, "POST", "/chat/messages", map[string]string{"to": "alice", "cid": "b0", "type": "text", "body": "hi"}, &m); st != 201 {
		t.Fatalf("POST /chat/messages: %d", st)
	}
	laptop := mustConnectV5(t, nodes[1].MQTTURL, "alice", "laptop", aliceTok)
	laptop.MustSub(t, "user/alice/#")
	tablet := mustConnectV5(t, nodes[2].MQTTURL, "alice", "tablet", aliceTok)
	tablet.MustSub(t, "user/alice/#")
	if st := api(t, nodes[0], aliceTok, "POST", "/chat/read", map[string]string{"with": "bob", "upTo": m.ID}, nil); st != 204 {
		t.Fatalf("POST /chat/read: %d", st)
	}
	// bob's next message comes after the read, on every node.
	var next envelope
	if st := api(t, nodes[0], bobTok, "POST", "/chat/messages", map[string]string{"to": "alice", "cid": "b1", "type": "text", "body": "again"}, &next); st != 201 {
		t.Fatalf("POST /chat/messages: %d", st)
	}
	want := `{"type":"conversation.read","data":{"peer":"bob","upTo":"` + m.ID + `","unread":0}}`
	for _, d := range []struct {
		name string
		c    *mqtttest.Client
	}{{"laptop", laptop}, {"tablet", tablet}} {
		checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
			if len(d.c.Received("user/alice/newMessage")) == 0 {
				return fmt.Errorf("bob's message after the read has not reached the %s", d.name)
			}
			var got []string
			for _, e := range d.c.Received("user/alice/events") {
				got = append(got, string(e.Payload))
			}
			if len(got) != 1 || got[0] != want {
				return fmt.Errorf("the %s got events %q, want once %s", d.name, got, want)
			}
			return nil
		})
	}
}
