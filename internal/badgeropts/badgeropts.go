// Package badgeropts holds the Badger options of a node's database, in
// one place: the node opens its store with them, and the benchmarks that
// measure the archive's reads and writes open theirs with the same ones
// (services/archive cannot import the node).
package badgeropts

import (
	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
)

// Node returns the options of a node's database in dir, without a
// logger (the node sets its own). Figures behind each setting:
// docs/perf/disk.md (sizes on disk), docs/perf/connections.md (memory)
// and docs/perf/compaction.md (blocks and level 0).
func Node(dir string) badger.Options {
	return badger.DefaultOptions(dir).
		// Memory: two 16 MB memtables and small caches, for an edge
		// node's footprint (docs/perf/binary.md).
		WithMemTableSize(16 << 20).
		WithNumMemtables(2).
		WithBlockCacheSize(32 << 20).
		WithIndexCacheSize(16 << 20).
		WithValueLogFileSize(64 << 20).
		WithNumCompactors(2).
		// No conflict detection: the replicated state has one writer,
		// the FSM, which applies entries one at a time on Raft's FSM
		// goroutine (snapshot restores too), and the only other
		// read-write transaction (peerqueue's cursor) writes its own key
		// without reading, so no commit could ever conflict. Detection
		// hashed every key a transaction read or wrote into maps and
		// kept each commit's write set until older readers finished:
		// work every node did for every key of every message.
		WithDetectConflicts(false).
		// Size on disk: blocks are compressed with zstd (level 1, its
		// fastest) instead of Snappy: the keys of one block share long
		// prefixes and the values are JSON envelopes, which zstd packs
		// much tighter. Values stay inline in the LSM tree: chat values
		// are small, and a value log would be a second copy to garbage
		// collect (ValueThreshold is Badger's maximum, spelled out so
		// that a change of its default does not move them); the value
		// log holds only the rare larger value, and the node's
		// valueLogGC keeps that bounded.
		WithCompression(options.ZSTD).
		WithZSTDCompressionLevel(1).
		WithValueThreshold(ValueThreshold).
		// Compaction, which under a steady stream of messages is what
		// a node's CPU goes to after the memtable inserts: 16 KB blocks
		// instead of 4 KB (zstd's per-block setup, its entropy tables,
		// was most of the compression time; and the blocks pack
		// tighter), and ten level-0 tables before they are merged down
		// instead of five (each merge into the base level rewrites the
		// overlapping part of it; twice the tables per merge, half the
		// merges). Writes stall at twice that (Badger's default: 15
		// for 5).
		WithBlockSize(BlockSize).
		WithNumLevelZeroTables(LevelZeroTables).
		WithNumLevelZeroTablesStall(2 * LevelZeroTables).
		// No write-ahead file for the memtables (our patch of Badger,
		// third_party/badger/PATCHES.md): every write is an FSM apply,
		// which the Raft log already holds, so after a crash the node
		// replays the log from the last flushed memtable instead of
		// Badger replaying a second copy of the same writes. The file
		// cost each key an encoding, a checksum and a copy into a mapped
		// file (8–13% of a node's CPU per message); the snapshot barrier
		// flushes the memtables (cluster/fsm/snapshot_ref.go), so Raft
		// drops no entry that Badger does not hold on disk.
		WithNoMemTableWAL(true)
}

const (
	// ValueThreshold: values up to this size are stored in the LSM tree
	// itself (Badger's maximum).
	ValueThreshold = 1 << 20
	// BlockSize is the uncompressed size of a table block.
	BlockSize = 16 << 10
	// LevelZeroTables is how many memtable flushes wait in level 0
	// before a compaction merges them down.
	LevelZeroTables = 10
)
