package broker

import (
	"bufio"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
)

// Two handshakes of one client ID at the same moment (a client that
// reconnected twice, two processes of an app with one device ID) end
// with one connection, as any takeover does: the other is closed
// (DISCONNECT 0x8E). Both used to find no session to take over, both
// entered mochi's client map, the second replacing the first, and the
// first stayed connected receiving nothing; when either then closed, its
// end unsubscribed the filters of that client ID, so the connection that
// stayed got nothing either (3 of the 4 rounds of 60 that raced, before
// mochi patch 55); and a takeover could write its DISCONNECT to the
// other connection before that one's CONNACK. The one that stays
// subscribes and receives.
func TestTwoHandshakesOfOneClientIDLeaveOneConnection(t *testing.T) {
	e := startBroker(t, nil)
	bob, br := rawDialV5(t, e.addr, "bob/pub", "bob", "tok:bob")
	for round := range 40 {
		conns := make([]net.Conn, 2)
		readers := make([]*bufio.Reader, 2)
		for i := range 2 {
			c, err := net.Dial("tcp", e.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			conns[i], readers[i] = c, bufio.NewReader(c)
		}
		var wg sync.WaitGroup
		for i := range 2 {
			wg.Go(func() { _, _ = conns[i].Write(mqtttest.RawConnectV5("ann/laptop", "ann", "tok:ann")) })
		}
		wg.Wait()
		// Each is accepted when its handshake runs; then the later one
		// takes the session over and the earlier one is closed.
		var alive []int
		for i := range 2 {
			_ = conns[i].SetDeadline(time.Now().Add(waitFor))
			if typ, err := rawType(readers[i]); err != nil || typ != 0x20 {
				t.Fatalf("round %d: connection %d: %#x %v, want CONNACK", round, i, typ, err)
			}
		}
		testutil.CheckFor(t, waitFor, 10*time.Millisecond, func() error {
			alive = alive[:0]
			for i := range 2 {
				if conns[i] == nil {
					continue
				}
				_ = conns[i].SetDeadline(time.Now().Add(time.Second))
				if _, err := conns[i].Write([]byte{0xc0, 0}); err != nil {
					conns[i] = nil
					continue
				}
				for {
					typ, err := rawType(readers[i])
					if err != nil || typ == 0xe0 { // closed, or DISCONNECT (0x8E)
						conns[i] = nil
						break
					}
					if typ == 0xd0 {
						alive = append(alive, i)
						break
					}
				}
			}
			if len(alive) != 1 {
				return fmt.Errorf("round %d: %d connections of ann/laptop answer, want 1", round, len(alive))
			}
			return nil
		})
		c, r := conns[alive[0]], readers[alive[0]]
		if _, err := c.Write(mqtttest.RawSubscribeV5(1, "user/ann/newMessage")); err != nil {
			t.Fatal(err)
		}
		if typ, err := rawType(r); err != nil || typ != 0x90 {
			t.Fatalf("round %d: SUBACK: %#x %v", round, typ, err)
		}
		payload := fmt.Sprintf(`{"cid":"race-%d","type":"text","body":"hi"}`, round)
		if _, err := bob.Write(mqtttest.RawPublishV5("user/ann/newMessage", uint16(round+1), payload)); err != nil {
			t.Fatal(err)
		}
		readRawPacket(t, br) // PUBACK
		_ = c.SetDeadline(time.Now().Add(waitFor))
		for {
			typ, err := rawType(r)
			if err != nil {
				t.Fatalf("round %d: the connection that stayed got no message: %v", round, err)
			}
			if typ&0xf0 == 0x30 {
				break
			}
		}
		c.Close()
	}
}

// rawType reads one packet and returns its type byte.
func rawType(r *bufio.Reader) (byte, error) {
	typ, _, err := mqtttest.ReadRawPacket(r)
	return typ, err
}
