package node_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgechat/edgechat/bridge/push/pushtest"
	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
)

// Push decisions hold for the whole cluster (LESSONS 6): a phone
// connected to another node than the sender's gets no push; one that
// went offline gets exactly one, from one node, after the grace period;
// one back within the grace period on a third node gets none.
func TestPushDecisionsAcrossNodes(t *testing.T) {
	opt, m := withPushMocks(t)
	nodes := nodetest.StartCluster(t, 3, opt, nodetest.WithConfig(func(c *node.Config) {
		c.PushGrace, c.PushAckTimeout = flowGrace, flowAckTimeout
	}))
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	aliceTok, bobTok := n1.NewUser(t, "alice"), n1.NewUser(t, "bob")
	phoneToken := pushtest.NewDeviceToken()
	if st := api(t, n2, bobTok, "POST", "/user/me/devices",
		map[string]any{"device": "phone", "platform": "apns", "token": phoneToken}, nil); st != 200 {
		t.Fatalf("register the phone: %d", st)
	}
	sender := &mqttSender{c: mustConnectV5(t, n2.MQTTAddr(), "alice", "laptop", aliceTok)}
	pushes := func(id string) int { return m.apnsPushes(phoneToken, id) }
	decisions := func(verdict string) float64 {
		sum := 0.0
		for _, n := range nodes {
			v, _ := testutil.MetricValue(t, n.Registry(), "edgechat_push_decisions_total", map[string]string{"verdict": verdict})
			sum += v
		}
		return sum
	}
	decided := func(verdict string, want float64) {
		t.Helper()
		checkFor(t, 15*time.Second, 20*time.Millisecond, func() error {
			if v := decisions(verdict); v != want {
				return fmt.Errorf("%s decisions = %v, want %v", verdict, v, want)
			}
			return nil
		})
	}
	offline := func(clientID string) {
		t.Helper()
		checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
			for _, n := range nodes {
				if n.ClientConnected(clientID) {
					return errors.New(clientID + " still registered as connected")
				}
			}
			return nil
		})
	}

	// Connected to n3 while alice writes through n2.
	phone := mustConnectV5(t, n3.MQTTAddr(), "bob", "phone", bobTok)
	phone.Sub(t, "user/bob/newMessage")
	online := sender.send(t, "user/bob/newMessage", "you are on n3")
	decided("connected", 1)

	// Offline: one push, after the grace period, from one node.
	_ = phone.Client.Disconnect(&paho.Disconnect{ReasonCode: 0})
	offline("bob/phone")
	start := time.Now()
	away := sender.send(t, "user/bob/newMessage", "where are you?")
	checkFor(t, 15*time.Second, 20*time.Millisecond, func() error {
		if pushes(away) == 0 {
			return errors.New("no push yet")
		}
		return nil
	})
	if el := time.Since(start); el < flowGrace {
		t.Errorf("pushed after %v, before the grace period of %v", el, flowGrace)
	}
	decided("push", 1)

	// Back within the grace period, on n1.
	late := sender.send(t, "user/bob/newMessage", "catch this on n1")
	phone = mustConnectV5(t, n1.MQTTAddr(), "bob", "phone", bobTok)
	phone.Sub(t, "user/bob/newMessage")
	decided("connected", 2)

	for id, want := range map[string]int{online: 0, away: 1, late: 0} {
		if got := pushes(id); got != want {
			t.Errorf("message %s: %d pushes, want %d", id, got, want)
		}
	}
}

// A half-open device on a node that does not lead is pushed once: its
// node sees the delivery unacknowledged and records it through Raft, and
// the leader pushes it.
func TestPushAHalfOpenDeviceOnAnotherNode(t *testing.T) {
	opt, m := withPushMocks(t)
	nodes := nodetest.StartCluster(t, 3, opt, nodetest.WithConfig(func(c *node.Config) {
		c.PushGrace, c.PushAckTimeout = flowGrace, flowAckTimeout
	}))
	var away *nodetest.Node // a node that does not lead, for the phone
	for _, n := range nodes {
		if !n.IsLeader() {
			away = n
		}
	}
	aliceTok, bobTok := nodes[0].NewUser(t, "alice"), nodes[0].NewUser(t, "bob")
	phoneToken := pushtest.NewDeviceToken()
	if st := api(t, away, bobTok, "POST", "/user/me/devices",
		map[string]any{"device": "phone", "platform": "apns", "token": phoneToken}, nil); st != 200 {
		t.Fatalf("register the phone: %d", st)
	}
	halfOpenDevice(t, away.MQTTAddr(), "bob", "phone", bobTok, "user/bob/newMessage")
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		for _, n := range nodes {
			if !n.ClientConnected("bob/phone") {
				return errors.New("the half-open phone is not registered as connected everywhere")
			}
		}
		return nil
	})
	sender := &mqttSender{c: mustConnectV5(t, nodes[0].MQTTAddr(), "alice", "laptop", aliceTok)}
	id := sender.send(t, "user/bob/newMessage", "into the lift")
	pushes := func() int { return m.apnsPushes(phoneToken, id) }
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if pushes() == 0 {
			return errors.New("no push yet")
		}
		return nil
	})
	outboxesEmpty(t, nodes)
	if n := pushes(); n != 1 {
		t.Fatalf("%d pushes for one message", n)
	}
}
