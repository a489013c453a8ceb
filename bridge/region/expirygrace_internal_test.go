package region

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/internal/wire"
)

// applyingProposer commits the expiry's commands by applying them to db.
type applyingProposer struct{ db *badger.DB }

func (p applyingProposer) Propose(_ context.Context, t byte, payload []byte) (any, error) {
	h := map[byte]fsm.Handler{wire.CmdRegionCursor: applyCursor, wire.CmdRegionExpire: applyExpire}[t]
	if h == nil {
		return nil, errors.New("unexpected command")
	}
	var v any
	err := p.db.Update(func(tx *badger.Txn) (err error) { v, err = h(tx, fsm.Position{}, payload); return err })
	return v, err
}

// flakyMarks fails every mark while failing is set.
type flakyMarks struct {
	mu      sync.Mutex
	failing bool
	marked  []snowflake.ID
}

func (f *flakyMarks) MarkUndeliverable(_ context.Context, id snowflake.ID, _, _, _ string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failing {
		return errors.New("no quorum")
	}
	f.marked = append(f.marked, id)
	return nil
}

func (f *flakyMarks) MarkGroupUndeliverable(ctx context.Context, id snowflake.ID, from, _, reason string) error {
	return f.MarkUndeliverable(ctx, id, from, "", reason)
}

// The hour the leader's expiry keeps trying to tell the senders of expired
// messages (tellGrace) is counted from the first failure of a run of
// failures, not from a failure of an earlier outage: telling failed once
// (a moment without quorum), the messages then left the outbox another
// way (the link came back and sent them, or found them expired and told
// their senders itself), and the expiry had nothing to drop for a long
// time. At the next outage, the first failure to tell dropped the
// expired messages untold at once: their senders kept seeing "sent" for
// messages that never arrived.
func TestExpiryGraceCountsFromTheCurrentRunOfFailures(t *testing.T) {
	db, err := badger.Open(badger.DefaultOptions("").WithInMemory(true).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	marks := &flakyMarks{failing: true}
	m, err := newMetrics(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	b := &Bridge{cfg: Config{Retention: time.Hour, Timeout: time.Second}, m: m,
		deps:  Deps{DB: db, Proposer: applyingProposer{db}, Undeliverables: marks},
		stats: map[string]*linkStats{"us": {}}, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	twoHoursAgo := uint64((time.Since(snowflake.Epoch) - 2*time.Hour).Milliseconds())
	first, second := snowflake.Make(twoHoursAgo, 1, 1), snowflake.Make(twoHoursAgo, 1, 2)
	stage := func(id snowflake.ID) {
		t.Helper()
		entry := `{"id":"` + id.String() + `","from":"alice","to":"bob@us","cid":"c` + id.String() + `","type":"text","body":"hi"}`
		if err := db.Update(func(tx *badger.Txn) error { return stageRegion(tx, "us", []byte(entry)) }); err != nil {
			t.Fatal(err)
		}
	}
	queued := func() uint64 {
		t.Helper()
		n, err := backlog(db, "us")
		if err != nil {
			t.Fatal(err)
		}
		return n
	}

	// Outage 1: telling fails once; the message is kept.
	stage(first)
	b.expire(context.Background(), "us")
	if n := queued(); n != 1 {
		t.Fatalf("outage 1: %d queued after a failure to tell, want the message kept", n)
	}
	// That failure was long ago (past tellGrace)...
	b.mu.Lock()
	b.tellFailing["us"] = time.Now().Add(-tellGrace - time.Minute)
	b.mu.Unlock()
	// ... and the message left the outbox another way (the link sent it).
	if err := db.Update(func(tx *badger.Txn) error {
		_, err := applyCursor(tx, fsm.Position{}, cursorCmd{Region: "us", Pos: 1}.encode())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	b.expire(context.Background(), "us") // nothing to drop

	// Outage 2: the first failure to tell keeps the messages.
	stage(second)
	b.expire(context.Background(), "us")
	if n := queued(); n != 1 {
		t.Fatalf("outage 2: %d queued after its first failure to tell, want the message kept (dropped untold)", n)
	}
	marks.mu.Lock()
	marks.failing = false
	marks.mu.Unlock()
	b.expire(context.Background(), "us")
	if n := queued(); n != 0 {
		t.Fatalf("told: %d still queued", n)
	}
	marks.mu.Lock()
	defer marks.mu.Unlock()
	if len(marks.marked) != 1 || marks.marked[0] != second {
		t.Fatalf("marked %v, want the second outage's message", marks.marked)
	}
}
