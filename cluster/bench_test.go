package cluster

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkPropose measures committed commands per second on one node
// with fsync on (raft-wal syncs every append), 200-byte payloads each
// written into Badger by the FSM, from many parallel proposers (as many
// MQTT clients waiting for their PUBACK would be).
//
//	go test -run XXX -bench BenchmarkPropose -benchtime 3s ./cluster/
func BenchmarkPropose(b *testing.B) {
	for _, proposers := range []int{1, 64, 512} {
		b.Run(fmt.Sprintf("proposers=%d", proposers), func(b *testing.B) {
			benchPropose(b, proposers)
		})
	}
}

func benchPropose(b *testing.B, proposers int) {
	tn := startNode(b, nodeOpts{bootstrap: true, tweak: func(c *Config) {
		c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout = 0, 0, 0 // production defaults
	}})
	waitReady(b, tn.Raft)
	value := make([]byte, 200)
	for i := range value {
		value[i] = 'a' + byte(i%26)
	}

	var (
		mu    sync.Mutex
		lats  []time.Duration
		seq   atomic.Int64
		wg    sync.WaitGroup
		next  atomic.Int64
		fails atomic.Int64
	)
	ctx := context.Background()
	b.ResetTimer()
	start := time.Now()
	for range proposers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := make([]time.Duration, 0, b.N/proposers+1)
			payload := make([]byte, 0, 256)
			for next.Add(1) <= int64(b.N) {
				payload = fmt.Appendf(payload[:0], "m%012d=", seq.Add(1))
				payload = append(payload, value...)
				t0 := time.Now()
				if _, err := tn.Propose(ctx, cmdPut, payload); err != nil {
					fails.Add(1)
					continue
				}
				local = append(local, time.Since(t0))
			}
			mu.Lock()
			lats = append(lats, local...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if fails.Load() > 0 {
		b.Fatalf("%d proposals failed", fails.Load())
	}
	slices.Sort(lats)
	pct := func(p float64) float64 {
		if len(lats) == 0 {
			return 0
		}
		return float64(lats[min(len(lats)-1, int(p*float64(len(lats))))].Microseconds()) / 1000
	}
	entries, cmds := histogram(b, tn.reg, "edgechat_raft_batch_commands")
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	if entries > 0 {
		b.ReportMetric(cmds/float64(entries), "cmds/entry")
	}
}
