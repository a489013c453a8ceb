package fsm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/dgraph-io/badger/v4"
)

// The two kinds of snapshot stream, told apart by their first 8 bytes:
//
//   - a full snapshot (snapMagic): the applied index and every replicated
//     key and value. Leaders send it to followers that need one
//     (OpenState), and nodes before reference snapshots stored it on disk;
//     both must keep restoring.
//   - a reference snapshot (refMagic, snapshot_ref.go): only the applied
//     index of this node's own Badger, which holds the state durably.
const (
	snapMagic = "ECSNAP1\n"
	refMagic  = "ECSREF1\n"
)

// ErrStateLost means a reference snapshot names state this node's
// database does not have (its applied index is behind the snapshot's):
// the database was deleted, replaced or damaged. The node cannot start
// from it; the data directory must be emptied and the node rejoined
// (docs/operations.md).
var ErrStateLost = errors.New("fsm: local database is behind its reference snapshot")

// writeSnapshot writes the full snapshot of tx's view: its applied index
// and every replicated key.
func writeSnapshot(tx *badger.Txn, w io.Writer) error {
	applied, err := readApplied(tx)
	if err != nil {
		return err
	}
	buf := make([]byte, 0, 64<<10)
	buf = append(buf, snapMagic...)
	buf = binary.BigEndian.AppendUint64(buf, applied)
	opts := badger.DefaultIteratorOptions
	opts.Prefix = Prefix
	it := tx.NewIterator(opts)
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		item := it.Item()
		k := item.Key()
		buf = binary.AppendUvarint(buf, uint64(len(k)))
		buf = append(buf, k...)
		err := item.Value(func(v []byte) error {
			buf = binary.AppendUvarint(buf, uint64(len(v)))
			buf = append(buf, v...)
			return nil
		})
		if err != nil {
			return err
		}
		if len(buf) > 32<<10 {
			if _, err := w.Write(buf); err != nil {
				return err
			}
			buf = buf[:0]
		}
	}
	buf = binary.AppendUvarint(buf, 0) // end marker: an empty key
	_, err = w.Write(buf)
	return err
}

// Restore brings the state to a snapshot's. A reference snapshot (the
// node's own, at start) is checked against the local database, which must
// include it. A full snapshot replaces the replicated state, unless the
// local state already includes it (a restart with the data dir intact, or
// a follower that is in fact up to date); it is staged in a temporary
// file and checked completely before the current state is dropped, so a
// truncated snapshot changes nothing.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	if f.gateRestores.Load() {
		f.waitGate(nil)
	}
	head := make([]byte, len(snapMagic))
	n, err := io.ReadFull(rc, head)
	if err == nil && string(head) == refMagic {
		return f.restoreRef(rc)
	}
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return fmt.Errorf("fsm: reading snapshot: %w", err)
	}
	return f.restoreFull(io.MultiReader(bytes.NewReader(head[:n]), rc))
}

// stagingPattern names the file a full snapshot is staged in.
const stagingPattern = "edgechat-snapshot-*"

// stagingDir is where restoreFull stages a full snapshot: the database's
// own directory, on the volume that holds the state anyway (Badger reads
// only its own files there). The system's temporary directory may be far
// smaller than the state (the Kubernetes manifest's /tmp is a 256 MiB
// emptyDir, and a pod that outgrows it is evicted) or missing. An
// in-memory database has no directory: the temporary one, then.
func (f *FSM) stagingDir() string {
	opts := f.db.Opts()
	if opts.InMemory || opts.Dir == "" {
		return ""
	}
	return opts.Dir
}

func (f *FSM) restoreFull(r io.Reader) error {
	dir := f.stagingDir()
	if dir != "" {
		// What a restore cut short by a crash left behind (one restore
		// runs at a time: Raft restores on its FSM goroutine).
		if old, err := filepath.Glob(filepath.Join(dir, stagingPattern)); err == nil {
			for _, name := range old {
				_ = os.Remove(name)
			}
		}
	}
	tmp, err := os.CreateTemp(dir, stagingPattern)
	if err != nil {
		return fmt.Errorf("fsm: staging snapshot: %w", err)
	}
	defer func() { _ = tmp.Close(); _ = os.Remove(tmp.Name()) }()
	if _, err := io.Copy(tmp, r); err != nil {
		return fmt.Errorf("fsm: staging snapshot: %w", err)
	}
	// First pass: validate only.
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return err
	}
	snapApplied, err := readSnapshot(newByteReader(tmp), nil)
	if err != nil {
		return err
	}
	local, err := f.AppliedIndex()
	if err != nil {
		return err
	}
	if local >= snapApplied && local > 0 {
		f.log.Info("local state already includes the snapshot; keeping it", "local", local, "snapshot", snapApplied)
		f.restored(snapApplied)
		return nil
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if err := f.db.DropPrefix(Prefix); err != nil {
		return fmt.Errorf("fsm: drop state: %w", err)
	}
	// The applied index is written last, once every other key is in:
	// a process that dies half-way through leaves a database without
	// one (DropPrefix removed it), which the next start restores again,
	// rather than one that claims an index it only half holds.
	var appliedVal []byte
	wb := f.db.NewWriteBatch()
	defer wb.Cancel()
	set := func(k, v []byte) error {
		if bytes.Equal(k, appliedKey) {
			appliedVal = v
			return nil
		}
		return wb.Set(k, v)
	}
	if _, err := readSnapshot(newByteReader(tmp), set); err != nil {
		return err
	}
	if err := wb.Flush(); err != nil {
		return fmt.Errorf("fsm: load snapshot: %w", err)
	}
	if appliedVal != nil {
		if err := f.db.Update(func(tx *badger.Txn) error { return tx.Set(appliedKey, appliedVal) }); err != nil {
			return fmt.Errorf("fsm: load snapshot: %w", err)
		}
	}
	f.mayBePartial.Store(true) // the state came from another node
	f.restored(snapApplied)
	f.mu.RLock()
	fns := append([]func(){}, f.onRestore...)
	f.mu.RUnlock()
	for _, fn := range fns {
		fn()
	}
	return nil
}

// readSnapshot parses a full snapshot, calling set for every key when not
// nil, and returns the applied index it was taken at.
func readSnapshot(r byteReader, set func(k, v []byte) error) (uint64, error) {
	truncated := fmt.Errorf("%w: truncated snapshot", ErrBadEntry)
	magic := make([]byte, len(snapMagic))
	if _, err := io.ReadFull(r, magic); err != nil || string(magic) != snapMagic {
		return 0, fmt.Errorf("%w: bad snapshot header", ErrBadEntry)
	}
	var ib [8]byte
	if _, err := io.ReadFull(r, ib[:]); err != nil {
		return 0, truncated
	}
	applied := binary.BigEndian.Uint64(ib[:])
	for {
		kl, err := binary.ReadUvarint(r)
		if err != nil || kl > 1<<16 {
			return 0, truncated
		}
		if kl == 0 {
			return applied, nil
		}
		key := make([]byte, kl)
		if _, err := io.ReadFull(r, key); err != nil {
			return 0, truncated
		}
		vl, err := binary.ReadUvarint(r)
		if err != nil || vl > 1<<30 {
			return 0, truncated
		}
		val := make([]byte, vl)
		if _, err := io.ReadFull(r, val); err != nil {
			return 0, truncated
		}
		if set != nil {
			if err := set(key, val); err != nil {
				return 0, err
			}
		}
	}
}

// ReadState parses a full state stream (what OpenState returns), calling
// fn for every key and value when fn is not nil, and returns the applied
// index it carries. The slices passed to fn are fresh for each call.
// Backups use it to check a state file completely and to find what the
// state references.
func ReadState(r io.Reader, fn func(k, v []byte) error) (uint64, error) {
	br, ok := r.(byteReader)
	if !ok {
		br = newByteReader(r)
	}
	return readSnapshot(br, fn)
}
