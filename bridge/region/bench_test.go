package region_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
)

// The link's figures (docs/perf/regions.md): two regions eu and us, the
// link from eu to us (and back) through a delay proxy adding a one-way
// delay in each direction, real MQTT clients on both sides.
//
//	go test -run '^$' -bench 'Link(Latency|Throughput|Drain)' -benchtime 1x ./bridge/region/

// benchDelays are the one-way delays every link figure is measured at.
var benchDelays = []time.Duration{0, 50 * time.Millisecond}

// benchSetup is two linked regions with senders in eu and receivers in
// us, every message's latency from its send time (in its body) to its
// arrival at a receiver recorded.
type benchSetup struct {
	eu, us  *region
	senders []*mqtttest.Client
	nRecv   int
	seq     atomic.Int64 // makes every message's cid unique

	mu       sync.Mutex
	lat      []time.Duration
	received atomic.Int64
	first    atomic.Int64 // unix ns of the first arrival
	last     atomic.Int64 // unix ns of the latest arrival
}

// newBenchSetup starts regions of size nodes, sets a delay of d one way
// on the proxy in front of each region's first node (which the other
// region's link dials), and connects senders users alice{i} in eu and receivers
// users bob{j} in us (spread over the nodes), waiting until the link
// carries a message.
func newBenchSetup(b *testing.B, size int, d time.Duration, senders, receivers int, opt nodetest.Option) *benchSetup {
	b.Helper()
	s := &benchSetup{nRecv: receivers}
	s.eu, s.us = startNumbered(b, size, "eu", "us", nil, nil, map[string]int{"eu": 1, "us": 2}, opt)
	for _, r := range []*region{s.eu, s.us} {
		r.in.SetDelay(d)  // the proxy the other region's link dials
		r.in.setCut(true) // the links reconnect, through the delay
		r.in.setCut(false)
	}
	for j := range receivers {
		name := fmt.Sprintf("bob%d", j)
		tok := s.us.newUser(b, name)
		n := s.us.nodes[j%size]
		c := mqtttest.MustDial(b, n.MQTTAddr(), mqtttest.Options{ClientID: name + "/phone", Username: name, Password: tok, OnPublish: s.arrived})
		c.MustSub(b, "user/"+name+"/newMessage")
	}
	for i := range senders {
		name := fmt.Sprintf("alice%d", i)
		tok := s.eu.newUser(b, name)
		n := s.eu.nodes[i%size]
		s.senders = append(s.senders, mqtttest.MustDial(b, n.MQTTAddr(), mqtttest.Options{ClientID: name + "/phone", Username: name, Password: tok}))
	}
	// Warm-up: one message through the link (it reconnected through the
	// proxy; its backoff is not part of the figures).
	s.send(0)
	s.wait(b, 1)
	s.reset()
	return s
}

// arrived records a receiver's message.
func (s *benchSetup) arrived(p *paho.Publish) {
	now := time.Now()
	var e envelope
	if json.Unmarshal(p.Payload, &e) != nil {
		return
	}
	sent, err := strconv.ParseInt(e.Body, 10, 64)
	if err != nil {
		return
	}
	s.mu.Lock()
	s.lat = append(s.lat, now.Sub(time.Unix(0, sent)))
	s.mu.Unlock()
	s.first.CompareAndSwap(0, now.UnixNano())
	s.last.Store(now.UnixNano())
	s.received.Add(1)
}

func (s *benchSetup) reset() {
	s.mu.Lock()
	s.lat = s.lat[:0]
	s.mu.Unlock()
	s.received.Store(0)
	s.first.Store(0)
	s.last.Store(0)
}

// send publishes one message of sender i (to bob{i%receivers}@us) with
// its send time as body and waits for the PUBACK; false when it was not
// acknowledged.
func (s *benchSetup) send(i int) bool {
	seq := s.seq.Add(1)
	body := strconv.FormatInt(time.Now().UnixNano(), 10)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pr, err := s.senders[i].Publish(ctx, &paho.Publish{QoS: 1, Topic: fmt.Sprintf("user/bob%d@us/newMessage", i%s.nRecv),
		Payload: []byte(textMsg(fmt.Sprintf("a%d-%d", i, seq), body))})
	return err == nil && pr != nil && pr.ReasonCode == 0
}

// wait waits until n messages arrived.
func (s *benchSetup) wait(b *testing.B, n int64) {
	b.Helper()
	nodetest.CheckFor(b, 120*time.Second, 5*time.Millisecond, func() error {
		if got := s.received.Load(); got < n {
			return fmt.Errorf("%d of %d messages arrived", got, n)
		}
		return nil
	})
}

func (s *benchSetup) backlog(b *testing.B) uint64 {
	n, err := s.eu.nodes[0].Region.Backlog("us")
	if err != nil {
		b.Fatal(err)
	}
	return n
}

// percentiles reports p50, p90, p99 and max of the latencies in ms.
func (s *benchSetup) percentiles(b *testing.B) {
	s.mu.Lock()
	lat := slices.Clone(s.lat)
	s.mu.Unlock()
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	at := func(q float64) float64 {
		return float64(lat[min(len(lat)-1, int(q*float64(len(lat))))].Microseconds()) / 1000
	}
	b.ReportMetric(at(0.50), "p50-ms")
	b.ReportMetric(at(0.90), "p90-ms")
	b.ReportMetric(at(0.99), "p99-ms")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "max-ms")
}

func delayName(d time.Duration) string { return fmt.Sprintf("delay=%dms", d.Milliseconds()) }

// linkModes are the link's settings compared: one publish of at most 64
// messages at a time (as before the window), and the defaults (up to 16
// publishes of several batches in flight, flow.go; 1,024 messages a
// batch at most).
var linkModes = []struct {
	name          string
	window, batch int
}{{"link=stopwait", 1, 64}, {"link=stream16", 0, 0}}

// forModes runs f as a sub-benchmark per link mode, with the nodes'
// option of that mode.
func forModes(b *testing.B, name string, f func(b *testing.B, opt nodetest.Option)) {
	for _, m := range linkModes {
		b.Run(name+"/"+m.name, func(b *testing.B) {
			f(b, nodetest.WithConfig(func(c *node.Config) { c.LinkWindow, c.LinkMaxBatch = m.window, m.batch }))
		})
	}
}

// BenchmarkLinkLatency is a direct message's latency from alice{i}@eu's
// publish to bob{j}@us's delivery: 100 senders at 500 msg/s in all
// (each every 200 ms, phases spread), 2,500 messages an iteration,
// regions of 1 and 3 nodes.
func BenchmarkLinkLatency(b *testing.B) {
	const senders, receivers, rate, perSender = 100, 10, 500, 25
	for _, size := range []int{1, 3} {
		for _, d := range benchDelays {
			forModes(b, fmt.Sprintf("nodes=%d/%s", size, delayName(d)), func(b *testing.B, opt nodetest.Option) {
				s := newBenchSetup(b, size, d, senders, receivers, opt)
				period := time.Duration(senders) * time.Second / rate
				for range b.N {
					s.reset()
					var failed atomic.Int64
					var wg sync.WaitGroup
					for i := range senders {
						wg.Add(1)
						go func() {
							defer wg.Done()
							t := time.NewTimer(time.Duration(i) * period / senders)
							defer t.Stop()
							for range perSender {
								<-t.C
								t.Reset(period)
								if !s.send(i) {
									failed.Add(1)
								}
							}
						}()
					}
					wg.Wait()
					if f := failed.Load(); f > 0 {
						b.Fatalf("%d publishes not acknowledged", f)
					}
					s.wait(b, senders*perSender)
				}
				s.percentiles(b)
			})
		}
	}
}

// BenchmarkLinkThroughput is the link at saturation: 100 senders in eu
// publish as fast as their PUBACKs come for 5 s; sent-msg/s is what eu
// committed, link-msg/s what arrived in us from the first arrival to the
// last (the backlog left when the senders stop tells whether the link,
// not eu, was the limit: then link-msg/s is the link's throughput).
func BenchmarkLinkThroughput(b *testing.B) {
	const senders, receivers, window = 100, 10, 5 * time.Second
	for _, d := range benchDelays {
		forModes(b, delayName(d), func(b *testing.B, opt nodetest.Option) {
			s := newBenchSetup(b, 1, d, senders, receivers, opt)
			var sent, left int64
			var linkTime time.Duration
			for range b.N {
				s.reset()
				var n, failed atomic.Int64
				stop := time.Now().Add(window)
				var wg sync.WaitGroup
				for i := range senders {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for time.Now().Before(stop) {
							if s.send(i) {
								n.Add(1)
							} else {
								failed.Add(1)
							}
						}
					}()
				}
				wg.Wait()
				if f := failed.Load(); f > 0 {
					b.Fatalf("%d publishes not acknowledged", f)
				}
				left += int64(s.backlog(b))
				s.wait(b, n.Load())
				sent += n.Load()
				linkTime += time.Duration(s.last.Load() - s.first.Load())
			}
			b.ReportMetric(float64(sent)/(window.Seconds()*float64(b.N)), "sent-msg/s")
			b.ReportMetric(float64(sent)/linkTime.Seconds(), "link-msg/s")
			b.ReportMetric(float64(left)/float64(b.N), "backlog-at-stop")
			s.percentiles(b)
		})
	}
}

// BenchmarkLinkDrain is the link's drain rate: a backlog of 20,000
// direct messages queued (by 100 senders) while the link was cut drains
// from eu to us once it is restored (each committed in us before it
// counts as sent); msg/s is measured from the first message's arrival
// in us to the empty outbox (the last cursor commit), so the link's
// reconnect backoff is left out. (Until 2026-12-04 15:00 it was measured
// from the first cursor commit, counting the messages of that first
// batch too: fair while one batch was in flight, not once a link
// streams several batches before its first cursor commit.)
func BenchmarkLinkDrain(b *testing.B) {
	const senders, receivers, n = 100, 10, 20000
	for _, d := range benchDelays {
		forModes(b, delayName(d), func(b *testing.B, opt nodetest.Option) {
			s := newBenchSetup(b, 1, d, senders, receivers, opt)
			var total time.Duration
			for range b.N {
				s.us.in.setCut(true)
				var failed atomic.Int64
				var wg sync.WaitGroup
				for i := range senders {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for range n / senders {
							if !s.send(i) {
								failed.Add(1)
							}
						}
					}()
				}
				wg.Wait()
				if f := failed.Load(); f > 0 {
					b.Fatalf("%d publishes not acknowledged", f)
				}
				if got := s.backlog(b); got < n {
					b.Fatalf("backlog %d while cut; want >= %d", got, n)
				}
				s.reset()
				s.us.in.setCut(false)
				nodetest.CheckFor(b, 300*time.Second, time.Millisecond, func() error {
					if got := s.backlog(b); got != 0 {
						return fmt.Errorf("backlog %d", got)
					}
					return nil
				})
				first := s.first.Load()
				if first == 0 {
					b.Fatal("the backlog drained and nothing arrived")
				}
				total += time.Since(time.Unix(0, first))
			}
			b.ReportMetric(float64(n*b.N)/total.Seconds(), "msg/s")
		})
	}
}
