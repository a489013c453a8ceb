package broker

import (
	"bufio"
	"net"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
)

// liveHeap is the live heap after two collections (the second empties
// sync.Pools' victim caches).
func liveHeap() int64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

// userProp is MQTT 5 properties holding one user property k=v, with
// their length first.
func userProp(v string) []byte {
	props := mqtttest.RawString(mqtttest.RawString([]byte{0x26}, "k"), v)
	return append(mqtttest.RawLength(len(props)), props...)
}

// What the server keeps of a client's packet (a QoS 2 publish's PUBREC
// until the client's PUBREL, a subscription's filter, a CONNECT's
// properties) kept the whole packet: decoded without a copy, its strings
// share the packet's buffer, which a user property can fill (64 KiB).
// So a client that never sent PUBREL held Receive Maximum (1,024) such
// packets a connection, 64 MiB, each subscription its SUBSCRIBE, each
// connection its CONNECT, its access token included; a persistent
// session kept them while its client was away. Any signed-in user could
// so take a node's memory a packet at a time (heartbeats are allowed to
// everyone). Nothing of the packet stays now.
func TestKeptPacketsHoldNotTheirBuffers(t *testing.T) {
	value := strings.Repeat("v", 60<<10)
	check := func(t *testing.T, what string, n int, before int64) {
		t.Helper()
		// Kept whole, they hold n packets of 60 KiB; what they need is
		// a few hundred bytes each.
		grown := liveHeap() - before
		t.Logf("%d %s hold %d KiB", n, what, grown>>10)
		if grown > int64(n*len(value)/2) {
			t.Fatalf("%d %s with %d KiB of user property or payload each hold %d KiB of the server's heap, want far less than their packets",
				n, what, len(value)>>10, grown>>10)
		}
	}

	t.Run("QoS 2 publishes awaiting PUBREL", func(t *testing.T) {
		e := startBroker(t, nil)
		conn, r := rawDialV5(t, e.addr, "alice/raw", "alice", "tok:alice")
		const n = 300
		before := liveHeap()
		go func() {
			for i := 1; i <= n; i++ {
				vh := append(mqtttest.RawString(nil, "presence/alice/heartbeat"), byte(i>>8), byte(i))
				if _, err := conn.Write(mqtttest.RawPacket(0x34, append(vh, userProp(value)...))); err != nil { // QoS 2
					return
				}
			}
		}()
		for i := 1; i <= n; i++ {
			typ, body := readRawPacket(t, r)
			if typ != 0x50 || len(body) < 2 || int(body[0])<<8|int(body[1]) != i || len(body) > 2 && body[2] != 0 {
				t.Fatalf("publish %d: got %#x % x, want its PUBREC", i, typ, body[:min(len(body), 8)])
			}
		}
		check(t, "QoS 2 publishes awaiting their PUBREL", n, before)
		// The exchanges still complete.
		if _, err := conn.Write([]byte{0x62, 0x02, 0x00, 0x01}); err != nil { // PUBREL 1
			t.Fatal(err)
		}
		if typ, body := readRawPacket(t, r); typ != 0x70 || len(body) < 2 || body[1] != 1 || len(body) > 2 && body[2] != 0 {
			t.Fatalf("PUBREL 1: got %#x % x, want PUBCOMP 1", typ, body)
		}
	})

	t.Run("subscriptions", func(t *testing.T) {
		e := startBroker(t, nil)
		const groups = 60
		var filters []string
		for g := range groups {
			gid := "g" + strconv.Itoa(g)
			e.mem.set(gid, "alice", true)
			for _, leaf := range []string{"#", "+", "newMessage", "typing"} {
				filters = append(filters, "group/"+gid+"/"+leaf)
			}
		}
		conn, r := rawDialV5(t, e.addr, "alice/raw", "alice", "tok:alice")
		before := liveHeap()
		go func() {
			for i, f := range filters {
				vh := append([]byte{byte((i + 1) >> 8), byte(i + 1)}, userProp(value)...)
				if _, err := conn.Write(mqtttest.RawPacket(0x82, append(mqtttest.RawString(vh, f), 1))); err != nil {
					return
				}
			}
		}()
		for i, f := range filters {
			typ, body := readRawPacket(t, r)
			if typ != 0x90 || len(body) < 3 || int(body[0])<<8|int(body[1]) != i+1 || body[len(body)-1] != 1 {
				t.Fatalf("%s: got %#x % x, want SUBACK granting QoS 1", f, typ, body[:min(len(body), 8)])
			}
		}
		check(t, "subscriptions", len(filters), before)
	})

	t.Run("topic aliases", func(t *testing.T) {
		e := startBroker(t, nil)
		const conns = 4
		before := liveHeap()
		for c := range conns {
			conn, r := rawDialV5(t, e.addr, "alice/a"+strconv.Itoa(c), "alice", "tok:alice")
			for alias := 1; alias <= TopicAliasMaximum; alias++ {
				// A QoS 1 heartbeat setting the alias, with a payload that fills the packet.
				vh := append(mqtttest.RawString(nil, "presence/alice/heartbeat"), 0, byte(alias), 3, 0x23, 0, byte(alias))
				if _, err := conn.Write(mqtttest.RawPacket(0x32, append(vh, value...))); err != nil {
					t.Fatal(err)
				}
				if typ, body := readRawPacket(t, r); typ != 0x40 || len(body) < 2 || body[1] != byte(alias) || len(body) > 2 && body[2] != 0 {
					t.Fatalf("alias %d: got %#x % x, want its PUBACK", alias, typ, body)
				}
			}
		}
		check(t, "topic aliases", conns*TopicAliasMaximum, before)
	})

	t.Run("connections", func(t *testing.T) {
		// 200 connections of one user: over the per-user cap (128).
		e := startBroker(t, func(c *Config) { c.ConnectionsPerUser = -1 })
		const n = 200
		before := liveHeap()
		for i := range n {
			connect := []byte{0, 4, 'M', 'Q', 'T', 'T', 5, 0xc2, 0, 60}
			connect = append(connect, userProp(value)...)
			connect = mqtttest.RawString(mqtttest.RawString(mqtttest.RawString(connect, "alice/c"+strconv.Itoa(i)), "alice"), "tok:alice")
			conn, err := net.Dial("tcp", e.addr)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = conn.Close() })
			_ = conn.SetDeadline(time.Now().Add(waitFor))
			r := bufio.NewReader(conn)
			if _, err := conn.Write(mqtttest.RawPacket(0x10, connect)); err != nil {
				t.Fatal(err)
			}
			if typ, body := readRawPacket(t, r); typ != 0x20 || len(body) < 2 || body[1] != 0 {
				t.Fatalf("CONNACK %d: %#x % x", i, typ, body)
			}
		}
		check(t, "connections", n, before)
	})
}
