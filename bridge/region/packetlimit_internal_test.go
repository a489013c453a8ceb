package region

import (
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"

	"github.com/edgechat/edgechat/internal/testutil"
)

// A region that sends the link a packet larger than any it has reason to
// send (here it announces 64 MiB and never sends them) loses the
// connection at once: paho allocated the whole announced length and
// waited for its bytes, the connection held (keepalive answered by
// nobody) for most of a minute, and a region could make the leader
// allocate up to 256 MiB per packet. The link reconnects, and tells the
// limit in its CONNECT.
func TestLinkDropsAPacketTooLargeAtOnce(t *testing.T) {
	var mu sync.Mutex
	var connects []*packets.Connect
	url := fakePeer(t, func(c net.Conn) {
		go func() {
			first := false
			for {
				cp, err := packets.ReadPacket(c)
				if err != nil {
					return
				}
				switch p := cp.Content.(type) {
				case *packets.Connect:
					mu.Lock()
					connects = append(connects, p)
					first = len(connects) == 1
					mu.Unlock()
					_, _ = packets.NewControlPacket(packets.CONNACK).WriteTo(c)
				case *packets.Pingreq:
					_, _ = packets.NewControlPacket(packets.PINGRESP).WriteTo(c)
				case *packets.Subscribe:
					sa := packets.NewControlPacket(packets.SUBACK)
					sa.Content.(*packets.Suback).PacketID = p.PacketID
					for range p.Subscriptions {
						sa.Content.(*packets.Suback).Reasons = append(sa.Content.(*packets.Suback).Reasons, 0)
					}
					_, _ = sa.WriteTo(c)
					if first {
						// Then, once the link has nothing waiting, a
						// PUBLISH announcing 64 MiB: type, then the
						// remaining length as a variable byte integer.
						first = false
						_, _ = c.Write([]byte{0x30, 0x80, 0x80, 0x80, 0x20, 0, 14})
					}
				}
			}
		}()
	})
	runEphemeralLink(t, url, oneRoute{}, dropPublisher{})
	testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(connects) < 2 {
			return fmt.Errorf("%d connection(s): the link still holds the one whose packet announced 64 MiB", len(connects))
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	if mp := connects[0].Properties.MaximumPacketSize; mp == nil || *mp != maxInboundPacket {
		t.Errorf("the link's CONNECT tells Maximum Packet Size %v, want %d", mp, maxInboundPacket)
	}
}
