package push

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/cluster/fsm/fsmtest"
	"github.com/edgechat/edgechat/internal/badgeropts"
	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/internal/wire"
)

// cmdTestStage stands in for the archive's message command: its handler
// stages the message the way the archive's does.
const cmdTestStage byte = 0xEE

type afterCommit func()

func (a afterCommit) AfterCommit() {
	if a != nil {
		a()
	}
}

// withStaging registers the stand-in command and records what OnStaged
// hears.
func withStaging(e *env) (stage func(m StagedMessage), heard func() []snowflake.ID) {
	e.prop.FSM.Register(cmdTestStage, func(tx *badger.Txn, _ fsm.Position, payload []byte) (any, error) {
		var m StagedMessage
		if err := json.Unmarshal(payload, &m); err != nil {
			return nil, err
		}
		after, err := e.svc.Stage(tx, m)
		return afterCommit(after), err
	})
	var mu sync.Mutex
	var got []snowflake.ID
	e.svc.OnStaged(func(m StagedMessage) {
		mu.Lock()
		got = append(got, m.ID)
		mu.Unlock()
	})
	stage = func(m StagedMessage) {
		e.t.Helper()
		if _, err := e.prop.Propose(context.Background(), cmdTestStage, []byte(mustJSON(e.t, m))); err != nil {
			e.t.Fatal(err)
		}
	}
	heard = func() []snowflake.ID {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(got)
	}
	return stage, heard
}

func queued(t *testing.T, s *Service) []snowflake.ID {
	t.Helper()
	var ids []snowflake.ID
	if err := s.EachQueued(func(id snowflake.ID) bool { ids = append(ids, id); return true }); err != nil {
		t.Fatal(err)
	}
	return ids
}

func TestStageOnlyWhatMayPush(t *testing.T) {
	e := newEnv(t)
	stage, heard := withStaging(e)
	if _, err := e.svc.Register(context.Background(), "bob", Registration{Device: "phone", Platform: PlatformAPNs,
		Token: apnsToken("bob")}); err != nil {
		t.Fatal(err)
	}
	stage(StagedMessage{ID: 30, From: "alice", To: "bob"})      // bob has a device: staged
	stage(StagedMessage{ID: 10, From: "alice", To: "carol"})    // no device: not staged
	stage(StagedMessage{ID: 20, From: "bob", To: "bob"})        // to oneself: never pushed
	stage(StagedMessage{ID: 40, From: "alice", Group: "team1"}) // groups: always staged
	if got, want := queued(t, e.svc), []snowflake.ID{30, 40}; !slices.Equal(got, want) {
		t.Fatalf("queued %v, want %v", got, want)
	}
	if got, want := heard(), []snowflake.ID{30, 40}; !slices.Equal(got, want) {
		t.Fatalf("OnStaged heard %v, want %v", got, want)
	}
}

func TestProgressRecordsHandledAndRemovesDone(t *testing.T) {
	e := newEnv(t)
	stage, _ := withStaging(e)
	for _, id := range []snowflake.ID{1, 2} {
		stage(StagedMessage{ID: id, From: "alice", Group: "team1"})
	}
	ctx := context.Background()
	err := e.svc.RecordProgress(ctx, Progress{Handled: []HandledDevices{
		{ID: 1, Clients: []string{"bob/phone", "carol/pixel"}},
		{ID: 2, Clients: []string{"bob/phone"}},
		{ID: 99, Clients: []string{"bob/phone"}}, // not queued (done already): ignored
	}})
	if err != nil {
		t.Fatal(err)
	}
	if h, _ := e.svc.Handled(1); !slices.Equal(h, []string{"bob/phone", "carol/pixel"}) {
		t.Fatalf("handled(1) = %v", h)
	}
	if h, _ := e.svc.Handled(99); len(h) != 0 {
		t.Fatalf("a message not in the outbox got handled records: %v", h)
	}
	if err := e.svc.RecordProgress(ctx, Progress{Done: []snowflake.ID{1}}); err != nil {
		t.Fatal(err)
	}
	if got := queued(t, e.svc); !slices.Equal(got, []snowflake.ID{2}) {
		t.Fatalf("queued after done = %v", got)
	}
	if h, _ := e.svc.Handled(1); len(h) != 0 {
		t.Fatalf("a done message kept its records: %v", h)
	}
	if h, _ := e.svc.Handled(2); !slices.Equal(h, []string{"bob/phone"}) {
		t.Fatalf("handled(2) = %v", h)
	}
}

// A malformed progress command is refused by the handler and changes
// nothing; an oversized one is refused before proposing.
func TestProgressRefusesBadCommands(t *testing.T) {
	e := newEnv(t)
	stage, _ := withStaging(e)
	stage(StagedMessage{ID: 5, From: "alice", Group: "team1"})
	before := e.state()
	for name, payload := range map[string]string{
		"not json":       `{"handled":`,
		"bad client id":  `{"handled":[{"id":5,"clients":["no-slash"]}]}`,
		"bad device":     `{"handled":[{"id":5,"clients":["bob/"]}]}`,
		"bad user, done": `{"handled":[{"id":5,"clients":["Bad User/phone"]}],"done":[5]}`,
	} {
		if _, err := e.prop.Propose(context.Background(), wire.CmdPushProgress, []byte(payload)); !errors.Is(err, errBadCommand) {
			t.Errorf("%s: %v, want a malformed command", name, err)
		}
	}
	big := Progress{Handled: []HandledDevices{{ID: 5, Clients: make([]string, MaxProgressEntries+1)}}}
	if err := e.svc.RecordProgress(context.Background(), big); !errors.Is(err, errBadCommand) {
		t.Errorf("oversized progress: %v", err)
	}
	if after := e.state(); !maps.Equal(before, after) {
		t.Fatalf("a refused command changed the state:\nbefore %v\nafter  %v", before, after)
	}
}

// The set of users who may have a device, which spares staging a
// database read for everyone else, never misses a device: not one
// written before the service started (loaded from the database), not one
// that arrives with a snapshot (reloaded after a restore). A user whose
// last device went still gets the exact answer (not staged).
func TestStageSeesDevicesFromStartAndRestore(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	stage, _ := withStaging(e)
	reg := func(s *Service, uid string) {
		t.Helper()
		if _, err := s.Register(ctx, uid, Registration{Device: "phone", Platform: PlatformAPNs, Token: apnsToken(uid)}); err != nil {
			t.Fatal(err)
		}
	}
	reg(e.svc, "bob")
	reg(e.svc, "dave")
	if err := e.svc.Unregister(ctx, "dave", "phone"); err != nil {
		t.Fatal(err)
	}
	// A second service over the same database, as after a restart.
	again, err := New(Deps{DB: e.prop.DB, Proposer: e.prop, FSM: fsm.New(e.prop.DB, nil), Enabled: Platforms()})
	if err != nil {
		t.Fatal(err)
	}
	if !again.holders.mayHave("bob") || again.holders.mayHave("carol") {
		t.Fatalf("loaded holders %v, want bob (and not carol)", again.holders.m)
	}
	stage(StagedMessage{ID: 1, From: "alice", To: "dave"}) // had a device, none now
	stage(StagedMessage{ID: 2, From: "alice", To: "bob"})
	if got := queued(t, e.svc); !slices.Equal(got, []snowflake.ID{2}) {
		t.Fatalf("queued %v, want [2]", got)
	}

	// carol registers on another cluster whose snapshot this one restores.
	other := newEnv(t)
	other.prop.SetIndex(1000) // ahead of this one, or the restore keeps the local state
	reg(other.svc, "carol")
	snap := fsmtest.Snapshot(t, other.prop.FSM)
	stage(StagedMessage{ID: 3, From: "alice", To: "carol"})
	fsmtest.Restore(t, e.prop.FSM, snap)
	e.prop.SetIndex(2000) // the log goes on after the snapshot's entries
	stage(StagedMessage{ID: 4, From: "alice", To: "carol"})
	if got := queued(t, e.svc); !slices.Equal(got, []snowflake.ID{4}) {
		t.Fatalf("queued after the restore %v, want [4] (the snapshot replaced the outbox)", got)
	}
}

// A progress command that marks the most messages a command may done,
// each with a handled device and an unacknowledged delivery recorded,
// removes them all in one short transaction (the leader's sender sends
// such commands under load): it used to open two iterators per message,
// each sorting every write the transaction had made so far, seconds of
// the FSM's apply goroutine during which no other command of the node
// applied. Another message's records stay.
func TestProgressRemovesManyDoneMessagesQuickly(t *testing.T) {
	e := newEnv(t)
	const n = 3000 // with their 3 records each, as many as fit the test database's transaction
	done := make([]snowflake.ID, n)
	wb := e.prop.DB.NewWriteBatch()
	for i := range n + 1 { // the last one stays queued
		id := snowflake.ID(1000 + i)
		for _, k := range [][]byte{outboxKey(id), append(handledPrefix(id), "bob/phone"...), unackedKey(id, "bob/tablet")} {
			if err := wb.Set(k, nil); err != nil {
				t.Fatal(err)
			}
		}
		if i < n {
			done[i] = id
		}
	}
	if err := wb.Flush(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := e.svc.RecordProgress(context.Background(), Progress{Done: done}); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("marking %d messages done took %v", n, el)
	}
	if q := queued(t, e.svc); len(q) != 1 || q[0] != snowflake.ID(1000+n) {
		t.Fatalf("queued after: %v, want only %d", q, 1000+n)
	}
	if left := deviceRecordsLeft(e.prop.DB); left != 2 {
		t.Errorf("%d handled and unacknowledged records left, want 2 (the queued message's)", left)
	}
}

// Messages marked done in the commands the sender sends under load (a
// few thousand each), long after thousands of others were removed, are
// removed as fast as the first: finding a done message's records must
// not walk over the deleted keys of the messages done before it (they
// stay in the database as tombstones until a compaction). A first cut of
// the single iterator sought each message's records across the whole
// push key space and walked the outbox's tombstones from there, once per
// message.
func TestProgressRemovesDoneMessagesQuicklyAfterManyOthers(t *testing.T) {
	e := newEnv(t)
	const total, perCommand = 20_000, 2_000
	wb := e.prop.DB.NewWriteBatch()
	for i := range total {
		if err := wb.Set(outboxKey(snowflake.ID(1000+i)), nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := wb.Flush(); err != nil {
		t.Fatal(err)
	}
	var slowest time.Duration
	for start := 0; start < total; start += perCommand {
		done := make([]snowflake.ID, perCommand)
		for i := range done {
			done[i] = snowflake.ID(1000 + start + i)
		}
		t0 := time.Now()
		if err := e.svc.RecordProgress(context.Background(), Progress{Done: done}); err != nil {
			t.Fatal(err)
		}
		slowest = max(slowest, time.Since(t0))
	}
	if slowest > time.Second {
		t.Errorf("the slowest command of %d messages done took %v", perCommand, slowest)
	}
	if q := queued(t, e.svc); len(q) != 0 {
		t.Fatalf("%d messages still queued", len(q))
	}
}

// Progress marking many messages done, each with records of devices
// handled in earlier commands (a user's two phones, decided in different
// commits), is committed however many records that removes: in a node's
// database one command removing 10,000 messages with two records each
// (30,000 deletes) was refused as too large for one transaction, and the
// sender put it back and sent it again every 100 ms, for ever: nothing
// of its progress committed after it.
func TestProgressRemovesManyDoneMessagesWithTheirRecordsInANodesDatabase(t *testing.T) {
	prop := fsmtest.New(t, fsmtest.WithBadgerOptions(func(o badger.Options) badger.Options {
		return badgeropts.Node(o.Dir).WithLogger(nil)
	}))
	svc, err := New(Deps{DB: prop.DB, Proposer: prop, FSM: prop.FSM, Enabled: Platforms()})
	if err != nil {
		t.Fatal(err)
	}
	const n = 10_000 // the sender's most entries in one RecordProgress
	wb := prop.DB.NewWriteBatch()
	done := make([]snowflake.ID, n)
	for i := range n {
		done[i] = snowflake.ID(1000 + i)
		for _, k := range [][]byte{outboxKey(done[i]), append(handledPrefix(done[i]), "bob/phone"...),
			append(handledPrefix(done[i]), "bob/tablet"...)} {
			if err := wb.Set(k, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := wb.Flush(); err != nil {
		t.Fatal(err)
	}
	other := snowflake.ID(1000 + n) // stays queued, gets a device handled
	if err := prop.DB.Update(func(tx *badger.Txn) error { return tx.Set(outboxKey(other), nil) }); err != nil {
		t.Fatal(err)
	}
	if err := svc.RecordProgress(context.Background(), Progress{Done: done,
		Handled: []HandledDevices{{ID: other, Clients: []string{"carol/phone"}}}}); err != nil {
		t.Fatal(err)
	}
	if q := queued(t, svc); len(q) != 1 || q[0] != other {
		t.Fatalf("%d messages queued after, want only %d", len(q), other)
	}
	if h, err := svc.Handled(other); err != nil || !slices.Equal(h, []string{"carol/phone"}) {
		t.Fatalf("handled of the queued message: %v %v", h, err)
	}
	left := 0
	_ = prop.DB.View(func(tx *badger.Txn) error {
		it := tx.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixHandled)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			left++
		}
		return nil
	})
	if left != 1 {
		t.Errorf("%d handled records left, want 1 (the queued message's)", left)
	}
}

// A message with more device records than one transaction holds (a
// group of tens of thousands of devices, --push-group-limit raised, its
// devices handled in many earlier commands) can still be marked done,
// and so can the messages after it: its records go over several
// commands, the outbox entry with the first.
func TestProgressRemovesAMessageWithMoreRecordsThanOneTransactionHolds(t *testing.T) {
	prop := fsmtest.New(t, fsmtest.WithBadgerOptions(func(o badger.Options) badger.Options {
		return badgeropts.Node(o.Dir).WithLogger(nil)
	}))
	svc, err := New(Deps{DB: prop.DB, Proposer: prop, FSM: prop.FSM, Enabled: Platforms()})
	if err != nil {
		t.Fatal(err)
	}
	const devices = 50_000
	big, small, queuedID := snowflake.ID(1000), snowflake.ID(1001), snowflake.ID(1002)
	wb := prop.DB.NewWriteBatch()
	for _, k := range [][]byte{outboxKey(big), outboxKey(small), outboxKey(queuedID),
		append(handledPrefix(small), "bob/phone"...), append(unackedPrefix(big), "u0/phone"...)} {
		if err := wb.Set(k, nil); err != nil {
			t.Fatal(err)
		}
	}
	for i := range devices {
		if err := wb.Set(append(handledPrefix(big), fmt.Sprintf("u%05d/phone", i)...), nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := wb.Flush(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := svc.RecordProgress(ctx, Progress{Done: []snowflake.ID{big, small},
		Handled: []HandledDevices{{ID: queuedID, Clients: []string{"carol/phone"}}}}); err != nil {
		t.Fatalf("marking a message with %d handled records done: %v", devices, err)
	}
	if q := queued(t, svc); len(q) != 1 || q[0] != queuedID {
		t.Fatalf("queued after: %v, want only %d", q, queuedID)
	}
	if h, err := svc.Handled(queuedID); err != nil || !slices.Equal(h, []string{"carol/phone"}) {
		t.Fatalf("handled of the queued message: %v %v", h, err)
	}
	if left := deviceRecordsLeft(prop.DB); left != 1 {
		t.Errorf("%d records left, want 1 (the queued message's)", left)
	}
}

// deviceRecordsLeft counts the handled and unacknowledged device records
// in db.
func deviceRecordsLeft(db *badger.DB) int {
	left := 0
	_ = db.View(func(tx *badger.Txn) error {
		for _, kind := range []string{prefixHandled, prefixUnacked} {
			it := tx.NewIterator(badger.IteratorOptions{Prefix: []byte(kind)})
			for it.Rewind(); it.Valid(); it.Next() {
				left++
			}
			it.Close()
		}
		return nil
	})
	return left
}
