package cluster

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
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
	s := compressedSnapshots{files}
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
	s := compressedSnapshots{files}
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
	s := compressedSnapshots{files}
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
// forgotten, and a node restarted on the compacted log and compressed
// snapshot has every key (from its Badger, or from the snapshot when its
// Badger is gone).
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
	tn2.stop(t)
	tn3 := startNode(t, nodeOpts{dataDir: dir, dbDir: t.TempDir(), bootstrap: true, tweak: small})
	waitReady(t, tn3.Raft)
	check(tn3)
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
