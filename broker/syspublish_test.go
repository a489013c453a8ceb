package broker

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgechat/edgechat/internal/testutil"
)

// A publish to $SYS is refused as any publish the topic table does not
// allow (protocol.md, Topics): PUBACK 0x87 for a v5 QoS 1 publish (PUBREC
// for QoS 2), the connection closed for a 3.1.1 one. mochi dropped it
// before any check and answered nothing, so the client waited for good
// for an acknowledgement (holding one of its Receive Maximum slots), and
// a topic alias it set stayed on its earlier topic.
func TestAPublishToSYSIsRefused(t *testing.T) {
	e := startBroker(t, nil)
	bob := mustV5(t, e.addr, "bob", "d1")
	for _, qos := range []byte{1, 2} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		pr, err := bob.Publish(ctx, &paho.Publish{Topic: "$SYS/broker/version", QoS: qos, Payload: []byte("x")})
		cancel()
		if pr == nil || pr.ReasonCode != 0x87 {
			t.Errorf("v5 QoS %d publish to $SYS: %+v %v, want reason 0x87", qos, pr, err)
		}
	}

	v3, _, err := dialV3(t, e.addr, "alice/v3", "alice", "tok:alice")
	if err != nil {
		t.Fatal(err)
	}
	v3.Publish("$SYS/broker/version", 1, false, "x")
	testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if v3.IsConnectionOpen() {
			return errors.New("the 3.1.1 connection is still open after its QoS 1 publish to $SYS")
		}
		return nil
	})
}
