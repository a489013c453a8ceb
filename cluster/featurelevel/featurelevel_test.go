package featurelevel_test

import (
	"context"
	"testing"

	"github.com/edgechat/edgechat/cluster/featurelevel"
	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/cluster/fsm/fsmtest"
	"github.com/edgechat/edgechat/internal/wire"
)

func propose(t *testing.T, h *fsmtest.Harness, level uint32) uint32 {
	t.Helper()
	v, err := h.Propose(context.Background(), wire.CmdFeatureLevel, featurelevel.Payload(level))
	if err != nil {
		t.Fatalf("raise to %d: %v", level, err)
	}
	got, ok := featurelevel.Value(v)
	if !ok {
		t.Fatalf("raise to %d: value %T", level, v)
	}
	return got
}

// The level starts at 0, goes up, and never down; it is read the same
// inside a transaction, from the database and from memory.
func TestTheLevelIsRaisedAndNeverLowered(t *testing.T) {
	h := fsmtest.New(t)
	s := featurelevel.Register(h.FSM)
	if s.Level() != 0 || featurelevel.Of(h.DB) != 0 {
		t.Fatalf("fresh level: memory %d, db %d; want 0", s.Level(), featurelevel.Of(h.DB))
	}
	if got := propose(t, h, 1); got != 1 || s.Level() != 1 || featurelevel.Of(h.DB) != 1 {
		t.Fatalf("after raising to 1: value %d, memory %d, db %d", got, s.Level(), featurelevel.Of(h.DB))
	}
	if got := propose(t, h, 0); got != 1 || s.Level() != 1 || featurelevel.Of(h.DB) != 1 {
		t.Fatalf("after proposing 0: value %d, memory %d, db %d; want 1 (never lowered)", got, s.Level(), featurelevel.Of(h.DB))
	}
	if _, err := h.Propose(context.Background(), wire.CmdFeatureLevel, []byte{1}); err == nil {
		t.Fatal("a malformed payload was accepted")
	}
	// A node started on the database reads the level back.
	f2 := fsm.New(h.DB, nil)
	if l := featurelevel.Register(f2).Level(); l != 1 {
		t.Fatalf("level read at start: %d, want 1", l)
	}
}

// A node of an earlier version has no handler: it skips the command and
// goes on applying the rest of the log.
func TestANodeWithoutTheHandlerSkipsTheCommand(t *testing.T) {
	h := fsmtest.New(t)
	featurelevel.Register(h.FSM)
	old := h.NewFollower(t) // registers nothing: an earlier version
	res, err := h.ProposeBatch(context.Background(), []fsm.Command{{Type: wire.CmdFeatureLevel, Payload: featurelevel.Payload(1)}})
	if err != nil || res[0].Err != nil {
		t.Fatalf("leader: %v %v", err, res)
	}
	if l := featurelevel.Of(old.DB()); l != 0 {
		t.Fatalf("old node's level %d, want 0 (skipped)", l)
	}
	if idx, err := old.AppliedIndex(); err != nil || idx != h.Index() {
		t.Fatalf("old node applied index %d (%v), want %d", idx, err, h.Index())
	}
}

// A snapshot carries the level to a node that restores it, whose memory
// follows.
func TestSnapshotAndRestoreKeepTheLevel(t *testing.T) {
	h := fsmtest.New(t)
	featurelevel.Register(h.FSM)
	propose(t, h, 1)
	snap := fsmtest.Snapshot(t, h.FSM)

	f2 := fsm.New(fsmtest.OpenDB(t), nil)
	s2 := featurelevel.Register(f2)
	fsmtest.Restore(t, f2, snap)
	if s2.Level() != 1 || featurelevel.Of(f2.DB()) != 1 {
		t.Fatalf("restored: memory %d, db %d; want 1", s2.Level(), featurelevel.Of(f2.DB()))
	}
}
