package broker

import (
	"net"
	"testing"

	pahopk "github.com/eclipse/paho.golang/packets"

	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
)

// dialWithDelayedWill connects clientID as uid (MQTT 5, persistent
// session) with a will "gone" on willTopic delayed by delay seconds, and
// subscribes to filter at QoS 1.
func dialWithDelayedWill(t *testing.T, addr, uid, clientID, willTopic string, delay uint32, filter string) net.Conn {
	t.Helper()
	c, _, _ := dialRaw(t, addr, uid, clientID, false, func(cp *pahopk.Connect) {
		cp.WillFlag, cp.WillQOS, cp.WillTopic, cp.WillMessage = true, 1, willTopic, []byte("gone")
		cp.WillProperties = &pahopk.Properties{WillDelayInterval: &delay}
	}, filter)
	return c
}

// In --dev a signed-in phone may leave a will on an open topic, delayed
// (MQTT 5 Will Delay Interval). When its persistent session, left
// offline, overflows, the node ends the session (session_overflow): the
// will is published then, since a will goes at the end of its delay or
// of its session, whichever comes first [MQTT-3.1.3-9]. Before, the will
// waited for its delay, and a reconnection in the meantime (which finds
// no session) cancelled it: never published.
func TestTheDelayedWillOfAnOverflowedSessionIsPublished(t *testing.T) {
	e := startBroker(t, func(c *Config) { c.Dev = true })
	watcher := mqtttest.MustDial(t, e.addr, mqtttest.Options{ClientID: "watcher"})
	watcher.MustSub(t, "status/+")
	bob := dialWithDelayedWill(t, e.addr, "bob", "bob/phone", "status/bob", 300, "user/bob/newMessage")
	_ = bob.Close() // gone without DISCONNECT: the will waits for its delay
	waitOffline(t, e, "bob/phone")
	store := int(e.b.srv.Options.Capabilities.MaximumInflight)
	for i := 0; i <= store; i++ {
		storeQuotaDM(t, e, i)
	}
	if got := watcher.Next(t); got.Topic != "status/bob" || string(got.Payload) != "gone" {
		t.Fatalf("watcher got %q on %q, want bob's will", got.Payload, got.Topic)
	}
}
