package archive

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/cluster/fsm/fsmtest"
	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/internal/wire"
)

// metric reads edgechat_archive_messages_total{result} from the registry
// (-1 when the series does not exist).
func metric(t testing.TB, e *env, result string) float64 {
	t.Helper()
	v, ok := testutil.MetricValue(t, e.reg, "edgechat_archive_messages_total", map[string]string{"result": result})
	if !ok {
		return -1
	}
	return v
}

func TestNewNeedsDeps(t *testing.T) {
	_, err := New(Deps{})
	if !errors.Is(err, ErrMissingDep) {
		t.Fatalf("New(Deps{}) = %v, want ErrMissingDep", err)
	}
}

func TestSendStampsAndStores(t *testing.T) {
	e := newEnv(t)
	in := text("c-1", "hello")
	in.From, in.To, in.Group, in.ID = "mallory", "eve", "g1", 42 // client junk is overwritten
	stored, payload, dup, err := e.svc.SendDirect(context.Background(), "alice", "bob", in)
	if err != nil || dup {
		t.Fatalf("SendDirect = dup %v, %v", dup, err)
	}
	if stored.ID != 1<<30 || stored.From != "alice" || stored.To != "bob" || stored.Group != "" || stored.Body != "hello" {
		t.Fatalf("stored = %+v", stored)
	}
	if !bytes.Equal(payload, stored.Marshal()) {
		t.Fatalf("payload %s is not the stored envelope", payload)
	}
	hist, more, err := e.svc.historyPage(context.Background(), directConv("bob", "alice"), nil, 10)
	if err != nil || more || len(hist) != 1 || !bytes.Equal(hist[0], payload) {
		t.Fatalf("history = %q more %v err %v", hist, more, err)
	}
	if got := metric(t, e, resultStored); got != 1 || e.svc.StoredCount() != 1 {
		t.Fatalf("stored metric = %v, StoredCount = %d", got, e.svc.StoredCount())
	}
}

func TestSendDedupe(t *testing.T) {
	e := newEnv(t)
	first, p1, _, _ := e.svc.SendDirect(context.Background(), "alice", "bob", text("same", "one"))
	// A retry of the same cid with a different body still returns the original.
	second, p2, dup, err := e.svc.SendDirect(context.Background(), "alice", "bob", text("same", "two"))
	if err != nil || !dup {
		t.Fatalf("retry: dup %v err %v", dup, err)
	}
	if second.ID != first.ID || second.Body != "one" || !bytes.Equal(p1, p2) {
		t.Fatalf("retry returned %+v / %s, want the original %+v", second, p2, first)
	}
	// The same cid from another sender is another message.
	other, _, dup, err := e.svc.SendDirect(context.Background(), "bob", "alice", text("same", "bob's"))
	if err != nil || dup || other.ID == first.ID {
		t.Fatalf("other sender: %+v dup %v err %v", other, dup, err)
	}
	hist, _, _ := e.svc.historyPage(context.Background(), directConv("alice", "bob"), nil, 10)
	if len(hist) != 2 {
		t.Fatalf("history has %d messages, want 2", len(hist))
	}
	if metric(t, e, resultStored) != 2 || metric(t, e, resultDuplicate) != 1 || e.svc.StoredCount() != 2 {
		t.Fatalf("metrics stored=%v duplicate=%v", metric(t, e, resultStored), metric(t, e, resultDuplicate))
	}
}

// StartDirect and StartGroup hand messages to the log before they
// return: started one after another, messages get increasing IDs and
// commit in that order (here all in one entry), a retry in the same
// entry answers the original, and history and sync agree.
func TestStartCommitsInStartOrder(t *testing.T) {
	e := newEnv(t, withBatch(6), withGroups())
	e.groups.add("team", "alice", "bob")
	ctx := context.Background()
	type wait = func(context.Context) (wire.Envelope, []byte, bool, error)
	var waits []wait
	for i, cid := range []string{"a", "b", "a", "c"} {
		w, err := e.svc.StartDirect(ctx, "alice", "bob", text(cid, fmt.Sprint("m", i)))
		if err != nil {
			t.Fatal(err)
		}
		waits = append(waits, w)
	}
	for _, cid := range []string{"g1", "g2"} {
		w, err := e.svc.StartGroup(ctx, "alice", "team", text(cid, cid))
		if err != nil {
			t.Fatal(err)
		}
		waits = append(waits, w)
	}
	// A refusal comes from the first step and queues nothing.
	if _, err := e.svc.StartDirect(ctx, "alice", "nobody", text("x", "x")); !errors.Is(err, wire.ErrNotFound) {
		t.Fatalf("to an unknown user: %v", err)
	}
	var got []wire.Envelope
	for _, w := range waits {
		env, _, _, err := w(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, env)
	}
	if n := len(e.prop.Logs()); n != 1 {
		t.Fatalf("%d raft entries, want one", n)
	}
	if got[2].ID != got[0].ID || got[2].Body != "m0" {
		t.Fatalf("retry answered %+v, want the original %+v", got[2], got[0])
	}
	for i, j := range [][2]int{{0, 1}, {1, 3}, {3, 4}, {4, 5}} {
		if got[j[0]].ID >= got[j[1]].ID {
			t.Fatalf("pair %d: id %s not below %s", i, got[j[0]].ID, got[j[1]].ID)
		}
	}
	msgs, _, _, err := e.svc.syncPage(context.Background(), "alice", 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, m := range msgs {
		var env wire.Envelope
		if err := json.Unmarshal(m, &env); err != nil {
			t.Fatal(err)
		}
		order = append(order, env.CID)
	}
	if want := []string{"a", "b", "c", "g1", "g2"}; !slices.Equal(order, want) {
		t.Fatalf("sync order %v, want %v", order, want)
	}
}

// Three retries of one message land in the same Raft entry: the later
// commands see the first one's writes in the same Badger transaction.
func TestDedupeInOneBatch(t *testing.T) {
	e := newEnv(t, withBatch(3))
	type res struct {
		env     wire.Envelope
		payload []byte
		dup     bool
		err     error
	}
	results := make([]res, 3)
	var wg sync.WaitGroup
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			env, p, dup, err := e.svc.SendDirect(context.Background(), "alice", "bob", text("retry", fmt.Sprint("attempt ", i)))
			results[i] = res{env, p, dup, err}
		}()
	}
	wg.Wait()
	if n := len(e.prop.Logs()); n != 1 {
		t.Fatalf("%d raft entries, want the 3 commands in one", n)
	}
	dups := 0
	for _, r := range results {
		if r.err != nil {
			t.Fatal(r.err)
		}
		if r.dup {
			dups++
		}
		if r.env.ID != results[0].env.ID || !bytes.Equal(r.payload, results[0].payload) {
			t.Fatalf("results disagree: %+v vs %+v", r.env, results[0].env)
		}
	}
	if dups != 2 {
		t.Fatalf("%d duplicates, want 2", dups)
	}
	hist, _, _ := e.svc.historyPage(context.Background(), directConv("alice", "bob"), nil, 10)
	if len(hist) != 1 {
		t.Fatalf("history has %d messages, want 1", len(hist))
	}
	msgs, _, _, _ := e.svc.syncPage(context.Background(), "bob", 0, 10)
	if len(msgs) != 1 {
		t.Fatalf("sync has %d messages, want 1", len(msgs))
	}
}

// Distinct messages in one batch get distinct, ordered sync positions.
func TestBatchOfDistinctMessages(t *testing.T) {
	e := newEnv(t, withBatch(4))
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, _, dup, err := e.svc.SendDirect(context.Background(), "alice", "bob", text(fmt.Sprint("b", i), "x")); err != nil || dup {
				t.Errorf("send %d: dup %v err %v", i, dup, err)
			}
		}()
	}
	wg.Wait()
	msgs, next, more, err := e.svc.syncPage(context.Background(), "bob", 0, 10)
	if err != nil || more || len(msgs) != 4 {
		t.Fatalf("sync: %d messages, more %v, err %v", len(msgs), more, err)
	}
	if next != 1<<16|3 {
		t.Fatalf("cursor = %d, want entry 1 sub 3", next)
	}
}

func TestSendRefusalsStoreNothing(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	cases := []struct {
		name     string
		from, to string
		env      wire.Envelope
		want     error
	}{
		{"unknown recipient", "alice", "zed", text("c", "x"), wire.ErrNotFound},
		{"bad sender id", "Alice/1", "bob", text("c", "x"), wire.ErrInvalid},
		{"bad recipient id", "alice", "b", text("c", "x"), wire.ErrInvalid},
		{"no cid", "alice", "bob", text("", "x"), wire.ErrInvalid},
	}
	for _, c := range cases {
		if _, _, _, err := e.svc.SendDirect(ctx, c.from, c.to, c.env); !errors.Is(err, c.want) {
			t.Errorf("%s: err = %v, want %v", c.name, err, c.want)
		}
	}
	e.prop.SetErr(fmt.Errorf("no leader: %w", wire.ErrUnavailable))
	if _, _, _, err := e.svc.SendDirect(ctx, "alice", "bob", text("c", "x")); !errors.Is(err, wire.ErrUnavailable) {
		t.Errorf("unavailable: err = %v", err)
	}
	if d := dump(t, e.db); len(d) != 0 {
		t.Fatalf("refusals stored %d keys: %v", len(d), d)
	}
	if got := metric(t, e, resultRefused); got != float64(len(cases)+1) {
		t.Fatalf("refused metric = %v", got)
	}
}

func TestHighestID(t *testing.T) {
	e := newEnv(t, withIDs(&seqIDs{next: 5000, step: -7}))
	if id, err := e.svc.HighestID(); err != nil || id != 0 {
		t.Fatalf("empty HighestID = %d, %v", id, err)
	}
	for i := range 20 {
		e.send(t, "alice", "bob", fmt.Sprint("h", i))
	}
	if id, err := e.svc.HighestID(); err != nil || id != 5000 {
		t.Fatalf("HighestID = %d, %v; want 5000 (the first, highest id)", id, err)
	}
}

func TestHasConversationDirect(t *testing.T) {
	e := newEnv(t)
	e.send(t, "alice", "bob", "p1")
	for _, c := range []struct {
		viewer, subject string
		want            bool
	}{
		{"alice", "bob", true},
		{"bob", "alice", true},
		{"alice", "carol", false},
		{"carol", "bob", false},
		{"Bad/", "bob", false},
	} {
		if got := e.svc.HasConversation(c.viewer, c.subject); got != c.want {
			t.Errorf("HasConversation(%s, %s) = %v, want %v", c.viewer, c.subject, got, c.want)
		}
	}
}

func TestMarkReadRefusesBadIDs(t *testing.T) {
	e := newEnv(t)
	if err := e.svc.MarkRead(context.Background(), "bob", "x/y", 5); !errors.Is(err, wire.ErrInvalid) {
		t.Fatalf("MarkRead = %v, want ErrInvalid", err)
	}
	if len(e.prop.Logs()) != 0 {
		t.Fatal("an invalid MarkRead reached the log")
	}
}

// Replaying an applied entry (same index, as after a restart) changes
// nothing; the same command under a new index (a re-proposal) is a
// duplicate and changes nothing either.
func TestReplayIsNoOp(t *testing.T) {
	e := newEnv(t)
	for i := range 5 {
		e.send(t, "alice", "bob", fmt.Sprint("r", i))
	}
	if err := e.svc.MarkRead(context.Background(), "bob", "alice", 1<<30+2); err != nil {
		t.Fatal(err)
	}
	before := dump(t, e.db)
	msgLog := e.prop.Logs()[4]

	res := e.f.Apply(msgLog).([]fsm.Result)
	if !errors.Is(res[0].Err, fsm.ErrReplayed) {
		t.Fatalf("replay result = %+v", res[0])
	}
	if after := dump(t, e.db); !maps.Equal(before, after) {
		t.Fatal("replaying an entry changed the state")
	}

	again := &raft.Log{Index: e.prop.Index() + 1, Type: raft.LogCommand, Data: msgLog.Data}
	res = e.f.Apply(again).([]fsm.Result)
	if a, ok := res[0].Value.(*applied); !ok || !a.Dup || res[0].Err != nil {
		t.Fatalf("re-proposed command result = %+v", res[0])
	}
	if after := dump(t, e.db); !maps.Equal(before, after) {
		t.Fatal("re-proposing a stored message changed the state")
	}
}

// A message under an ID that already holds another message of its
// conversation is refused.
func TestIDClashRefused(t *testing.T) {
	e := newEnv(t, withIDs(&seqIDs{next: 77, step: 0}))
	e.send(t, "alice", "bob", "x1")
	before := dump(t, e.db)
	_, _, _, err := e.svc.SendDirect(context.Background(), "bob", "alice", text("x2", "other"))
	if !errors.Is(err, ErrIDTaken) {
		t.Fatalf("err = %v, want ErrIDTaken", err)
	}
	if !maps.Equal(before, dump(t, e.db)) {
		t.Fatal("a refused message changed the state")
	}
}

// An ID clash across conversations (a generator bug) is not seen without
// a key per ID, and overwrites nothing: both conversations keep their
// message. A message the push outbox staged has an m/ pointer, so a
// clash with it is still refused.
func TestIDClashInAnotherConversation(t *testing.T) {
	e := newEnv(t, withIDs(&seqIDs{next: 77, step: 0}))
	first := e.send(t, "alice", "bob", "x1")
	second := e.send(t, "carol", "bob", "x2")
	for _, c := range [][3]string{{"alice", "bob", "x1"}, {"carol", "bob", "x2"}} {
		h, _, err := e.svc.historyPage(context.Background(), directConv(c[0], c[1]), nil, 10)
		if err != nil || len(h) != 1 || !bytes.Contains(h[0], []byte(`"`+c[2]+`"`)) {
			t.Fatalf("history of %s and %s: %q, %v", c[0], c[1], h, err)
		}
	}
	if first.ID != second.ID {
		t.Fatalf("IDs %d and %d, want a clash", first.ID, second.ID)
	}

	o := newEnv(t, withIDs(&seqIDs{next: 77, step: 0}), withOutbox(&recordingOutbox{}))
	o.send(t, "alice", "bob", "x1")
	before := dump(t, o.db)
	if _, _, _, err := o.svc.SendDirect(context.Background(), "carol", "bob", text("x2", "other")); !errors.Is(err, ErrIDTaken) {
		t.Fatalf("clash with a staged message: err = %v, want ErrIDTaken", err)
	}
	if !maps.Equal(before, dump(t, o.db)) {
		t.Fatal("a refused message changed the state")
	}
}

func TestMalformedCommandsRefused(t *testing.T) {
	e := newEnv(t)
	for _, c := range []fsm.Command{
		{Type: wire.CmdMessage, Payload: nil},
		{Type: wire.CmdMessage, Payload: []byte{9, 1, 2}},
		{Type: wire.CmdMessage, Payload: (&msgCmd{ID: 1, From: "alice", CID: "c", Payload: []byte("{}")}).encode()}, // no recipient
		{Type: wire.CmdMessage, Payload: (&msgCmd{ID: 1, From: "alice", To: "bob", Group: "g", CID: "c", Payload: []byte("{}")}).encode()},
		{Type: wire.CmdReadCursor, Payload: []byte{1, 0}},
		{Type: wire.CmdReadCursor, Payload: append((&cursorCmd{Reader: "a", Peer: "b", UpTo: 1}).encode(), 0)},
	} {
		if _, err := e.prop.Propose(context.Background(), c.Type, c.Payload); err == nil {
			t.Errorf("command %x %v accepted", c.Type, c.Payload)
		}
	}
	if d := dump(t, e.db); len(d) != 0 {
		t.Fatalf("malformed commands stored %v", d)
	}
}

func TestSnapshotRestoreKeepsHistory(t *testing.T) {
	e := newEnv(t)
	for i := range 30 {
		from, to := "alice", "bob"
		if i%3 == 0 {
			from, to = "bob", "alice"
		}
		e.send(t, from, to, fmt.Sprint("s", i))
	}
	e.send(t, "carol", "bob", "c1")
	if err := e.svc.MarkRead(context.Background(), "bob", "alice", 1<<30+10); err != nil {
		t.Fatal(err)
	}
	snap := fsmtest.Snapshot(t, e.f)

	e2 := newEnv(t) // a fresh node
	fsmtest.Restore(t, e2.f, snap)
	if !maps.Equal(dump(t, e.db), dump(t, e2.db)) {
		t.Fatal("restored state differs")
	}
	h1, _, _ := e.svc.historyPage(context.Background(), directConv("alice", "bob"), nil, 100)
	h2, _, _ := e2.svc.historyPage(context.Background(), directConv("alice", "bob"), nil, 100)
	if len(h2) != 30 || !slices.EqualFunc(h1, h2, bytes.Equal) {
		t.Fatalf("restored history has %d messages, want the same 30", len(h2))
	}
	c1, _, _ := e.svc.conversations(context.Background(), "bob", 10)
	c2, _, _ := e2.svc.conversations(context.Background(), "bob", 10)
	if len(c2) != 2 || c2[0].Peer != "carol" || c2[1].Unread != c1[1].Unread {
		t.Fatalf("restored conversations %+v, want %+v", c2, c1)
	}
	if id, _ := e2.svc.HighestID(); id != 1<<30+30 {
		t.Fatalf("restored HighestID = %d", id)
	}
	// The restored node goes on applying where the log left off.
	e2.prop.SetIndex(e.prop.Index())
	e2.ids.next = 1 << 31
	e2.send(t, "alice", "bob", "after")
	if _, _, dup, _ := e2.svc.SendDirect(context.Background(), "alice", "bob", text("s1", "x")); !dup {
		t.Fatal("dedupe state was not restored")
	}
}

// Unread counts move with MarkRead; the cursor never moves back and is
// clamped to the conversation's newest message.
func TestConversationsAndUnread(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	a1 := e.send(t, "alice", "bob", "a1")
	a2 := e.send(t, "alice", "bob", "a2")
	e.send(t, "alice", "bob", "a3")
	e.send(t, "carol", "bob", "c1")
	e.send(t, "carol", "bob", "c2")
	b1 := e.send(t, "bob", "alice", "b1")

	unreadOf := func(uid string) (peers []string, unread map[string]int) {
		t.Helper()
		convs, _, err := e.svc.conversations(context.Background(), uid, 100)
		if err != nil {
			t.Fatal(err)
		}
		unread = map[string]int{}
		for _, c := range convs {
			peers = append(peers, c.Peer)
			unread[c.Peer] = c.Unread
		}
		return peers, unread
	}
	peers, unread := unreadOf("bob")
	if !slices.Equal(peers, []string{"alice", "carol"}) || unread["alice"] != 3 || unread["carol"] != 2 {
		t.Fatalf("bob: %v %v", peers, unread)
	}
	convs, _, _ := e.svc.conversations(context.Background(), "bob", 100)
	if !bytes.Equal(convs[0].Last, b1.Marshal()) {
		t.Fatalf("last message = %s, want %s", convs[0].Last, b1.Marshal())
	}
	if _, unread := unreadOf("alice"); unread["bob"] != 1 {
		t.Fatalf("alice's unread from bob = %d", unread["bob"])
	}

	steps := []struct {
		upTo snowflake.ID
		want int
	}{
		{a2.ID, 1},           // read up to a2
		{a1.ID, 1},           // never backwards
		{snowflake.ID(1), 1}, // never backwards
		{1<<62 + 5, 0},       // beyond the end: clamped to the newest message
	}
	for _, s := range steps {
		if err := e.svc.MarkRead(ctx, "bob", "alice", s.upTo); err != nil {
			t.Fatal(err)
		}
		if _, unread := unreadOf("bob"); unread["alice"] != s.want || unread["carol"] != 2 {
			t.Fatalf("after MarkRead(%d): %v, want alice %d carol 2", s.upTo, unread, s.want)
		}
	}
	// Because the cursor was clamped, a new message counts as unread.
	e.send(t, "alice", "bob", "a4")
	peers, unread = unreadOf("bob")
	if unread["alice"] != 1 || peers[0] != "alice" {
		t.Fatalf("after a new message: %v %v", peers, unread)
	}
	// MarkRead on a conversation that does not exist stores nothing.
	before := dump(t, e.db)
	if err := e.svc.MarkRead(ctx, "dave", "carol", 99); err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(before, dump(t, e.db)) {
		t.Fatal("MarkRead without a conversation changed the state")
	}
}

func TestUnreadCapped(t *testing.T) {
	e := newEnv(t, withBatch(1))
	// Write 1005 messages in a few big entries to keep the test quick.
	cmds := make([]fsm.Command, 0, unreadCap+5)
	for i := range unreadCap + 5 {
		env := text(fmt.Sprint("u", i), "x")
		env.ID, env.From, env.To = snowflake.ID(1000+i), "alice", "bob"
		c := msgCmd{ID: env.ID, From: "alice", To: "bob", CID: env.CID, Payload: env.Marshal()}
		cmds = append(cmds, fsm.Command{Type: wire.CmdMessage, Payload: c.encode()})
	}
	res := e.f.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: fsm.EncodeBatch(cmds)}).([]fsm.Result)
	for _, r := range res {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	convs, _, err := e.svc.conversations(context.Background(), "bob", 10)
	if err != nil || len(convs) != 1 || convs[0].Unread != unreadCap {
		t.Fatalf("conversations = %+v, %v; want unread capped at %d", convs, err, unreadCap)
	}
}
