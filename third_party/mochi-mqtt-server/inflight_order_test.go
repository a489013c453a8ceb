// SPDX-License-Identifier: MIT

package mqtt

import (
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
)

// Inflight messages come back in the order they were first set, also
// those created in the same second, after a packet is replaced (a
// PUBLISH become a PUBREL keeps its place) and in a clone (a session
// taken over resends them in that order: [MQTT-4.6.0-1]).
func TestInflightGetAllInTheOrderSet(t *testing.T) {
	in := NewInflights()
	const n = 200
	for k := range n {
		id := uint16(n - k) // identifiers falling: their order is not the set order
		in.Set(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: id, Created: 1_700_000_000})
	}
	in.Set(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel}, PacketID: n, Created: 1_700_000_001})
	in.Delete(n / 2)
	for _, got := range [][]packets.Packet{in.GetAll(false), in.Clone().GetAll(false)} {
		if len(got) != n-1 {
			t.Fatalf("%d packets, want %d", len(got), n-1)
		}
		want := uint16(n)
		for k, p := range got {
			if want == n/2 {
				want--
			}
			if p.PacketID != want {
				t.Fatalf("position %d: packet %d, want %d", k, p.PacketID, want)
			}
			want--
		}
		if got[0].FixedHeader.Type != packets.Pubrel {
			t.Fatalf("the replaced packet moved: first is %+v", got[0].FixedHeader)
		}
	}
}
