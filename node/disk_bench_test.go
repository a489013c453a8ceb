package node_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/wire"
	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
)

// BenchmarkDiskPerMessage stores b.N direct messages with 100-byte bodies
// through the archive's real path (SendDirect: Raft with fsync, the FSM,
// Badger) on one node, lets the storage settle as a long-running node's
// timers would (a Raft snapshot that truncates the log, value-log GC) and
// reports the bytes on disk per message: the Raft directory (log and
// snapshots) and the Badger directory, allocated blocks as du counts
// them, while the node runs and again after it stopped.
//
//	go test -run '^$' -bench BenchmarkDiskPerMessage -benchtime 200000x -timeout 30m ./node/
//
// EDGECHAT_DISK_BENCH_DIR=/some/dir keeps each run's data directory
// there for inspection. Bodies are random lowercase words: they compress about as well as
// chat text, not better. Messages go between 1,000 users in random pairs.
func BenchmarkDiskPerMessage(b *testing.B) {
	const (
		users   = 1000
		senders = 64
		bodyLen = 100
	)
	dir := b.TempDir()
	if keep := os.Getenv("EDGECHAT_DISK_BENCH_DIR"); keep != "" {
		// Keep the data for inspection (a fresh subdirectory per run).
		var err error
		if dir, err = os.MkdirTemp(keep, "disk-"); err != nil {
			b.Fatal(err)
		}
	}
	n := nodetest.StartNode(b, nodetest.WithDataDir(dir))
	ctx := context.Background()
	names := make([]string, users)
	for i := range names {
		names[i] = fmt.Sprintf("user%04d", i)
		if _, err := n.Auth.CreateAccount(ctx, names[i], nodetest.Password(names[i]), names[i]); err != nil {
			b.Fatal(err)
		}
	}
	if err := node.SettleStorage(ctx, n.Node); err != nil {
		b.Fatal(err)
	}
	base := diskUsage(b, dir)

	cpu0, wrote0 := cpuTime(), bytesWritten()
	b.ResetTimer()
	storeRandomDirect(b, n, names, b.N, senders, bodyLen, 1, func(i int64) {
		if i%(int64(b.N)/4+1) == 0 {
			// A running node snapshots on a timer; four snapshots in the
			// run leave the file store holding two of real size, as it
			// does at steady state, not one.
			if err := node.Snapshot(ctx, n.Node); err != nil {
				b.Error(err)
			}
		}
	})
	b.StopTimer()
	sendCPU := cpuTime() - cpu0

	unsettled := diskUsage(b, dir)
	cpu1 := cpuTime()
	sctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	if err := node.SettleStorage(sctx, n.Node); err != nil {
		b.Fatal(err)
	}
	time.Sleep(5 * time.Second) // Badger's compactors finish what the writes started
	settleCPU := cpuTime() - cpu1
	raftB, dbB := diskUsage(b, filepath.Join(dir, "raft")), diskUsage(b, filepath.Join(dir, "db"))
	if testing.Verbose() {
		b.Logf("after settling:\n%s", listFiles(dir))
	}
	if err := n.Stop(); err != nil {
		b.Fatal(err)
	}
	stopped := diskUsage(b, dir)

	per := func(v int64) float64 { return float64(v) / float64(b.N) }
	b.ReportMetric(per(raftB+dbB), "disk-B/msg")
	b.ReportMetric(per(raftB), "raft-B/msg")
	b.ReportMetric(per(dbB), "badger-B/msg")
	b.ReportMetric(per(raftB+dbB-base), "growth-B/msg")
	b.ReportMetric(per(unsettled), "unsettled-B/msg")
	b.ReportMetric(per(stopped), "stopped-B/msg")
	b.ReportMetric(float64(base)/(1<<20), "empty-MB")
	b.ReportMetric(float64(sendCPU.Microseconds())/float64(b.N), "cpu-µs/msg")
	b.ReportMetric(float64(settleCPU.Milliseconds()), "settle-cpu-ms")
	if wrote0 >= 0 {
		// Everything the process wrote to storage (log, Badger's tables
		// and compactions, snapshots) per message: write amplification.
		b.ReportMetric(per(bytesWritten()-wrote0), "written-B/msg")
	}
}

// storeRandomDirect stores count direct messages (cids d1..dN) with
// random bodies of bodyLen bytes between names in random pairs, from
// senders goroutines through the archive's real path; each, when set,
// runs before message i.
func storeRandomDirect(b *testing.B, n *nodetest.Node, names []string, count, senders, bodyLen int, seed uint64, each func(i int64)) {
	ctx := context.Background()
	var next atomic.Int64
	var wg sync.WaitGroup
	for s := range senders {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(s), seed))
			for {
				i := next.Add(1)
				if i > int64(count) {
					return
				}
				if each != nil {
					each(i)
				}
				from, to := names[rng.IntN(len(names))], names[rng.IntN(len(names))]
				raw, _ := json.Marshal(map[string]string{"cid": fmt.Sprintf("d%d", i), "type": "text", "body": randomBody(rng, bodyLen)})
				env, err := wire.ParseEnvelope(raw)
				if err != nil {
					b.Error(err)
					return
				}
				if _, _, _, err := n.Archive.SendDirect(ctx, from, to, env); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// randomBody is n bytes of random lowercase words.
func randomBody(rng *rand.Rand, n int) string {
	var sb strings.Builder
	for sb.Len() < n {
		if sb.Len() > 0 {
			sb.WriteByte(' ')
		}
		for range 2 + rng.IntN(7) {
			sb.WriteByte(byte('a' + rng.IntN(26)))
		}
	}
	return sb.String()[:n]
}

// diskUsage is the space allocated to the files under dir (du's figure,
// which counts preallocated segments and leaves out holes).
func diskUsage(tb testing.TB, dir string) int64 {
	tb.Helper()
	var total int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) {
				return nil // a file deleted while we walk
			}
			return err
		}
		info, err := d.Info()
		if err != nil {
			if os.IsNotExist(err) {
				return nil
			}
			return err
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			total += st.Blocks * 512
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return total
}

// listFiles lists the files under dir with apparent and allocated sizes.
func listFiles(dir string) string {
	var sb strings.Builder
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		var alloc int64
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			alloc = st.Blocks * 512
		}
		rel, _ := filepath.Rel(dir, p)
		fmt.Fprintf(&sb, "%12d %12d %s\n", info.Size(), alloc, rel)
		return nil
	})
	return sb.String()
}

// bytesWritten is what this process caused to be written to storage so
// far (write_bytes less cancelled_write_bytes, for pages of files deleted
// before they were written back, of /proc/self/io); -1 where that is not
// available.
func bytesWritten() int64 {
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return -1
	}
	var written, cancelled int64 = -1, 0
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ": ")
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil {
			return -1
		}
		switch k {
		case "write_bytes":
			written = n
		case "cancelled_write_bytes":
			cancelled = n
		}
	}
	if written < 0 {
		return -1
	}
	return written - cancelled
}

// cpuTime is the CPU time (user and system) this process used so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
