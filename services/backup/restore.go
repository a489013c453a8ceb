package backup

import (
	"bufio"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/cluster/fsm"
)

// Latest returns the ID of the newest complete backup in st (one whose
// manifest parses); ErrNotFound when there is none. Only backups without
// a manifest (incomplete) are passed over: a manifest that cannot be read
// now (a timeout, an S3 503) or does not parse is an error, not a reason
// to answer an older backup.
func Latest(ctx context.Context, st Store) (string, error) {
	ids, err := st.IDs(ctx)
	if err != nil {
		return "", err
	}
	ids = sortedIDs(ids)
	for i := len(ids) - 1; i >= 0; i-- {
		_, err := readManifest(ctx, st, ids[i])
		switch {
		case err == nil:
			return ids[i], nil
		case !errors.Is(err, ErrNotFound):
			return "", fmt.Errorf("backup: newest backup %s: %w", ids[i], err)
		}
	}
	return "", fmt.Errorf("%w in %s", ErrNotFound, st)
}

func readManifest(ctx context.Context, st Store, id string) (*Manifest, error) {
	rc, err := st.Open(ctx, id+"/"+ManifestName)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return nil, fmt.Errorf("%w: backup %s has no manifest (incomplete or not a backup): %w", ErrDamaged, id, err)
		}
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, maxManifestBytes+1))
	if err != nil {
		return nil, fmt.Errorf("backup %s: reading the manifest: %w", id, err)
	}
	m, err := ParseManifest(b)
	if err != nil {
		return nil, fmt.Errorf("backup %s: %w", id, err)
	}
	if m.ID != id {
		return nil, fmt.Errorf("%w: %s is backup %s under another name (its manifest names it): a backup keeps the name it was written under; rename it back to %s", ErrRenamed, id, m.ID, m.ID)
	}
	return m, nil
}

// Verify reads a whole backup and checks it: the manifest, every file's
// size and SHA-256, the state's structure and applied index, and (with
// refOf) that every segment the state references is in the backup with
// the reference's size and digest. Errors wrap ErrDamaged and name the
// file.
func Verify(ctx context.Context, st Store, id string, refOf func(k, v []byte) (SegmentRef, bool)) (*Manifest, error) {
	m, err := readManifest(ctx, st, id)
	if err != nil {
		return nil, err
	}
	var refErr error
	listed := map[string]File{}
	for _, f := range m.Files {
		listed[f.Name] = f
	}
	for _, f := range m.Files {
		rc, err := st.Open(ctx, id+"/"+f.Name)
		if err != nil {
			if errors.Is(err, ErrNotFound) {
				return nil, fmt.Errorf("%w: backup %s: %s is missing", ErrDamaged, id, f.Name)
			}
			return nil, err
		}
		r := checked(rc, f, id)
		if f.Name == StateName {
			refErr, err = verifyState(r, m, listed, refOf)
		} else {
			_, err = io.Copy(io.Discard, r)
		}
		rc.Close()
		if err != nil {
			return nil, err
		}
	}
	// After the files: a damaged file is the better explanation.
	if refErr != nil {
		return nil, refErr
	}
	return m, nil
}

func verifyState(r io.Reader, m *Manifest, listed map[string]File, refOf func(k, v []byte) (SegmentRef, bool)) (refErr, err error) {
	applied, err := fsm.ReadState(bufio.NewReaderSize(r, 64<<10), func(k, v []byte) error {
		if refOf == nil || refErr != nil {
			return nil
		}
		if ref, ok := refOf(k, v); ok {
			f, ok := listed[SegmentDir+ref.Key]
			if !ok || f.Size != ref.Size || f.SHA256 != ref.SHA256 {
				refErr = fmt.Errorf("%w: backup %s: the state references segment %s, which the backup lacks or holds with another size or digest", ErrDamaged, m.ID, ref.Key)
			}
		}
		return nil
	})
	// Read to the end either way: the size and digest (checked there)
	// explain a damaged file better than the parser's complaint.
	if _, cerr := io.Copy(io.Discard, r); cerr != nil {
		return nil, cerr
	}
	if err != nil {
		return nil, fmt.Errorf("%w: backup %s: state: %w", ErrDamaged, m.ID, err)
	}
	if applied != m.AppliedIndex {
		return nil, fmt.Errorf("%w: backup %s: the state is at index %d, the manifest says %d", ErrDamaged, m.ID, applied, m.AppliedIndex)
	}
	return refErr, nil
}

// checked passes a backup file through and fails the read that ends it
// when its size or SHA-256 differs from the manifest's.
func checked(r io.Reader, f File, id string) io.Reader {
	return &fileCheck{r: r, f: f, id: id, h: sha256.New()}
}

type fileCheck struct {
	r  io.Reader
	f  File
	id string
	h  hash.Hash
	n  int64
}

func (c *fileCheck) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.h.Write(p[:n])
	c.n += int64(n)
	if c.n > c.f.Size {
		return n, fmt.Errorf("%w: backup %s: %s is longer than the manifest's %d bytes", ErrDamaged, c.id, c.f.Name, c.f.Size)
	}
	if err == io.EOF {
		if c.n < c.f.Size {
			return n, fmt.Errorf("%w: backup %s: %s is truncated (%d of %d bytes)", ErrDamaged, c.id, c.f.Name, c.n, c.f.Size)
		}
		if got := hex.EncodeToString(c.h.Sum(nil)); got != c.f.SHA256 {
			return n, fmt.Errorf("%w: backup %s: %s has SHA-256 %s, the manifest says %s", ErrDamaged, c.id, c.f.Name, got, c.f.SHA256)
		}
	}
	return n, err
}

// RestoreOptions configures Restore.
type RestoreOptions struct {
	// DataDir is the new node's data directory; it must hold no database
	// and no Raft state.
	DataDir string
	// OpenDB opens the node's Badger at dir with the node's options.
	OpenDB func(dir string) (*badger.DB, error)
	// Segments is the new node's archive store, where the segments go;
	// required when the backup holds any.
	Segments SegmentWriter
	// RefOf, when set, checks the state's segment references (Verify).
	RefOf func(k, v []byte) (SegmentRef, bool)
	// DropPrefixes are replicated key prefixes that describe the old
	// cluster's live connections (routes, client registry): meaningless in
	// a new cluster, they are removed from the restored state.
	DropPrefixes []string
	Log          *slog.Logger
	// Check, when set, is asked about the restored database before it
	// becomes the node's (the node's: a feature level it supports); an
	// error refuses the restore, with what was written removed.
	Check func(db *badger.DB) error
	// AdoptArchive restores into an archive store that holds segments
	// the backup does not. The restored cluster deletes those as orphans
	// (it does not reference them), so this is only for an archive store
	// no cluster uses any more (the old cluster is gone for good);
	// without it Restore refuses such a store (ErrArchiveInUse).
	AdoptArchive bool
}

// Restore verifies backup id of st completely, then builds the data
// directory of the first node of a new cluster from it: its Badger
// holds the state of the backup, its applied index moved past every
// index the old cluster may have reached since (logStartAfter; the node
// bootstraps its Raft log after it, cluster/restored.go), and its
// archive store the segments. Nothing is written when the backup is
// damaged or the data directory is not empty; a failure half-way
// removes what was written.
// The segments are written first and the state last, so that a restore
// killed half-way leaves no database that a node would start on.
func Restore(ctx context.Context, st Store, id string, o RestoreOptions) (_ *Manifest, err error) {
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dbDir := filepath.Join(o.DataDir, "db")
	building := filepath.Join(o.DataDir, RestoringDB)
	for _, sub := range []string{"db", "raft"} {
		if nonEmpty(filepath.Join(o.DataDir, sub)) {
			return nil, fmt.Errorf("%w: %s holds %s/ (restore builds a new node: give it an empty data directory)", ErrNotEmpty, o.DataDir, sub)
		}
	}
	m, err := Verify(ctx, st, id, o.RefOf)
	if err != nil {
		return nil, err
	}
	log.Info("backup verified", "id", m.ID, "applied_index", m.AppliedIndex, "files", len(m.Files), "bytes", m.Bytes())
	segs := o.Segments
	if segs == nil && m.Segments() > 0 {
		return nil, fmt.Errorf("backup: backup %s holds %d segments and no archive store was given to restore them into", m.ID, m.Segments())
	}
	// What the archive store holds already: a segment the backup does not
	// reference is another cluster's (the restored one would delete it as
	// an orphan), and an object that was there is never removed below.
	var existing map[string]bool
	if l, ok := segs.(SegmentLister); ok {
		if existing, err = archiveInUse(ctx, l, m, o.AdoptArchive); err != nil {
			return nil, err
		}
	}
	var written []string
	defer func() {
		if err == nil {
			return
		}
		_ = os.RemoveAll(building)
		for _, k := range written {
			_ = segs.DeleteSegment(context.WithoutCancel(ctx), k)
		}
	}()
	if err := os.MkdirAll(o.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	// What a restore killed before left (it was never a node).
	if err := os.RemoveAll(building); err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	for _, f := range m.Files[1:] {
		key := strings.TrimPrefix(f.Name, SegmentDir)
		rc, err := st.Open(ctx, m.ID+"/"+f.Name)
		if err != nil {
			return nil, err
		}
		if !existing[key] {
			written = append(written, key)
		}
		err = segs.PutSegment(ctx, key, checked(rc, f, m.ID), f.Size)
		rc.Close()
		if err != nil {
			return nil, fmt.Errorf("backup: restoring segment %s: %w", key, err)
		}
	}
	// The state last, into {data}/db.restoring, renamed to {data}/db once
	// whole: db/ makes the data directory a node that serve starts on,
	// and a restore killed before (no cleanup runs) must leave none, not
	// one whose segments are missing or whose database holds part of
	// the state and no applied index (serve would bootstrap a new
	// cluster on it at index 1). Serve refuses a data directory that
	// holds db.restoring; the restore run again removes it.
	if err := restoreState(ctx, st, m, building, o, log); err != nil {
		return nil, err
	}
	if err := os.Rename(building, dbDir); err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	if err := syncDir(o.DataDir); err != nil {
		_ = os.Rename(dbDir, building)
		return nil, err
	}
	return m, nil
}

// RestoringDB is the directory, in the data directory, where Restore
// builds the database before renaming it to db: a data directory that
// holds it is a restore that was killed (serve refuses to start on it).
const RestoringDB = "db.restoring"

// restoreState loads the state into a new Badger (the FSM's own restore:
// it stages the stream, checks it whole, then loads it with the applied
// index last) and drops the prefixes of the old cluster's connections.
func restoreState(ctx context.Context, st Store, m *Manifest, dbDir string, o RestoreOptions, log *slog.Logger) error {
	rc, err := st.Open(ctx, m.ID+"/"+StateName)
	if err != nil {
		return err
	}
	db, err := o.OpenDB(dbDir)
	if err != nil {
		rc.Close()
		return err
	}
	// The second read is checked again: the store may have changed since
	// Verify.
	err = fsm.New(db, log).Restore(readCloser{Reader: checked(ctxReader{ctx, rc}, m.Files[0], m.ID), Closer: rc})
	if err == nil {
		for _, p := range o.DropPrefixes {
			if err = db.DropPrefix([]byte(p)); err != nil {
				break
			}
		}
	}
	if err == nil && o.Check != nil {
		if err = o.Check(db); err != nil {
			err = fmt.Errorf("backup %s (taken by %s): %w", m.ID, cmp.Or(m.Software, "an unknown version"), err)
		}
	}
	if err == nil {
		var idx uint64
		idx, err = fsm.New(db, log).AppliedIndex()
		if err == nil && idx != m.AppliedIndex {
			err = fmt.Errorf("backup: restored state is at index %d, want %d", idx, m.AppliedIndex)
		}
	}
	if err == nil {
		start := logStartAfter(m, time.Now())
		if err = fsm.New(db, log).SkipAhead(start); err == nil {
			log.Info("the new cluster's log starts past every index the old cluster may have reached",
				"backup_applied_index", m.AppliedIndex, "applied_index", start)
		}
	}
	if cerr := db.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("backup: closing the database: %w", cerr)
	}
	if err != nil {
		return fmt.Errorf("backup: restoring the state: %w", err)
	}
	return nil
}

// Where a restored cluster's log starts (logStartAfter).
const (
	// restoreEntryRate bounds the Raft entries per second the old cluster
	// can have committed after the backup (one Apply per entry was
	// measured near 60,000 a second on one node; batched entries are
	// fewer).
	restoreEntryRate = 1 << 18
	// restoreClockMargin is added to the time since the backup, for the
	// clocks of the old leader (the backup's Created) and of the machine
	// that restores.
	restoreClockMargin = 48 * time.Hour
	// restoreMaxIndex keeps the start far below 2^48, where a command's
	// commit position (index << 16 | position in the entry, fsm.Position:
	// the archive's sync cursors) would overflow.
	restoreMaxIndex = 1 << 46
)

// logStartAfter is the applied index a state restored from backup m at
// time now starts its new log after: past every index the old cluster
// can have reached since the backup. The old cluster's commit positions
// went on after the backup, and its clients keep sync cursors
// (positions) from then; a new log starting right after the backup's
// index would give new messages positions below those cursors, and a
// client syncing from its cursor would skip every message committed
// before the new log passed it. The old cluster cannot have committed
// more than restoreEntryRate entries a second until now.
func logStartAfter(m *Manifest, now time.Time) uint64 {
	elapsed := max(now.Sub(m.Created), 0) + restoreClockMargin
	gap := uint64(elapsed/time.Second) * restoreEntryRate
	if m.AppliedIndex >= restoreMaxIndex || gap > restoreMaxIndex-m.AppliedIndex {
		return max(m.AppliedIndex, restoreMaxIndex)
	}
	return m.AppliedIndex + gap
}

type readCloser struct {
	io.Reader
	io.Closer
}

// SegmentLister is implemented by archive stores that can list their
// segments: Restore then refuses one that holds segments the backup
// does not (see RestoreOptions.AdoptArchive).
type SegmentLister interface {
	// ListSegments calls fn with the key and size of every segment
	// object until fn returns false.
	ListSegments(ctx context.Context, fn func(key string, size int64) bool) error
}

// archiveInUse lists the archive store: the keys it holds, and
// ErrArchiveInUse (unless adopt) when one of them is not a segment of
// backup m with the same size.
func archiveInUse(ctx context.Context, l SegmentLister, m *Manifest, adopt bool) (map[string]bool, error) {
	ours := map[string]int64{}
	for _, f := range m.Files[1:] {
		ours[strings.TrimPrefix(f.Name, SegmentDir)] = f.Size
	}
	existing := map[string]bool{}
	var foreign string
	n := 0
	err := l.ListSegments(ctx, func(key string, size int64) bool {
		existing[key] = true
		if s, ok := ours[key]; !ok || s != size {
			if foreign == "" {
				foreign = key
			}
			n++
		}
		return true
	})
	if err != nil {
		return nil, fmt.Errorf("backup: listing the archive store: %w", err)
	}
	if n > 0 && !adopt {
		return nil, fmt.Errorf("%w (%d, such as %s): they are another cluster's, which the restored cluster would delete as orphans; "+
			"give the new cluster an archive store of its own, or adopt this one if no cluster uses it any more", ErrArchiveInUse, n, foreign)
	}
	return existing, nil
}

// SegmentWriter is the new node's archive store as restore needs it.
type SegmentWriter interface {
	// PutSegment stores exactly size bytes of r under key; a reader
	// that fails (a damaged file) fails it with nothing stored.
	PutSegment(ctx context.Context, key string, r io.Reader, size int64) error
	// DeleteSegment removes key (cleanup after a failed restore).
	DeleteSegment(ctx context.Context, key string) error
}

// DirSegments writes segments as plain files under a directory (tests,
// and a place to unpack a backup's segments by hand).
type DirSegments struct{ Dir *DirStore }

func (d DirSegments) PutSegment(ctx context.Context, key string, r io.Reader, size int64) error {
	return d.Dir.Put(ctx, key, r, size)
}

// ListSegments lists the segment files under the directory.
func (d DirSegments) ListSegments(ctx context.Context, fn func(key string, size int64) bool) error {
	stop := errors.New("stop")
	err := filepath.WalkDir(d.Dir.root, func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() || !strings.HasSuffix(p, ".seg") {
			return err
		}
		info, err := e.Info()
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(d.Dir.root, p)
		if err != nil {
			return err
		}
		if !fn(filepath.ToSlash(rel), info.Size()) {
			return stop
		}
		return nil
	})
	if errors.Is(err, stop) {
		return nil
	}
	return err
}

func (d DirSegments) DeleteSegment(ctx context.Context, key string) error {
	p, err := d.Dir.path(key)
	if err != nil {
		return err
	}
	return os.Remove(p)
}

func nonEmpty(dir string) bool {
	ents, err := os.ReadDir(dir)
	return err == nil && len(ents) > 0 || err != nil && !errors.Is(err, fs.ErrNotExist)
}
