package region_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/edgechat/edgechat/node/nodetest"
)

// BenchmarkLinkDrain is the link's throughput over loopback: a backlog of
// 1,000 direct messages queued while the link was cut drains from eu to
// us (each committed in us before it counts as sent); msg/s is measured
// from the first acknowledged batch to the empty outbox, so the link's
// reconnect backoff is left out.
func BenchmarkLinkDrain(b *testing.B) {
	eu, us := startNumbered(b, 1, "eu", "us", nil, nil, map[string]int{"eu": 1, "us": 2})
	aliceTok := eu.newUser(b, "alice")
	us.newUser(b, "bob")
	alice := connect(b, eu.nodes[0], "alice", "phone", aliceTok)
	backlog := func() uint64 {
		n, err := eu.nodes[0].Region.Backlog("us")
		if err != nil {
			b.Fatal(err)
		}
		return n
	}
	const n = 1000
	var total time.Duration
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		us.in.setCut(true)
		for j := range n {
			if code, _ := alice.Pub(b, "user/bob@us/newMessage", 1, textMsg(fmt.Sprintf("r%d-%d", i, j), "x")); code != 0 {
				b.Fatalf("PUBACK %#x", code)
			}
		}
		us.in.setCut(false)
		for backlog() >= n {
			time.Sleep(time.Millisecond) // a benchmark's poll, not a test's wait
		}
		b.StartTimer()
		start := time.Now()
		nodetest.CheckFor(b, 60*time.Second, time.Millisecond, func() error {
			if got := backlog(); got != 0 {
				return fmt.Errorf("backlog %d", got)
			}
			return nil
		})
		total += time.Since(start)
	}
	b.ReportMetric(float64(n*b.N)/total.Seconds(), "msg/s")
}
