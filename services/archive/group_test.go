package archive

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/cluster/fsm/fsmtest"
	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/internal/wire"
)

func TestBlockedDirectRefused(t *testing.T) {
	e := newEnv(t, withGroups())
	e.blocks.block("bob", "alice")
	_, _, _, err := e.svc.SendDirect(context.Background(), "alice", "bob", text("c1", "hi"))
	if !errors.Is(err, wire.ErrForbidden) {
		t.Fatalf("blocked send = %v, want ErrForbidden", err)
	}
	if d := dump(t, e.db); len(d) != 0 {
		t.Fatalf("a blocked message stored %v", d)
	}
	if len(e.prop.Logs()) != 0 {
		t.Fatal("a blocked message reached the log")
	}
	// The block is one way: bob may still write to alice, and alice to herself.
	e.send(t, "bob", "alice", "b1")
	e.send(t, "alice", "alice", "note")
	if metric(t, e, resultRefused) != 1 || metric(t, e, resultStored) != 2 {
		t.Fatalf("metrics refused=%v stored=%v", metric(t, e, resultRefused), metric(t, e, resultStored))
	}
}

func TestSendGroupStoresOnceAndDedupes(t *testing.T) {
	e := newEnv(t, withGroups())
	ctx := context.Background()
	e.groups.add("team", "alice", "bob", "carol")
	in := text("g-1", "hello team")
	in.To, in.Group, in.From, in.ID = "mallory", "other", "eve", 9 // client junk is overwritten
	stored, payload, dup, err := e.svc.SendGroup(ctx, "alice", "team", in)
	if err != nil || dup {
		t.Fatalf("SendGroup = dup %v, %v", dup, err)
	}
	if stored.ID == 0 || stored.From != "alice" || stored.Group != "team" || stored.To != "" || stored.Body != "hello team" {
		t.Fatalf("stored = %+v", stored)
	}
	if !bytes.Equal(payload, stored.Marshal()) {
		t.Fatalf("payload %s is not the stored envelope", payload)
	}
	// A retry with the same cid returns the original and stores nothing.
	before := dump(t, e.db)
	again, p2, dup, err := e.svc.SendGroup(ctx, "alice", "team", text("g-1", "changed"))
	if err != nil || !dup || again.ID != stored.ID || !bytes.Equal(p2, payload) {
		t.Fatalf("retry = %+v dup %v err %v", again, dup, err)
	}
	// A cid is unique per sender across direct and group messages: a
	// direct message under the group message's cid is not its retry but
	// another message, refused (not acknowledged as a duplicate, which
	// would lose it) and not stored.
	if d, _, dup, err := e.svc.SendDirect(ctx, "alice", "bob", text("g-1", "dm")); !errors.Is(err, wire.ErrInvalid) || dup {
		t.Fatalf("direct send with a group cid = %+v dup %v err %v, want wire.ErrInvalid", d, dup, err)
	}
	if !maps.Equal(before, dump(t, e.db)) {
		t.Fatal("a duplicate changed the state")
	}
	hist, more, err := e.svc.historyPage(context.Background(), groupConv("team"), nil, 10)
	if err != nil || more || len(hist) != 1 || !bytes.Equal(hist[0], payload) {
		t.Fatalf("history = %q more %v err %v", hist, more, err)
	}
	if metric(t, e, resultStored) != 1 || metric(t, e, resultDuplicate) != 1 || metric(t, e, resultRefused) != 1 {
		t.Fatalf("metrics stored=%v duplicate=%v refused=%v", metric(t, e, resultStored), metric(t, e, resultDuplicate), metric(t, e, resultRefused))
	}
}

func TestSendGroupRefusals(t *testing.T) {
	e := newEnv(t, withGroups())
	ctx := context.Background()
	e.groups.add("team", "alice")
	for _, c := range []struct {
		name, from, gid string
		env             wire.Envelope
		want            error
	}{
		{"non-member", "dave", "team", text("c", "x"), wire.ErrForbidden},
		{"no such group", "alice", "nogroup", text("c", "x"), wire.ErrForbidden},
		{"bad gid", "alice", "te/am", text("c", "x"), wire.ErrInvalid},
		{"empty gid", "alice", "", text("c", "x"), wire.ErrInvalid},
		{"bad sender", "Alice", "team", text("c", "x"), wire.ErrInvalid},
		{"no cid", "alice", "team", text("", "x"), wire.ErrInvalid},
	} {
		if _, _, _, err := e.svc.SendGroup(ctx, c.from, c.gid, c.env); !errors.Is(err, c.want) {
			t.Errorf("%s: err = %v, want %v", c.name, err, c.want)
		}
	}
	if d := dump(t, e.db); len(d) != 0 || len(e.prop.Logs()) != 0 {
		t.Fatalf("refusals stored %v", d)
	}

	// Without a Groups dependency every group is unknown.
	plain := newEnv(t)
	if _, _, _, err := plain.svc.SendGroup(ctx, "alice", "team", text("c", "x")); !errors.Is(err, wire.ErrNotFound) {
		t.Fatalf("no groups: err = %v, want ErrNotFound", err)
	}
	if err := plain.svc.MarkGroupRead(ctx, "alice", "team", 5); !errors.Is(err, wire.ErrNotFound) {
		t.Fatalf("no groups: MarkGroupRead = %v, want ErrNotFound", err)
	}
	if msgs, _, _, err := plain.svc.syncPage(context.Background(), "alice", 0, 10); err != nil || len(msgs) != 0 {
		t.Fatalf("no groups: sync = %d, %v", len(msgs), err)
	}
}

// bigGroups answers for a group with n members without storing them.
type bigGroups struct{ n int }

func (g bigGroups) IsMember(gid, uid string) bool {
	var i int
	_, err := fmt.Sscanf(uid, "user%d", &i)
	return gid == "big" && err == nil && i < g.n
}

func (g bigGroups) GroupsOf(uid string) ([]string, error) {
	if g.IsMember("big", uid) {
		return []string{"big"}, nil
	}
	return nil, nil
}

// A message to a 10,000-member group writes a fixed handful of keys, not
// one per member, and every member still syncs it.
func TestGroupMessageCostIndependentOfSize(t *testing.T) {
	e := newEnv(t, withGroupsDep(bigGroups{n: 10_000}))
	svc := e.svc
	ctx := context.Background()
	first, _, _, err := svc.SendGroup(ctx, "user42", "big", text("c1", "to everyone"))
	if err != nil {
		t.Fatal(err)
	}
	after1 := dump(t, e.db)
	// The message in its history entry, one group sync entry, the group
	// summary, the sender's record (their own messages are counted so
	// they are not unread to them), the dedupe entry and top.
	if len(after1) != 6 {
		t.Fatalf("one message to 10,000 members wrote %d keys: %v", len(after1), slices.Sorted(maps.Keys(after1)))
	}
	if _, _, _, err := svc.SendGroup(ctx, "user9999", "big", text("c2", "again")); err != nil {
		t.Fatal(err)
	}
	if n := len(dump(t, e.db)) - len(after1); n != 4 {
		t.Fatalf("the second message added %d keys, want 4 (the summary, the record and top are rewritten)", n)
	}
	for _, uid := range []string{"user0", "user5000", "user9999"} {
		msgs, _, _, err := svc.syncPage(context.Background(), uid, 0, 10)
		if err != nil || len(msgs) != 2 || !bytes.Contains(msgs[0], []byte(first.ID.String())) {
			t.Fatalf("%s synced %d messages, %v", uid, len(msgs), err)
		}
	}
	if msgs, _, _, _ := svc.syncPage(context.Background(), "user10000", 0, 10); len(msgs) != 0 {
		t.Fatalf("a non-member synced %d group messages", len(msgs))
	}
}

// Group messages in one Raft entry with direct ones keep commit order in
// the merged sync stream.
func TestSyncMergesOneBatch(t *testing.T) {
	e := newEnv(t, withGroups(), withBatch(6))
	e.groups.add("g1", "alice", "bob")
	e.groups.add("g2", "alice", "carol")
	var wg sync.WaitGroup
	sends := []func(i int) error{
		func(i int) error {
			_, _, _, err := e.svc.SendGroup(context.Background(), "bob", "g1", text(fmt.Sprint("a", i), "x"))
			return err
		},
		func(i int) error {
			_, _, _, err := e.svc.SendDirect(context.Background(), "bob", "alice", text(fmt.Sprint("b", i), "x"))
			return err
		},
		func(i int) error {
			_, _, _, err := e.svc.SendGroup(context.Background(), "carol", "g2", text(fmt.Sprint("c", i), "x"))
			return err
		},
	}
	for i := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := sends[i%3](i); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if len(e.prop.Logs()) != 1 {
		t.Fatalf("%d entries, want one batch", len(e.prop.Logs()))
	}
	msgs, next, more, err := e.svc.syncPage(context.Background(), "alice", 0, 100)
	if err != nil || more || len(msgs) != 6 || next != 1<<16|5 {
		t.Fatalf("sync: %d messages, cursor %x, more %v, %v", len(msgs), next, more, err)
	}
	// Paging one at a time gives the same stream.
	var paged [][]byte
	for c := uint64(0); ; {
		page, n, more, err := e.svc.syncPage(context.Background(), "alice", c, 1)
		if err != nil {
			t.Fatal(err)
		}
		paged, c = append(paged, page...), n
		if !more {
			break
		}
	}
	if !slices.EqualFunc(msgs, paged, bytes.Equal) {
		t.Fatal("paging one by one changed the stream")
	}
}

func TestMarkGroupRead(t *testing.T) {
	e := newEnv(t, withGroups())
	ctx := context.Background()
	e.groups.add("team", "alice", "bob")
	a1 := e.sendGroup(t, "alice", "team", "a1")
	e.sendGroup(t, "bob", "team", "b1")
	a2 := e.sendGroup(t, "alice", "team", "a2")
	unreadOf := func() int {
		t.Helper()
		convs, _, err := e.svc.conversations(context.Background(), "bob", 10)
		if err != nil || len(convs) != 1 || convs[0].Group != "team" {
			t.Fatalf("conversations = %+v, %v", convs, err)
		}
		return convs[0].Unread
	}
	if n := unreadOf(); n != 2 {
		t.Fatalf("bob's unread = %d, want 2 (his own message does not count)", n)
	}
	for _, s := range []struct {
		upTo snowflake.ID
		want int
	}{{a1.ID, 1}, {1, 1}, {a2.ID, 0}, {1 << 62, 0}} {
		if err := e.svc.MarkGroupRead(ctx, "bob", "team", s.upTo); err != nil {
			t.Fatal(err)
		}
		if n := unreadOf(); n != s.want {
			t.Fatalf("after MarkGroupRead(%d): unread %d, want %d", s.upTo, n, s.want)
		}
	}
	// The cursor was clamped to the newest message: a new one is unread.
	e.sendGroup(t, "alice", "team", "a3")
	if n := unreadOf(); n != 1 {
		t.Fatalf("after a new message: unread %d, want 1", n)
	}
	// Non-members and bad IDs change nothing.
	before := dump(t, e.db)
	if err := e.svc.MarkGroupRead(ctx, "carol", "team", a2.ID); !errors.Is(err, wire.ErrNotFound) {
		t.Fatalf("non-member: %v", err)
	}
	if err := e.svc.MarkGroupRead(ctx, "bob", "te:am", a2.ID); !errors.Is(err, wire.ErrInvalid) {
		t.Fatalf("bad gid: %v", err)
	}
	if err := e.svc.MarkGroupRead(ctx, "Bob", "team", a2.ID); !errors.Is(err, wire.ErrInvalid) {
		t.Fatalf("bad reader: %v", err)
	}
	if !maps.Equal(before, dump(t, e.db)) {
		t.Fatal("a refused MarkGroupRead changed the state")
	}
}

func TestHasConversation(t *testing.T) {
	e := newEnv(t, withGroups())
	e.groups.add("team", "alice", "carol")
	e.send(t, "alice", "bob", "d1")
	e.sendGroup(t, "alice", "team", "g1")
	for _, c := range []struct {
		a, b string
		want bool
	}{
		{"alice", "bob", true}, {"bob", "alice", true},
		{"alice", "carol", false}, // a shared group is not a conversation
		{"carol", "dave", false}, {"alice", "Bob", false},
	} {
		if got := e.svc.HasConversation(c.a, c.b); got != c.want {
			t.Errorf("HasConversation(%s, %s) = %v", c.a, c.b, got)
		}
	}
}

// Version 1 commands (written before groups) apply as they always did; a
// version 1 message naming a group is still refused, so replaying an old
// log gives the same state; malformed group commands are refused.
func TestGroupCommandVersions(t *testing.T) {
	e := newEnv(t, withGroups())
	v1 := func(c msgCmd) []byte {
		b := c.encode()
		b[0] = cmdVersion
		return b
	}
	env := text("old", "x")
	env.ID, env.From, env.To = 500, "alice", "bob"
	old := msgCmd{ID: 500, From: "alice", To: "bob", CID: "old", Payload: env.Marshal()}
	if b := old.encode(); b[0] != cmdVersion {
		t.Fatalf("a direct message is encoded as version %d", b[0])
	}
	if _, err := e.prop.Propose(context.Background(), wire.CmdMessage, old.encode()); err != nil {
		t.Fatalf("version 1 direct message: %v", err)
	}
	if cur := (&cursorCmd{Reader: "bob", Peer: "alice", UpTo: 500}).encode(); cur[0] != cmdVersion {
		t.Fatalf("a direct cursor is encoded as version %d", cur[0])
	}
	before := dump(t, e.db)
	genv := text("g", "x")
	genv.ID, genv.From, genv.Group = 501, "alice", "team"
	good := msgCmd{ID: 501, From: "alice", Group: "team", CID: "g", Payload: genv.Marshal()}
	for _, c := range []struct {
		name    string
		t       byte
		payload []byte
		want    error
	}{
		{"v1 group message", wire.CmdMessage, v1(good), wire.ErrNotFound},
		{"group message with recipient", wire.CmdMessage, (&msgCmd{ID: 501, From: "alice", To: "bob", Group: "team", CID: "g", Payload: genv.Marshal()}).encode(), ErrBadCommand},
		{"group message bad gid", wire.CmdMessage, (&msgCmd{ID: 501, From: "alice", Group: "te/am", CID: "g", Payload: genv.Marshal()}).encode(), ErrBadCommand},
		{"version 3", wire.CmdMessage, append([]byte{3}, good.encode()[1:]...), ErrBadCommand},
		{"group cursor bad gid", wire.CmdReadCursor, (&cursorCmd{Reader: "bob", Group: "a:b", UpTo: 1}).encode(), ErrBadCommand},
		{"group cursor trailing", wire.CmdReadCursor, append((&cursorCmd{Reader: "bob", Group: "team", UpTo: 1}).encode(), 0), ErrBadCommand},
	} {
		if _, err := e.prop.Propose(context.Background(), c.t, c.payload); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	if !maps.Equal(before, dump(t, e.db)) {
		t.Fatal("refused commands changed the state")
	}
	if v, err := e.prop.Propose(context.Background(), wire.CmdMessage, good.encode()); err != nil || v.(*applied).Dup {
		t.Fatalf("version 2 group message: %v %v", v, err)
	}
}

// Replaying an applied group entry, or re-proposing it, changes nothing;
// a snapshot carries group state to a fresh node.
func TestGroupReplayAndSnapshot(t *testing.T) {
	e := newEnv(t, withGroups())
	e.groups.add("team", "alice", "bob")
	for i := range 5 {
		e.sendGroup(t, []string{"alice", "bob"}[i%2], "team", fmt.Sprint("r", i))
	}
	if err := e.svc.MarkGroupRead(context.Background(), "bob", "team", 1<<30+1); err != nil {
		t.Fatal(err)
	}
	before := dump(t, e.db)
	msgLog := e.prop.Logs()[2]
	if res := e.f.Apply(msgLog).([]fsm.Result); !errors.Is(res[0].Err, fsm.ErrReplayed) {
		t.Fatalf("replay = %+v", res[0])
	}
	again := &raft.Log{Index: e.prop.Index() + 1, Type: raft.LogCommand, Data: msgLog.Data}
	if res := e.f.Apply(again).([]fsm.Result); res[0].Err != nil || !res[0].Value.(*applied).Dup {
		t.Fatalf("re-proposal = %+v", res[0])
	}
	if !maps.Equal(before, dump(t, e.db)) {
		t.Fatal("replay changed the state")
	}
	snap := fsmtest.Snapshot(t, e.f)
	e2 := newEnv(t, withGroups())
	e2.groups.add("team", "alice", "bob")
	fsmtest.Restore(t, e2.f, snap)
	c1, _, _ := e.svc.conversations(context.Background(), "bob", 10)
	c2, _, _ := e2.svc.conversations(context.Background(), "bob", 10)
	if len(c2) != 1 || c2[0].Group != "team" || c2[0].Unread != c1[0].Unread || !bytes.Equal(c1[0].Last, c2[0].Last) {
		t.Fatalf("restored conversations %+v, want %+v", c2, c1)
	}
	m1, _, _, _ := e.svc.syncPage(context.Background(), "alice", 0, 100)
	m2, _, _, _ := e2.svc.syncPage(context.Background(), "alice", 0, 100)
	if len(m2) != 5 || !slices.EqualFunc(m1, m2, bytes.Equal) {
		t.Fatalf("restored sync has %d messages", len(m2))
	}
}

// A user's own messages never count as unread, however many there are,
// and the count stops at the cap.
func TestGroupUnreadCapped(t *testing.T) {
	e := newEnv(t, withGroups())
	e.groups.add("team", "alice", "bob")
	cmds := make([]fsm.Command, 0, unreadCap+50)
	for i := range unreadCap + 50 {
		from := "alice"
		if i%50 == 0 {
			from = "bob"
		}
		env := text(fmt.Sprint("u", i), "x")
		env.ID, env.From, env.Group = snowflake.ID(1000+i), from, "team"
		c := msgCmd{ID: env.ID, From: from, Group: "team", CID: env.CID, Payload: env.Marshal()}
		cmds = append(cmds, fsm.Command{Type: wire.CmdMessage, Payload: c.encode()})
	}
	for _, r := range e.f.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: fsm.EncodeBatch(cmds)}).([]fsm.Result) {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	convs, _, err := e.svc.conversations(context.Background(), "bob", 10)
	if err != nil || len(convs) != 1 || convs[0].Unread != unreadCap {
		t.Fatalf("bob: %+v %v", convs, err)
	}
	convs, _, _ = e.svc.conversations(context.Background(), "alice", 10)
	if want := (unreadCap + 50 + 49) / 50; convs[0].Unread != want {
		t.Fatalf("alice's unread = %d, want %d (bob's messages only)", convs[0].Unread, want)
	}
	if !strings.Contains(string(convs[0].Last), `"group":"team"`) {
		t.Fatalf("last message %s", convs[0].Last)
	}
}
