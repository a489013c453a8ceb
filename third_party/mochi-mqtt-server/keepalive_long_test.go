// SPDX-License-Identifier: MIT

package mqtt

import (
	"testing"
	"time"
)

// The deadline of a client's next packet is one and a half times its
// keepalive [MQTT-3.1.2-22], for every keepalive a CONNECT may carry
// (edgechat patch 60). Computed in uint16 it wrapped above 43,690 s: a
// client with a keepalive of 65,535 s (18 h) was disconnected after
// 32,766 s of silence (9 h), within its keepalive. A real connection
// would take hours to show it; the deadline is what the read and the
// read waiter both use.
func TestKeepaliveDeadlineOfALongKeepalive(t *testing.T) {
	for _, ka := range []uint16{1, 60, 43690, 43691, 65535} {
		want := time.Duration(ka) * 1500 * time.Millisecond
		before := time.Now()
		got := keepaliveDeadline(ka).Sub(before)
		if got < want-time.Second || got > want+time.Second {
			t.Errorf("keepalive %d s: deadline in %v, want %v", ka, got.Round(time.Second), want)
		}
	}
	if !keepaliveDeadline(0).IsZero() {
		t.Error("keepalive 0: a deadline, want none")
	}
}
