// SPDX-License-Identifier: MIT

//go:build unix

package mqtt

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
)

// lockedBuffer is a log sink safe for the server's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) lines(substr string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, line := range strings.Split(l.b.String(), "\n") {
		if strings.Contains(line, substr) {
			out = append(out, line)
		}
	}
	return out
}

// A client that acknowledges too slowly (here: never, with Receive
// Maximum 1) fills its session's store; every further delivery to it is
// dropped. Each drop is counted (InflightDropped, the OnPublishDropped
// hook), but the log says so once per client and episode: one WARN when
// the store fills, and one with the count when it has room again (or
// the session ends). Before, every dropped delivery logged its own WARN
// line for as long as the client stayed connected: a log flood one slow
// phone, or a client that means it, could cause (edgechat patch 47).
func TestAFullSessionStoreLogsOncePerEpisode(t *testing.T) {
	var logs lockedBuffer
	h := new(loseOnDrop)
	s, addr := startAliasServer(t, false, func(o *Options) {
		o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
		o.Capabilities = NewDefaultServerCapabilities()
		o.Capabilities.MaximumInflight = 4
	})
	if err := s.AddHook(h, nil); err != nil {
		t.Fatal(err)
	}
	c, r, _ := connectAliases(t, addr, "phone", 0, 1)
	subscribeV5(t, c, 1, "a/b")
	if ack := readPacket(t, r, 5); ack.FixedHeader.Type != packets.Suback {
		t.Fatalf("SUBACK: %+v", ack)
	}
	for i := 0; i < 20; i++ {
		if err := s.Publish("a/b", []byte{byte('a' + i)}, false, 1); err != nil {
			t.Fatal(err)
		}
	}
	first := readPacket(t, r, 5) // the one delivery its Receive Maximum lets through
	if first.FixedHeader.Type != packets.Publish {
		t.Fatalf("want the first PUBLISH, got %+v", first)
	}
	if got := h.dropped.Load(); got != 16 {
		t.Fatalf("OnPublishDropped called %d times, want 16", got)
	}
	if got := s.Info.InflightDropped; got != 16 {
		t.Fatalf("InflightDropped = %d, want 16", got)
	}
	if got := logs.lines("client store quota reached"); len(got) != 1 {
		t.Fatalf("%d log lines for 16 dropped deliveries, want 1:\n%s", len(got), strings.Join(got, "\n"))
	}

	// An acknowledgement frees a slot: the episode ends, told with its
	// count, and a new one would be logged again.
	writeV5(t, c, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: first.PacketID})
	if pk := readPacket(t, r, 5); pk.FixedHeader.Type != packets.Publish {
		t.Fatalf("want the next PUBLISH, got %+v", pk)
	}
	if err := s.Publish("a/b", []byte("fits"), false, 1); err != nil {
		t.Fatal(err)
	}
	ended := logs.lines("client store quota no longer reached")
	if len(ended) != 1 || !strings.Contains(ended[0], "dropped=16") {
		t.Fatalf("the end of the episode was logged as %q, want one line with dropped=16", ended)
	}
	for i := 0; i < 3; i++ {
		_ = s.Publish("a/b", []byte("again"), false, 1)
	}
	if got := logs.lines("client store quota reached"); len(got) != 2 {
		t.Fatalf("a second episode logged %d lines in all, want 2", len(got))
	}
}
