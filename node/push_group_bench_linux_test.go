package node_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgechat/edgechat/bridge/push/pushtest"
	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
	"github.com/edgechat/edgechat/services/push"
)

// BenchmarkPushGroupConnected measures what a group message costs when the
// members have registered push devices and are connected and
// acknowledging: each message is staged in the push outbox once per
// member device (up to --push-group-limit members, 100 by default, the
// size of this group), planned, decided after the grace and held back
// at the ack deadline, and every delivery is watched for its PUBACK.
// BenchmarkPushConnected measures the same for direct messages; `make
// bench-group` measures a 10,000-member group, above the limit, whose
// messages stage nothing.
//
// One node (fsync on, default push grace and ack timeout, the APNs mock
// in the process), one group of 100 members, each connected as
// {uid}/phone over real MQTT v5, subscribed at QoS 1 to the group's
// newMessage topic (paho acknowledges every delivery) and, with
// devices=yes, that phone a registered APNs device. Members take turns
// sending, paced at rate messages/s. The run ends when the outbox is
// empty again.
//
//	go test -run '^$' -bench 'BenchmarkPushGroupConnected' -benchtime 1000x -timeout 30m ./node/
//
// Reported as BenchmarkPushConnected does, plus cpu-µs/delivery (the
// process's CPU over the deliveries to other members). With
// EDGECHAT_PUSH_BENCH_HEAP=FILE set, FILE is the heap profile at the
// fullest outbox (go tool pprof -sample_index=inuse_space).
func BenchmarkPushGroupConnected(b *testing.B) {
	eachDevicesAndRate(b, []int{20, 100}, benchPushGroupConnected)
}

func benchPushGroupConnected(b *testing.B, devices bool, rate int) {
	const members = node.DefaultPushGroupLimit
	opt, m := withPushMocks(b)
	n := nodetest.StartNode(b, opt, nodetest.WithConfig(func(c *node.Config) {
		c.PushGrace = node.DefaultPushGrace
		c.PushAckTimeout = node.DefaultPushAckTimeout
		c.LogLevel = "error"
	}))
	ctx := context.Background()
	names := make([]string, members)
	toks := make([]string, members)
	for i := range members {
		names[i] = fmt.Sprintf("m%03d", i)
		toks[i] = n.NewUser(b, names[i])
		if devices {
			if _, err := n.Push.Register(ctx, names[i], push.Registration{Device: "phone", Platform: push.PlatformAPNs,
				Token: pushtest.NewDeviceToken()}); err != nil {
				b.Fatal(err)
			}
		}
	}
	var g group
	if st := api(b, n, toks[0], "POST", "/user/groups", map[string]any{"name": "bench", "members": names[1:]}, &g); st != 201 {
		b.Fatalf("create group: %d", st)
	}
	topic := "group/" + g.GroupID + "/newMessage"
	var delivered atomic.Int64
	clients := make([]*mqtttest.Client, members)
	for i := range members {
		clients[i] = mqtttest.MustDial(b, n.MQTTURL, mqtttest.Options{ClientID: names[i] + "/phone", Username: names[i], Password: toks[i],
			OnPublish: func(*paho.Publish) { delivered.Add(1) }})
		clients[i].MustSub(b, topic)
	}
	for pushOutboxLen(n) != 0 { // the group's own commits stage nothing, but be sure
		time.Sleep(100 * time.Millisecond)
	}

	s := startPushBenchSampler(n)
	var next atomic.Int64
	b.ResetTimer()
	var wg sync.WaitGroup
	for mi, c := range clients {
		wg.Go(func() {
			for {
				i := next.Add(1)
				if i > int64(b.N) {
					return
				}
				time.Sleep(time.Until(s.start.Add(time.Duration(i) * time.Second / time.Duration(rate))))
				pr, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1,
					Payload: fmt.Appendf(nil, `{"cid":"g%d-%d","type":"text","body":"benchmark message body of some length"}`, mi, i)})
				if err != nil || pr.ReasonCode != 0 {
					b.Errorf("publish: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	sent := time.Since(s.start)
	s.waitOutboxEmpty(b)
	b.StopTimer()
	s.stop()
	s.report(b, b.N, sent, m)
	others := float64(b.N * (members - 1))
	b.ReportMetric(float64(s.cpu.Microseconds())/others, "cpu-µs/delivery")
	b.ReportMetric(float64(delivered.Load())/float64(b.N), "deliveries/msg")
}

// pushBenchSampler samples what the push benchmarks report while they
// run: peak goroutines (every 100 ms), heap and RSS (every 500 ms) and
// outbox entries (every second; counting them is in the CPU figure).
type pushBenchSampler struct {
	n       *nodetest.Node
	base    int
	cpu0    time.Duration
	start   time.Time
	cpu     time.Duration // set by stop
	peakG   atomic.Int64
	peakOut atomic.Int64
	heap    atomic.Uint64
	rss     atomic.Uint64
	done    chan struct{}
	wg      sync.WaitGroup
}

func pushOutboxLen(n *nodetest.Node) int {
	k := 0
	_ = n.Push.EachQueued(func(snowflake.ID) bool { k++; return true })
	return k
}

func startPushBenchSampler(n *nodetest.Node) *pushBenchSampler {
	runtime.GC()
	s := &pushBenchSampler{n: n, base: runtime.NumGoroutine(), done: make(chan struct{})}
	raise := func(a *atomic.Uint64, v uint64) {
		if v > a.Load() {
			a.Store(v)
		}
	}
	s.wg.Go(func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			if g := int64(runtime.NumGoroutine()); g > s.peakG.Load() {
				s.peakG.Store(g)
			}
			if i%5 == 0 {
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				raise(&s.heap, ms.HeapInuse)
				raise(&s.rss, rssBytes())
			}
			if i%10 == 0 {
				if o := int64(pushOutboxLen(n)); o > s.peakOut.Load() {
					s.peakOut.Store(o)
					writeHeapAtPeak()
				}
			}
			select {
			case <-tick.C:
			case <-s.done:
				return
			}
		}
	})
	s.cpu0 = cpuTime()
	s.start = time.Now()
	return s
}

// writeHeapAtPeak writes a heap profile to $EDGECHAT_PUSH_BENCH_HEAP at
// each new outbox peak (the file ends with the heap of the fullest
// outbox sampled: what waiting messages hold); unset, nothing.
func writeHeapAtPeak() {
	path := os.Getenv("EDGECHAT_PUSH_BENCH_HEAP")
	if path == "" {
		return
	}
	f, err := os.Create(path)
	if err != nil {
		return
	}
	defer f.Close()
	runtime.GC()
	_ = pprof.WriteHeapProfile(f)
}

// waitOutboxEmpty waits until every message's push decision is recorded.
func (s *pushBenchSampler) waitOutboxEmpty(b *testing.B) {
	checkFor(b, 5*time.Minute, 500*time.Millisecond, func() error {
		if o := pushOutboxLen(s.n); o != 0 {
			return fmt.Errorf("%d messages still in the outbox", o)
		}
		return nil
	})
}

func (s *pushBenchSampler) stop() {
	s.cpu = cpuTime() - s.cpu0
	close(s.done)
	s.wg.Wait()
}

// report writes the figures both push benchmarks share.
func (s *pushBenchSampler) report(b *testing.B, msgs int, sent time.Duration, m pushMocks) {
	b.ReportMetric(float64(msgs)/sent.Seconds(), "msgs/s")
	b.ReportMetric(float64(s.cpu.Microseconds())/float64(msgs), "cpu-µs/msg")
	b.ReportMetric(float64(s.peakG.Load()-int64(s.base)), "peak-goroutines")
	b.ReportMetric(float64(s.heap.Load())/(1<<20), "peak-heap-MiB")
	b.ReportMetric(float64(s.rss.Load())/(1<<20), "peak-rss-MiB")
	b.ReportMetric(float64(s.peakOut.Load()), "peak-outbox")
	b.ReportMetric(float64(m.apns.Count(func(*pushtest.APNsRequest) bool { return true })), "pushes")
}
