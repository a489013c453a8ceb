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

// A link connection that ends while the link waits for a SUBACK is
// dialled again at once: paho ends a SUBSCRIBE waiting for its SUBACK
// only at its own timeout, not when the connection is lost, so the link
// waited out Config.Timeout (10 s by default) before it dialled again,
// its watched users' presence neither current nor "unknown" meanwhile.
func TestLinkLostWhileSubscribingDialsAgainAtOnce(t *testing.T) {
	var mu sync.Mutex
	connects := 0
	url := fakePeer(t, func(c net.Conn) {
		mu.Lock()
		connects++
		first := connects == 1
		mu.Unlock()
		go answerMQTT(c, func(p any) {
			sub, ok := p.(*packets.Subscribe)
			if !ok {
				return
			}
			if first {
				_ = c.Close() // gone before it answers
				return
			}
			sa := packets.NewControlPacket(packets.SUBACK)
			sa.Content.(*packets.Suback).PacketID = sub.PacketID
			for range sub.Subscriptions {
				sa.Content.(*packets.Suback).Reasons = append(sa.Content.(*packets.Suback).Reasons, 0)
			}
			_, _ = sa.WriteTo(c)
		})
	})
	runEphemeralLink(t, url, oneRoute{"presence/bob@us"}, dropPublisher{})
	testutil.CheckFor(t, 2*time.Second, 10*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if connects < 2 {
			return fmt.Errorf("%d connection(s): the link has not dialled again since its connection ended while it subscribed", connects)
		}
		return nil
	})
}
