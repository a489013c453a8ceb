package archive

import (
	"context"
	"fmt"
	"testing"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/cluster/fsm/fsmtest"
	"github.com/edgechat/edgechat/internal/snowflake"
)

// resend sends cid again from alice and fails unless it is answered as
// a duplicate.
func (e *env) resendDup(t *testing.T, from, cid string) {
	t.Helper()
	_, _, dup, err := e.svc.SendDirect(context.Background(), from, "bob", text(cid, "again"))
	if err != nil || !dup {
		t.Fatalf("resending %s/%s: dup %v, err %v; want the original", from, cid, dup, err)
	}
}

// Once the filter is built, a new cid costs no dedupe lookup and a
// retried one is still answered with the original.
func TestDedupeFilterSkipsLookups(t *testing.T) {
	e := newEnv(t)
	e.send(t, "alice", "bob", "first")
	e.svc.st.cids.finish()
	before := e.svc.st.cids.lookupCount()
	for i := range 50 {
		e.send(t, "alice", "bob", fmt.Sprint("new", i))
	}
	if n := e.svc.st.cids.lookupCount() - before; n != 0 {
		t.Fatalf("%d dedupe lookups for 50 new cids, want 0", n)
	}
	e.resendDup(t, "alice", "first")
	e.resendDup(t, "alice", "new49")
}

// A node restarted on its database builds the filter from the stored
// keys: cids stored before the restart are still duplicates.
func TestDedupeFilterAfterRestart(t *testing.T) {
	e := newEnv(t)
	for i := range 300 {
		e.send(t, "alice", "bob", fmt.Sprint("c", i))
	}
	f2 := fsm.New(e.db, nil)
	svc2, err := New(Deps{DB: e.db, Proposer: e.prop, FSM: f2, Publisher: &fakePub{}, IDs: &seqIDs{}, Users: fakeDir{}})
	if err != nil {
		t.Fatal(err)
	}
	svc2.st.cids.finish()
	for i, cid := range []string{"c0", "c150", "c299"} {
		res := f2.Apply(msgEntry(e.prop.Index()+uint64(i)+1, snowflake.ID(1<<40+i), "alice", "bob", cid)).([]fsm.Result)
		if a, ok := res[0].Value.(*applied); res[0].Err != nil || !ok || !a.Dup {
			t.Fatalf("cid %s after a restart: %+v, want a duplicate", cid, res[0])
		}
	}
}

// A snapshot restore brings cids the filter did not hold: they are
// duplicates on the restored node.
func TestDedupeFilterAfterRestore(t *testing.T) {
	e := newEnv(t)
	for i := range 20 {
		e.send(t, "alice", "bob", fmt.Sprint("s", i))
	}
	snap := fsmtest.Snapshot(t, e.f)

	e2 := newEnv(t, withIDs(&seqIDs{next: 1 << 20, step: 1}))
	e2.send(t, "carol", "bob", "mine")
	e2.svc.st.cids.finish()
	fsmtest.Restore(t, e2.f, snap)
	e2.prop.SetIndex(e.prop.Index())
	e2.ids.next = 1 << 31
	e2.resendDup(t, "alice", "s7") // looked up: the filter is being rebuilt
	e2.svc.st.cids.finish()
	e2.resendDup(t, "alice", "s8")
	e2.send(t, "carol", "bob", "mine") // gone with the state the snapshot replaced
}

// Keys written while a build runs (while it counts and while it fills,
// sorting before and after where its walk is) are in the filter it
// completes, and the walk resumes across chunks.
func TestDedupeFilterKeysWrittenDuringBuild(t *testing.T) {
	e := newEnv(t)
	for i := range 1000 {
		e.send(t, "alice", "bob", fmt.Sprint("old", i))
	}
	f := e.svc.st.cids
	f.chunk = 64
	f.purge() // a new build over 1,000 keys, as after a restore
	var during []string
	for i := 0; f.b != nil; i++ {
		cid := fmt.Sprint([]string{"during", "zlate"}[i%2], i) // before and after "old"
		e.send(t, "alice", "bob", cid)
		during = append(during, cid)
	}
	if len(during) < 2*1000/64*chunkEvery {
		t.Fatalf("the build took %d messages; the test needs it to span both phases", len(during))
	}
	before := f.lookupCount()
	e.send(t, "alice", "bob", "after")
	if f.lookupCount() != before {
		t.Fatal("the completed filter did not answer a new cid")
	}
	for _, cid := range append(during, "old0", "old999", "after") {
		e.resendDup(t, "alice", cid)
	}
}

// A filter that fills up is rebuilt larger, and keeps every key.
func TestDedupeFilterGrows(t *testing.T) {
	e := newEnv(t)
	f := newCIDFilter(e.db, 64)
	e.svc.st.cids = f
	for i := range 600 {
		e.send(t, "alice", "bob", fmt.Sprint("g", i))
	}
	f.finish()
	if f.cur.capacity < 600 {
		t.Fatalf("filter capacity %d after 600 keys, want it grown", f.cur.capacity)
	}
	for _, cid := range []string{"g0", "g63", "g64", "g300", "g599"} {
		e.resendDup(t, "alice", cid)
	}
}
