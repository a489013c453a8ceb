package node_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/edgechat/edgechat/bridge/push/pushtest"
	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
)

// A device whose connection was on a node the cluster has marked down (cut
// off, or crashed, but still a member) is not connected: nothing committed
// reaches that node, so the message cannot reach the device live. Its
// registry entry stays (the node cannot commit its withdrawal), and the
// push sender took it as connected and held every message back for as
// long as the node stayed away: a phone whose app was closed after the
// cut-off node sent it away (DISCONNECT 0x89) was never notified.
func TestPushADeviceLeftRegisteredOnANodeMarkedDown(t *testing.T) {
	opt, m := withPushMocks(t)
	nodes := nodetest.StartCluster(t, 2, opt, nodetest.WithConfig(func(c *node.Config) {
		c.PushGrace, c.PushAckTimeout = flowGrace, flowAckTimeout
	}))
	n1 := nodes[0]
	aliceTok, bobTok := n1.NewUser(t, "alice"), n1.NewUser(t, "bob")
	phoneToken := pushtest.NewDeviceToken()
	if st := api(t, n1, bobTok, "POST", "/user/me/devices",
		map[string]any{"device": "phone", "platform": "apns", "token": phoneToken}, nil); st != 200 {
		t.Fatalf("register the phone: %d", st)
	}
	n3, proxy, _ := joinBehindProxy(t, n1)
	phone := mustConnectV5(t, "tcp://"+n3.MQTTAddr(), "bob", "phone", bobTok)
	phone.Sub(t, "user/bob/newMessage")
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if !n1.ClientConnected("bob/phone") {
			return errors.New("bob/phone on n3 not registered yet")
		}
		return nil
	})

	proxy.SetCut(true)
	checkFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		if _, ok := phone.ServerDisconnect(); !ok {
			return errors.New("n3, cut off, has not sent bob's phone away yet")
		}
		var status struct {
			Members []struct {
				Name string `json:"name"`
				Down bool   `json:"down"`
			} `json:"members"`
		}
		if st := api(t, n1, aliceTok, "GET", "/cluster/status", nil, &status); st != 200 { // alice, the first account, is an admin
			return fmt.Errorf("GET /cluster/status: %d", st)
		}
		for _, mem := range status.Members {
			if mem.Name == "n3" && !mem.Down {
				return errors.New("n3 not marked down yet")
			}
		}
		return nil
	})
	// The phone's app is closed now: it does not connect again.
	sender := &mqttSender{c: mustConnectV5(t, n1.MQTTAddr(), "alice", "laptop", aliceTok)}
	id := sender.send(t, "user/bob/newMessage", "are you there?")
	checkFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		if m.apnsPushes(phoneToken, id) > 0 {
			return nil
		}
		return fmt.Errorf("bob's phone not pushed (registered as connected: %v, on n3, marked down)", n1.ClientConnected("bob/phone"))
	})
}
