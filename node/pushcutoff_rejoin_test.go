package node_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/edgechat/edgechat/bridge/push/pushtest"
	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
)

// A node cut off from its cluster and back pushes nothing its devices
// already had (LESSONS rows 6, 18): bob's phone on n3 got and
// acknowledged three messages; n3 is cut off (the phone sent away with
// 0x89, n3 marked down before the messages' grace ends) and comes back,
// and the phone connects to it again. Only the message committed while
// the phone was away is pushed, once; the three are not, neither when
// n3 is marked down (its registry entries count as not connected then)
// nor when it applies what it missed and takes its clients again.
func TestANodeBackFromACutPushesNothingItsDevicesHad(t *testing.T) {
	opt, m := withPushMocks(t)
	// A grace longer than --node-down-after (3 s): n3 is marked down
	// while the messages it delivered still wait for their decision.
	timers := nodetest.WithConfig(func(c *node.Config) { c.PushGrace, c.PushAckTimeout = 5*time.Second, flowAckTimeout })
	nodes := nodetest.StartCluster(t, 2, opt, timers)
	n1 := nodes[0]
	aliceTok, bobTok := n1.NewUser(t, "alice"), n1.NewUser(t, "bob")
	phoneToken := pushtest.NewDeviceToken()
	if st := api(t, n1, bobTok, "POST", "/user/me/devices",
		map[string]any{"device": "phone", "platform": "apns", "token": phoneToken}, nil); st != 200 {
		t.Fatalf("register the phone: %d", st)
	}
	n3, proxy, _ := joinBehindProxyAs(t, n1, "n3", opt, timers)
	addr := "tcp://" + n3.MQTTAddr()
	phone := mustConnectV5(t, addr, "bob", "phone", bobTok)
	phone.Sub(t, "user/bob/newMessage")
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if !n1.ClientConnected("bob/phone") {
			return errors.New("bob/phone on n3 not registered yet")
		}
		return nil
	})
	sender := &mqttSender{c: mustConnectV5(t, n1.MQTTAddr(), "alice", "laptop", aliceTok)}
	var had []string
	for i := range 3 {
		had = append(had, sender.send(t, "user/bob/newMessage", fmt.Sprintf("before the cut %d", i)))
	}
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if got := len(phone.Received("user/bob/newMessage")); got < len(had) {
			return fmt.Errorf("the phone got %d of %d messages", got, len(had))
		}
		return nil
	})

	proxy.SetCut(true)
	checkFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		if _, ok := phone.ServerDisconnect(); !ok {
			return errors.New("n3, cut off, has not sent bob's phone away yet")
		}
		return wantMarkedDown(t, n1, aliceTok, map[string]bool{"n3": true})
	})
	away := sender.send(t, "user/bob/newMessage", "while the phone is away")
	pushes := func(id string) int { return m.apnsPushes(phoneToken, id) }
	checkFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		if n := pushes(away); n != 1 {
			return fmt.Errorf("the message sent while the phone was away pushed %d times, want 1", n)
		}
		return nil
	})

	proxy.SetCut(false)
	checkFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		return wantMarkedDown(t, n1, aliceTok, nil)
	})
	var back *mqtttest.Client
	checkFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		c, ca, err := mqtttest.Dial(t, addr, mqtttest.Options{ClientID: "bob/phone", Username: "bob", Password: bobTok})
		if err != nil {
			return fmt.Errorf("the phone's CONNECT to n3 after the heal: %+v %v", ca, err)
		}
		back = c
		return nil
	})
	back.Sub(t, "user/bob/newMessage")
	// Every message decided: the leader's outbox is empty.
	checkFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		var queued []snowflake.ID
		for _, n := range nodes {
			if !n.IsLeader() {
				continue
			}
			if err := n.Push.EachQueued(func(id snowflake.ID) bool { queued = append(queued, id); return true }); err != nil {
				return err
			}
			if len(queued) > 0 {
				return fmt.Errorf("messages %v still queued for push", queued)
			}
			return nil
		}
		return errors.New("no leader among n1, n2")
	})
	for _, id := range had {
		if n := pushes(id); n != 0 {
			t.Errorf("message %s, which the phone got and acknowledged before the cut, pushed %d times", id, n)
		}
	}
	if n := pushes(away); n != 1 {
		t.Errorf("the message sent while the phone was away pushed %d times, want 1", n)
	}
}
