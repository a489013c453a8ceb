package node_test

import (
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgechat/edgechat/node/nodetest"
)

// BenchmarkDurableDirect measures durable direct messages end to end on
// one node: real MQTT clients, commit through Raft (fsync on), PUBACK;
// 32 senders with 1 or 16 publishes in flight each (pipelined on one
// connection).
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
	var run atomic.Int64
	for _, inflight := range []int{1, 16} {
		b.Run(fmt.Sprintf("inflight=%d", inflight), func(b *testing.B) {
			prefix := fmt.Sprintf("r%d-", run.Add(1))
			lats := publishDurable(b, clients, inflight, func(i int64) *paho.Publish {
				return &paho.Publish{Topic: "user/sink/newMessage", QoS: 1,
					Payload: []byte(fmt.Sprintf(`{"cid":"%s%d","type":"text","body":"benchmark message body of some length"}`, prefix, i))}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
			b.ReportMetric(float64(lats[len(lats)*99/100].Microseconds())/1000, "puback-p99-ms")
		})
	}
}
