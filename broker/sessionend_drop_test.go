package broker

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/testutil"
)

// dialCleanStart connects clientID as uid over MQTT 5 with clean start,
// which ends any session the client ID had.
func dialCleanStart(t *testing.T, addr, uid, clientID string) net.Conn {
	t.Helper()
	c, _, present := dialRaw(t, addr, uid, clientID, true, nil)
	if present {
		t.Fatal("a clean start found a session present")
	}
	return c
}

// waitOffline waits until clientID's connection has ended (its session
// stays).
func waitOffline(t *testing.T, e *testEnv, clientID string) {
	t.Helper()
	testutil.CheckFor(t, waitFor, time.Millisecond, func() error {
		if cl, ok := e.b.srv.Clients.Get(clientID); !ok || !cl.Closed() {
			return fmt.Errorf("%s not offline yet", clientID)
		}
		return nil
	})
}

// The deliveries a persistent session still held when it ended (here:
// its client came back with clean start) are discarded, and counted in
// edgechat_mqtt_messages_dropped_total by the class of their topic and
// reason "session_ended". They were counted as class "unknown", reason
// "qos_expired": neither what was lost nor why. And a session resumed
// (session present 1) hands its deliveries to the new connection: none
// is dropped, but each was counted as dropped ("unknown", "qos_expired")
// when the old connection's copy was cleared.
func TestDeliveriesOfAnEndedSessionCountAsSessionEnded(t *testing.T) {
	e := startBroker(t, nil)
	dropped := func(class, reason string) float64 {
		return metric(t, e, "edgechat_mqtt_messages_dropped_total", map[string]string{"class": class, "reason": reason})
	}
	bob, _, _ := dialStoreQuota(t, e.addr, "bob", "bob/phone", 0, "user/bob/newMessage")
	_ = bob.Close()
	waitOffline(t, e, "bob/phone")
	for i := 0; i < 3; i++ {
		storeQuotaDM(t, e, i)
	}
	// Resumed: the three go to the new connection (not acknowledged).
	bob, _, present := dialStoreQuota(t, e.addr, "bob", "bob/phone", 0)
	if !present {
		t.Fatal("bob's session was not resumed")
	}
	if got := dropped("unknown", "qos_expired"); got != 0 {
		t.Fatalf("a resumed session's %v deliveries were counted as dropped (class unknown, qos_expired)", got)
	}
	_ = bob.Close()
	waitOffline(t, e, "bob/phone")

	// Clean start: the session ends, the three unacknowledged with it.
	dialCleanStart(t, e.addr, "bob", "bob/phone")
	testutil.CheckFor(t, waitFor, time.Millisecond, func() error {
		if got := dropped("direct", "session_ended"); got != 3 {
			return fmt.Errorf("dropped{class=direct,reason=session_ended} = %v, want 3 (unknown/qos_expired: %v)",
				got, dropped("unknown", "qos_expired"))
		}
		return nil
	})
	if got := dropped("unknown", "qos_expired"); got != 0 {
		t.Fatalf("dropped{class=unknown,reason=qos_expired} = %v, want 0", got)
	}
}
