package node_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgechat/edgechat/node/nodetest"
)

// BenchmarkDurableDirect measures durable direct messages end to end on
// one node: real MQTT clients, commit through Raft (fsync on), PUBACK.
// go test -run '^$' -bench BenchmarkDurableDirect -benchtime 5000x ./node/
func BenchmarkDurableDirect(b *testing.B) {
	n := nodetest.StartNode(b)
	const senders = 32
	n.NewUser(b, "sink")
	clients := make([]*paho.Client, senders)
	for i := range clients {
		name := fmt.Sprintf("sender%02d", i)
		tok := n.NewUser(b, name)
		clients[i] = mustConnectV5(b, n.MQTTURL, name, "bench", tok).Client
	}
	var next atomic.Int64
	b.ResetTimer()
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Add(1)
		go func(c *paho.Client) {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > int64(b.N) {
					return
				}
				pr, err := c.Publish(context.Background(), &paho.Publish{Topic: "user/sink/newMessage", QoS: 1,
					Payload: []byte(fmt.Sprintf(`{"cid":"b%d","type":"text","body":"benchmark message body of some length"}`, i))})
				if err != nil || pr.ReasonCode != 0 {
					b.Errorf("publish: %v %+v", err, pr)
					return
				}
			}
		}(c)
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}
