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

// BenchmarkGroupFanOut: a 10,000-member group with 1,000 online devices
// (one per member) subscribed to the group topic; each iteration
// publishes a burst of durable group messages (1: the latency of one
// message; 50: throughput, where later messages queue behind earlier
// ones) and waits until every device has every message. Reports
// deliveries/s and publish→last-delivery percentiles. The 1,000 clients
// run in the test process, on the same 2 cores as the node.
//
//	go test -run '^$' -bench BenchmarkGroupFanOut -benchtime 3x -timeout 30m ./node/
func BenchmarkGroupFanOut(b *testing.B) {
	for _, burst := range []int{1, 50} {
		b.Run(fmt.Sprintf("burst=%d", burst), func(b *testing.B) { benchGroupFanOut(b, burst) })
	}
}

func benchGroupFanOut(b *testing.B, burst int) {
	const members, online = 10000, 1000
	n := nodetest.StartNode(b)
	ownerTok := n.NewUser(b, "owner")
	ctx := context.Background()

	// Accounts, created concurrently so Raft batches them.
	names := make([]string, members-1)
	var wg sync.WaitGroup
	work := make(chan int)
	for w := 0; w < 64; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				names[i] = fmt.Sprintf("m%05d", i)
				if _, err := n.Auth.CreateAccount(ctx, names[i], "password-fanout", names[i]); err != nil {
					b.Errorf("create %s: %v", names[i], err)
				}
			}
		}()
	}
	for i := range names {
		work <- i
	}
	close(work)
	wg.Wait()
	if b.Failed() {
		return
	}
	var g group
	if st := api(b, n, ownerTok, "POST", "/user/groups", map[string]any{"name": "big", "members": names[:999]}, &g); st != 201 {
		b.Fatalf("create group: %d", st)
	}
	for i := 999; i < len(names); i += 1000 {
		end := min(i+1000, len(names))
		if st := api(b, n, ownerTok, "POST", "/user/groups/"+g.GroupID+"/members", map[string]any{"uids": names[i:end]}, nil); st != 200 {
			b.Fatalf("add members %d..%d: %d", i, end, st)
		}
	}
	topic := "group/" + g.GroupID + "/newMessage"

	// Online devices.
	var delivered atomic.Int64
	var mu sync.Mutex
	last := map[string]time.Time{} // cid → latest arrival
	for i := 0; i < online; i++ {
		tok, err := n.Auth.MintAccessToken(names[i], false)
		if err != nil {
			b.Fatal(err)
		}
		conn, err := net.Dial("tcp", strings.TrimPrefix(n.MQTTURL, "tcp://"))
		if err != nil {
			b.Fatal(err)
		}
		c := paho.NewClient(paho.ClientConfig{Conn: conn, OnPublishReceived: []func(paho.PublishReceived) (bool, error){
			func(pr paho.PublishReceived) (bool, error) {
				now := time.Now()
				delivered.Add(1)
				var env struct{ CID string }
				_ = jsonUnmarshal(pr.Packet.Payload, &env)
				mu.Lock()
				if now.After(last[env.CID]) {
					last[env.CID] = now
				}
				mu.Unlock()
				return true, nil
			}}})
		if _, err := c.Connect(ctx, &paho.Connect{ClientID: names[i] + "/phone", Username: names[i], UsernameFlag: true,
			Password: []byte(tok), PasswordFlag: true, KeepAlive: 60, CleanStart: true}); err != nil {
			b.Fatal(err)
		}
		if sa, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: topic, QoS: 0}}}); err != nil || sa.Reasons[0] > 2 {
			b.Fatalf("subscribe: %v", err)
		}
		defer c.Disconnect(&paho.Disconnect{})
	}
	owner := mustConnectV5(b, n.MQTTURL, "owner", "pub", ownerTok)

	var latencies []time.Duration
	var totalDeliveries int64
	var totalTime time.Duration
	b.ResetTimer()
	for it := 0; it < b.N; it++ {
		delivered.Store(0)
		sent := map[string]time.Time{}
		start := time.Now()
		var pwg sync.WaitGroup
		var smu sync.Mutex
		for k := 0; k < burst; k++ {
			cid := fmt.Sprintf("it%d-%d", it, k)
			pwg.Add(1)
			go func() {
				defer pwg.Done()
				smu.Lock()
				sent[cid] = time.Now()
				smu.Unlock()
				pr, err := owner.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(fmt.Sprintf(`{"cid":%q,"type":"text","body":"fan-out"}`, cid))})
				if err != nil || pr.ReasonCode != 0 {
					b.Errorf("publish: %v %+v", err, pr)
				}
			}()
		}
		pwg.Wait()
		deadline := time.Now().Add(60 * time.Second)
		for delivered.Load() < int64(burst*online) && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		if got := delivered.Load(); got < int64(burst*online) {
			b.Fatalf("only %d of %d deliveries", got, burst*online)
		}
		totalTime += time.Since(start)
		totalDeliveries += delivered.Load()
		mu.Lock()
		for cid, t0 := range sent {
			latencies = append(latencies, last[cid].Sub(t0))
		}
		mu.Unlock()
	}
	b.StopTimer()
	sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
	b.ReportMetric(float64(totalDeliveries)/totalTime.Seconds(), "deliveries/s")
	b.ReportMetric(float64(latencies[len(latencies)/2].Microseconds())/1000, "p50-last-delivery-ms")
	b.ReportMetric(float64(latencies[len(latencies)*99/100].Microseconds())/1000, "p99-last-delivery-ms")
}
