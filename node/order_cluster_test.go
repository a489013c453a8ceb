package node_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgechat/edgechat/node/nodetest"
)

// Publishes pipelined on one connection to a node (hundreds in flight,
// no PUBACK awaited before the next) reach a recipient connected to
// another node live in the order they were sent, each once, and are
// stored in that order (LESSONS 3: per-sender order across nodes). The
// sender's node forwards proposals to the leader in batches and the
// recipient's node gets the deliveries over its own queue: each step
// keeps the order.
func TestPipelinedPublishesArriveInOrderAcrossNodes(t *testing.T) {
	nodes := nodetest.StartCluster(t, 3)
	aliceTok, bobTok := nodes[0].NewUser(t, "alice"), nodes[0].NewUser(t, "bob")
	bob := mustConnectV5(t, nodes[2].MQTTURL, "bob", "phone", bobTok)
	bob.MustSub(t, "user/bob/newMessage")
	alice := mustConnectV5(t, nodes[1].MQTTURL, "alice", "laptop", aliceTok)

	const n = 300
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := 0; i < n; i++ {
		if _, err := alice.PublishWithOptions(ctx, &paho.Publish{Topic: "user/bob/newMessage", QoS: 1,
			Payload: []byte(fmt.Sprintf(`{"cid":"o-%d","type":"text","body":"%d"}`, i, i))},
			paho.PublishOptions{Method: paho.PublishMethod_AsyncSend}); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	checkFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		if got := len(bob.Received("user/bob/newMessage")); got < n {
			return fmt.Errorf("bob has %d of %d", got, n)
		}
		return nil
	})
	got := bob.Received("user/bob/newMessage")
	if len(got) != n {
		t.Fatalf("bob received %d deliveries of %d messages", len(got), n)
	}
	for i, m := range got {
		if b := decodeEnvelope(t, m.Payload).Body; b != fmt.Sprint(i) {
			t.Fatalf("delivery %d is message %s: out of order", i, b)
		}
	}
	var page syncPage
	if st := api(t, nodes[0], bobTok, "GET", "/chat/sync?limit=1000", nil, &page); st != 200 || len(page.Messages) != n {
		t.Fatalf("sync: %d, %d messages", st, len(page.Messages))
	}
	for i, m := range page.Messages {
		if m.Body != fmt.Sprint(i) {
			t.Fatalf("stored message %d is %s: out of order", i, m.Body)
		}
	}
}
