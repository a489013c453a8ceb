package backup

import (
	"context"
	"errors"
	"io"
	"os"
	"testing"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/internal/testutil"
)

// stallSegments passes the first segment to w and stalls on the next
// one until release: a restore killed there (OOM, a reboot) never runs
// its cleanup.
type stallSegments struct {
	w       SegmentWriter
	n       int
	stalled chan struct{}
	release chan error
}

func (s *stallSegments) PutSegment(ctx context.Context, key string, r io.Reader, size int64) error {
	s.n++
	if s.n == 2 {
		close(s.stalled)
		if err := <-s.release; err != nil {
			return err
		}
	}
	return s.w.PutSegment(ctx, key, r, size)
}

func (s *stallSegments) DeleteSegment(ctx context.Context, key string) error {
	return s.w.DeleteSegment(ctx, key)
}

// TestRestoreLoadsTheStateAfterTheSegments: the state, whose applied
// index makes the data directory a node serve starts on, is the last
// thing a restore writes. Restore loaded it first and the segments
// after: a restore killed between them (no cleanup runs) left a data
// directory that serve starts on, with the full state at its applied
// index and segments it references missing from the archive store (that
// history unreadable for good), and that a second restore refuses (db/
// holds a node).
func TestRestoreLoadsTheStateAfterTheSegments(t *testing.T) {
	_, _, src := fixture(t)
	st, _ := NewDirStore(t.TempDir())
	m, err := Write(tctx(t), src, &StoreSink{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	data := t.TempDir()
	o := restoreOpts(data)
	stall := &stallSegments{w: o.Segments, stalled: make(chan struct{}), release: make(chan error, 1)}
	o.Segments = stall
	done := make(chan error, 1)
	go func() {
		_, err := Restore(tctx(t), st, m.ID, o)
		done <- err
	}()
	select {
	case <-stall.stalled:
	case err := <-done:
		t.Fatalf("restore ended before its second segment: %v", err)
	}
	// The process dies here: what does the data directory hold?
	if _, err := os.Stat(dbPath(data)); err == nil {
		db := openDB(t, dbPath(data))
		idx, err := fsm.New(db, testutil.QuietLogger()).AppliedIndex()
		_ = db.Close()
		if err != nil || idx != 0 {
			stall.release <- errors.New("test over")
			<-done
			t.Fatalf("with 1 of %d segments restored the data directory holds the state at applied index %d (%v): a node serve starts on", m.Segments(), idx, err)
		}
	}
	stall.release <- nil
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	db := openDB(t, dbPath(data))
	defer db.Close()
	checkRestoredIndex(t, db, m)
}
