// SPDX-License-Identifier: MIT

package mqtt

import (
	"bufio"
	"bytes"
	"io"
	"log/slog"
	"runtime"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/mochi-mqtt/server/v2/system"
)

// ReadPacket decodes a packet in the buffer it reads it into (it made a
// second copy of every packet), and a packet read stays intact when the
// next one is read.
func TestReadPacketOneCopy(t *testing.T) {
	const n, size = 50, 10_000
	var wire bytes.Buffer
	for i := 0; i < n; i++ {
		pk := packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Publish}, ProtocolVersion: 4,
			TopicName: "t/" + string(rune('a'+i%26)), Payload: bytes.Repeat([]byte{byte(i)}, size),
		}
		if err := pk.PublishEncode(&wire); err != nil {
			t.Fatal(err)
		}
	}
	cl := newClient(nil, &ops{
		info: new(system.Info), hooks: new(Hooks), log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		options: &Options{Capabilities: NewDefaultServerCapabilities()},
	})
	cl.Properties.ProtocolVersion = 4
	cl.Net.bconn = bufio.NewReaderSize(&wire, 64<<10)

	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	got := make([]packets.Packet, 0, n)
	for i := 0; i < n; i++ {
		var fh packets.FixedHeader
		if err := cl.ReadFixedHeader(&fh); err != nil {
			t.Fatal(err)
		}
		pk, err := cl.ReadPacket(&fh)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, pk)
	}
	runtime.ReadMemStats(&after)
	if per := (after.TotalAlloc - before.TotalAlloc) / n; per >= 2*size {
		t.Errorf("%d bytes allocated per %d-byte packet read, want one copy", per, size)
	}
	for i, pk := range got {
		if len(pk.Payload) != size || pk.Payload[0] != byte(i) || pk.Payload[size-1] != byte(i) || pk.TopicName != "t/"+string(rune('a'+i%26)) {
			t.Fatalf("packet %d changed after the next ones were read", i)
		}
	}
}
