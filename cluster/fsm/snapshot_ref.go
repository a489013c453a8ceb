package fsm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"
)

// Reference snapshots.
//
// The FSM's state is durable in Badger, with the index of the last
// applied entry in the same transaction as the entry's effects. A Raft
// snapshot therefore does not copy the state: it records "this node's
// Badger at applied index X" (16 bytes), after making sure that every
// Badger write up to X is on disk. Raft may then drop the log up to X:
// the entries are in Badger. What a snapshot used to cost — a full copy
// of the state written at every snapshot, two of them kept on disk — is
// gone, so snapshots can be frequent and the log between them short.
//
// A follower that needs a snapshot still gets the full state: the
// snapshot store (cluster/storage.go) turns a reference into the full
// stream with OpenState, from one Badger read transaction whose applied
// index is X or later (a later state is fine: the follower skips the
// entries it already holds by the applied index, as after a restart).
//
// The durability barrier (syncState) is what makes a reference safe.
// Badger runs with SyncWrites off (the Raft log is the durable copy).
//
// A node's Badger (internal/badgeropts) has no memtable write-ahead file
// (NoMemTableWAL, our patch of Badger v4.9.6, third_party/badger): a
// write lives only in memory until its memtable is flushed to a level-0
// table. The flusher takes memtables in order, a transaction never spans
// two, and it writes the table (msynced), records it in the MANIFEST
// (fsynced) and only then takes the next one; so what is on disk after a
// crash, of any kind, is the state after some applied entry A, a prefix
// of the applied entries, and Raft replays the entries after A from its
// log (the FSM skips those at or below the applied index). The barrier
// makes A at least X: it syncs the value log (values above
// ValueThreshold, which tables point into), then FlushMemTable hands the
// active memtable over after every write committed so far and waits until
// it and the ones before it are tables, then the directories are synced
// (a table's name is not synced by the flusher). Raft compacts its log
// only up to a snapshot that the barrier made durable, so every entry
// after A is still in the log.
//
// With the write-ahead file (Badger's default; tests and tools that open
// a database with other options), in Badger v4.9.6:
//
//   - a write goes to the active memtable's write-ahead file (NNNNN.mem,
//     written through a shared mmap) and is synced only with SyncWrites
//     or by DB.Sync, which msyncs the active memtable's file and the
//     value log's current file, not the immutable memtables waiting for
//     their flush;
//   - the flusher deletes a memtable's file once its table is recorded;
//     new memtable files are created without a directory sync.
//
// So syncState then calls DB.Sync and fsyncs every memtable and
// value-log file present (on Linux fsync writes back the pages dirtied
// through the mmap too), then the directory. (It also fsyncs the files
// once before, only so that DB.Sync, which holds Badger's write lock,
// finds little left to write.) Every Badger write of an entry up to X
// was committed before Snapshot returned (Raft calls it between
// Applies), so it is in one of those files or tables.

// Snapshot records the applied index; Persist makes the database durable
// up to it and stores the reference. Raft calls Snapshot between Applies,
// so the index read here is exactly the state's.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	applied, err := f.AppliedIndex()
	if err != nil {
		return nil, fmt.Errorf("fsm: snapshot: %w", err)
	}
	return &refSnapshot{applied: applied, sync: f.syncState}, nil
}

type refSnapshot struct {
	applied uint64
	sync    func() error // the durability barrier: FSM.syncState
}

// Persist syncs the database, then writes the reference. Raft compacts
// the log only after the sink is closed without error, so a failed sync
// leaves the log as it was.
func (s *refSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := s.sync(); err != nil {
		_ = sink.Cancel()
		return err
	}
	var b [len(refMagic) + 8]byte
	copy(b[:], refMagic)
	binary.BigEndian.PutUint64(b[len(refMagic):], s.applied)
	if _, err := sink.Write(b[:]); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("fsm: writing snapshot: %w", err)
	}
	return sink.Close()
}

func (s *refSnapshot) Release() {}

// restoreRef checks a reference snapshot against the local database (the
// magic has been read from r).
func (f *FSM) restoreRef(r io.Reader) error {
	var ib [8]byte
	if _, err := io.ReadFull(r, ib[:]); err != nil {
		return fmt.Errorf("%w: truncated reference snapshot", ErrBadEntry)
	}
	ref := binary.BigEndian.Uint64(ib[:])
	local, err := f.AppliedIndex()
	if err != nil {
		return err
	}
	if local < ref {
		return fmt.Errorf("%w (database at %d, snapshot at %d)", ErrStateLost, local, ref)
	}
	f.log.Info("local state includes the reference snapshot", "local", local, "snapshot", ref)
	f.restored(ref)
	return nil
}

// IsReference reports whether a snapshot stream starting with head (at
// least its first 16 bytes) is a reference snapshot, and its index.
func IsReference(head []byte) (index uint64, ok bool) {
	if len(head) < len(refMagic)+8 || string(head[:len(refMagic)]) != refMagic {
		return 0, false
	}
	return binary.BigEndian.Uint64(head[len(refMagic):]), true
}

// OpenState returns the full snapshot of the current state (what a
// follower installs), from one read transaction, with its size in bytes
// and the applied index it carries. It walks the state twice: once to
// count (InstallSnapshot sends the size first), once as rc is read. The
// transaction is released when rc is closed.
func (f *FSM) OpenState() (size int64, applied uint64, rc io.ReadCloser, err error) {
	// Between entries: apply holds the read lock for a whole entry, and
	// an entry that overflows one Badger transaction commits part of its
	// commands before the applied index moves. A view taken in between
	// would carry those commands and an applied index that makes the
	// follower apply them again.
	f.mu.Lock()
	tx := f.db.NewTransaction(false)
	f.mu.Unlock()
	if applied, err = readApplied(tx); err != nil {
		tx.Discard()
		return 0, 0, nil, fmt.Errorf("fsm: state: %w", err)
	}
	var cw countingWriter
	if err := writeSnapshot(tx, &cw); err != nil {
		tx.Discard()
		return 0, 0, nil, fmt.Errorf("fsm: state: %w", err)
	}
	pr, pw := io.Pipe()
	go func() {
		defer tx.Discard()
		pw.CloseWithError(writeSnapshot(tx, pw))
	}()
	return cw.n, applied, pr, nil
}

type countingWriter struct{ n int64 }

func (c *countingWriter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return len(p), nil
}

// syncState makes every write the database has accepted so far durable
// (see the comment at the top of this file).
func (f *FSM) syncState() error {
	opts := f.db.Opts()
	dbSync := f.db.Sync
	if opts.NoMemTableWAL {
		// The memtables have no file: a write is durable once its
		// memtable is a level-0 table (msynced, in the fsynced MANIFEST).
		// FlushMemTable hands over the active memtable after every write
		// committed so far, X's included, and waits for the flushes.
		dbSync = func() error {
			if err := f.db.Sync(); err != nil { // the value log
				return err
			}
			return f.db.FlushMemTable()
		}
	}
	return syncDatabase(opts, dbSync, syncDirFiles)
}

// syncDatabase is syncState's sequence, with Badger's DB.Sync and the
// file sync as arguments so that a test can see the order.
//
// The files are written back once before DB.Sync, which adds nothing to
// the barrier but keeps it from stalling the apply path: DB.Sync holds
// Badger's db.lock (read) while it msyncs the active memtable, and every
// write waits for that lock (ensureRoomForWrite takes it), so every FSM
// apply waited for as long as the msync wrote. The first pass writes
// those pages without the lock; DB.Sync then finds only what was written
// since (traced at 1,000 msg/s on one node: 1–12.5 ms of lock hold per
// snapshot down to 0.1–0.3 ms; docs/perf/tail.md).
func syncDatabase(opts badger.Options, dbSync func() error, syncFiles func(dir string) (int, error)) error {
	if opts.InMemory {
		return nil
	}
	dirs := []string{opts.Dir}
	if opts.ValueDir != opts.Dir {
		dirs = append(dirs, opts.ValueDir)
	}
	for _, dir := range dirs {
		if _, err := syncFiles(dir); err != nil {
			return fmt.Errorf("fsm: sync database: %w", err)
		}
	}
	if err := dbSync(); err != nil {
		return fmt.Errorf("fsm: sync database: %w", err)
	}
	for _, dir := range dirs {
		if _, err := syncFiles(dir); err != nil {
			return fmt.Errorf("fsm: sync database: %w", err)
		}
	}
	return nil
}

// syncDirFiles fsyncs the memtable (.mem) and value-log (.vlog) files in
// dir, then dir itself, and returns how many memtable files it synced.
func syncDirFiles(dir string) (int, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	synced := 0
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !(strings.HasSuffix(name, ".mem") || strings.HasSuffix(name, ".vlog")) {
			continue
		}
		switch err := syncFile(filepath.Join(dir, name)); {
		case err == nil:
			if strings.HasSuffix(name, ".mem") {
				synced++
			}
		case errors.Is(err, os.ErrNotExist):
			// Flushed to a table (synced) and deleted since ReadDir.
		default:
			return synced, err
		}
	}
	return synced, syncFile(dir)
}

func syncFile(path string) error {
	fh, err := os.Open(path)
	if err != nil {
		return err
	}
	err = fh.Sync()
	if cerr := fh.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync %s: %w", path, err)
	}
	return nil
}
