package archive

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/services/backup"
)

type segOpener struct{ st SegmentStore }

func (r segOpener) OpenSegment(ctx context.Context, key string) (io.ReadCloser, error) {
	return r.st.Get(ctx, key, 0, -1)
}

// A backup streams the state at one applied index, then copies the
// segments that state references. Meanwhile the leader's sweep runs
// retention, which rewrites the segment straddling the cutoff, and the
// orphan collection. The old object must outlive the grace period counted
// from when it stopped being referenced: before, the grace counted from
// its creation (sealed long ago), the object went at once and the backup
// failed. Once the grace has passed since, it is collected.
func TestBackupSurvivesASweepThatUnreferencesItsSegments(t *testing.T) {
	now := time.Now()
	ms := func(t time.Time) uint64 { return uint64(t.Sub(snowflake.Epoch).Milliseconds()) }
	start := now.Add(-48 * time.Hour)
	step := int64(snowflake.Make(ms(start.Add(time.Hour)), 0, 0) - snowflake.Make(ms(start), 0, 0))
	ids := &seqIDs{next: int64(snowflake.Make(ms(start), 1, 0)), step: step}
	segs, _ := localSegments(t, true)
	e := newEnv(t, withIDs(ids), withSegments(segs))
	for i := range 40 { // one an hour, from 48h ago to 9h ago
		e.send(t, "alice", "bob", fmt.Sprintf("m%d", i))
	}
	if st, err := e.svc.SealOnce(context.Background(), SealConfig{HotAge: time.Hour}, now); err != nil || st.Segments != 1 {
		t.Fatalf("seal: %+v %v", st, err)
	}
	// The backup's state, taken now.
	size, applied, rc, err := e.f.OpenState()
	if err != nil {
		t.Fatal(err)
	}
	state, _ := io.ReadAll(rc)
	rc.Close()

	// The sweep two hours later (the segment was sealed long before the
	// sweep that orphans it): retention of 1 day rewrites the segment,
	// and the orphan collection runs right after.
	later := now.Add(2 * time.Hour)
	if st, err := e.svc.ExpireOnce(context.Background(), RetentionPolicy{Days: 1}, later); err != nil || st.Rewritten != 1 {
		t.Fatalf("retention: %+v %v", st, err)
	}
	if _, err := e.svc.SealOnce(context.Background(), SealConfig{HotAge: time.Hour}, later); err != nil {
		t.Fatal(err)
	}

	src := backup.Source{
		State: func(context.Context) (int64, uint64, io.ReadCloser, error) {
			return size, applied, io.NopCloser(bytes.NewReader(state)), nil
		},
		RefOf: func(k, v []byte) (backup.SegmentRef, bool) {
			r, ok := SegmentRefOf(k, v)
			return backup.SegmentRef{Key: r.Key, Size: r.Size, SHA256: hex.EncodeToString(r.SHA256[:])}, ok
		},
		Segments: segOpener{segs},
	}
	dir, _ := backup.NewDirStore(t.TempDir())
	if _, err := backup.Write(context.Background(), src, &backup.StoreSink{Store: dir}); err != nil {
		t.Fatalf("a backup running across one sweep fails: %v", err)
	}
	// Still there just before the grace is up. A clock that went back
	// (the sweep at now, before it was first seen) counts again from
	// there; gone once the grace is up.
	for _, c := range []struct {
		at      time.Time
		orphans int
	}{{later.Add(time.Hour - time.Second), 0}, {now, 0}, {now.Add(time.Hour - time.Second), 0}, {now.Add(time.Hour + time.Minute), 1}} {
		if st, err := e.svc.SealOnce(context.Background(), SealConfig{HotAge: time.Hour}, c.at); err != nil || st.Orphans != c.orphans {
			t.Errorf("sweep at %v from the retention: %+v %v; want %d orphans deleted", c.at.Sub(later), st, err, c.orphans)
		}
	}
}
