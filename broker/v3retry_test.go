package broker

import (
	"errors"
	"fmt"
	"testing"
	"time"

	pahov3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/internal/wire"
)

// A 3.1.1 client's QoS 1 message that could not be committed (no
// quorum, a timeout) is retried: MQTT 3.1.1 has no negative PUBACK, and
// a client resends an unacknowledged publish only when it reconnects
// [MQTT-4.4.0-1], so the node closes the connection, as for a refusal
// by the topic table. Dropped without an answer on a connection that
// stayed, the message was never sent again (protocol.md said "the
// client retries"): it waited for its PUBACK for as long as the
// connection lived, and was never stored.
func TestAV311MessageNotCommittedIsRetriedOnReconnection(t *testing.T) {
	e := startBroker(t, nil)
	opts := pahov3.NewClientOptions().AddBroker("tcp://" + e.addr).
		SetClientID("alice/v3").SetUsername("alice").SetPassword("tok:alice").
		SetProtocolVersion(4).SetCleanSession(false).SetAutoReconnect(true).
		SetMaxReconnectInterval(time.Second).SetConnectTimeout(waitFor)
	alice := pahov3.NewClient(opts)
	if tok := alice.Connect(); !tok.WaitTimeout(waitFor) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	t.Cleanup(func() { alice.Disconnect(100) })
	e.chat.setErr(wire.ErrUnavailable)
	tok := alice.Publish("user/bob/newMessage", 1, false, `{"cid":"c1","type":"text","body":"hi"}`)
	testutil.CheckFor(t, waitFor, 10*time.Millisecond, func() error {
		if e.chat.callCount() == 0 {
			return errors.New("store not reached yet")
		}
		return nil
	})
	e.chat.setErr(nil) // the cluster can commit again
	// (paho completes the first token when it resends the message under
	// a new one: the store tells.)
	_ = tok
	testutil.CheckFor(t, waitFor, 10*time.Millisecond, func() error {
		if n := e.chat.storedCount(); n != 1 {
			return fmt.Errorf("%d messages stored after %d store calls, want 1: the 3.1.1 message not committed once was never sent again", n, e.chat.callCount())
		}
		return nil
	})
}
