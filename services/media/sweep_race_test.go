package media

import (
	"context"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/wire"
	"github.com/edgechat/edgechat/services/media/store"
)

// A media unsent for a week that its owner sends while the sweep that
// found it unsent is removing it keeps its file and record: the message
// that carries it must stay readable. The sweep read the records, deleted
// the files, then deleted the records unconditionally, so a send that
// committed in between was left pointing at nothing. And one the sweep
// does remove leaves neither record nor file behind.
func TestSweepKeepsAMediaSentWhileItRemovesIt(t *testing.T) {
	e := newEnv(t, Config{Worker: true})
	ctx := context.Background()
	raced := e.upload("alice", "raced.txt", "x")
	e.svc.workOnce(ctx)
	orphan := e.upload("alice", "orphan.txt", "y")
	e.svc.workOnce(ctx)
	e.clock.Advance(DefaultOrphanUnsent + time.Hour)

	// The send commits right before the sweep's first change.
	var sendErr error
	e.prop.BeforeNext(func() {
		sendErr = e.svc.Attach(ctx, "alice", &wire.Media{ID: raced.ID}, "bob", "")
	})
	e.svc.Sweep(ctx)
	if sendErr != nil {
		t.Fatalf("the send during the sweep: %v", sendErr)
	}
	r, err := e.svc.Get(raced.ID)
	if err != nil || !r.Sent {
		t.Fatalf("the media sent during the sweep: %+v, %v", r, err)
	}
	if !e.st.has(store.TierProcessed, raced.ID) {
		t.Fatal("the file of the media sent during the sweep was deleted")
	}
	if _, err := e.svc.Get(orphan.ID); err == nil {
		t.Fatal("the unsent media is still there")
	}
	if e.st.has(store.TierProcessed, orphan.ID) {
		t.Fatal("the unsent media's file is still there")
	}
	// Nothing is left for a later sweep either.
	e.clock.Advance(time.Hour)
	e.svc.Sweep(ctx)
	if !e.st.has(store.TierProcessed, raced.ID) {
		t.Fatal("a later sweep deleted the sent media's file")
	}
}
