// SPDX-License-Identifier: MIT

//go:build unix

package mqtt

import (
	"sync"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
)

// qosDrops records what OnQosDropped is told.
type qosDrops struct {
	allowAll
	mu    sync.Mutex
	drops []qosDrop
}

type qosDrop struct {
	topic        string
	sessionEnded bool
}

func (h *qosDrops) Provides(b byte) bool {
	return b == OnQosDropped || h.allowAll.Provides(b)
}

func (h *qosDrops) OnQosDropped(cl *Client, pk packets.Packet) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.drops = append(h.drops, qosDrop{topic: pk.TopicName, sessionEnded: cl.SessionEnded()})
}

func (h *qosDrops) get() []qosDrop {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]qosDrop(nil), h.drops...)
}

// A session resumed by a new connection hands its inflight messages
// over: none is dropped, and the hooks are not told of any. Before, the
// old client's copies were cleared with OnQosDropped each, as if lost (a
// broker counted them as dropped; a storage hook deleted the stored
// copies the new client now holds under the same client ID). A session
// that ends (here: a clean start) discards its messages, and the hooks
// told of each can tell why: Client.SessionEnded (edgechat patch 48).
func TestInflightsHandedOverAreNotDroppedAndEndedOnesSaySo(t *testing.T) {
	h := new(qosDrops)
	s, addr := startAliasServer(t, false)
	if err := s.AddHook(h, nil); err != nil {
		t.Fatal(err)
	}
	c, r, _ := connectAliases(t, addr, "phone", 0, 0)
	subscribeV5(t, c, 1, "a/b")
	if ack := readPacket(t, r, 5); ack.FixedHeader.Type != packets.Suback {
		t.Fatalf("SUBACK: %+v", ack)
	}
	_ = c.Close()
	old, _ := s.Clients.Get("phone")
	waitUntil(t, "the connection ended", old.Closed)
	for i := 0; i < 3; i++ {
		if err := s.Publish("a/b", []byte{byte('0' + i)}, false, 1); err != nil {
			t.Fatal(err)
		}
	}
	c, _, present := connectAliases(t, addr, "phone", 0, 0)
	if !present {
		t.Fatal("the session was not resumed")
	}
	if got := h.get(); len(got) != 0 {
		t.Fatalf("a resumed session's deliveries were told as dropped: %+v", got)
	}
	_ = c.Close()
	cur, _ := s.Clients.Get("phone")
	waitUntil(t, "the second connection ended", cur.Closed)

	dialConnectV5Clean(t, addr, "phone")
	got := h.get()
	if len(got) != 3 {
		t.Fatalf("a clean start told %d dropped deliveries, want the 3 its session held: %+v", len(got), got)
	}
	for _, d := range got {
		if d.topic != "a/b" || !d.sessionEnded {
			t.Fatalf("told %+v, want topic a/b with SessionEnded", d)
		}
	}
}
