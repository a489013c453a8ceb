// SPDX-License-Identifier: MIT
// SPDX-FileCopyrightText: 2023 mochi-mqtt, mochi-co

package packets

import "testing"

func TestCanEncodeMatchesValidPacketProperties(t *testing.T) {
	var p Properties
	for k := 0; k < 256; k++ {
		for pkt := 0; pkt < 256; pkt++ {
			want := validPacketProperties[byte(k)][byte(pkt)] == 1
			if got := p.canEncode(byte(pkt), byte(k)); got != want {
				t.Fatalf("canEncode(packet %d, property %d) = %v, want %v", pkt, k, got, want)
			}
		}
	}
}
