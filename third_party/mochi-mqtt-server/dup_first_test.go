// SPDX-License-Identifier: MIT

//go:build unix

package mqtt

import (
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
)

// The DUP flag says that a PUBLISH was sent before [MQTT-3.3.1-1]: a
// message the session queued while its client was away goes out for
// the first time when the session resumes, with DUP 0, and with DUP 1
// only when it is sent again on a later connection (not acknowledged).
// A message written live and resent after a reconnection keeps DUP 1.
// Before, every message resent with a resumed session had DUP 1, also
// one the client had never been sent (edgechat patch 46).
func TestAMessageQueuedOfflineIsFirstSentWithoutDup(t *testing.T) {
	for _, direct := range []bool{false, true} {
		s, addr := startAliasServer(t, direct)
		c, r, _ := connectAliases(t, addr, "phone", 0, 0)
		subscribeV5(t, c, 1, "a/b")
		if ack := readPacket(t, r, 5); ack.FixedHeader.Type != packets.Suback {
			t.Fatalf("SUBACK: %+v", ack)
		}
		// One message live, not acknowledged; then the phone goes away.
		if err := s.Publish("a/b", []byte("live"), false, 1); err != nil {
			t.Fatal(err)
		}
		if pk := readPacket(t, r, 5); string(pk.Payload) != "live" || pk.FixedHeader.Dup {
			t.Fatalf("live delivery: %q dup=%v", pk.Payload, pk.FixedHeader.Dup)
		}
		_ = c.Close()
		old, _ := s.Clients.Get("phone")
		waitUntil(t, "the connection ended", old.Closed)
		if err := s.Publish("a/b", []byte("queued"), false, 1); err != nil {
			t.Fatal(err)
		}

		want := map[string]bool{"live": true, "queued": false} // payload → DUP on the first resumption
		for round := 1; round <= 2; round++ {
			c, r, present := connectAliases(t, addr, "phone", 0, 0)
			if !present {
				t.Fatalf("direct=%v round %d: session not resumed", direct, round)
			}
			for range want {
				pk := readPacket(t, r, 5)
				if pk.FixedHeader.Type != packets.Publish {
					t.Fatalf("direct=%v round %d: %+v", direct, round, pk)
				}
				if d, ok := want[string(pk.Payload)]; !ok || pk.FixedHeader.Dup != (d || round == 2) {
					t.Fatalf("direct=%v round %d: %q sent with DUP %v, want %v", direct, round, pk.Payload, pk.FixedHeader.Dup, d || round == 2)
				}
			}
			_ = c.Close() // nothing acknowledged: all is sent again next time
			cur, _ := s.Clients.Get("phone")
			waitUntil(t, "the connection ended", cur.Closed)
		}
	}
}
