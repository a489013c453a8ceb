package node_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgechat/edgechat/bridge/push/pushtest"
	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
	"github.com/edgechat/edgechat/services/push"
)

// BenchmarkPushConnected measures what every durable direct message to a
// user with a registered push device costs when the device is connected
// and acknowledges (the usual case: an app in the foreground): the
// message is staged in the push outbox, planned at its commit, decided
// after the grace period (5 s) and then waits for the device's
// acknowledgement until the ack deadline (--push-ack-timeout 10 s + 3 s)
// before it is held back as connected and its outbox entry deleted.
// `edgechat bench durable` sends to users without a device and pays
// none of this.
//
// One node (fsync on, default push grace and ack timeout, APNs mock in
// the process), 32 senders and 32 recipients over real MQTT v5
// connections; each recipient is connected as {uid}/phone, subscribed at
// QoS 1 to its newMessage topic (paho acknowledges every delivery), and
// with devices=yes that phone is a registered APNs device. rate=1000 is
// paced at 1,000 messages/s, rate=0 a closed loop (16 publishes in flight
// per sender). The run ends when the outbox is empty again (every
// message's ack deadline passed and its progress committed).
//
//	go test -run '^$' -bench 'BenchmarkPushConnected' -benchtime 20000x -timeout 30m ./node/
//
// Reported: cpu-µs/msg (the whole process: node and clients, from the
// first publish until the outbox is empty), peak goroutines, peak heap
// in use and peak RSS (sampled every 100 ms / 500 ms), peak outbox
// entries (counted every second), and pushes sent (must be 0: every
// device acknowledged).
func BenchmarkPushConnected(b *testing.B) {
	eachDevicesAndRate(b, []int{1000, 0}, benchPushConnected)
}

// eachDevicesAndRate runs bench as devices=no and devices=yes at each
// of rates.
func eachDevicesAndRate(b *testing.B, rates []int, bench func(b *testing.B, devices bool, rate int)) {
	for _, devices := range []string{"no", "yes"} {
		for _, rate := range rates {
			b.Run(fmt.Sprintf("devices=%s/rate=%d", devices, rate), func(b *testing.B) {
				bench(b, devices == "yes", rate)
			})
		}
	}
}

func benchPushConnected(b *testing.B, devices bool, rate int) {
	const users = 32
	opt, m := withPushMocks(b)
	n := nodetest.StartNode(b, opt, nodetest.WithConfig(func(c *node.Config) {
		c.PushGrace = node.DefaultPushGrace
		c.PushAckTimeout = node.DefaultPushAckTimeout
		c.LogLevel = "error"
	}))
	ctx := context.Background()
	senders := make([]*paho.Client, users)
	var delivered atomic.Int64
	for i := range users {
		s := fmt.Sprintf("s%02d", i)
		senders[i] = mustConnectV5(b, n.MQTTURL, s, "laptop", n.NewUser(b, s)).Client
		r := fmt.Sprintf("r%02d", i)
		tok := n.NewUser(b, r)
		if devices {
			if _, err := n.Push.Register(ctx, r, push.Registration{Device: "phone", Platform: push.PlatformAPNs,
				Token: pushtest.NewDeviceToken()}); err != nil {
				b.Fatal(err)
			}
		}
		c := mqtttest.MustDial(b, n.MQTTURL, mqtttest.Options{ClientID: r + "/phone", Username: r, Password: tok,
			OnPublish: func(*paho.Publish) { delivered.Add(1) }})
		c.MustSub(b, "user/"+r+"/newMessage")
	}
	for pushOutboxLen(n) != 0 { // the registrations' own commits stage nothing, but be sure
		time.Sleep(100 * time.Millisecond)
	}

	s := startPushBenchSampler(n)
	var next atomic.Int64
	inflight := 16
	if rate > 0 {
		inflight = 4 // paced: enough for the PUBACK latency
	}
	b.ResetTimer()
	var wg sync.WaitGroup
	for si, c := range senders {
		for range inflight {
			wg.Go(func() {
				for {
					i := next.Add(1)
					if i > int64(b.N) {
						return
					}
					if rate > 0 {
						time.Sleep(time.Until(s.start.Add(time.Duration(i) * time.Second / time.Duration(rate))))
					}
					to := fmt.Sprintf("r%02d", (si+int(i))%users)
					pr, err := c.Publish(ctx, &paho.Publish{Topic: "user/" + to + "/newMessage", QoS: 1,
						Payload: []byte(fmt.Sprintf(`{"cid":"c%d","type":"text","body":"benchmark message body of some length"}`, i))})
					if err != nil || pr.ReasonCode != 0 {
						b.Errorf("publish: %v", err)
						return
					}
				}
			})
		}
	}
	wg.Wait()
	sent := time.Since(s.start)
	s.waitOutboxEmpty(b)
	b.StopTimer()
	s.stop()
	s.report(b, b.N, sent, m)
	b.ReportMetric(float64(delivered.Load())/float64(b.N), "deliveries/msg")
}

// rssBytes is the process's resident set now (Linux; 0 elsewhere).
func rssBytes() uint64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseUint(f[1], 10, 64)
	return pages * uint64(os.Getpagesize())
}
