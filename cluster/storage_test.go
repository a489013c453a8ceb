package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"github.com/klauspost/compress/zstd"

	"github.com/edgechat/edgechat/cluster/fsm"
)

func fileSnapshots(t *testing.T) (raft.SnapshotStore, string) {
	t.Helper()
	dir := t.TempDir()
	files, err := raft.NewFileSnapshotStoreWithLogger(dir, snapshotsRetained, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	return files, dir
}

func writeSnapshot(t *testing.T, s raft.SnapshotStore, index uint64, data []byte) string {
	t.Helper()
	_, trans := raft.NewInmemTransport("")
	sink, err := s.Create(raft.SnapshotVersionMax, index, 1, raft.Configuration{}, 1, trans)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sink.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
	return sink.ID()
}

func readSnapshotFile(t *testing.T, s raft.SnapshotStore, id string) (*raft.SnapshotMeta, []byte) {
	t.Helper()
	meta, rc, err := s.Open(id)
	if err != nil {
		t.Fatalf("Open %s: %v", id, err)
	}
	defer rc.Close()
	got, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return meta, got
}

// A snapshot is compressed on disk and comes back byte for byte, with
// meta.Size the size a follower will count when a leader sends it.
func TestCompressedSnapshotsRoundTrip(t *testing.T) {
	files, dir := fileSnapshots(t)
	s := &compressedSnapshots{SnapshotStore: files}
	data := bytes.Repeat([]byte("ECSNAP1\nr/arch/m/some key and a JSON value of a message\n"), 20000)
	id := writeSnapshot(t, s, 10, data)

	onDisk, err := os.ReadFile(filepath.Join(dir, "snapshots", id, "state.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(onDisk, zstdMagic) || len(onDisk) >= len(data)/4 {
		t.Fatalf("state.bin is %d bytes starting %q; want a zstd frame much smaller than %d", len(onDisk), onDisk[:8], len(data))
	}
	meta, got := readSnapshotFile(t, s, id)
	if !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes, want the %d written", len(got), len(data))
	}
	if meta.Size != int64(len(data)) || meta.Index != 10 {
		t.Fatalf("meta = %+v; want Size %d, Index 10", meta, len(data))
	}
}

// Snapshot files written uncompressed (before this version) still open,
// and a cancelled snapshot leaves nothing behind.
func TestCompressedSnapshotsReadOldFilesAndCancel(t *testing.T) {
	files, _ := fileSnapshots(t)
	old := []byte("ECSNAP1\nan old uncompressed snapshot")
	id := writeSnapshot(t, files, 5, old) // the plain file store, as before
	s := &compressedSnapshots{SnapshotStore: files}
	meta, got := readSnapshotFile(t, s, id)
	if !bytes.Equal(got, old) || meta.Size != int64(len(old)) {
		t.Fatalf("old snapshot read as %q (size %d)", got, meta.Size)
	}

	_, trans := raft.NewInmemTransport("")
	sink, err := s.Create(raft.SnapshotVersionMax, 9, 1, raft.Configuration{}, 1, trans)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sink.Write([]byte("half a snapshot")); err != nil {
		t.Fatal(err)
	}
	if err := sink.Cancel(); err != nil {
		t.Fatal(err)
	}
	list, err := s.List()
	if err != nil || len(list) != 1 || list[0].ID != id {
		t.Fatalf("List after a cancel = %+v, %v; want only %s", list, err, id)
	}
}

// A damaged compressed file fails to open instead of handing out garbage.
func TestCompressedSnapshotsDamaged(t *testing.T) {
	files, dir := fileSnapshots(t)
	s := &compressedSnapshots{SnapshotStore: files}
	id := writeSnapshot(t, s, 3, bytes.Repeat([]byte("data "), 1000))
	path := filepath.Join(dir, "snapshots", id, "state.bin")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b[:len(b)/2], 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Open(id); err == nil {
		t.Fatal("Open of a truncated snapshot succeeded")
	}
}

// walSegments counts the raft-wal segment files of a node.
func walSegments(t *testing.T, dataDir string) int {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dataDir, "raft", "wal"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".wal") {
			n++
		}
	}
	return n
}

// After a snapshot the log's old segments are deleted from disk, not just
// forgotten, the snapshot is a small reference to the database, and a
// node restarted on the compacted log and the reference has every key.
func TestSnapshotDeletesOldLogSegments(t *testing.T) {
	dir := t.TempDir()
	small := func(c *Config) {
		c.LogSegmentSize = 64 << 10
		c.TrailingLogs = 8
		c.SnapshotThreshold = 1 << 20 // only the forced snapshot
	}
	tn := startNode(t, nodeOpts{dataDir: dir, bootstrap: true, tweak: small})
	waitReady(t, tn.Raft)
	ctx := context.Background()
	value := strings.Repeat("v", 1000)
	for i := range 300 { // one entry each: about 300 KB of log
		if _, err := tn.Propose(ctx, cmdPut, fmt.Appendf(nil, "k%d=%s", i, value)); err != nil {
			t.Fatal(err)
		}
	}
	before := walSegments(t, dir)
	if before < 4 {
		t.Fatalf("%d segments before the snapshot; want several of 64 KB", before)
	}
	if err := tn.Snapshot(ctx); err != nil {
		t.Fatal(err)
	}
	if after := walSegments(t, dir); after > 2 {
		t.Fatalf("%d segments after the snapshot (%d before); want the old ones deleted", after, before)
	}
	if size := snapshotFilesSize(t, dir); size > 4096 {
		t.Fatalf("snapshot files take %d bytes for 300 KB of state; want a reference, not a copy", size)
	}
	tn.stop(t)

	check := func(tn *testNode) {
		t.Helper()
		for _, i := range []int{0, 150, 299} {
			if v, err := getKey(tn.db, fmt.Sprintf("r/test/k%d", i)); err != nil || v != value {
				t.Errorf("k%d = %d bytes, %v", i, len(v), err)
			}
		}
	}
	tn2 := startNode(t, nodeOpts{dataDir: dir, bootstrap: true, tweak: small})
	waitReady(t, tn2.Raft)
	check(tn2)
}

// fullState is f's full snapshot stream (what a leader sends).
func fullState(t *testing.T, f *fsm.FSM) []byte {
	t.Helper()
	_, _, rc, err := f.OpenState()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// replaceWithFullSnapshot replaces the snapshots in dataDir's Raft
// directory by one full, uncompressed snapshot with the latest one's
// metadata: what a node of an older version left on disk.
func replaceWithFullSnapshot(t *testing.T, dataDir string, full []byte) {
	t.Helper()
	raftDir := filepath.Join(dataDir, "raft")
	files, err := raft.NewFileSnapshotStoreWithLogger(raftDir, snapshotsRetained, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	list, err := files.List()
	if err != nil || len(list) == 0 {
		t.Fatalf("no snapshot to replace (%v)", err)
	}
	m := list[0]
	_, trans := raft.NewInmemTransport("")
	sink, err := files.Create(m.Version, m.Index, m.Term, m.Configuration, m.ConfigurationIndex, trans)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sink.Write(full); err != nil {
		t.Fatal(err)
	}
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
	for _, old := range list {
		if err := os.RemoveAll(filepath.Join(raftDir, "snapshots", old.ID)); err != nil {
			t.Fatal(err)
		}
	}
}

// newNodeErr creates a node as startNode does and returns New's error
// (closing the node when New succeeds).
func newNodeErr(t *testing.T, o nodeOpts) error {
	t.Helper()
	db := openDB(t, o.dbDir)
	defer db.Close()
	f := fsm.New(db, testLogger(t))
	registerTestHandlers(f)
	n, err := New(fastConfig(t, o), f)
	if err != nil {
		return err
	}
	return n.Close()
}

// snapshotFilesSize is the size of the snapshots' state files.
func snapshotFilesSize(t *testing.T, dataDir string) int64 {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(dataDir, "raft", "snapshots", "*", "state.bin"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no snapshot files (%v)", err)
	}
	var total int64
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		total += st.Size()
	}
	return total
}

// A node that joins after the leader compacted its log gets the
// compressed snapshot over InstallSnapshot, uncompressed on the wire.
func TestJoinAfterCompactionInstallsSnapshot(t *testing.T) {
	compact := func(c *Config) {
		c.TrailingLogs = 4
		c.SnapshotThreshold = 1 << 20
		// Small segments, so that the compacted entries are in deleted
		// files: raft-wal still serves entries below the first index
		// from the segment it is writing.
		c.LogSegmentSize = 2 << 10
	}
	n1 := startMember(t, "n1", func(c *Config) { c.Bootstrap = true; compact(c) })
	waitReady(t, n1.Raft)
	keys := keyList("early-", 100)
	for _, k := range keys { // one entry each, so the log is long
		proposeKeys(t, n1, k)
	}
	if err := n1.Snapshot(context.Background()); err != nil {
		t.Fatal(err)
	}
	if first, err := n1.wal.FirstIndex(); err != nil || first <= 1 {
		t.Fatalf("log not compacted: first index %d, %v", first, err)
	}
	n2 := startMember(t, "n2", func(c *Config) { c.Join = []string{n1.addr}; compact(c) })
	ms := []*member{n1, n2}
	waitVoters(t, ms, 2)
	waitKeys(t, ms, keys...)
	// n2 got there through a snapshot, which it stored compressed.
	store, err := raft.NewFileSnapshotStoreWithLogger(filepath.Join(n2.dir, "raft"), snapshotsRetained, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	list, err := store.List()
	if err != nil || len(list) == 0 {
		t.Fatalf("n2 has no snapshot (%v): the keys came another way", err)
	}
	state, err := os.ReadFile(filepath.Join(n2.dir, "raft", "snapshots", list[0].ID, "state.bin"))
	if err != nil || !bytes.HasPrefix(state, zstdMagic) {
		t.Fatalf("n2's installed snapshot is not compressed on disk (%v)", err)
	}
}

// A follower that was down while the leader compacted its log past the
// follower's state gets the full state over real Raft (InstallSnapshot),
// although the leader's own snapshot is only a reference: the store
// expands it from the leader's database. The follower's older state is
// replaced, it keeps everything across a restart, and its own next
// snapshot is a reference again.
func TestFollowerBehindCompactionGetsFullState(t *testing.T) {
	compact := func(c *Config) {
		c.TrailingLogs = 4
		c.SnapshotThreshold = 1 << 20
		c.LogSegmentSize = 2 << 10
	}
	ms := startClusterWith(t, 3, compact)
	leader := leaderOf(t, ms)
	follower := followerOf(ms, leader)
	early := keyList("early-", 20)
	proposeKeys(t, leader, early...)
	waitKeys(t, ms, early...)
	follower.stop(t)

	late := keyList("late-", 100)
	for _, k := range late { // one entry each, so the log is long
		proposeKeys(t, leader, k)
	}
	// Both running members compact, whichever leads when the follower
	// comes back.
	waitKeys(t, ms, late...)
	for _, m := range running(ms) {
		if err := m.Snapshot(context.Background()); err != nil {
			t.Fatal(err)
		}
		if size := snapshotFilesSize(t, m.dir); size > 4096 {
			t.Fatalf("%s's snapshot files take %d bytes; want a reference", m.name, size)
		}
	}
	followerApplied, err := func() (uint64, error) {
		db := openDB(t, filepath.Join(follower.dir, "badger"))
		defer db.Close()
		return fsm.New(db, testLogger(t)).AppliedIndex()
	}()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range running(ms) {
		if first, err := m.wal.FirstIndex(); err != nil || first <= followerApplied+1 {
			t.Fatalf("%s's log starts at %d (%v); the follower is at %d: no snapshot needed", m.name, first, err, followerApplied)
		}
	}

	follower.restart(t)
	all := append(append([]string{}, early...), late...)
	waitKeys(t, ms, all...)
	// It got there through a full snapshot, stored compressed.
	paths, err := filepath.Glob(filepath.Join(follower.dir, "raft", "snapshots", "*", "state.bin"))
	if err != nil || len(paths) != 1 {
		t.Fatalf("follower's snapshots: %v, %v; want the one installed", paths, err)
	}
	state, err := os.ReadFile(paths[0])
	if err != nil || !bytes.HasPrefix(state, zstdMagic) {
		t.Fatalf("follower's installed snapshot is not compressed (%v)", err)
	}
	dec, err := zstd.NewReader(bytes.NewReader(state))
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	plain, err := io.ReadAll(dec)
	if err != nil || !bytes.HasPrefix(plain, []byte("ECSNAP1\n")) || !bytes.Contains(plain, []byte("r/test/late-99")) {
		t.Fatalf("follower's installed snapshot is not the full state (%d bytes, %v)", len(plain), err)
	}

	proposeKeys(t, leader, "after")
	waitKeys(t, ms, "after")
	follower.stop(t)
	follower.restart(t)
	// A new entry applied after the restart: the follower has something
	// of its own to snapshot.
	proposeKeys(t, leaderOf(t, ms), "after-restart")
	waitKeys(t, ms, append(all, "after", "after-restart")...)
	// Raft counts the entry as applied a moment after Badger has it.
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error { return follower.Snapshot(context.Background()) })
	newest := newestSnapshotState(t, follower.dir)
	if len(newest) > 200 {
		t.Fatalf("follower's own snapshot is %d bytes; want a reference", len(newest))
	}
}

// newestSnapshotState is the latest snapshot's state file as stored.
func newestSnapshotState(t *testing.T, dataDir string) []byte {
	t.Helper()
	files, err := raft.NewFileSnapshotStoreWithLogger(filepath.Join(dataDir, "raft"), snapshotsRetained, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	list, err := files.List()
	if err != nil || len(list) == 0 {
		t.Fatalf("no snapshot (%v)", err)
	}
	b, err := os.ReadFile(filepath.Join(dataDir, "raft", "snapshots", list[0].ID, "state.bin"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestLogLimit(t *testing.T) {
	for _, c := range []struct {
		avg, budget int
		max, want   uint64
	}{
		{0, 8 << 20, 1024, 1024},
		{2500, 8 << 20, 1024, 1024},   // light batching: the count rules
		{35000, 8 << 20, 1024, 239},   // saturation: ~8 MB of entries
		{1 << 20, 8 << 20, 1024, 64},  // huge entries: the floor
		{35000, 8 << 20, 4, 4},        // a configured count below the floor stays
		{100, 8 << 20, 8192, 8192},    // never above the configured count
		{8 << 10, 64 << 10, 1024, 64}, // the floor again
	} {
		if got := logLimit(c.avg, c.budget, c.max); got != c.want {
			t.Errorf("logLimit(%d, %d, %d) = %d, want %d", c.avg, c.budget, c.max, got, c.want)
		}
	}
}

// With large entries the node lowers TrailingLogs and SnapshotThreshold
// so that the log keeps about LogBytes, and a snapshot then compacts the
// log down to that.
func TestLogBoundedInBytes(t *testing.T) {
	tn := startNode(t, nodeOpts{bootstrap: true, tweak: func(c *Config) {
		c.SnapshotInterval = 50 * time.Millisecond
		c.SnapshotThreshold = 1 << 20 // the bound, not the count, decides
		c.TrailingLogs = 1 << 20
		c.LogBytes = 256 << 10
		// Segments of a few entries: a compaction that frees no segment
		// file is deferred (logstore.go).
		c.LogSegmentSize = 64 << 10
	}})
	waitReady(t, tn.Raft)
	ctx := context.Background()
	value := strings.Repeat("v", 16<<10)
	for i := range 200 { // one 16 KB entry each: 3.2 MB of log
		if _, err := tn.Propose(ctx, cmdPut, fmt.Appendf(nil, "k%d=%s", i, value)); err != nil {
			t.Fatal(err)
		}
	}
	// About the floor: 256 KB of 16 KB entries is 16, raised to the floor
	// (64); the node's own small entries (registrations, barriers) in the
	// running average of entry sizes may leave it a little above it on a
	// loaded machine (CI saw 71).
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if rc := tn.raft.ReloadableConfig(); rc.TrailingLogs < minTrailingLogs || rc.TrailingLogs > 2*minTrailingLogs ||
			rc.SnapshotThreshold != rc.TrailingLogs {
			return fmt.Errorf("trailing %d, threshold %d; want both about %d", rc.TrailingLogs, rc.SnapshotThreshold, minTrailingLogs)
		}
		return nil
	})
	if err := tn.Snapshot(ctx); err != nil {
		t.Fatal(err)
	}
	first, _ := tn.wal.FirstIndex()
	last, _ := tn.wal.LastIndex()
	if last-first+1 > 3*minTrailingLogs {
		t.Fatalf("log holds %d entries after the snapshot; want about %d", last-first+1, minTrailingLogs)
	}
}

// The store hands a reference snapshot out as it is only while Raft
// starts; otherwise (a leader reading it for a follower) it returns the
// full state with its size, and refuses a state older than the
// reference.
func TestReferenceOpenedAsFullStateExceptAtStart(t *testing.T) {
	files, _ := fileSnapshots(t)
	full := []byte("ECSNAP1\nfull state bytes")
	var stateApplied uint64 = 12
	s := &compressedSnapshots{SnapshotStore: files, state: func() (int64, uint64, io.ReadCloser, error) {
		return int64(len(full)), stateApplied, io.NopCloser(bytes.NewReader(full)), nil
	}}
	ref := append([]byte("ECSREF1\n"), 0, 0, 0, 0, 0, 0, 0, 10)
	id := writeSnapshot(t, s, 10, ref)

	s.starting.Store(true)
	meta, got := readSnapshotFile(t, s, id)
	if !bytes.Equal(got, ref) || meta.Size != int64(len(ref)) {
		t.Fatalf("at start: %q (size %d); want the reference", got, meta.Size)
	}
	s.starting.Store(false)
	meta, got = readSnapshotFile(t, s, id)
	if !bytes.Equal(got, full) || meta.Size != int64(len(full)) || meta.Index != 10 {
		t.Fatalf("after start: %q (size %d, index %d); want the full state", got, meta.Size, meta.Index)
	}
	stateApplied = 9
	if _, _, err := s.Open(id); !errors.Is(err, fsm.ErrStateLost) {
		t.Fatalf("state behind the reference: %v, want fsm.ErrStateLost", err)
	}
}
