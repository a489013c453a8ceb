package broker

import (
	"bufio"
	"net"
	"testing"
	"time"

	pahopk "github.com/eclipse/paho.golang/packets"

	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
)

// dialWithDelayedWill connects clientID as uid (MQTT 5, persistent
// session) with a will "gone" on willTopic delayed by delay seconds, and
// subscribes to filter at QoS 1.
func dialWithDelayedWill(t *testing.T, addr, uid, clientID, willTopic string, delay uint32, filter string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	cp := pahopk.NewControlPacket(pahopk.CONNECT).Content.(*pahopk.Connect)
	cp.ProtocolName, cp.ProtocolVersion = "MQTT", 5
	cp.ClientID, cp.KeepAlive, cp.CleanStart = clientID, 300, false
	cp.UsernameFlag, cp.Username, cp.PasswordFlag, cp.Password = true, uid, true, []byte("tok:"+uid)
	expiry := uint32(600)
	cp.Properties = &pahopk.Properties{SessionExpiryInterval: &expiry}
	cp.WillFlag, cp.WillQOS, cp.WillTopic, cp.WillMessage = true, 1, willTopic, []byte("gone")
	cp.WillProperties = &pahopk.Properties{WillDelayInterval: &delay}
	if _, err := cp.WriteTo(c); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(waitFor))
	r := bufio.NewReader(c)
	p, err := pahopk.ReadPacket(r)
	if err != nil {
		t.Fatalf("connack: %v", err)
	}
	if ca, ok := p.Content.(*pahopk.Connack); !ok || ca.ReasonCode != 0 {
		t.Fatalf("connack: %+v", p.Content)
	}
	sp := pahopk.NewControlPacket(pahopk.SUBSCRIBE).Content.(*pahopk.Subscribe)
	sp.PacketID = 1
	sp.Subscriptions = []pahopk.SubOptions{{Topic: filter, QoS: 1}}
	if _, err := sp.WriteTo(c); err != nil {
		t.Fatal(err)
	}
	for {
		p, err := pahopk.ReadPacket(r)
		if err != nil {
			t.Fatalf("suback: %v", err)
		}
		if p.Type == pahopk.SUBACK {
			return c
		}
	}
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
