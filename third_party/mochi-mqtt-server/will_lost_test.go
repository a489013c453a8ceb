// SPDX-License-Identifier: MIT

//go:build unix

package mqtt

import (
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
)

// A will waits for its delay or the end of its session, whichever comes
// first (MQTT 5 3.1.3.2.2); only a new connection to the same session
// cancels it [MQTT-3.1.3-9]. A session ended while its will waits (by
// EndSession: edgechat ends a session left offline that overflowed, or
// the one a user kept offline longest) has its will published at once;
// a session marked lost (LoseSession), which the next connection does
// not resume (session present 0), has it published at that connection,
// not cancelled. Before, EndSession left the will to its delay, and a
// reconnection without clean start cancelled it as if it had resumed
// the session: the will was never published (edgechat patch 49).
func TestALostOrEndedSessionPublishesItsDelayedWill(t *testing.T) {
	for _, how := range []string{"ended", "lost"} {
		t.Run(how, func(t *testing.T) {
			s, addr := startAliasServer(t, false)
			w, wr, _ := connectAliases(t, addr, "watcher", 0, 0)
			subscribeV5(t, w, 1, "will/#")
			if ack := readPacket(t, wr, 5); ack.FixedHeader.Type != packets.Suback {
				t.Fatalf("SUBACK: %+v", ack)
			}
			c, _ := connectWithWill(t, addr, "dev", false, 300)
			old, _ := s.Clients.Get("dev")
			_ = c.Close()
			waitUntil(t, "the will scheduled", func() bool { _, ok := s.loop.willDelayed.Get("dev"); return ok })
			switch how {
			case "ended":
				if !s.EndSession(old) {
					t.Fatal("EndSession: the session was not ended")
				}
			case "lost":
				old.LoseSession()
				if _, _, present := connectAliases(t, addr, "dev", 0, 0); present {
					t.Fatal("a lost session was resumed")
				}
			}
			if got := readPacket(t, wr, 5); got.TopicName != "will/dev" || string(got.Payload) != "gone" {
				t.Fatalf("watcher got %q on %q, want the will", got.Payload, got.TopicName)
			}
		})
	}
}
