// SPDX-License-Identifier: MIT

//go:build unix

package mqtt

import (
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
)

// kickOnPublish disconnects a client that publishes to "kick", as a
// broker does with a client it refuses (a 3.1.1 client has no negative
// PUBACK).
type kickOnPublish struct {
	allowAll
	s *Server
}

func (h *kickOnPublish) Provides(b byte) bool {
	return b == OnPublish || h.allowAll.Provides(b)
}

func (h *kickOnPublish) OnPublish(cl *Client, pk packets.Packet) (packets.Packet, error) {
	if pk.TopicName == "kick" {
		_ = h.s.DisconnectClient(cl, packets.ErrNotAuthorized)
	}
	return pk, nil
}

// A connection the server closes (here: from a hook, as it handles the
// client's packet; or a takeover right after the handshake) ends without
// the client's DISCONNECT 0x00, so its will is published [MQTT-3.1.2-8]:
// only a normal DISCONNECT discards it [MQTT-3.1.2-10]. Before, the read
// loop found the client closed before its next packet and returned as
// after a DISCONNECT, which discards the will: never published (also the
// cause of the occasional hang of TestCleanStartPublishesTheDelayedWill
// and TestTakeoverCancelsADelayedWillScheduledLate) (edgechat patch 50).
func TestAConnectionTheServerClosesPublishesItsWill(t *testing.T) {
	s, addr := startAliasServer(t, false)
	if err := s.AddHook(&kickOnPublish{s: s}, nil); err != nil {
		t.Fatal(err)
	}
	w, wr, _ := connectAliases(t, addr, "watcher", 0, 0)
	subscribeV5(t, w, 1, "will/#")
	if ack := readPacket(t, wr, 5); ack.FixedHeader.Type != packets.Suback {
		t.Fatalf("SUBACK: %+v", ack)
	}
	c, _ := connectWithWill(t, addr, "dev", true, 0)
	writeV5(t, c, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: "kick", Payload: []byte("x")})
	if got := readPacket(t, wr, 5); got.TopicName != "will/dev" || string(got.Payload) != "gone" {
		t.Fatalf("watcher got %q on %q, want the will", got.Payload, got.TopicName)
	}
}
