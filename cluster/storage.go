package cluster

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"github.com/klauspost/compress/zstd"

	"github.com/edgechat/edgechat/cluster/fsm"
)

// Storage defaults: what the Raft directory holds on disk. A settled node
// keeps its Badger state, its two latest snapshots (references to that
// state, 16 bytes each; a full copy only when one was received from a
// leader or written by an older version, until two newer ones replace it)
// and the log from TrailingLogs entries behind the latest snapshot,
// rounded up to whole segments.
const (
	// DefaultLogSegmentSize is the size of one raft-wal segment file. The
	// files are preallocated and only whole segments are deleted after a
	// snapshot, so this is both the smallest Raft log on disk and the
	// granularity of its compaction; raft-wal's own default (64 MB) alone
	// was 335 bytes per message on a node storing 200k messages, 8 MB
	// was 42. 4 MB: the log a node keeps (about LogBytes, 8 MB, behind
	// the last snapshot) is two segments, and a
	// rotation (a bolt metadata commit and a preallocated file) comes
	// every ~4 MB of log: every ~10 s at 1,000 msg/s, ~2.5 per second at
	// saturation. It is a soft limit: an entry larger than it (up to
	// maxEntryBytes) still goes into one segment.
	DefaultLogSegmentSize = 4 << 20
	// snapshotsRetained is how many snapshots the file store keeps. Two,
	// so that a damaged latest snapshot file (its CRC is checked on open)
	// still leaves one to start from (a reference to an older index of
	// the same database, which includes it). Starting from the older one needs the log
	// to reach back to it (Raft stops if an entry after its snapshot is
	// missing), hence DefaultTrailingLogs is not below
	// DefaultSnapshotThreshold: at light load, when the threshold spaces
	// snapshots, the fallback works; under load the SnapshotInterval
	// timer spaces them further apart than that, as it did before.
	snapshotsRetained = 2
)

// zstdMagic starts every zstd frame (RFC 8878, little endian 0xFD2FB528);
// a snapshot file that does not start with it is an uncompressed one
// written before snapshots were compressed.
var zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}

// compressedSnapshots stores snapshots zstd-compressed on disk and hands
// them out uncompressed: the FSM, and the followers that receive a
// snapshot over InstallSnapshot, see the same bytes as before, so a
// cluster may run old and new versions side by side. Files written
// before (uncompressed) are read as they are.
//
// What the node's own FSM stores is a reference snapshot (16 bytes: "my
// Badger at applied index X", cluster/fsm/snapshot_ref.go). Open hands it
// out as it is while Raft starts (the FSM checks its database against
// it); at any other time Open is reading a snapshot to send to a follower
// (or to restore one just received, which is never a reference), so it
// returns the full state instead, streamed from the FSM's database at X
// or later. Snapshots received from a leader, and those of older
// versions, are full copies and are stored and read as before.
type compressedSnapshots struct {
	raft.SnapshotStore
	// state streams the full state of the FSM (fsm.FSM.OpenState); nil
	// in tests of the store alone.
	state func() (size int64, applied uint64, rc io.ReadCloser, err error)
	// starting is set while raft.NewRaft runs: its restore of the latest
	// snapshot is the one Open that must get a reference as it is.
	// Getting this wrong is refused, not silent: a reference sent to a
	// follower fails its restore unless the follower already holds the
	// state, and a full state is only sent when it includes X.
	starting atomic.Bool
}

// Create compresses what Raft writes (the FSM's Persist, or a snapshot a
// leader sends) on its way into the file.
func (s *compressedSnapshots) Create(version raft.SnapshotVersion, index, term uint64,
	configuration raft.Configuration, configurationIndex uint64, trans raft.Transport) (raft.SnapshotSink, error) {
	sink, err := s.SnapshotStore.Create(version, index, term, configuration, configurationIndex, trans)
	if err != nil {
		return nil, err
	}
	// One goroutine: a snapshot is written in the background while the
	// node serves, and should not take both cores of an edge box. The
	// fastest level with a 1 MB window compresses a 98 MB snapshot of
	// 200k messages as well as the default level with 4 MB (to 30%), in
	// 0.56 s of CPU instead of 0.93 s (docs/perf/disk.md).
	enc, err := zstd.NewWriter(sink, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1),
		zstd.WithWindowSize(1<<20))
	if err != nil {
		_ = sink.Cancel()
		return nil, fmt.Errorf("cluster: snapshot compressor: %w", err)
	}
	return &compressingSink{SnapshotSink: sink, enc: enc}, nil
}

// Open returns the snapshot uncompressed, with meta.Size the uncompressed
// size: a leader sends exactly that many bytes to a follower, which checks
// the count. Finding it takes one decompression pass more; snapshots are
// opened when a node starts and when a follower needs one, not on the
// hot path. A reference snapshot is expanded to the full state except
// while Raft starts (see compressedSnapshots).
func (s *compressedSnapshots) Open(id string) (*raft.SnapshotMeta, io.ReadCloser, error) {
	meta, rc, err := s.SnapshotStore.Open(id)
	if err != nil {
		return nil, nil, err
	}
	br := bufio.NewReader(rc)
	head, err := br.Peek(len(zstdMagic))
	if err != nil || !bytes.Equal(head, zstdMagic) {
		// Written uncompressed (an older version), or too short to be
		// anything: the FSM judges the content.
		return meta, readCloser{Reader: br, Closer: rc}, nil
	}
	size, first, err := decompressedSize(br)
	_ = rc.Close()
	if err != nil {
		return nil, nil, fmt.Errorf("cluster: snapshot %s: %w", id, err)
	}
	if ref, ok := fsm.IsReference(first); ok && s.state != nil && !s.starting.Load() {
		return s.openState(meta, ref)
	}
	meta2, rc, err := s.SnapshotStore.Open(id)
	if err != nil {
		return nil, nil, err
	}
	dec, err := zstd.NewReader(rc, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true))
	if err != nil {
		_ = rc.Close()
		return nil, nil, fmt.Errorf("cluster: snapshot decompressor: %w", err)
	}
	m := *meta2
	m.Size = size
	return &m, decompressingReader{dec: dec, file: rc}, nil
}

// openState returns the full state for a reference snapshot at index ref.
func (s *compressedSnapshots) openState(meta *raft.SnapshotMeta, ref uint64) (*raft.SnapshotMeta, io.ReadCloser, error) {
	size, applied, rc, err := s.state()
	if err != nil {
		return nil, nil, fmt.Errorf("cluster: snapshot %s: %w", meta.ID, err)
	}
	if applied < ref {
		// Cannot happen on a node whose FSM wrote the reference (its
		// applied index only grows); refuse rather than send less.
		_ = rc.Close()
		return nil, nil, fmt.Errorf("cluster: snapshot %s: %w (state at %d, snapshot at %d)", meta.ID, fsm.ErrStateLost, applied, ref)
	}
	m := *meta
	m.Size = size
	return &m, rc, nil
}

// checkLatest fails when the latest snapshot is a reference to more state
// than f's database holds (the database was deleted or replaced): Raft
// would otherwise fall back to an older snapshot or fail with a bare
// "failed to load any existing snapshots".
func (s *compressedSnapshots) checkLatest(f *fsm.FSM) error {
	list, err := s.SnapshotStore.List()
	if err != nil || len(list) == 0 {
		return nil // Raft reports it
	}
	_, rc, err := s.SnapshotStore.Open(list[0].ID)
	if err != nil {
		return nil
	}
	defer rc.Close()
	br := bufio.NewReader(rc)
	if head, err := br.Peek(len(zstdMagic)); err != nil || !bytes.Equal(head, zstdMagic) {
		return nil
	}
	dec, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true))
	if err != nil {
		return nil
	}
	defer dec.Close()
	first := make([]byte, 16) // only the head: a full snapshot is not decompressed
	k, _ := io.ReadFull(dec, first)
	ref, ok := fsm.IsReference(first[:k])
	if !ok {
		return nil
	}
	local, err := f.AppliedIndex()
	if err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	if local < ref {
		return fmt.Errorf("cluster: snapshot %s refers to the database at index %d, which holds only %d: %w; "+
			"empty the data directory and rejoin the cluster (docs/operations.md)", list[0].ID, ref, local, fsm.ErrStateLost)
	}
	return nil
}

// decompressedSize decompresses r to count its bytes, and returns the
// first 16 of them (enough to tell a reference snapshot).
func decompressedSize(r io.Reader) (int64, []byte, error) {
	dec, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true))
	if err != nil {
		return 0, nil, err
	}
	defer dec.Close()
	first := make([]byte, 16)
	k, err := io.ReadFull(dec, first)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return 0, nil, fmt.Errorf("decompressing: %w", err)
	}
	n, err := io.Copy(io.Discard, dec)
	if err != nil {
		return 0, nil, fmt.Errorf("decompressing: %w", err)
	}
	return int64(k) + n, first[:k], nil
}

// compressingSink compresses into a file store's sink. Close finishes the
// zstd frame before the file store syncs and renames the file.
type compressingSink struct {
	raft.SnapshotSink
	enc  *zstd.Encoder
	done bool
}

func (c *compressingSink) Write(p []byte) (int, error) { return c.enc.Write(p) }

func (c *compressingSink) Close() error {
	if c.done {
		return nil
	}
	c.done = true
	if err := c.enc.Close(); err != nil {
		_ = c.SnapshotSink.Cancel()
		return fmt.Errorf("cluster: compressing snapshot: %w", err)
	}
	return c.SnapshotSink.Close()
}

func (c *compressingSink) Cancel() error {
	if c.done {
		return nil
	}
	c.done = true
	_ = c.enc.Close() // releases the encoder; the file is discarded anyway
	return c.SnapshotSink.Cancel()
}

type readCloser struct {
	io.Reader
	io.Closer
}

type decompressingReader struct {
	dec  *zstd.Decoder
	file io.Closer
}

func (d decompressingReader) Read(p []byte) (int, error) { return d.dec.Read(p) }

func (d decompressingReader) Close() error {
	d.dec.Close()
	return d.file.Close()
}

// Snapshot takes a Raft snapshot now, as the SnapshotInterval timer does
// when SnapshotThreshold entries have been applied since the last one, and
// truncates the log to TrailingLogs entries behind it. It returns when the
// snapshot is stored; raft.ErrNothingNewToSnapshot (wrapped) when nothing
// was applied since the last one. Tests and benchmarks use it to bring
// the disk to its settled size without waiting for the timer.
func (n *Raft) Snapshot(ctx context.Context) error {
	if err := n.awaitFuture(ctx, n.raft.Snapshot()); err != nil {
		return fmt.Errorf("cluster: snapshot: %w", err)
	}
	return nil
}

// Bounding the log in bytes.
//
// TrailingLogs and SnapshotThreshold count entries, and an entry carries
// from one command (light load) to a few hundred (saturation: ~100
// commands, ~35 KB): 16384 entries are 16384 messages at light load and
// ~570 MB at saturation. boundLog keeps both near Config.LogBytes by
// sampling the size of recent entries every SnapshotInterval and
// lowering the counts (never above the configured ones, never below
// minTrailingLogs) through raft.ReloadConfig. A follower further behind
// than that gets a snapshot (the full state, docs/perf/disk.md) instead
// of log entries.
const (
	// DefaultLogBytes is the default of Config.LogBytes.
	DefaultLogBytes = 8 << 20
	// minTrailingLogs: the counts never go below this many entries.
	minTrailingLogs = 64
	// logSample is how many of the latest entries boundLog reads to
	// estimate the entry size.
	logSample = 32
)

// boundLog adjusts TrailingLogs and SnapshotThreshold to the entry size
// every SnapshotInterval until ctx is done.
func (n *Raft) boundLog(ctx context.Context) {
	t := time.NewTicker(n.cfg.SnapshotInterval)
	defer t.Stop()
	cur := n.cfg.TrailingLogs
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		avg, ok := n.recentEntryBytes()
		if !ok {
			continue
		}
		want := logLimit(avg, n.cfg.LogBytes, n.cfg.TrailingLogs)
		// Only real changes: ReloadConfig goes through Raft's main loop.
		if want == cur || (want > cur*9/10 && want < cur*11/10) {
			continue
		}
		rc := n.raft.ReloadableConfig()
		rc.TrailingLogs = want
		rc.SnapshotThreshold = min(want, n.cfg.SnapshotThreshold)
		if err := n.raft.ReloadConfig(rc); err != nil {
			n.log.Warn("raft log bound not applied", "trailing_logs", want, "err", err)
			continue
		}
		cur = want
	}
}

// logLimit is the entry count that keeps about budget bytes of entries
// of avg bytes: at most maxTrailing, at least minTrailingLogs (or
// maxTrailing when that is smaller).
func logLimit(avg, budget int, maxTrailing uint64) uint64 {
	if avg <= 0 {
		return maxTrailing
	}
	n := uint64(budget / avg)
	return min(maxTrailing, max(n, min(minTrailingLogs, maxTrailing)))
}

// recentEntryBytes is the mean size of the latest entries in the log.
func (n *Raft) recentEntryBytes() (int, bool) {
	first, err := n.logs.FirstIndex()
	if err != nil {
		return 0, false
	}
	last, err := n.logs.LastIndex()
	if err != nil || last == 0 {
		return 0, false
	}
	var total, k int
	var l raft.Log
	for i := last; i >= max(first, 1) && k < logSample; i-- {
		if err := n.logs.GetLog(i, &l); err != nil {
			break
		}
		total += len(l.Data) + 32 // the entry's framing and header fields
		k++
	}
	if k == 0 {
		return 0, false
	}
	return total / k, true
}
