package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/internal/wire"
)

func TestProposeBatchesAndSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	tn := startNode(t, nodeOpts{dataDir: dir, bootstrap: true})
	waitReady(t, tn.Raft)
	if !tn.IsLeader() {
		t.Fatalf("single bootstrapped node is not leader: %+v", tn.Stats())
	}
	if host, _, err := net.SplitHostPort(tn.Addr()); err != nil || host != "127.0.0.1" {
		t.Fatalf("Addr() = %q", tn.Addr())
	}

	// 100 goroutines released together, several proposals each.
	const workers, each = 100, 5
	var wg sync.WaitGroup
	start := make(chan struct{})
	errs := make(chan error, workers*each)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for i := range each {
				k := fmt.Sprintf("w%d-%d", w, i)
				v, err := tn.Propose(context.Background(), cmdPut, []byte(k+"=v"+k))
				if err != nil {
					errs <- fmt.Errorf("%s: %w", k, err)
					continue
				}
				if v != "ok:"+k {
					errs <- fmt.Errorf("%s: value %v", k, v)
				}
			}
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	entries, cmds := histogram(t, tn.reg, "edgechat_raft_batch_commands")
	if cmds != workers*each {
		t.Errorf("batch histogram counted %v commands, want %d", cmds, workers*each)
	}
	if avg := cmds / float64(entries); avg <= 1 {
		t.Errorf("no batching: %v commands in %d entries", cmds, entries)
	} else {
		t.Logf("%v commands in %d entries (%.1f per entry)", cmds, entries, avg)
	}
	if got := counter(t, tn.reg, "edgechat_raft_proposals_total", "ok"); got != workers*each {
		t.Errorf("proposals_total{ok} = %v", got)
	}
	if n, _ := histogram(t, tn.reg, "edgechat_raft_commit_seconds"); n != workers*each {
		t.Errorf("commit histogram has %d samples", n)
	}

	ctx := context.Background()
	num, err := tn.MachineNumber(ctx)
	if err != nil || num != 1 {
		t.Fatalf("MachineNumber = %d, %v; want 1", num, err)
	}
	if again, err := tn.MachineNumber(ctx); err != nil || again != num {
		t.Fatalf("MachineNumber again = %d, %v", again, err)
	}
	before := tn.Stats()

	tn.stop(t)
	if _, err := tn.Propose(ctx, cmdPut, []byte("late=x")); !errors.Is(err, wire.ErrUnavailable) {
		t.Fatalf("Propose after stop: %v, want ErrUnavailable", err)
	}
	if err := tn.WaitReady(ctx); !errors.Is(err, wire.ErrUnavailable) {
		t.Fatalf("WaitReady after stop: %v", err)
	}

	tn2 := startNode(t, nodeOpts{dataDir: dir, bootstrap: true})
	waitReady(t, tn2.Raft)
	for _, k := range []string{"w0-0", "w99-4", "w42-3"} {
		if v, err := getKey(tn2.db, "r/test/"+k); err != nil || v != "v"+k {
			t.Errorf("after restart %s = %q, %v", k, v, err)
		}
	}
	if got := tn2.Stats(); got.AppliedIndex < before.AppliedIndex || got.Term < before.Term {
		t.Errorf("indexes went back: before %+v after %+v", before, got)
	}
	if again, err := tn2.MachineNumber(ctx); err != nil || again != num {
		t.Fatalf("MachineNumber after restart = %d, %v; want %d", again, err, num)
	}
	if v, err := tn2.Propose(ctx, cmdPut, []byte("after=restart")); err != nil || v != "ok:after" {
		t.Fatalf("Propose after restart = %v, %v", v, err)
	}
	if v, err := getKey(tn2.db, "r/test/after"); err != nil || v != "restart" {
		t.Fatalf("r/test/after = %q, %v", v, err)
	}
}

func TestSnapshotThenRestart(t *testing.T) {
	dir := t.TempDir()
	small := func(c *Config) {
		c.TrailingLogs = 4
		c.SnapshotThreshold = 1 << 20 // only the forced snapshot
		// Small segments: a compaction that frees no segment file is
		// deferred (logstore.go), and this test needs one that happens.
		c.LogSegmentSize = 512
	}
	tn := startNode(t, nodeOpts{dataDir: dir, bootstrap: true, tweak: small})
	waitReady(t, tn.Raft)
	ctx := context.Background()
	num, err := tn.MachineNumber(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// One entry per proposal (sequential), so the log has many entries.
	for i := range 30 {
		if _, err := tn.Propose(ctx, cmdPut, fmt.Appendf(nil, "s%d=%d", i, i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tn.raft.Snapshot().Error(); err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	full := fullState(t, tn.f) // what an older version's snapshot held
	for i := 30; i < 35; i++ {
		if _, err := tn.Propose(ctx, cmdPut, fmt.Appendf(nil, "s%d=%d", i, i)); err != nil {
			t.Fatal(err)
		}
	}
	first, err := tn.wal.FirstIndex()
	if err != nil || first <= 1 {
		t.Fatalf("log not compacted by the snapshot: first index %d, %v", first, err)
	}
	// The FSM's own applied index: Raft's also counts the barriers that
	// announce commits (announce.go), which never reach the FSM.
	applied, err := tn.f.AppliedIndex()
	if err != nil {
		t.Fatal(err)
	}
	tn.stop(t)

	check := func(tn *testNode) {
		t.Helper()
		for _, i := range []int{0, 17, 29, 30, 34} {
			k := fmt.Sprintf("s%d", i)
			if v, err := getKey(tn.db, "r/test/"+k); err != nil || v != fmt.Sprint(i) {
				t.Errorf("%s = %q, %v", k, v, err)
			}
		}
		if got, err := tn.MachineNumber(ctx); err != nil || got != num {
			t.Errorf("MachineNumber = %d, %v; want %d", got, err, num)
		}
		if idx, err := tn.f.AppliedIndex(); err != nil || idx < applied {
			t.Errorf("FSM applied index %d < %d (%v)", idx, applied, err)
		}
	}

	// Same Badger: the snapshot restore keeps the newer local state.
	var restores atomic.Int32
	hook := func(f *fsm.FSM) { f.OnRestore(func() { restores.Add(1) }) }
	tn2 := startNode(t, nodeOpts{dataDir: dir, bootstrap: true, tweak: small, beforeNew: hook})
	waitReady(t, tn2.Raft)
	check(tn2)
	if restores.Load() != 0 {
		t.Errorf("restore replaced newer local state")
	}
	tn2.stop(t)

	// Badger lost, Raft intact: the snapshot only refers to the lost
	// database, so the node refuses to start instead of serving from an
	// empty state (or one that skips the compacted entries).
	lost := nodeOpts{dataDir: dir, dbDir: t.TempDir(), bootstrap: true, tweak: small}
	if err := newNodeErr(t, lost); !errors.Is(err, fsm.ErrStateLost) {
		t.Fatalf("New with the database gone: %v, want fsm.ErrStateLost", err)
	}

	// A full snapshot as an older version stored it (here: the state at
	// the snapshot, uncompressed) still restores a node whose Badger is
	// gone: the state comes back from it plus the log after it (the log
	// alone no longer has entry 1).
	replaceWithFullSnapshot(t, dir, full)
	tn3 := startNode(t, nodeOpts{dataDir: dir, dbDir: t.TempDir(), bootstrap: true, tweak: small, beforeNew: hook})
	waitReady(t, tn3.Raft)
	check(tn3)
	if restores.Load() != 1 {
		t.Errorf("OnRestore hooks ran %d times, want 1", restores.Load())
	}
	if _, err := tn3.Propose(ctx, cmdPut, []byte("new=1")); err != nil {
		t.Fatal(err)
	}
}

func TestProposeErrors(t *testing.T) {
	tn := startNode(t, nodeOpts{bootstrap: true})
	waitReady(t, tn.Raft)
	ctx := context.Background()
	applied := func() uint64 {
		idx, err := tn.f.AppliedIndex()
		if err != nil {
			t.Fatal(err)
		}
		return idx
	}

	before := applied()
	_, err := tn.Propose(ctx, cmdPut, make([]byte, MaxCommandSize+1))
	if !errors.Is(err, ErrTooLarge) || !errors.Is(err, wire.ErrInvalid) {
		t.Fatalf("oversized payload: %v", err)
	}
	if applied() != before {
		t.Fatalf("oversized payload reached the log")
	}
	if v, err := tn.Propose(ctx, cmdPut, append([]byte("big="), make([]byte, MaxCommandSize-4)...)); err != nil || v != "ok:big" {
		t.Fatalf("payload at the limit: %v, %v", v, err)
	}

	if _, err := tn.Propose(ctx, cmdReject, []byte("x")); !errors.Is(err, errRejected) {
		t.Fatalf("handler error not returned: %v", err)
	}
	if _, err := tn.Propose(ctx, 0xEE, []byte("x")); !errors.Is(err, fsm.ErrUnknownCommand) {
		t.Fatalf("unknown command: %v", err)
	}
	if got := counter(t, tn.reg, "edgechat_raft_proposals_total", "rejected"); got != 2 {
		t.Errorf("proposals_total{rejected} = %v, want 2", got)
	}

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := tn.Propose(cctx, cmdPut, []byte("c=1")); !errors.Is(err, wire.ErrUnavailable) || !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled ctx: %v", err)
	}
	if _, err := tn.Propose(ctx, wire.CmdNodeRegister, nil); !errors.Is(err, wire.ErrInvalid) {
		t.Fatalf("empty node name: %v", err)
	}
}

func TestNoLeader(t *testing.T) {
	// Not bootstrapped and no peers: it never elects anyone.
	tn := startNode(t, nodeOpts{})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := tn.WaitReady(ctx); !errors.Is(err, wire.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitReady without leader: %v", err)
	}
	if _, err := tn.Propose(context.Background(), cmdPut, []byte("a=b")); !errors.Is(err, ErrNoLeader) || !errors.Is(err, wire.ErrUnavailable) {
		t.Fatalf("Propose without leader: %v", err)
	}
	if _, err := tn.MachineNumber(context.Background()); !errors.Is(err, wire.ErrUnavailable) {
		t.Fatalf("MachineNumber without leader: %v", err)
	}
	if s := tn.Stats(); s.State != "Follower" || s.LeaderAddr != "" {
		t.Fatalf("stats: %+v", s)
	}
}

func TestRaftLogsReachSlog(t *testing.T) {
	var buf testutil.SyncBuffer
	tn := startNode(t, nodeOpts{tweak: func(c *Config) {
		c.Logger = slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}})
	// Without peers raft warns that it cannot hold an election.
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if s := buf.String(); !strings.Contains(s, "level=WARN") || !strings.Contains(s, "component=raft") {
			return fmt.Errorf("no raft warning in %q", s)
		}
		return nil
	})
	// Raft's info chatter is filtered out.
	if strings.Contains(buf.String(), "level=INFO msg=\"initial configuration\"") {
		t.Errorf("raft info logs leaked: %s", buf.String())
	}
	_ = tn
}

func TestConfig(t *testing.T) {
	f := fsm.New(openDB(t, t.TempDir()), testLogger(t))
	t.Cleanup(func() { _ = f.DB().Close() })
	for name, cfg := range map[string]Config{
		"no name":       {DataDir: t.TempDir(), BindAddr: "127.0.0.1:0"},
		"no dir":        {NodeName: "n1", BindAddr: "127.0.0.1:0"},
		"bad bind":      {NodeName: "n1", DataDir: t.TempDir(), BindAddr: "127.0.0.1:99999"},
		"bad advertise": {NodeName: "n1", DataDir: t.TempDir(), BindAddr: "127.0.0.1:0", AdvertiseAddr: "0.0.0.0:1"},
		"lease>hb":      {NodeName: "n1", DataDir: t.TempDir(), BindAddr: "127.0.0.1:0", HeartbeatTimeout: 50 * time.Millisecond, LeaderLeaseTimeout: time.Second},
	} {
		cfg.Logger = testLogger(t)
		if n, err := New(cfg, f); err == nil {
			t.Errorf("%s: New succeeded: %s", name, n.Addr())
		}
	}
	if _, err := New(Config{NodeName: "n1", DataDir: t.TempDir()}, nil); err == nil {
		t.Error("nil FSM accepted")
	}

	// Bound to all interfaces: advertise loopback with the real port.
	tn := startNode(t, nodeOpts{tweak: func(c *Config) { c.BindAddr = ":0" }})
	host, port, _ := net.SplitHostPort(tn.Addr())
	if host != "127.0.0.1" || port == "0" {
		t.Errorf("Addr() = %q", tn.Addr())
	}
	tn2 := startNode(t, nodeOpts{tweak: func(c *Config) { c.AdvertiseAddr = "127.0.0.2:7000" }})
	if tn2.Addr() != "127.0.0.2:7000" {
		t.Errorf("Addr() = %q, want the advertised one", tn2.Addr())
	}

	// A second node on a data dir in use is refused at once.
	dir := t.TempDir()
	startNode(t, nodeOpts{dataDir: dir})
	cfg := fastConfig(t, nodeOpts{dataDir: dir})
	if _, err := New(cfg, f); !errors.Is(err, ErrDataDirLocked) {
		t.Errorf("second node on one dir: %v", err)
	}
}

func TestNodeRegisterHandler(t *testing.T) {
	db := openDB(t, t.TempDir())
	t.Cleanup(func() { _ = db.Close() })
	reg := func(name string) (any, error) {
		var v any
		var herr error
		err := db.Update(func(tx *badger.Txn) error {
			v, herr = applyNodeRegister(tx, fsm.Position{}, []byte(name))
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return v, herr
	}
	for i, name := range []string{"a", "b", "c"} {
		if v, err := reg(name); err != nil || v != uint16(i+1) {
			t.Fatalf("register %s = %v, %v", name, v, err)
		}
	}
	if v, _ := reg("b"); v != uint16(2) {
		t.Fatalf("re-register b = %v", v)
	}
	// Free number 2 (as a future node removal would): the next name
	// takes the smallest free number.
	if err := db.Update(func(tx *badger.Txn) error {
		if err := tx.Delete(nodeKey("b")); err != nil {
			return err
		}
		return tx.Delete(nodeNumKey(2))
	}); err != nil {
		t.Fatal(err)
	}
	if v, _ := reg("d"); v != uint16(2) {
		t.Fatalf("d = %v, want the freed 2", v)
	}
	if v, _ := reg("e"); v != uint16(4) {
		t.Fatalf("e = %v, want 4", v)
	}
	if _, err := reg(""); !errors.Is(err, wire.ErrInvalid) {
		t.Fatalf("empty name: %v", err)
	}
	if _, err := reg(strings.Repeat("x", maxNodeName+1)); !errors.Is(err, wire.ErrInvalid) {
		t.Fatalf("long name: %v", err)
	}
	// Fill the space (directly, the handler's scan is what is tested):
	// number 1024 does not exist.
	wb := db.NewWriteBatch()
	for i := 5; i < MaxMachineNumber; i++ {
		name := fmt.Sprintf("x%d", i)
		if err := wb.Set(nodeKey(name), fmt.Append(nil, i)); err != nil {
			t.Fatal(err)
		}
		if err := wb.Set(nodeNumKey(uint16(i)), []byte(name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := wb.Flush(); err != nil {
		t.Fatal(err)
	}
	if v, err := reg("last"); err != nil || v != uint16(MaxMachineNumber) {
		t.Fatalf("last = %v, %v", v, err)
	}
	if _, err := reg("overflow"); !errors.Is(err, ErrMachineNumbers) {
		t.Fatalf("full registry: %v", err)
	}
	if _, ok, _ := readNum(db, "overflow"); ok {
		t.Fatal("failed registration wrote a number")
	}
}

func readNum(db *badger.DB, name string) (uint16, bool, error) {
	var num uint16
	var ok bool
	err := db.View(func(tx *badger.Txn) error {
		var err error
		num, ok, err = readNodeNumber(tx, name)
		return err
	})
	return num, ok, err
}

// ProposeAsync hands commands to the log in call order: on the leader
// they apply in that order, and each wait answers its own command's
// result (values and handler errors alike).
func TestProposeAsyncAppliesInCallOrder(t *testing.T) {
	const cmdRecord byte = 0xF2
	var mu sync.Mutex
	var applied []string
	record := func(f *fsm.FSM) {
		f.Register(cmdRecord, func(_ *badger.Txn, _ fsm.Position, p []byte) (any, error) {
			mu.Lock()
			applied = append(applied, string(p))
			mu.Unlock()
			return "rec:" + string(p), nil
		})
	}
	tn := startNode(t, nodeOpts{dataDir: t.TempDir(), bootstrap: true, beforeNew: record})
	waitReady(t, tn.Raft)
	const n = 500
	waits := make([]func(context.Context) (any, error), n)
	var want []string
	for i := range n {
		p := fmt.Sprintf("c%03d", i)
		if i%50 == 7 {
			waits[i] = tn.ProposeAsync(context.Background(), cmdReject, []byte(p))
			continue
		}
		want = append(want, p)
		waits[i] = tn.ProposeAsync(context.Background(), cmdRecord, []byte(p))
	}
	for i, wait := range waits {
		v, err := wait(context.Background())
		if i%50 == 7 {
			if !errors.Is(err, errRejected) {
				t.Fatalf("command %d: %v, want the handler's error", i, err)
			}
			continue
		}
		if err != nil || v != fmt.Sprintf("rec:c%03d", i) {
			t.Fatalf("command %d: %v, %v", i, v, err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(applied, want) {
		t.Fatalf("applied out of call order:\n%v\nwant\n%v", applied, want)
	}
	// A command that cannot be proposed fails in its wait.
	if _, err := tn.ProposeAsync(context.Background(), cmdRecord, make([]byte, MaxCommandSize+1))(context.Background()); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized: %v", err)
	}
}

// With one entry in flight (the default), proposals that arrive while an
// entry commits wait for it and then share the next entry; with more
// entries allowed, the same proposals go into Raft as entries of their
// own at once.
func TestEntriesInFlightGatherTheNextEntry(t *testing.T) {
	const (
		cmdHold  byte = 0xF3 // blocks its entry's apply until released
		cmdCount byte = 0xF4 // counts its commands per entry
	)
	for _, c := range []struct {
		inFlight    int
		wantEntries int // entries the ten later proposals took
	}{{0, 1}, {1, 1}, {8, 2}} {
		t.Run(fmt.Sprintf("in-flight=%d", c.inFlight), func(t *testing.T) {
			release, held := make(chan struct{}), make(chan struct{}, 1)
			var mu sync.Mutex
			entries := map[uint64]int{} // entry index -> commands of the later proposals
			handlers := func(f *fsm.FSM) {
				f.Register(cmdHold, func(_ *badger.Txn, _ fsm.Position, _ []byte) (any, error) {
					held <- struct{}{}
					<-release
					return nil, nil
				})
				f.Register(cmdCount, func(_ *badger.Txn, at fsm.Position, _ []byte) (any, error) {
					mu.Lock()
					entries[at.Index]++
					mu.Unlock()
					return nil, nil
				})
			}
			tn := startNode(t, nodeOpts{dataDir: t.TempDir(), bootstrap: true, beforeNew: handlers,
				tweak: func(cfg *Config) { cfg.MaxEntriesInFlight = c.inFlight }})
			waitReady(t, tn.Raft)
			holdDone := tn.ProposeAsync(context.Background(), cmdHold, nil)
			select {
			case <-held:
			case <-time.After(10 * time.Second):
				t.Fatal("the first entry was not applied")
			}
			// The first entry is applying and stays there. Ten more
			// proposals, one after another, while it does; then let the
			// batcher hand the first of them to Raft (with room for more
			// entries) before the hold ends.
			var waits []func(context.Context) (any, error)
			for range 10 {
				waits = append(waits, tn.ProposeAsync(context.Background(), cmdCount, nil))
				time.Sleep(5 * time.Millisecond)
			}
			close(release)
			if _, err := holdDone(context.Background()); err != nil {
				t.Fatal(err)
			}
			for i, w := range waits {
				if _, err := w(context.Background()); err != nil {
					t.Fatalf("proposal %d: %v", i, err)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if c.wantEntries == 1 && len(entries) != 1 {
				t.Fatalf("ten proposals made while one entry was in flight took %d entries (%v), want one", len(entries), entries)
			}
			if c.wantEntries > 1 && len(entries) < c.wantEntries {
				t.Fatalf("with %d entries allowed in flight the proposals took %d entries (%v): they waited", c.inFlight, len(entries), entries)
			}
		})
	}
}
