package fsm

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Syncing a memtable's file when Badger rotates it.
//
// The reference snapshot's barrier (syncState) makes Badger durable up
// to the snapshot's index. Between barriers Badger's state after an OS
// crash or power loss must still be a prefix of the applied entries, or
// the applied index (written in the same transaction as each entry's
// effects) could claim an entry whose other writes were lost, and the
// replay above the snapshot would skip it. Within one memtable file that
// holds: Badger replays a file's entries in order and stops at the first
// one that fails its checksum. Across two files it does not: when the
// memtable is full, ensureRoomForWrite (badger v4.9.6 db.go l. 1044)
// opens a new file without syncing the old one, so pages of the new file
// can reach the disk while the old one's tail is lost, until the old
// memtable's flush to an (msynced) L0 table completes.
//
// Badger has no hook at rotation; it logs one debug line there, while
// it holds its lock and before any write goes to the new memtable. The
// logger below recognises that line and fsyncs the memtable file being
// rotated out (the newest file at that moment: the new one is created
// right after). Its writes are then on disk before any write of the new
// memtable is made, which restores the prefix property. The cost is one
// fsync per 16 MB of writes, on Badger's write goroutine. So that this
// fsync finds little left to write (a whole 16 MB file took 60–140 ms on
// the test machine under load, stalling every apply meanwhile),
// RunWriteback starts the kernel writing the active memtable's pages out
// in the background every half second.
// TestRotationSyncsTheOldMemtable fails if a Badger upgrade changes the
// line or the file names.

// badgerRotationLine is the start of the format Badger logs when it hands
// a full memtable to the flusher (db.go, ensureRoomForWrite).
const badgerRotationLine = "Flushing memtable, mt.size="

// RotationSyncLogger is a Badger logger that passes everything to next
// and syncs the outgoing memtable's file at each memtable rotation.
type RotationSyncLogger struct {
	next badger.Logger
	dir  string
	log  *slog.Logger

	syncs  atomic.Uint64
	failed atomic.Uint64
	// synced, when set (tests), is told the path of each file synced.
	synced func(path string)
}

// NewRotationSyncLogger returns the logger to give Badger for a database
// in dir (Options.Dir). next may be nil.
func NewRotationSyncLogger(next badger.Logger, dir string, log *slog.Logger) *RotationSyncLogger {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &RotationSyncLogger{next: next, dir: dir, log: log}
}

var _ badger.Logger = (*RotationSyncLogger)(nil)

// Syncs reports how many rotations were synced, and how many syncs failed.
func (l *RotationSyncLogger) Syncs() (ok, failed uint64) { return l.syncs.Load(), l.failed.Load() }

func (l *RotationSyncLogger) Errorf(f string, a ...any) {
	if l.next != nil {
		l.next.Errorf(f, a...)
	}
}

func (l *RotationSyncLogger) Warningf(f string, a ...any) {
	if l.next != nil {
		l.next.Warningf(f, a...)
	}
}

func (l *RotationSyncLogger) Infof(f string, a ...any) {
	if l.next != nil {
		l.next.Infof(f, a...)
	}
}

func (l *RotationSyncLogger) Debugf(f string, a ...any) {
	if strings.HasPrefix(f, badgerRotationLine) {
		l.syncOutgoing()
	}
	if l.next != nil {
		l.next.Debugf(f, a...)
	}
}

// syncOutgoing fsyncs the newest memtable file. Badger cannot be told of
// a failure here; it is logged and counted, and the next snapshot's
// barrier (which syncs every memtable file) fails the same way and keeps
// the Raft log, so nothing acknowledged depends on this sync alone.
func (l *RotationSyncLogger) syncOutgoing() {
	start := time.Now()
	path, err := newestMemtable(l.dir)
	if err == nil && path != "" {
		err = syncFile(path)
	}
	if err != nil {
		l.failed.Add(1)
		l.log.Error("syncing the memtable at rotation", "dir", l.dir, "err", err)
		return
	}
	l.syncs.Add(1)
	if l.synced != nil {
		l.synced(path)
	}
	l.log.Debug("memtable synced at rotation", "file", path, "took", time.Since(start))
}

// RunWriteback starts writeback of the active memtable's dirty pages
// every interval until ctx is done, so that the sync at rotation and the
// snapshot barrier have little left to write. The pages would reach the
// disk at the next rotation anyway; this only spreads the writes out.
func (l *RotationSyncLogger) RunWriteback(ctx context.Context, every time.Duration) error {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			path, err := newestMemtable(l.dir)
			if err == nil && path != "" {
				err = startWriteback(path)
			}
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				l.log.Debug("starting memtable writeback", "err", err)
			}
		}
	}
}

// newestMemtable returns the path of the memtable file with the highest
// number in dir ("" when there is none).
func newestMemtable(dir string) (string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	best, bestID := "", -1
	for _, e := range entries {
		name := e.Name()
		num, ok := strings.CutSuffix(name, ".mem")
		if !ok || e.IsDir() {
			continue
		}
		id, err := strconv.Atoi(num)
		if err != nil {
			continue
		}
		if id > bestID {
			best, bestID = name, id
		}
	}
	if best == "" {
		return "", nil
	}
	return filepath.Join(dir, best), nil
}
