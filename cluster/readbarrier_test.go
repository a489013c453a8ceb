package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/internal/wire"
)

// cmdHeld stores r/test/held on every node, but a node whose gate is set
// applies it only once the gate is closed: a follower that lags.
const cmdHeld byte = 0xF2

// A follower that has not applied an entry the cluster committed (and
// acknowledged) cannot pass a read barrier until it has; then the entry
// is in what it reads. The barrier works from the leader too.
func TestReadBarrierWaitsForWhatWasCommitted(t *testing.T) {
	ms := startCluster(t, 3)
	leader := leaderOf(t, ms)
	lagging := followerOf(ms, leader)
	gate := make(chan struct{})
	for _, m := range ms {
		held := m == lagging
		m.f.Register(cmdHeld, func(tx *badger.Txn, _ fsm.Position, _ []byte) (any, error) {
			if held {
				<-gate
			}
			return nil, tx.Set([]byte("r/test/held"), []byte("yes"))
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := leader.Propose(ctx, cmdHeld, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := getKey(lagging.db, "r/test/held"); !errors.Is(err, badger.ErrKeyNotFound) {
		t.Fatalf("the held follower applied the entry: %v", err)
	}

	short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
	err := lagging.ReadBarrier(short)
	cancelShort()
	if !errors.Is(err, wire.ErrUnavailable) {
		t.Fatalf("read barrier on a follower behind a committed entry: %v, want ErrUnavailable", err)
	}

	passed := make(chan error, 1)
	go func() { passed <- lagging.ReadBarrier(ctx) }()
	close(gate)
	if err := <-passed; err != nil {
		t.Fatalf("read barrier after the follower caught up: %v", err)
	}
	if v, err := getKey(lagging.db, "r/test/held"); err != nil || v != "yes" {
		t.Fatalf("after the barrier the follower reads %q, %v", v, err)
	}

	proposeKeys(t, leader, "after")
	if err := leader.ReadBarrier(ctx); err != nil {
		t.Fatalf("read barrier on the leader: %v", err)
	}
	if v, err := getKey(leader.db, "r/test/after"); err != nil || v != "vafter" {
		t.Fatalf("leader reads %q, %v", v, err)
	}
}

// Without a leader a read barrier fails as unavailable, not with a
// stale read.
func TestReadBarrierWithoutALeader(t *testing.T) {
	ms := startCluster(t, 3)
	leader := leaderOf(t, ms)
	left := followerOf(ms, leader)
	for _, m := range ms {
		if m != left {
			m.stop(t)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := left.ReadBarrier(ctx); !errors.Is(err, wire.ErrUnavailable) {
		t.Fatalf("read barrier with no quorum: %v, want ErrUnavailable", err)
	}
}

// Reads that arrive together share barriers: a reconnection storm does
// not append one barrier per client.
func TestReadBarriersAreShared(t *testing.T) {
	ms := startCluster(t, 3)
	leader := leaderOf(t, ms)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	const reads = 60
	errs := make(chan error, reads)
	for i := range reads {
		m := ms[i%len(ms)]
		go func() { errs <- m.ReadBarrier(ctx) }()
	}
	for range reads {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	barriers := readMetric(t, leader, "edgechat_raft_read_barriers_total")
	if barriers < 1 || barriers > reads/3 {
		t.Fatalf("%v barriers for %d reads", barriers, reads)
	}
	t.Logf("%v barriers for %d reads", barriers, reads)
}

// readMetric is a counter of m's registry (0 when absent).
func readMetric(t *testing.T, m *member, name string) float64 {
	t.Helper()
	mfs, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	return 0
}

// After the first round of a term, the leader answers read rounds with
// a round of heartbeats, no log entry; what was committed before a read
// is still what it sees, on the leader and on a follower.
func TestReadRoundsAfterTheFirstAppendNothing(t *testing.T) {
	ms := startCluster(t, 3)
	leader := leaderOf(t, ms)
	follower := followerOf(ms, leader)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := leader.ReadBarrier(ctx); err != nil {
		t.Fatal(err)
	}
	barriers := readMetric(t, leader, "edgechat_raft_read_barriers_total")
	for i := range 10 {
		key := fmt.Sprintf("seen%d", i)
		proposeKeys(t, leader, key)
		reader := []*member{leader, follower}[i%2]
		if err := reader.ReadBarrier(ctx); err != nil {
			t.Fatalf("read %d: %v", i, err)
		}
		if v, err := getKey(reader.db, "r/test/"+key); err != nil || v != "v"+key {
			t.Fatalf("read %d on %s: %q, %v", i, reader.name, v, err)
		}
	}
	if got := readMetric(t, leader, "edgechat_raft_read_barriers_total"); got != barriers {
		t.Fatalf("barriers %v after the first, want %v", got, barriers)
	}
	// One check round per read at least (a follower whose answer came
	// late on a loaded machine asks again: a second round, still no
	// entry).
	if got := readMetric(t, leader, "edgechat_raft_read_leader_checks_total"); got < 10 {
		t.Fatalf("leader checks %v, want one per read (10)", got)
	}
}

// A leader cut off from its followers answers no read round, not even
// after its term's first barrier passed: it might have been deposed, and
// a newer leader might have acknowledged what it has not seen.
func TestCutOffLeaderAnswersNoRead(t *testing.T) {
	ms := startCluster(t, 3)
	leader := leaderOf(t, ms)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := leader.ReadBarrier(ctx); err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m != leader {
			m.stop(t)
		}
	}
	short, cancelShort := context.WithTimeout(ctx, 2*time.Second)
	defer cancelShort()
	if err := leader.ReadBarrier(short); !errors.Is(err, wire.ErrUnavailable) {
		t.Fatalf("read on a leader without its followers: %v, want ErrUnavailable", err)
	}
}

// A node whose configuration holds one server that is not itself (a
// joiner that has received the leader's first entries, the one-voter
// configuration it was bootstrapped with, but not yet the entry that
// added it; or a node removed from a cluster of two) is not a single
// node: it has applied nothing of what the cluster committed, and its
// read barrier must wait for the leader, not pass at once.
func TestReadBarrierOnAJoinerThatHoldsOnlyTheLeadersConfiguration(t *testing.T) {
	n1 := startMember(t, "n1", func(c *Config) { c.Bootstrap = true })
	waitReady(t, n1.Raft)
	proposeKeys(t, n1, "before-join")

	// n2's log as a joiner has it once the leader's first entry came:
	// the configuration n1 was bootstrapped with, n1 alone (the same
	// entry: index 1, term 1).
	n2 := &member{name: "n2", dir: t.TempDir()}
	boot := raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: "n1", Address: raft.ServerAddress(n1.addr)}}}
	writeRaftLog(t, n2.dir, boot)
	n2.start(t, "127.0.0.1:0", nil) // no cluster flags
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	short, cancelShort := context.WithTimeout(ctx, 2*time.Second)
	err := n2.ReadBarrier(short)
	cancelShort()
	if _, gerr := getKey(n2.db, "r/test/before-join"); err == nil && gerr != nil {
		t.Fatalf("read barrier passed on a node that has not applied what the cluster committed (%v)", gerr)
	}
	if !errors.Is(err, wire.ErrUnavailable) {
		t.Fatalf("read barrier on a joiner that knows no leader yet: %v, want ErrUnavailable", err)
	}

	// The leader adds it: it catches up, and then the barrier passes.
	if code, msg := n1.join(ctx, &JoinArgs{Name: "n2", Addr: n2.addr}); code != "" {
		t.Fatalf("join n2: %s %s", code, msg)
	}
	if err := n2.ReadBarrier(ctx); err != nil {
		t.Fatalf("read barrier on n2 once it joined: %v", err)
	}
	if v, err := getKey(n2.db, "r/test/before-join"); err != nil || v != "vbefore-join" {
		t.Fatalf("after the barrier n2 reads %q, %v", v, err)
	}
}

// writeRaftLog gives the data directory dir a Raft log holding conf as
// its first entry, as raft.BootstrapCluster writes it.
func writeRaftLog(t *testing.T, dir string, conf raft.Configuration) {
	t.Helper()
	walDir := filepath.Join(dir, "raft", "wal")
	if err := os.MkdirAll(walDir, 0o750); err != nil {
		t.Fatal(err)
	}
	meta := &metadb.BoltMetaDB{}
	w, err := wal.Open(walDir, wal.WithMetaStore(meta))
	if err != nil {
		t.Fatal(err)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(filepath.Join(dir, "raft"), snapshotsRetained, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	rc := raft.DefaultConfig()
	rc.LocalID = "n2"
	_, trans := raft.NewInmemTransport("")
	if err := raft.BootstrapCluster(rc, w, w, snaps, trans, conf); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	_ = meta.Close()
}
