package cluster

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"

	"github.com/hashicorp/raft"
	"github.com/klauspost/compress/zstd"
)

// Storage defaults: what the Raft directory holds on disk. A settled node
// keeps its Badger state, its two latest snapshots (each a full copy of
// the replicated state) and the log from TrailingLogs entries behind the
// latest snapshot, rounded up to whole segments.
const (
	// DefaultLogSegmentSize is the size of one raft-wal segment file. The
	// files are preallocated and only whole segments are deleted after a
	// snapshot, so this is both the smallest Raft log on disk and the
	// granularity of its compaction; raft-wal's own default (64 MB) alone
	// was 335 bytes per message on a node storing 200k messages. It is a
	// soft limit: an entry larger than it (up to maxEntryBytes) still goes
	// into one segment.
	DefaultLogSegmentSize = 8 << 20
	// snapshotsRetained is how many snapshots the file store keeps. Two,
	// so that a damaged latest snapshot (its CRC is checked on open) still
	// leaves one to start from. Starting from the older one needs the log
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
// before (uncompressed) are read as they are. A snapshot is a full copy
// of the replicated state (keys and JSON values, which compress to about
// a third); compressing it is most of what keeps the Raft directory small.
type compressedSnapshots struct {
	raft.SnapshotStore
}

// Create compresses what Raft writes (the FSM's Persist, or a snapshot a
// leader sends) on its way into the file.
func (s compressedSnapshots) Create(version raft.SnapshotVersion, index, term uint64,
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
// hot path.
func (s compressedSnapshots) Open(id string) (*raft.SnapshotMeta, io.ReadCloser, error) {
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
	size, err := decompressedSize(br)
	_ = rc.Close()
	if err != nil {
		return nil, nil, fmt.Errorf("cluster: snapshot %s: %w", id, err)
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

// decompressedSize decompresses r to count its bytes.
func decompressedSize(r io.Reader) (int64, error) {
	dec, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true))
	if err != nil {
		return 0, err
	}
	defer dec.Close()
	n, err := io.Copy(io.Discard, dec)
	if err != nil {
		return 0, fmt.Errorf("decompressing: %w", err)
	}
	return n, nil
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
