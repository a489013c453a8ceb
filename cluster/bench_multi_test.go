package cluster

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/testutil"
)

// BenchmarkProposeCluster measures committed commands per second on a
// three-node cluster over TCP with fsync on, proposing on the leader
// and on a follower (which batches and forwards to the leader, then waits
// for its own FSM to apply the entry).
//
//	go test -run XXX -bench BenchmarkProposeCluster -benchtime 3s ./cluster/
func BenchmarkProposeCluster(b *testing.B) {
	for _, on := range []string{"leader", "follower"} {
		for _, proposers := range []int{1, 64, 512} {
			b.Run(fmt.Sprintf("on=%s/proposers=%d", on, proposers), func(b *testing.B) {
				ms := startClusterWith(b, 3, func(c *Config) {
					c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout = 0, 0, 0 // production defaults
				})
				target := leaderOf(b, ms)
				if on == "follower" {
					for _, m := range ms {
						if m != target {
							target = m
							break
						}
					}
				}
				benchProposeOn(b, target, proposers)
			})
		}
	}
}

func benchProposeOn(b *testing.B, m *member, proposers int) {
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
		wg.Go(func() {
			local := make([]time.Duration, 0, b.N/proposers+1)
			payload := make([]byte, 0, 256)
			for next.Add(1) <= int64(b.N) {
				payload = fmt.Appendf(payload[:0], "m%012d=", seq.Add(1))
				payload = append(payload, value...)
				t0 := time.Now()
				if _, err := m.Propose(ctx, cmdPut, payload); err != nil {
					fails.Add(1)
					continue
				}
				local = append(local, time.Since(t0))
			}
			mu.Lock()
			lats = append(lats, local...)
			mu.Unlock()
		})
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
	entries, cmds := histogram(b, m.reg, "edgechat_raft_batch_commands")
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	if entries > 0 {
		b.ReportMetric(cmds/float64(entries), "cmds/entry")
	}
}

// BenchmarkProposeRate offers proposals at a fixed rate (open loop),
// spread round-robin over the three nodes of a cluster over TCP with
// fsync on, as the durable-DM bench spreads its senders, and reports the
// process CPU per command (all three nodes: Raft, forwarding, the RPC,
// raft-wal with its fsyncs, the test FSM's Badger writes), the log
// entries and commit-announcement barriers per command, and the
// latency percentiles. b.N is the number of commands:
//
//	go test -run XXX -bench BenchmarkProposeRate -benchtime 5000x ./cluster/
func BenchmarkProposeRate(b *testing.B) {
	for _, rate := range []int{100, 1000, 10000} {
		b.Run(fmt.Sprintf("rate=%d", rate), func(b *testing.B) {
			ms := startClusterWith(b, 3, func(c *Config) {
				c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout = 0, 0, 0 // production defaults
			})
			leader := leaderOf(b, ms)
			value := make([]byte, 200)
			for i := range value {
				value[i] = 'a' + byte(i%26)
			}
			var (
				mu    sync.Mutex
				lats  = make([]time.Duration, 0, b.N)
				wg    sync.WaitGroup
				fails atomic.Int64
			)
			ann0, _ := testutil.MetricValue(b, leader.reg, "edgechat_raft_commit_announcements_total", nil)
			notices := map[string]string{"result": "taken"}
			not0, _ := testutil.MetricValue(b, leader.reg, "edgechat_raft_commit_notices_total", notices)
			idx0 := leader.raft.LastIndex()
			cpu0 := processCPU(b)
			b.ResetTimer()
			start := time.Now()
			interval := time.Second / time.Duration(rate)
			for i := range b.N {
				if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
					time.Sleep(d)
				}
				m := ms[i%len(ms)]
				payload := fmt.Appendf(nil, "m%012d=", i)
				payload = append(payload, value...)
				wg.Go(func() {
					t0 := time.Now()
					if _, err := m.Propose(context.Background(), cmdPut, payload); err != nil {
						fails.Add(1)
						return
					}
					d := time.Since(t0)
					mu.Lock()
					lats = append(lats, d)
					mu.Unlock()
				})
			}
			wg.Wait()
			b.StopTimer()
			cpu := processCPU(b) - cpu0
			entries := leader.raft.LastIndex() - idx0
			ann1, _ := testutil.MetricValue(b, leader.reg, "edgechat_raft_commit_announcements_total", nil)
			not1, _ := testutil.MetricValue(b, leader.reg, "edgechat_raft_commit_notices_total", notices)
			if fails.Load() > 0 {
				b.Fatalf("%d proposals failed", fails.Load())
			}
			slices.Sort(lats)
			pct := func(p float64) float64 {
				return float64(lats[min(len(lats)-1, int(p*float64(len(lats))))].Microseconds()) / 1000
			}
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/cmd")
			b.ReportMetric(float64(entries)/float64(b.N), "entries/cmd")
			b.ReportMetric((ann1-ann0)/float64(b.N), "barriers/cmd")
			b.ReportMetric((not1-not0)/float64(b.N), "notices/cmd")
			b.ReportMetric(pct(0.50), "p50-ms")
			b.ReportMetric(pct(0.99), "p99-ms")
		})
	}
}

// processCPU is the user+system CPU time this process has used.
func processCPU(t testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
