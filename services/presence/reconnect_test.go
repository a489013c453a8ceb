package presence

import (
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/wire"
)

// A takeover by the same client ID, or the same client coming back
// within the grace, is the device's connection going on, not the user
// coming back: an inactive user (a hidden tab, a phone in a pocket)
// stays inactive, with no publish. Before, every such reconnect
// published online and, three intervals later, inactive again: a
// network blip, or a node restart that moved every client to another
// node, showed the idle users as active for half a minute. A
// connection of another client (a second device) still makes the user
// online. The connection IDs are as the broker makes them
// ({clientID}#{generation}) and, for a cluster's home, prefixed with the
// node and run (connKey).
func TestReconnectOfTheSameClientKeepsAnInactiveUserInactive(t *testing.T) {
	h := newHarness(t)
	h.s.Connected("alice", "alice/phone#1")
	h.advance(inactiveAfter * interval)
	h.expect("alice:online", "alice:inactive")

	// Takeover: the new connection comes before the old one's end.
	h.s.Connected("alice", "alice/phone#2")
	h.s.Disconnected("alice", "alice/phone#1")
	h.expectStatus("alice", wire.StatusInactive)

	// Quick reconnect: the old one ends first, the client is back
	// within the grace.
	h.s.Disconnected("alice", "alice/phone#2")
	h.advance(grace - time.Second)
	h.s.Connected("alice", "alice/phone#3")
	h.advance(grace)
	h.expectStatus("alice", wire.StatusInactive)

	// The same across nodes, as the home sees it (a node restarted and
	// its clients came back on another node).
	h.s.apply("n1", 1, Event{Kind: EventDisconnected, UID: "alice", ConnID: "alice/phone#3"})
	h.s.apply("n2", 7, Event{Kind: EventConnected, UID: "alice", ConnID: "alice/phone#9"})
	h.advance(grace)
	h.expectStatus("alice", wire.StatusInactive)
	h.expect("alice:online", "alice:inactive")

	// Another device is the user: online.
	h.s.Connected("alice", "alice/laptop#4")
	h.expect("alice:online", "alice:inactive", "alice:online")

	// The timers still run from the last heartbeat or new connection:
	// idle, the user goes inactive and then offline, and the phone's
	// reconnects do not hold that back.
	h.advance(inactiveAfter * interval)
	h.s.apply("n2", 7, Event{Kind: EventConnected, UID: "alice", ConnID: "alice/phone#10"})
	h.advance((offlineAfter - inactiveAfter) * interval)
	h.expect("alice:online", "alice:inactive", "alice:online", "alice:inactive", "alice:offline")

	// Idle long enough to be offline while still connected (a tab
	// hidden for a minute): a reconnect keeps them offline, and the
	// user is forgotten once its grace ends with no connection.
	h.s.Connected("bob", "bob/web-1#1")
	h.advance(offlineAfter * interval)
	h.s.Disconnected("bob", "bob/web-1#1")
	h.advance(grace - time.Second)
	h.s.Connected("bob", "bob/web-1#2")
	h.advance(grace)
	h.expectStatus("bob", wire.StatusOffline)
	h.s.Disconnected("bob", "bob/web-1#2")
	h.advance(2 * grace)
	if _, ok := h.s.users["bob"]; ok {
		t.Fatal("an offline user kept after the grace of their last connection")
	}
	h.s.Heartbeat("bob") // the tab is shown again
	want := []string{"alice:online", "alice:inactive", "alice:online", "alice:inactive", "alice:offline",
		"bob:online", "bob:inactive", "bob:offline", "bob:online"}
	h.expect(want...)
}
