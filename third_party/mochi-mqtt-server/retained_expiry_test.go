// SPDX-License-Identifier: MIT

package mqtt

import (
	"fmt"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// The once-a-second retained expiry check allocates nothing when nothing
// expires (it copied every retained message each second), and still
// removes the messages that have expired.
func TestRetainedExpiryCheckAllocatesNothing(t *testing.T) {
	s := New(nil)
	now := time.Now().Unix()
	for i := 0; i < 1000; i++ {
		s.Topics.Retained.Add(fmt.Sprintf("presence/%d", i), packets.Packet{ProtocolVersion: 5, Created: now, Payload: []byte("online")})
	}
	if n := testing.AllocsPerRun(10, func() { s.clearExpiredRetainedMessages(now) }); n != 0 {
		t.Fatalf("%v allocations per retained expiry check of 1,000 messages, want 0", n)
	}
	s.Topics.Retained.Add("gone/1", packets.Packet{ProtocolVersion: 5, Created: now - 10, Expiry: now - 1})
	s.Topics.Retained.Add("gone/2", packets.Packet{ProtocolVersion: 5, Created: now - 10, Expiry: now - 2})
	s.clearExpiredRetainedMessages(now)
	if _, ok := s.Topics.Retained.Get("gone/1"); ok {
		t.Fatal("an expired retained message is still there")
	}
	if s.Topics.Retained.Len() != 1000 {
		t.Fatalf("%d retained messages, want the 1,000 unexpired", s.Topics.Retained.Len())
	}
}
