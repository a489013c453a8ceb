package archive

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/cluster/fsm/fsmtest"
	"github.com/edgechat/edgechat/internal/snowflake"
)

// eraseInSteps runs EraseAccount as the erase command's steps do, each
// in its own transaction with budget writes, until it is done, and
// returns the number of steps.
func eraseInSteps(t *testing.T, e *env, uid string, budget int) int {
	t.Helper()
	for steps := 1; steps < 100000; steps++ {
		tx := e.db.NewTransaction(true)
		done, after, err := e.svc.EraseAccount(tx, uid, fsm.NewBudget(budget))
		if err != nil {
			tx.Discard()
			t.Fatalf("step %d: %v", steps, err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		if after != nil {
			after()
		}
		if done {
			return steps
		}
		if e.betweenSteps != nil {
			e.betweenSteps(steps)
		}
	}
	t.Fatal("erasing never ends")
	return 0
}

// view is what a user other than the erased one reads.
type view struct {
	Histories map[string][]string
	Sync      []string
	Convs     []string
	Unread    int
}

func viewOf(t *testing.T, e *env, uid string, convs ...string) view {
	t.Helper()
	v := view{Histories: map[string][]string{}}
	for _, conv := range convs {
		msgs, _, err := e.svc.historyPage(context.Background(), conv, nil, 200)
		if err != nil {
			t.Fatalf("history %s: %v", conv, err)
		}
		for _, m := range msgs {
			v.Histories[conv] = append(v.Histories[conv], string(m))
		}
	}
	msgs, _, _, err := e.svc.syncPage(context.Background(), uid, 0, 1000)
	if err != nil {
		t.Fatalf("sync of %s: %v", uid, err)
	}
	for _, m := range msgs {
		v.Sync = append(v.Sync, string(m))
	}
	cs, _, err := e.svc.conversations(context.Background(), uid, 100)
	if err != nil {
		t.Fatalf("conversations of %s: %v", uid, err)
	}
	for _, c := range cs {
		v.Convs = append(v.Convs, fmt.Sprintf("peer=%s group=%s unread=%d last=%s", c.Peer, c.Group, c.Unread, c.Last))
	}
	if v.Unread, err = e.svc.UnreadTotal(uid); err != nil {
		t.Fatal(err)
	}
	return v
}

// directWith reports whether a stored envelope is a direct message to or from uid.
func directWith(m, uid string) bool {
	var env struct{ From, To string }
	_ = json.Unmarshal([]byte(m), &env)
	return env.To != "" && (env.From == uid || env.To == uid)
}

// without is v as it must read once uid is erased: no direct message
// with uid, no conversation with uid (unread counts of others unchanged).
func (v view) without(t *testing.T, uid string, unreadWith int) view {
	out := view{Histories: map[string][]string{}, Unread: v.Unread - unreadWith}
	for conv, h := range v.Histories {
		if !strings.Contains(conv, uid) {
			out.Histories[conv] = h
		}
	}
	for _, m := range v.Sync {
		if !directWith(m, uid) {
			out.Sync = append(out.Sync, m)
		}
	}
	for _, c := range v.Convs {
		if !strings.HasPrefix(c, "peer="+uid+" ") {
			out.Convs = append(out.Convs, c)
		}
	}
	if len(out.Sync) == len(v.Sync) || len(out.Convs) == len(v.Convs) {
		t.Fatalf("the scenario has nothing of %s to erase", uid)
	}
	return out
}

// keysNaming lists the archive keys that name uid.
func keysNaming(t *testing.T, e *env, uid string) []string {
	t.Helper()
	var out []string
	for k := range fsmtest.Dump(t, e.db, keyRoot) {
		if strings.Contains(k, uid) {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

func unreadWith(t *testing.T, e *env, uid, peer string) int {
	t.Helper()
	cs, _, err := e.svc.conversations(context.Background(), uid, 100)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		if c.Peer == peer {
			return c.Unread
		}
	}
	return 0
}

// eraseScenario: direct conversations between all of alice, bob and
// carol and with oneself, a retried cid, read cursors, a group, and a
// sealed range's index entry.
func eraseScenario(t *testing.T, e *env) {
	t.Helper()
	ctx := context.Background()
	e.groups.add("g1", "alice", "bob", "carol")
	for i := range 12 {
		e.send(t, "alice", "bob", fmt.Sprint("ab", i))
		e.send(t, "bob", "alice", fmt.Sprint("ba", i))
		if i%3 == 0 {
			e.send(t, "carol", "bob", fmt.Sprint("cb", i))
			e.send(t, "alice", "carol", fmt.Sprint("ac", i))
			e.send(t, "carol", "alice", fmt.Sprint("ca", i))
			e.send(t, "bob", "bob", fmt.Sprint("bb", i))
		}
		e.sendGroup(t, []string{"alice", "bob", "carol"}[i%3], "g1", fmt.Sprint("g", i))
	}
	if _, _, dup, err := e.svc.SendDirect(ctx, "alice", "bob", text("ab3", "retried")); err != nil || !dup {
		t.Fatalf("retry: dup %v, %v", dup, err)
	}
	hist, _, err := e.svc.historyPage(context.Background(), directConv("alice", "bob"), nil, 100)
	if err != nil {
		t.Fatal(err)
	}
	var mid struct{ ID snowflake.ID }
	if err := json.Unmarshal(hist[len(hist)/2], &mid); err != nil {
		t.Fatal(err)
	}
	for _, reader := range []string{"alice", "bob"} {
		if err := e.svc.MarkRead(ctx, reader, map[string]string{"alice": "bob", "bob": "alice"}[reader], mid.ID); err != nil {
			t.Fatal(err)
		}
		if err := e.svc.MarkGroupRead(ctx, reader, "g1", mid.ID); err != nil {
			t.Fatal(err)
		}
	}
}

func TestEraseAccountRemovesDirectHistoryBothSides(t *testing.T) {
	e := newEnv(t, withGroups())
	eraseScenario(t, e)
	if len(keysNaming(t, e, "bob")) < 50 {
		t.Fatal("the scenario wrote little of bob")
	}
	convs := []string{directConv("alice", "carol"), groupConv("g1"), directConv("alice", "bob")}
	wantAlice := viewOf(t, e, "alice", convs...).without(t, "bob", unreadWith(t, e, "alice", "bob"))
	wantCarol := viewOf(t, e, "carol", convs...).without(t, "bob", unreadWith(t, e, "carol", "bob"))
	groupBefore := viewOf(t, e, "alice", groupConv("g1")).Histories

	// Between steps the others' reads work, and bob's conversation is
	// no longer listed from the first step on.
	e.betweenSteps = func(step int) {
		for _, uid := range []string{"alice", "carol"} {
			v := viewOf(t, e, uid, convs...)
			for _, c := range v.Convs {
				if strings.HasPrefix(c, "peer=bob ") {
					t.Fatalf("after step %d %s still lists bob: %s", step, uid, c)
				}
			}
		}
	}
	steps := eraseInSteps(t, e, "bob", 7)
	e.betweenSteps = nil
	if steps < 10 {
		t.Fatalf("a budget of 7 took only %d steps", steps)
	}
	if left := keysNaming(t, e, "bob"); len(left) > 0 {
		t.Fatalf("keys naming bob left: %q", left)
	}
	if left := dedupLeft(t, e, "alice", "ab0", "ab11", "ab3"); len(left) > 0 {
		t.Fatalf("alice's retry records of messages to bob left: %v", left)
	}
	if left := dedupLeft(t, e, "carol", "cb0", "cb9"); len(left) > 0 {
		t.Fatalf("carol's retry records of messages to bob left: %v", left)
	}
	if left := dedupLeft(t, e, "alice", "ac0", "ac9"); len(left) != 2 {
		t.Fatalf("alice's retry records of messages to carol: %v", left)
	}
	gotAlice := viewOf(t, e, "alice", convs...)
	gotCarol := viewOf(t, e, "carol", convs...)
	for _, c := range []struct {
		who       string
		got, want view
	}{{"alice", gotAlice, wantAlice}, {"carol", gotCarol, wantCarol}} {
		gb, _ := json.MarshalIndent(c.got, "", " ")
		wb, _ := json.MarshalIndent(c.want, "", " ")
		if string(gb) != string(wb) {
			t.Fatalf("%s reads after the erasure:\n got %s\nwant %s", c.who, gb, wb)
		}
	}
	if h := gotAlice.Histories[groupConv("g1")]; !slices.Equal(h, groupBefore[groupConv("g1")]) {
		t.Fatal("the group's history changed")
	}
	n := 0
	for _, m := range groupBefore[groupConv("g1")] {
		if strings.Contains(m, `"from":"bob"`) {
			n++
		}
	}
	if n != 4 {
		t.Fatalf("bob's group messages kept: %d, want 4", n)
	}

	// Once done, another step writes nothing.
	before := dump(t, e.db)
	if steps := eraseInSteps(t, e, "bob", 7); steps != 1 {
		t.Fatalf("a finished erasure took %d more steps", steps)
	}
	if !maps.Equal(before, dump(t, e.db)) {
		t.Fatal("a step after the end changed the state")
	}
	// The others go on: alice and carol still talk, and alice may reuse
	// a cid of her erased conversation (its retry record went with it).
	e.send(t, "alice", "carol", "after")
	e.send(t, "alice", "carol", "ab3")
}

// The split into steps does not change the result: any budget ends in
// the same state.
func TestEraseAccountBudgetDoesNotChangeTheResult(t *testing.T) {
	var dumps []map[string]string
	for _, budget := range []int{3, 50, 1 << 20} {
		e := newEnv(t, withGroups())
		eraseScenario(t, e)
		eraseInSteps(t, e, "bob", budget)
		dumps = append(dumps, dump(t, e.db))
	}
	for i := 1; i < len(dumps); i++ {
		if !maps.Equal(dumps[0], dumps[i]) {
			t.Fatalf("budget %d ends in another state than budget 3", []int{3, 50, 1 << 20}[i])
		}
	}
}

// A store of the older layout (bodies under m/, 8-byte s/ and dedup/
// values) is erased too: its m/ bodies of the conversations included.
func TestEraseAccountOldFormatStore(t *testing.T) {
	snap, err := os.ReadFile(filepath.Join(oldFormatDir, "snapshot.bin"))
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, withGroups())
	e.groups.add("g1", "alice", "bob", "carol")
	fsmtest.Restore(t, e.f, snap)
	convs := []string{directConv("alice", "alice"), groupConv("g1"), directConv("alice", "bob")}
	wantAlice := viewOf(t, e, "alice", convs...).without(t, "bob", unreadWith(t, e, "alice", "bob"))

	eraseInSteps(t, e, "bob", 5)
	if left := keysNaming(t, e, "bob"); len(left) > 0 {
		t.Fatalf("keys naming bob left: %q", left)
	}
	for k, v := range fsmtest.Dump(t, e.db, string(msgPrefix())) {
		if strings.HasPrefix(v, "{") && directWith(v, "bob") {
			t.Fatalf("an m/ body of a direct message with bob is left: %q %s", k, v)
		}
	}
	got := viewOf(t, e, "alice", convs...)
	gb, _ := json.MarshalIndent(got, "", " ")
	wb, _ := json.MarshalIndent(wantAlice, "", " ")
	if string(gb) != string(wb) {
		t.Fatalf("alice reads after the erasure:\n got %s\nwant %s", gb, wb)
	}
	if _, _, _, err := e.svc.syncPage(context.Background(), "carol", 0, 1000); err != nil {
		t.Fatalf("carol's sync: %v", err)
	}
}

func TestEraseAccountRefusesABadUserID(t *testing.T) {
	e := newEnv(t)
	tx := e.db.NewTransaction(true)
	defer tx.Discard()
	if _, _, err := e.svc.EraseAccount(tx, "Bob/x", fsm.NewBudget(10)); err == nil {
		t.Fatal("a malformed user ID was accepted")
	}
}

// dedupLeft lists which of cids sender still has a retry record of.
func dedupLeft(t *testing.T, e *env, sender string, cids ...string) []string {
	t.Helper()
	var left []string
	state := dump(t, e.db)
	for _, c := range cids {
		if _, ok := state[string(dedupKey(sender, c))]; ok {
			left = append(left, c)
		}
	}
	return left
}

// A conversation the sealer moved in part to segments is erased in both
// tiers: its segment index goes (the sealer then collects the objects
// as orphans), and so do the peer's retry records of the sealed
// messages (found through their sync entries) and their m/ pointers.
func TestEraseAccountSealedConversation(t *testing.T) {
	segs, dir := localSegments(t, true)
	// With an outbox every message has an m/ pointer, which sealing keeps.
	e := newEnv(t, withGroups(), withSegments(segs), withOutbox(&recordingOutbox{}))
	eraseScenario(t, e)
	ctx := context.Background()
	pointers := 0
	for _, v := range fsmtest.Dump(t, e.db, string(msgPrefix())) {
		if strings.Contains(v, "bob") {
			pointers++
		}
	}
	if pointers == 0 {
		t.Fatal("setup: no m/ pointer names bob")
	}
	cfg := SealConfig{MaxMessages: 4, OrphanGrace: time.Hour}
	if st, err := e.svc.SealOnce(ctx, cfg, time.Now()); err != nil || st.Segments < 3 {
		t.Fatalf("seal: %+v %v", st, err)
	}
	bobSegs := func() (n int) {
		for _, f := range segmentFiles(t, dir) {
			if strings.Contains(f, "bob") {
				n++
			}
		}
		return n
	}
	if bobSegs() == 0 || len(fsmtest.Dump(t, e.db, string(segIndexPrefix(directConv("alice", "bob"))))) == 0 {
		t.Fatal("nothing of bob's conversations was sealed")
	}
	others := segmentFiles(t, dir)
	var toBob, toCarol []string
	for i := range 12 {
		toBob = append(toBob, fmt.Sprint("ab", i))
		if i%3 == 0 {
			toCarol = append(toCarol, fmt.Sprint("ac", i))
		}
	}
	if left := dedupLeft(t, e, "alice", toBob...); len(left) != len(toBob) {
		t.Fatalf("setup: %v", left)
	}
	convs := []string{directConv("alice", "carol"), groupConv("g1"), directConv("alice", "bob")}
	wantAlice := viewOf(t, e, "alice", convs...).without(t, "bob", unreadWith(t, e, "alice", "bob"))

	eraseInSteps(t, e, "bob", 5)
	if left := keysNaming(t, e, "bob"); len(left) > 0 {
		t.Fatalf("keys naming bob left: %q", left)
	}
	for k, v := range fsmtest.Dump(t, e.db, string(msgPrefix())) {
		if strings.Contains(v, "bob") && !strings.Contains(v, "g:g1") {
			t.Fatalf("an m/ value naming bob is left: %q %q", k, v)
		}
	}
	if left := dedupLeft(t, e, "alice", toBob...); len(left) > 0 {
		t.Fatalf("alice's retry records of messages to bob left: %v", left)
	}
	if left := dedupLeft(t, e, "alice", toCarol...); len(left) != len(toCarol) {
		t.Fatalf("alice's retry records of messages to carol: %v of %v", left, toCarol)
	}
	got := viewOf(t, e, "alice", convs...)
	gb, _ := json.MarshalIndent(got, "", " ")
	wb, _ := json.MarshalIndent(wantAlice, "", " ")
	if string(gb) != string(wb) {
		t.Fatalf("alice reads after the erasure:\n got %s\nwant %s", gb, wb)
	}
	// The sealer collects the erased conversations' objects, and only
	// those, once it has seen them unreferenced for the grace period.
	if _, err := e.svc.SealOnce(ctx, cfg, time.Now().Add(2*time.Hour)); err != nil {
		t.Fatalf("first sweep: %v", err)
	}
	st, err := e.svc.SealOnce(ctx, cfg, time.Now().Add(4*time.Hour))
	if err != nil || st.Orphans == 0 {
		t.Fatalf("collection: %+v %v", st, err)
	}
	if n := bobSegs(); n != 0 {
		t.Fatalf("%d segment objects of bob's conversations left", n)
	}
	for _, f := range others {
		if !strings.Contains(f, "bob") && !slices.Contains(segmentFiles(t, dir), f) {
			t.Fatalf("%s was collected too", f)
		}
	}
}
