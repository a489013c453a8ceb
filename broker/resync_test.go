package broker

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
	"github.com/edgechat/edgechat/internal/wire"
)

// After a snapshot replaced the node's state, its signed-in clients are
// closed with "server busy" so that they reconnect and sync: nothing the
// snapshot brought was delivered live. Anonymous dev clients, which
// read no chat, stay.
func TestResyncClientsClosesSignedInConnections(t *testing.T) {
	e := startBroker(t, func(c *Config) { c.Dev = true })
	alice := mustV5(t, e.addr, "alice", "phone")
	bob := mustV5(t, e.addr, "bob", "laptop")
	anon := mqtttest.MustDial(t, e.addr, mqtttest.Options{ClientID: "sensor-1"})

	e.b.ResyncClients()
	for name, c := range map[string]*mqtttest.Client{"alice": alice, "bob": bob} {
		testutil.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
			code, ok := c.ServerDisconnect()
			if !ok {
				return fmt.Errorf("%s not disconnected", name)
			}
			if code != packets.ErrServerBusy.Code {
				return fmt.Errorf("%s disconnected with %#x, want %#x", name, code, packets.ErrServerBusy.Code)
			}
			return nil
		})
	}
	if code, _ := anon.Pub(t, "sensors/1", 1, "21.5"); code != 0 {
		t.Fatalf("the anonymous client after the resync: publish answered %#x", code)
	}
	if _, ok := anon.ServerDisconnect(); ok {
		t.Fatal("an anonymous dev client was disconnected")
	}
	// They come back.
	again := mustV5(t, e.addr, "alice", "phone")
	if r := again.Sub(t, "user/alice/#"); r[0] >= 0x80 {
		t.Fatal(errors.New("alice cannot subscribe again after the resync"))
	}
}

// Committed messages that do not fit the node's live delivery queue are
// dropped; the node then closes its signed-in connections with "server
// busy" so that their clients sync: they would not know otherwise that
// they missed a message (LESSONS 8).
func TestAFullLiveDeliveryQueueMakesClientsSync(t *testing.T) {
	e := startBroker(t, nil)
	alice := mustV5(t, e.addr, "alice", "phone")
	alice.MustSub(t, "user/alice/newMessage")
	c := e.b.committed
	c.mu.Lock()
	c.max = 1
	c.mu.Unlock()

	testutil.CheckFor(t, 5*time.Second, time.Millisecond, func() error {
		if code, ok := alice.ServerDisconnect(); ok {
			if code != packets.ErrServerBusy.Code {
				t.Fatalf("alice disconnected with %#x, want %#x", code, packets.ErrServerBusy.Code)
			}
			return nil
		}
		for i := range 100 {
			e.b.DeliverCommitted(wire.Outbound{Topic: "user/alice/newMessage", Payload: []byte(fmt.Sprintf(`{"n":%d}`, i)), QoS: 1})
		}
		return errors.New("alice was not told to sync")
	})
	if got, _ := testutil.MetricValue(t, e.reg, "edgechat_mqtt_refused_total", map[string]string{"reason": "live_queue_full"}); got < 1 {
		t.Fatalf("refused{live_queue_full} = %v", got)
	}
}

// A persistent session left offline on the node missed the chat
// messages that a snapshot brought, or that did not fit the live
// delivery queue, as much as a connected client did: none of them was
// queued for it. It came back resumed (session present 1) with what was
// queued and without those, and a client that trusts its session never
// learnt of them. Now such sessions end with the resync: the client
// comes back to session present 0, subscribes again and syncs.
func TestResyncEndsPersistentSessionsLeftOffline(t *testing.T) {
	for _, cause := range []string{"snapshot", "live_queue_full"} {
		t.Run(cause, func(t *testing.T) {
			e := startBroker(t, nil)
			bob, _, _ := dialStoreQuota(t, e.addr, "bob", "bob/phone", 0, "user/bob/newMessage")
			_ = bob.Close()
			testutil.CheckFor(t, waitFor, time.Millisecond, func() error {
				if cl, ok := e.b.srv.Clients.Get("bob/phone"); !ok || !cl.Closed() {
					return errors.New("bob's session not offline yet")
				}
				return nil
			})
			storeQuotaDM(t, e, 1) // queued for bob
			switch cause {
			case "snapshot":
				e.b.ResyncClients()
			case "live_queue_full":
				c := e.b.committed
				c.mu.Lock()
				c.max = 1
				c.mu.Unlock()
				// alice is connected: her DISCONNECT says the resync ran
				// (it ends the sessions left offline first).
				alice := mustV5(t, e.addr, "alice", "phone")
				alice.MustSub(t, "user/alice/newMessage")
				testutil.CheckFor(t, waitFor, time.Millisecond, func() error {
					if _, ok := alice.ServerDisconnect(); ok {
						return nil
					}
					for i := range 100 {
						e.b.DeliverCommitted(wire.Outbound{Topic: "user/bob/newMessage", Payload: []byte(fmt.Sprintf(`{"n":%d}`, i)), QoS: 1})
					}
					return errors.New("no resync yet")
				})
			}
			if _, _, present := dialStoreQuota(t, e.addr, "bob", "bob/phone", 0); present {
				t.Fatal("session present 1 after the resync: bob resumes his session without what he missed")
			}
		})
	}
}

// A DISCONNECT 0x89 that closes a connection so that its client syncs
// says why in its reason string: it said only "server busy", so a client
// (or its user, reading mosquitto_sub's or mqtt.js's error) could not
// tell a node cut off from its cluster, where reconnecting to the same
// node is refused, from a busy one (by hand, session 37 handtry).
func TestServerBusyDisconnectsSayWhy(t *testing.T) {
	e := startBroker(t, nil)
	for _, c := range []struct {
		what, want string
		do         func()
	}{
		{"caught up from a snapshot", "from a snapshot; reconnect and sync", e.b.ResyncClients},
		{"cut off", "cut off from its cluster; reconnect to another node and sync", func() { e.b.SetCutOff(true) }},
		{"left", "left its cluster; reconnect to another node and sync", e.b.LeftCluster},
	} {
		alice := mustV5(t, e.addr, "alice", "phone")
		c.do()
		testutil.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
			code, ok := alice.ServerDisconnect()
			if !ok {
				return fmt.Errorf("%s: alice not disconnected", c.what)
			}
			if reason := alice.ServerDisconnectReason(); code != packets.ErrServerBusy.Code || !strings.HasPrefix(reason, "server busy: ") || !strings.Contains(reason, c.want) {
				return fmt.Errorf("%s: DISCONNECT %#x %q, want 0x89 saying %q", c.what, code, reason, c.want)
			}
			return nil
		})
		e.b.SetCutOff(false)
	}
}
