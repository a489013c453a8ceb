package archive

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/cluster/fsm/fsmtest"
	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/internal/wire"
)

// msgEntry is a raft entry holding one direct message command with id.
func msgEntry(index uint64, id snowflake.ID, from, to, cid string) *raft.Log {
	env := text(cid, "body of "+cid)
	env.ID, env.From, env.To = id, from, to
	c := msgCmd{ID: id, From: from, To: to, CID: cid, Payload: env.Marshal()}
	return &raft.Log{Index: index, Type: raft.LogCommand, Data: fsm.EncodeBatch([]fsm.Command{{Type: wire.CmdMessage, Payload: c.encode()}})}
}

// Increasing IDs (each node's generator) need no lookup of m/{id}; IDs
// at or below what is stored are looked up and still stored when free.
func TestIDFreeCheckSkippedForIncreasingIDs(t *testing.T) {
	ids := &seqIDs{next: int64(snowflake.Make(1000, 1, 0)), step: 1}
	e := newEnv(t, withIDs(ids))
	for i := range 50 {
		e.send(t, "alice", "bob", fmt.Sprint("up", i))
	}
	if n := e.svc.st.ids.lookupCount(); n != 0 {
		t.Fatalf("%d ID lookups for increasing IDs, want 0", n)
	}
	// IDs that arrive out of order (a clock that went back, a publish
	// overtaken by a later one): below the highest but never written,
	// they need no lookup either.
	ids.next, ids.step = int64(snowflake.Make(999, 1, 10)), -1
	for i := range 5 {
		e.send(t, "alice", "bob", fmt.Sprint("down", i))
	}
	if n := e.svc.st.ids.lookupCount(); n != 0 {
		t.Fatalf("%d ID lookups for IDs below the top, want 0", n)
	}
	// One of them again (a machine-number clash): looked up, refused.
	ids.next = int64(snowflake.Make(999, 1, 10))
	if _, _, _, err := e.svc.SendDirect(context.Background(), "bob", "alice", text("again", "x")); !errors.Is(err, ErrIDTaken) {
		t.Fatalf("err = %v, want ErrIDTaken", err)
	}
	if n := e.svc.st.ids.lookupCount(); n != 1 {
		t.Fatalf("%d ID lookups after a clash, want 1", n)
	}
	if h, _, _ := e.svc.historyPage(context.Background(), directConv("alice", "bob"), nil, 100); len(h) != 55 {
		t.Fatalf("history has %d messages, want 55", len(h))
	}
}

// The bound is per machine number: a machine whose IDs are below
// another's still skips the lookup, and a clash on it is still refused.
func TestIDFreeCheckPerMachine(t *testing.T) {
	ids := &seqIDs{next: int64(snowflake.Make(5000, 3, 0)), step: 1}
	e := newEnv(t, withIDs(ids))
	e.send(t, "alice", "bob", "m3")
	ids.next = int64(snowflake.Make(4000, 7, 0)) // machine 7, clock behind machine 3's
	e.send(t, "alice", "bob", "m7a")
	// The first message of machine 7 is under the bound every machine
	// starts from (the store's highest ID), later ones are not.
	before := e.svc.st.ids.lookupCount()
	e.send(t, "alice", "bob", "m7b")
	if n := e.svc.st.ids.lookupCount(); n != before {
		t.Fatalf("machine 7's next ID was looked up (%d lookups, had %d)", n, before)
	}
	ids.next = int64(snowflake.Make(4000, 7, 1)) // m7b's ID again: a machine-number clash
	state := dump(t, e.db)
	if _, _, _, err := e.svc.SendDirect(context.Background(), "bob", "alice", text("clash", "x")); !errors.Is(err, ErrIDTaken) {
		t.Fatalf("err = %v, want ErrIDTaken", err)
	}
	if !maps.Equal(state, dump(t, e.db)) {
		t.Fatal("a refused message changed the state")
	}
}

// A node restarted on its database (a fresh FSM and service: nothing in
// memory) still refuses an ID that is stored.
func TestIDClashRefusedAfterRestart(t *testing.T) {
	e := newEnv(t)
	for i := range 3 {
		e.send(t, "alice", "bob", fmt.Sprint("r", i))
	}
	f2 := fsm.New(e.db, nil)
	if _, err := New(Deps{DB: e.db, Proposer: e.prop, FSM: f2, Publisher: &fakePub{}, IDs: &seqIDs{}, Users: fakeDir{}}); err != nil {
		t.Fatal(err)
	}
	top := snowflake.ID(1<<30 + 2)
	state := dump(t, e.db)
	res := f2.Apply(msgEntry(e.prop.Index()+1, top, "bob", "alice", "clash")).([]fsm.Result)
	if !errors.Is(res[0].Err, ErrIDTaken) {
		t.Fatalf("result %+v, want ErrIDTaken", res[0])
	}
	if !maps.Equal(state, dump(t, e.db)) {
		t.Fatal("a refused message changed the state")
	}
	if res := f2.Apply(msgEntry(e.prop.Index()+2, top+1, "carol", "bob", "next")).([]fsm.Result); res[0].Err != nil {
		t.Fatalf("next ID refused: %v", res[0].Err)
	}
}

// A snapshot restore brings IDs the node's bounds did not know: they
// are looked up again, so a clash with a restored message is refused.
func TestIDClashRefusedAfterRestore(t *testing.T) {
	e := newEnv(t)
	for i := range 5 {
		e.send(t, "alice", "bob", fmt.Sprint("s", i)) // IDs 1<<30 .. 1<<30+4
	}
	snap := fsmtest.Snapshot(t, e.f)

	e2 := newEnv(t, withIDs(&seqIDs{next: 1 << 20, step: 1}))
	e2.send(t, "alice", "bob", "low") // bounds now at 1<<20
	fsmtest.Restore(t, e2.f, snap)
	e2.prop.SetIndex(e.prop.Index())
	e2.ids.next = 1<<30 + 3
	if _, _, _, err := e2.svc.SendDirect(context.Background(), "bob", "alice", text("clash", "x")); !errors.Is(err, ErrIDTaken) {
		t.Fatalf("err = %v, want ErrIDTaken", err)
	}
	if !maps.Equal(dump(t, e.db), dump(t, e2.db)) {
		t.Fatal("the refused message changed the restored state")
	}
}

// The window against a model: whatever order IDs are written in, an ID
// that is written (in the window or pushed out of it) is always looked
// up, and an ID a little out of order that was never written is not.
func TestIDWindowNeverSkipsAWrittenID(t *testing.T) {
	ids := &idTops{valid: true}
	written := map[snowflake.ID]bool{}
	rng := rand.New(rand.NewPCG(1, 2))
	base := snowflake.Make(1000, 5, 0)
	for i := range 3 * recentIDs {
		// Increasing IDs, each overtaken by up to 50 later ones; every
		// seventh left out (never written).
		id := base + snowflake.ID(i) - snowflake.ID(rng.IntN(50))
		if written[id] || i%7 == 0 {
			continue
		}
		if taken, _ := ids.mayBeTaken(nil, id); taken {
			t.Fatalf("ID %d, never written and %d behind the newest, sent to a lookup", id, i-int(id-base))
		}
		ids.wrote(id)
		written[id] = true
	}
	skipped := 0
	for id := base - 100; id < base+snowflake.ID(3*recentIDs)+100; id++ {
		taken, _ := ids.mayBeTaken(nil, id)
		if written[id] && !taken {
			t.Fatalf("written ID %d would not be looked up", id)
		}
		if !taken {
			skipped++
		}
	}
	if skipped < 100 {
		t.Fatalf("only %d unwritten IDs skip the lookup", skipped)
	}
	if len(ids.recent) > recentIDs || len(ids.ring) > recentIDs {
		t.Fatalf("window holds %d IDs (ring %d), over %d", len(ids.recent), len(ids.ring), recentIDs)
	}
}
