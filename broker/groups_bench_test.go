package broker

import (
	"context"
	"fmt"
	"net"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/mochi-mqtt/server/v2"
)

// BenchmarkGroupFanOut: one QoS 1 message to a group of 10,000 members of
// whom `devices` are online and subscribed (QoS 1, paho v5 clients on
// TCP), from PUBLISH to the last delivery, through a fake ChatStore and a
// fake Membership (the ACL asks it on every delivery). Reports deliveries
// per second and the publish→last-delivery latency (p50, p99).
func BenchmarkGroupFanOut(b *testing.B) {
	for _, devices := range []int{100, 1000} {
		b.Run(fmt.Sprintf("devices=%d", devices), func(b *testing.B) {
			e := startBroker(b, nil)
			for i := 0; i < 10000; i++ {
				e.mem.set("big", fmt.Sprintf("m%05d", i), true)
			}
			var got atomic.Int64
			var want atomic.Int64
			done := make(chan struct{}, 1)
			for i := 0; i < devices; i++ {
				uid := fmt.Sprintf("m%05d", i)
				conn, err := net.Dial("tcp", e.addr)
				if err != nil {
					b.Fatal(err)
				}
				c := paho.NewClient(paho.ClientConfig{
					Conn: conn,
					OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(paho.PublishReceived) (bool, error) {
						if got.Add(1) == want.Load() {
							done <- struct{}{}
						}
						return true, nil
					}},
				})
				ctx, cancel := context.WithTimeout(context.Background(), waitFor)
				if _, err := c.Connect(ctx, &paho.Connect{ClientID: uid + "/d", Username: uid, UsernameFlag: true,
					Password: []byte("tok:" + uid), PasswordFlag: true, KeepAlive: 60, CleanStart: true}); err != nil {
					b.Fatal(err)
				}
				if _, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "group/big/newMessage", QoS: 1}}}); err != nil {
					b.Fatal(err)
				}
				cancel()
				b.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
			}
			sender := mustV5(b, e.addr, "m09999", "sender")
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				want.Store(int64((i + 1) * devices))
				t0 := time.Now()
				if code, _ := sender.Pub(b, "group/big/newMessage", 1, fmt.Sprintf(`{"cid":"f%d","type":"text","body":"fan-out"}`, i)); code != 0 {
					b.Fatalf("PUBACK 0x%02x", code)
				}
				select {
				case <-done:
				case <-time.After(waitFor):
					b.Fatalf("delivered %d of %d", got.Load(), want.Load())
				}
				lat = append(lat, time.Since(t0))
			}
			elapsed := time.Since(start)
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(b.N*devices)/elapsed.Seconds(), "deliveries/s")
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[(len(lat)*99)/100].Microseconds()), "p99-µs")
		})
	}
}

// BenchmarkGroupDeliveryACL is the access check mochi asks for each
// delivery of a group message to a live member (OnACLCheck, topic name,
// read): once per member per message in a big group's fan-out.
func BenchmarkGroupDeliveryACL(b *testing.B) {
	e := startBroker(b, nil)
	e.members("g1", "alice", "bob")
	bob := mustV5(b, e.addr, "bob", "phone")
	bob.MustSub(b, "group/g1/newMessage")
	cl, ok := e.b.Server().Clients.Get("bob/phone")
	if !ok {
		b.Fatal("bob/phone not connected")
	}
	h := &hook{b: e.b}
	for _, others := range []int{0, 5000} {
		b.Run(fmt.Sprintf("connections=%d", others+1), func(b *testing.B) {
			// A node with many connections (the look-up of this one's
			// state then walks a bigger map).
			for i := range others {
				e.b.conns.Store(&mqtt.Client{ID: fmt.Sprint("other/", i)}, &connInfo{})
			}
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if !h.OnACLCheck(cl, "group/g1/newMessage", false) {
					b.Fatal("member refused")
				}
			}
		})
	}
}
