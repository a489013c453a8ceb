package node_test

import (
	"context"
	"fmt"
	"net"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgechat/edgechat/node/nodetest"
)

// BenchmarkCrossNodeDelivery: bob has one device on n1 (the sender's
// node) and one on n2; each durable direct message from alice on n1 is
// timed from publish to arrival on both. Reports p50/p99 of each and the
// added latency of crossing nodes.
//
//	go test -run '^$' -bench BenchmarkCrossNodeDelivery -benchtime 2000x ./node/
func BenchmarkCrossNodeDelivery(b *testing.B) {
	nodes := nodetest.StartCluster(b, 3)
	n1, n2 := nodes[0], nodes[1]
	aliceTok, bobTok := n1.NewUser(b, "alice"), n1.NewUser(b, "bob")
	var mu sync.Mutex
	sentAt := map[string]time.Time{}
	lat := map[string][]time.Duration{}
	arrive := func(where string) func(paho.PublishReceived) (bool, error) {
		return func(pr paho.PublishReceived) (bool, error) {
			now := time.Now()
			var e struct{ CID string }
			_ = jsonUnmarshal(pr.Packet.Payload, &e)
			mu.Lock()
			if t0, ok := sentAt[e.CID]; ok {
				lat[where] = append(lat[where], now.Sub(t0))
			}
			mu.Unlock()
			return true, nil
		}
	}
	dial := func(addr, id, user, tok string, h func(paho.PublishReceived) (bool, error)) *paho.Client {
		conn, err := net.Dial("tcp", strings.TrimPrefix(addr, "tcp://"))
		if err != nil {
			b.Fatal(err)
		}
		cfg := paho.ClientConfig{Conn: conn}
		if h != nil {
			cfg.OnPublishReceived = []func(paho.PublishReceived) (bool, error){h}
		}
		c := paho.NewClient(cfg)
		if _, err := c.Connect(context.Background(), &paho.Connect{ClientID: id, Username: user, UsernameFlag: true,
			Password: []byte(tok), PasswordFlag: true, KeepAlive: 60, CleanStart: true}); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
		return c
	}
	local := dial(n1.MQTTURL, "bob/local", "bob", bobTok, arrive("same-node"))
	remote := dial(n2.MQTTURL, "bob/remote", "bob", bobTok, arrive("cross-node"))
	for _, c := range []*paho.Client{local, remote} {
		if _, err := c.Subscribe(context.Background(), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "user/bob/newMessage", QoS: 1}}}); err != nil {
			b.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for !n1.Broker.RouteTable().Has("n2", "user/bob/newMessage") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	alice := dial(n1.MQTTURL, "alice/pub", "alice", aliceTok, nil)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		cid := fmt.Sprintf("c%d", i)
		mu.Lock()
		sentAt[cid] = time.Now()
		mu.Unlock()
		if _, err := alice.Publish(context.Background(), &paho.Publish{Topic: "user/bob/newMessage", QoS: 1,
			Payload: []byte(fmt.Sprintf(`{"cid":%q,"type":"text","body":"x"}`, cid))}); err != nil {
			b.Fatal(err)
		}
		time.Sleep(2 * time.Millisecond) // a steady stream, not a burst
	}
	deadline = time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		mu.Lock()
		done := len(lat["same-node"]) >= b.N && len(lat["cross-node"]) >= b.N
		mu.Unlock()
		if done {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	b.StopTimer()
	mu.Lock()
	defer mu.Unlock()
	pct := func(d []time.Duration, p int) float64 {
		sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
		return float64(d[len(d)*p/100].Microseconds()) / 1000
	}
	same, cross := lat["same-node"], lat["cross-node"]
	if len(same) < b.N || len(cross) < b.N {
		b.Fatalf("deliveries: same %d cross %d of %d", len(same), len(cross), b.N)
	}
	b.ReportMetric(pct(same, 50), "same-p50-ms")
	b.ReportMetric(pct(same, 99), "same-p99-ms")
	b.ReportMetric(pct(cross, 50), "cross-p50-ms")
	b.ReportMetric(pct(cross, 99), "cross-p99-ms")
}

// BenchmarkClusterDurable: durable direct messages committed on a
// three-node cluster (fsync on), 30 senders spread over the three nodes
// (followers forward to the leader), each with 1 or 16 publishes in
// flight (pipelined on one connection). Reports msgs/s and PUBACK
// p50/p99.
//
//	go test -run '^$' -bench BenchmarkClusterDurable -benchtime 6000x ./node/
func BenchmarkClusterDurable(b *testing.B) {
	nodes := nodetest.StartCluster(b, 3)
	nodes[0].NewUser(b, "sink")
	const senders = 30
	clients := make([]*paho.Client, senders)
	for i := range clients {
		name := fmt.Sprintf("sender%02d", i)
		tok := nodes[0].NewUser(b, name)
		clients[i] = mustConnectV5(b, nodes[i%3].MQTTURL, name, "bench", tok).Client
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
			b.ReportMetric(float64(lats[len(lats)/2].Microseconds())/1000, "puback-p50-ms")
			b.ReportMetric(float64(lats[len(lats)*99/100].Microseconds())/1000, "puback-p99-ms")
		})
	}
}

// publishDurable publishes b.N messages (made by msg from a sequence
// number) over clients, inflight at once per client, each waiting for its
// PUBACK, and returns the PUBACK latencies sorted.
func publishDurable(b *testing.B, clients []*paho.Client, inflight int, msg func(int64) *paho.Publish) []time.Duration {
	var next atomic.Int64
	var mu sync.Mutex
	lats := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	var wg sync.WaitGroup
	for _, c := range clients {
		for range inflight {
			wg.Add(1)
			go func(c *paho.Client) {
				defer wg.Done()
				for {
					i := next.Add(1)
					if i > int64(b.N) {
						return
					}
					t0 := time.Now()
					pr, err := c.Publish(context.Background(), msg(i))
					if err != nil || pr.ReasonCode != 0 {
						b.Errorf("publish: %v %+v", err, pr.Properties)
						return
					}
					d := time.Since(t0)
					mu.Lock()
					lats = append(lats, d)
					mu.Unlock()
				}
			}(c)
		}
	}
	wg.Wait()
	b.StopTimer()
	sort.Slice(lats, func(i, j int) bool { return lats[i] < lats[j] })
	return lats
}
