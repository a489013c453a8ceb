// SPDX-License-Identifier: MIT
// SPDX-FileCopyrightText: 2023 mochi-mqtt, mochi-co

package mqtt

import (
	"bytes"
	"errors"
	"log/slog"
	"runtime"
	"strings"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
)

// rejectingHook rejects every publish, as a hook that answers publishes
// itself does.
type rejectingHook struct{ HookBase }

func (h *rejectingHook) ID() string           { return "rejecting" }
func (h *rejectingHook) Provides(b byte) bool { return b == OnPublish }
func (h *rejectingHook) OnPublish(cl *Client, pk packets.Packet) (packets.Packet, error) {
	return pk, errReject
}

var errReject error = packets.ErrRejectPacket // boxed once

func rejectingHooks(t *testing.T, level slog.Level) (*Hooks, *bytes.Buffer) {
	t.Helper()
	var logs bytes.Buffer
	h := &Hooks{Log: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: level}))}
	if err := h.Add(new(rejectingHook), nil); err != nil {
		t.Fatal(err)
	}
	return h, &logs
}

// A rejected publish does not copy the packet to the heap when debug
// logs are off (errors.Is boxes the 24-byte packets.ErrRejectPacket; a
// packets.Packet is 800 bytes).
func TestOnPublishRejectDoesNotCopyThePacketWithoutDebugLogs(t *testing.T) {
	h, logs := rejectingHooks(t, slog.LevelInfo)
	cl := &Client{}
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, TopicName: "a/b", Payload: []byte("x")}
	const runs = 1000
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := 0; i < runs; i++ {
		if _, err := h.OnPublish(cl, pk); !errors.Is(err, packets.ErrRejectPacket) {
			t.Fatalf("OnPublish: %v, want ErrRejectPacket", err)
		}
	}
	runtime.ReadMemStats(&after)
	if perRun := (after.TotalAlloc - before.TotalAlloc) / runs; perRun >= 400 {
		t.Fatalf("%d bytes allocated per rejected publish: the packet was copied", perRun)
	}
	if logs.Len() != 0 {
		t.Fatalf("logged at info level: %s", logs)
	}
}

// With debug logs on, the rejection is still logged with its packet.
func TestOnPublishRejectLoggedWithDebugLogs(t *testing.T) {
	h, logs := rejectingHooks(t, slog.LevelDebug)
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: "a/b"}
	if _, err := h.OnPublish(&Client{}, pk); !errors.Is(err, packets.ErrRejectPacket) {
		t.Fatalf("OnPublish: %v, want ErrRejectPacket", err)
	}
	if !strings.Contains(logs.String(), "publish packet rejected") || !strings.Contains(logs.String(), "hook=rejecting") {
		t.Fatalf("debug log %q lacks the rejection", logs)
	}
}
