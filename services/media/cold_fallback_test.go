package media

import (
	"context"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/wire"
	"github.com/edgechat/edgechat/services/media/store"
)

// The sweeper moves a media's files to the cold tier, then records the
// move through Raft. Until that is committed, and for up to an hour (the
// next sweep) when it fails (a change of leader, no quorum), the record
// still names the processed tier: every download answered 404, though
// moveCold says serving falls back. A media the sweeper may have moved
// (not read for ColdAfter) whose files are not in the processed tier is
// served from the cold tier.
func TestColdMoveNotYetRecordedStillServes(t *testing.T) {
	e, id := movedColdNotRecorded(t)
	if r := e.do("GET", "/media/"+id, "bob", nil, nil); r.Code != 200 || r.Body.String() != "OLD NEWS" {
		t.Fatalf("media moved to the cold tier, move not recorded yet: %d %q", r.Code, r.Body.String())
	}
}

// The same for another region reading the file by chunks (mediaChunk):
// it got not_found until the move was recorded.
func TestColdMoveNotYetRecordedStillServesAnotherRegion(t *testing.T) {
	e, id := movedColdNotRecorded(t)
	c, err := e.svc.mediaChunk(context.Background(), id, false, 0, 1024)
	if err != nil || string(c.Data) != "OLD NEWS" {
		t.Fatalf("a chunk of media moved to the cold tier, move not recorded yet: %q, %v", c.Data, err)
	}
}

// movedColdNotRecorded is a media alice sent bob, not read for longer
// than ColdAfter, whose file the sweeper moved to the cold tier without
// the move recorded yet (what moveCold does first).
func movedColdNotRecorded(t *testing.T) (*env, string) {
	t.Helper()
	e := newEnv(t, Config{Worker: true, ColdAfter: 48 * time.Hour})
	ctx := context.Background()
	sent := e.upload("alice", "old.txt", "old news")
	e.svc.workOnce(ctx)
	if err := e.svc.Attach(ctx, "alice", &wire.Media{ID: sent.ID}, "bob", ""); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(49 * time.Hour)
	if err := e.st.Move(ctx, store.TierProcessed, store.TierCold, fileKey(sent.ID)); err != nil {
		t.Fatal(err)
	}
	if got, _ := e.svc.Get(sent.ID); got.Tier != TierProcessed {
		t.Fatalf("the record: %+v", got)
	}
	return e, sent.ID
}
