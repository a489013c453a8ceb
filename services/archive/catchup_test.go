package archive

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"testing"

	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/internal/wire"
)

// lockedDir is a directory of users that a test's read barrier adds to,
// as a lagging follower's barrier applies a sign-up.
type lockedDir struct {
	mu    sync.Mutex
	users map[string]bool
}

func (d *lockedDir) UserExists(uid string) (bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.users[uid], nil
}

func (d *lockedDir) add(uid string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.users[uid] = true
}

// A DM to a user who signed up through another node a moment ago, and a
// group message of a member added through another node, are not refused
// by a node that has not applied them yet.
func TestSendWaitsForWhatThisNodeHasNotAppliedYet(t *testing.T) {
	dir := &lockedDir{users: map[string]bool{"alice": true}}
	held := &testutil.LaggingNode{}
	e := newEnv(t, withGroups(), withUsers(dir), withReadBarrier(held.Barrier))
	ctx := context.Background()

	held.Hold(func() { dir.add("erin") })
	if _, _, _, err := e.svc.SendDirect(ctx, "alice", "erin", text("c1", "welcome")); err != nil {
		t.Fatalf("DM to a user this node had not applied: %v", err)
	}
	e.groups.add("g1", "bob")
	held.Hold(func() { e.groups.add("g1", "alice") })
	if _, _, _, err := e.svc.SendGroup(ctx, "alice", "g1", text("c2", "hello")); err != nil {
		t.Fatalf("group message of a member this node had not applied: %v", err)
	}

	// What this node knows costs no barrier; a refusal still refuses.
	before := held.Barriers()
	e.send(t, "alice", "erin", "c3")
	e.sendGroup(t, "alice", "g1", "c4")
	if got := held.Barriers(); got != before {
		t.Fatalf("sends this node could check took %d barriers", got-before)
	}
	if _, _, _, err := e.svc.SendDirect(ctx, "alice", "nobody", text("c5", "x")); !errors.Is(err, wire.ErrNotFound) {
		t.Fatalf("DM to nobody: %v", err)
	}
	if _, _, _, err := e.svc.SendGroup(ctx, "erin", "g1", text("c6", "x")); !errors.Is(err, wire.ErrForbidden) {
		t.Fatalf("group message of a non-member: %v", err)
	}

	// A node that cannot reach its leader cannot tell: unavailable (the
	// client retries), not a refusal the client would give up on.
	held.SetDown(wire.ErrUnavailable)
	before2 := dump(t, e.db)
	if _, _, _, err := e.svc.SendDirect(ctx, "alice", "nobody", text("c7", "x")); !errors.Is(err, wire.ErrUnavailable) {
		t.Fatalf("DM to nobody without a leader: %v", err)
	}
	if _, _, _, err := e.svc.SendGroup(ctx, "erin", "g1", text("c8", "x")); !errors.Is(err, wire.ErrUnavailable) {
		t.Fatalf("group message of a non-member without a leader: %v", err)
	}
	if after := dump(t, e.db); len(after) != len(before2) {
		t.Fatal("a refused send changed the state")
	}
}

// readyMedia is a media service that knows the uploads marked ready.
type readyMedia struct {
	mu    sync.Mutex
	ready map[string]bool
}

func (m *readyMedia) AttachSent(_ context.Context, _ string, md *wire.Media, _, _ string, _ snowflake.ID) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.ready[md.ID] {
		return wire.ErrMediaNotReady
	}
	md.Kind = "image"
	return nil
}

func (m *readyMedia) ExpireSent(context.Context, string, string, string, snowflake.ID, []string) error {
	return nil
}

func (m *readyMedia) markReady(id string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.ready[id] = true
}

// A photo uploaded, or processed, through another node a moment ago is
// sent on a node that had not applied it yet; one that is not ready
// after the catch-up is still refused.
func TestMediaMessageWaitsForWhatThisNodeHasNotAppliedYet(t *testing.T) {
	media := &readyMedia{ready: map[string]bool{}}
	held := &testutil.LaggingNode{}
	e := newEnv(t, withMedia(media), withReadBarrier(held.Barrier))
	photo := func(cid, id string) wire.Envelope {
		return wire.Envelope{CID: cid, Type: wire.TypeMedia, Media: &wire.Media{ID: id}}
	}
	held.Hold(func() { media.markReady("p1") })
	stored, _, _, err := e.svc.SendDirect(context.Background(), "alice", "bob", photo("c1", "p1"))
	if err != nil || stored.Media == nil || stored.Media.Kind != "image" {
		t.Fatalf("photo this node had not applied: %+v %v", stored.Media, err)
	}
	if _, _, _, err := e.svc.SendDirect(context.Background(), "alice", "bob", photo("c2", "p2")); !errors.Is(err, wire.ErrMediaNotReady) {
		t.Fatalf("photo that is not ready: %v", err)
	}
	if held.Barriers() != 2 {
		t.Fatalf("barriers %d, want 2", held.Barriers())
	}
}

// A link's message is refused for good on this node's state (the
// sender's region is told it was undeliverable), so a node that lags
// catches up first, as for a local send: a recipient who signed up, a
// block lifted, a member added through another node a moment ago. It
// refused them at once.
func TestLinkMessageWaitsForWhatThisNodeHasNotAppliedYet(t *testing.T) {
	dir := &lockedDir{users: map[string]bool{"bob": true}}
	held := &testutil.LaggingNode{}
	e := newEnv(t, withGroups(), withUsers(dir), withReadBarrier(held.Barrier),
		withRegions(fakeRegions{local: "us", links: map[string]bool{"eu": true}}))
	ctx := context.Background()
	id := snowflake.ID(7211938138472448001)
	dm := func(to, cid string) wire.Envelope {
		id++
		return wire.Envelope{ID: id, From: "alice@eu", To: to, CID: cid, Type: wire.TypeText, Body: "hi"}
	}
	gm := func(gid, cid string) wire.Envelope {
		id++
		return wire.Envelope{ID: id, From: "alice@eu", Group: gid, CID: cid, Type: wire.TypeText, Body: "hi"}
	}

	held.Hold(func() { dir.add("erin") })
	if _, _, _, err := e.svc.StoreRemote(ctx, dm("erin", "c1")); err != nil {
		t.Fatalf("to a user this node had not applied: %v", err)
	}
	e.blocks.block("bob", "alice@eu")
	held.Hold(func() { e.blocks.unblock("bob", "alice@eu") })
	if _, _, _, err := e.svc.StoreRemote(ctx, dm("bob", "c2")); err != nil {
		t.Fatalf("to bob, who unblocked the sender where this node had not applied it: %v", err)
	}
	e.groups.add("g1", "bob")
	held.Hold(func() { e.groups.add("g1", "alice@eu") })
	if _, _, _, err := e.svc.StoreRemoteGroup(ctx, gm("g1", "c3")); err != nil {
		t.Fatalf("of a member this node had not applied: %v", err)
	}

	// What this node knows costs no barrier; a refusal still refuses.
	before := held.Barriers()
	for i, env := range []wire.Envelope{dm("erin", "c4"), dm("bob", "c5")} {
		if _, _, _, err := e.svc.StoreRemote(ctx, env); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	if _, _, _, err := e.svc.StoreRemoteGroup(ctx, gm("g1", "c6")); err != nil {
		t.Fatal(err)
	}
	if got := held.Barriers(); got != before {
		t.Fatalf("messages this node could check took %d barriers", got-before)
	}
	e.blocks.block("erin", "alice@eu")
	for _, c := range []struct {
		env  wire.Envelope
		want error
	}{{dm("nobody", "c7"), wire.ErrNotFound}, {dm("erin", "c8"), wire.ErrForbidden}, {gm("g2", "c9"), wire.ErrForbidden}} {
		store := e.svc.StoreRemote
		if c.env.Group != "" {
			store = e.svc.StoreRemoteGroup
		}
		if _, _, _, err := store(ctx, c.env); !errors.Is(err, c.want) {
			t.Fatalf("%+v: %v, want %v", c.env, err, c.want)
		}
	}

	// Without a leader it cannot tell: unavailable (the link sends it
	// again), not a refusal for good.
	held.SetDown(wire.ErrUnavailable)
	if _, _, _, err := e.svc.StoreRemote(ctx, dm("nobody", "c10")); !errors.Is(err, wire.ErrUnavailable) {
		t.Fatalf("to nobody without a leader: %v", err)
	}
	if _, _, _, err := e.svc.StoreRemoteGroup(ctx, gm("g2", "c11")); !errors.Is(err, wire.ErrUnavailable) {
		t.Fatalf("to a group of which the sender is no member, without a leader: %v", err)
	}
}

// A member added to a group through another node a moment ago marks the
// group read (POST /chat/read) on a node that had not applied the
// addition yet: the node catches up before it answers 404, as it does
// before refusing the member's messages. Before, the member got 404
// not_found and the group stayed unread.
func TestGroupReadWaitsForAMemberThisNodeHasNotAppliedYet(t *testing.T) {
	held := &testutil.LaggingNode{}
	e := newEnv(t, withGroups(), withReadBarrier(held.Barrier))
	srv := e.server(t)
	e.groups.add("g1", "bob")
	m := e.sendGroup(t, "bob", "g1", "c1")
	read := func(user string) response {
		t.Helper()
		return do(t, srv, user, http.MethodPost, "/chat/read", "application/json",
			[]byte(`{"group":"g1","upTo":"`+m.ID.String()+`"}`))
	}

	held.Hold(func() { e.groups.add("g1", "alice") })
	if r := read("alice"); r.Status != http.StatusNoContent {
		t.Fatalf("read by a member this node had not applied: %d %s", r.Status, r.Body)
	}
	if cur, err := e.svc.ReadUpTo("alice", "", "g1"); err != nil || cur != m.ID {
		t.Fatalf("alice's cursor = %v, %v; want %v", cur, err, m.ID)
	}

	// A member this node knows costs no barrier; a non-member is still
	// refused, and without a leader the node cannot tell (503).
	before := held.Barriers()
	if r := read("bob"); r.Status != http.StatusNoContent || held.Barriers() != before {
		t.Fatalf("read by a known member: %d %s, %d barriers", r.Status, r.Body, held.Barriers()-before)
	}
	if r := read("carol"); r.Status != http.StatusNotFound || r.code() != "not_found" {
		t.Fatalf("read by a non-member: %d %s", r.Status, r.Body)
	}
	held.SetDown(wire.ErrUnavailable)
	state := dump(t, e.db)
	if r := read("carol"); r.Status != http.StatusServiceUnavailable {
		t.Fatalf("read by a non-member without a leader: %d %s", r.Status, r.Body)
	}
	if after := dump(t, e.db); len(after) != len(state) {
		t.Fatal("a refused read changed the state")
	}
}

// A direct message sent over HTTP right after the recipient lifted a
// block through another node is not refused by a node that had not
// applied the unblock yet: before, it got 403 forbidden. A block this
// node knows is checked again after the catch-up and still refuses;
// without a leader the node cannot tell (unavailable, the client
// retries).
func TestDirectSendWaitsForAnUnblockThisNodeHasNotAppliedYet(t *testing.T) {
	held := &testutil.LaggingNode{}
	e := newEnv(t, withGroups(), withReadBarrier(held.Barrier))
	srv := e.server(t)
	e.blocks.block("bob", "alice")
	held.Hold(func() { e.blocks.unblock("bob", "alice") })
	if r := postJSON(t, srv, "alice", `{"to":"bob","cid":"c1","type":"text","body":"hi"}`); r.Status != http.StatusCreated {
		t.Fatalf("send after an unblock this node had not applied: %d %s", r.Status, r.Body)
	}

	// An allowed send costs no barrier.
	before := held.Barriers()
	e.send(t, "alice", "bob", "c2")
	if got := held.Barriers(); got != before {
		t.Fatalf("an allowed send took %d barriers", got-before)
	}
	e.blocks.block("bob", "alice")
	state := dump(t, e.db)
	if r := postJSON(t, srv, "alice", `{"to":"bob","cid":"c3","type":"text","body":"hi"}`); r.Status != http.StatusForbidden {
		t.Fatalf("send to a blocker: %d %s", r.Status, r.Body)
	}
	held.SetDown(wire.ErrUnavailable)
	if _, _, _, err := e.svc.SendDirect(context.Background(), "alice", "bob", text("c4", "x")); !errors.Is(err, wire.ErrUnavailable) {
		t.Fatalf("send to a blocker without a leader: %v", err)
	}
	if after := dump(t, e.db); len(after) != len(state) {
		t.Fatal("a refused send changed the state")
	}
}

// A member just added to a group through another node reads the group's
// history on a node that has not applied the addition yet: the newest
// page is a catch-up read (it holds everything committed before the
// request), so it is not refused; nor is an older page, as POST
// /chat/read is not. Before, the membership was checked before the
// barrier and the new member got 404 not_found. A non-member is still
// refused, and without a leader the node cannot tell (503).
func TestGroupHistoryWaitsForAMemberThisNodeHasNotAppliedYet(t *testing.T) {
	held := &testutil.LaggingNode{}
	e := newEnv(t, withGroups(), withReadBarrier(held.Barrier))
	srv := e.server(t)
	e.groups.add("g1", "bob")
	m1 := e.sendGroup(t, "bob", "g1", "c1")
	m2 := e.sendGroup(t, "bob", "g1", "c2")

	held.Hold(func() { e.groups.add("g1", "alice") })
	var p page
	if r := get(t, srv, "alice", "/chat/history?group=g1", &p); r.Status != http.StatusOK || len(p.Messages) != 2 {
		t.Fatalf("newest page for a member this node had not applied: %d %s", r.Status, r.Body)
	}
	held.Hold(func() { e.groups.add("g1", "carol") })
	p = page{}
	if r := get(t, srv, "carol", "/chat/history?group=g1&before="+m2.ID.String(), &p); r.Status != http.StatusOK ||
		len(p.Messages) != 1 || p.Messages[0].ID != m1.ID {
		t.Fatalf("older page for a member this node had not applied: %d %s", r.Status, r.Body)
	}

	if r := get(t, srv, "dave", "/chat/history?group=g1", nil); r.Status != http.StatusNotFound || r.code() != "not_found" {
		t.Fatalf("history for a non-member: %d %s", r.Status, r.Body)
	}
	held.SetDown(wire.ErrUnavailable)
	if r := get(t, srv, "dave", "/chat/history?group=g1&before="+m2.ID.String(), nil); r.Status != http.StatusServiceUnavailable {
		t.Fatalf("history for a non-member without a leader: %d %s", r.Status, r.Body)
	}
}

// A member removed from a group through another node a moment ago asks
// a node that has not applied the removal yet for the group's newest
// history page. The page is a catch-up read: the node's barrier applies
// the removal, and the messages sent after it, before the page is read.
// The membership must be judged on that state too: before, it was
// checked before the barrier (bob was still listed), and the page then
// handed the removed member the messages the group sent after removing
// him.
func TestGroupHistoryOfAMemberRemovedThroughAnotherNode(t *testing.T) {
	held := &testutil.LaggingNode{}
	e := newEnv(t, withGroups(), withReadBarrier(held.Barrier))
	srv := e.server(t)
	e.groups.add("g1", "alice", "bob")
	e.sendGroup(t, "alice", "g1", "c1")

	// Committed elsewhere, not applied here yet: bob removed, then a
	// message he must not read.
	held.Hold(func() {
		e.groups.remove("g1", "bob")
		e.sendGroup(t, "alice", "g1", "after-bob-left")
	})
	r := get(t, srv, "bob", "/chat/history?group=g1", nil)
	if r.Status != http.StatusNotFound || r.code() != "not_found" {
		t.Fatalf("newest page for a member the catch-up removed: %d %s", r.Status, r.Body)
	}

	// A member still in the group reads the page, with what the
	// catch-up brought.
	held.Hold(func() { e.sendGroup(t, "alice", "g1", "c3") })
	var p page
	if r := get(t, srv, "alice", "/chat/history?group=g1", &p); r.Status != http.StatusOK || len(p.Messages) != 3 {
		t.Fatalf("newest page for a member: %d %s", r.Status, r.Body)
	}
}

// raceGroups is a membership table whose first GroupsOf answers, and
// then lets commits land before it returns (hook): they commit between
// the membership read and whatever the caller reads after it.
type raceGroups struct {
	*fakeGroups
	hook func()
}

func (g *raceGroups) GroupsOf(uid string) ([]string, error) {
	gids, err := g.fakeGroups.GroupsOf(uid)
	if h := g.hook; h != nil {
		g.hook = nil
		h()
	}
	return gids, err
}

// A sync page read while bob joins a group, the group gets a message and
// bob a direct one must not move bob's cursor past the group message
// without returning it: his client subscribes to the group once told of
// the join and syncs on from that cursor, and would never see it. Before,
// the sync read bob's groups before its snapshot of the store: the
// commits that landed in between gave it the direct message (the cursor
// moved past the group message) but not the group.
func TestSyncDuringAJoinDoesNotSkipTheGroupsMessage(t *testing.T) {
	fg := &fakeGroups{}
	fg.add("g1", "alice")
	rg := &raceGroups{fakeGroups: fg}
	e := newEnv(t, withGroupsDep(rg))
	srv := e.server(t)
	e.send(t, "alice", "bob", "d0")
	var m wire.Envelope
	rg.hook = func() {
		fg.add("g1", "bob")
		m = e.sendGroup(t, "alice", "g1", "while-joining")
		e.send(t, "alice", "bob", "d1")
	}
	seen := map[snowflake.ID]bool{}
	cursor := ""
	for range 3 {
		var p page
		if r := get(t, srv, "bob", "/chat/sync?since="+cursor, &p); r.Status != http.StatusOK {
			t.Fatalf("sync: %d %s", r.Status, r.Body)
		}
		for _, msg := range p.Messages {
			seen[msg.ID] = true
		}
		cursor = p.Cursor
	}
	if !seen[m.ID] {
		t.Errorf("bob's sync skipped the group message sent as he joined (%d messages synced)", len(seen))
	}

	// GET /chat/sync/end answers a cursor no later than the group's
	// message either.
	fg2 := &fakeGroups{}
	fg2.add("g2", "alice")
	rg2 := &raceGroups{fakeGroups: fg2}
	e2 := newEnv(t, withGroupsDep(rg2))
	srv2 := e2.server(t)
	e2.send(t, "alice", "bob", "d0")
	var m2 wire.Envelope
	rg2.hook = func() {
		fg2.add("g2", "bob")
		m2 = e2.sendGroup(t, "alice", "g2", "while-joining")
		e2.send(t, "alice", "bob", "d1")
	}
	var end struct {
		Cursor string `json:"cursor"`
	}
	if r := get(t, srv2, "bob", "/chat/sync/end", &end); r.Status != http.StatusOK {
		t.Fatalf("sync end: %d %s", r.Status, r.Body)
	}
	var p page
	if r := get(t, srv2, "bob", "/chat/sync?since="+end.Cursor, &p); r.Status != http.StatusOK {
		t.Fatalf("sync: %d %s", r.Status, r.Body)
	}
	ids := map[snowflake.ID]bool{}
	for _, msg := range p.Messages {
		ids[msg.ID] = true
	}
	if !ids[m2.ID] {
		t.Fatalf("a sync from /chat/sync/end's cursor %s skips the group message sent as bob joined: %+v", end.Cursor, p.Messages)
	}
}

// raceMember is a membership table whose first IsMember answers, and
// then lets commits land before it returns (hook).
type raceMember struct {
	*fakeGroups
	hook func()
}

func (g *raceMember) IsMember(gid, uid string) bool {
	ok := g.fakeGroups.IsMember(gid, uid)
	if h := g.hook; h != nil {
		g.hook = nil
		h()
	}
	return ok
}

// A member removed while their history read is between its membership
// check and its read of the store is not handed the messages sent after
// the removal: the page holds them only if the removal committed before
// the store was read, and then the reader is no member any more. Before,
// membership was only checked before the read, and the newest page, or
// an older one, handed the removed member the group's next message.
func TestGroupHistoryOfAMemberRemovedDuringTheRead(t *testing.T) {
	for _, before := range []string{"", "&before=" + strconv.FormatUint(1<<62, 10)} {
		fg := &fakeGroups{}
		fg.add("g1", "alice", "bob")
		rm := &raceMember{fakeGroups: fg}
		e := newEnv(t, withGroupsDep(rm))
		srv := e.server(t)
		e.sendGroup(t, "alice", "g1", "c1")
		rm.hook = func() {
			fg.remove("g1", "bob")
			e.sendGroup(t, "alice", "g1", "after-bob-left")
		}
		if r := get(t, srv, "bob", "/chat/history?group=g1"+before, nil); r.Status != http.StatusNotFound || r.code() != "not_found" {
			t.Errorf("history%s of a member removed during the read: %d %s", before, r.Status, r.Body)
		}
		var p page
		if r := get(t, srv, "alice", "/chat/history?group=g1"+before, &p); r.Status != http.StatusOK || len(p.Messages) != 2 {
			t.Errorf("history%s of a member: %d %s", before, r.Status, r.Body)
		}
	}
}

// The conversation list of a member removed from a group while it is
// read does not show the message the group sent after the removal as the
// group's last message. Before, the list read the member's groups before
// its snapshot of the store: the removal and the next message landing in
// between put that message in the removed member's list.
func TestConversationsOfAMemberRemovedDuringTheRead(t *testing.T) {
	fg := &fakeGroups{}
	fg.add("g1", "alice", "bob")
	rg := &raceGroups{fakeGroups: fg}
	e := newEnv(t, withGroupsDep(rg))
	srv := e.server(t)
	e.sendGroup(t, "alice", "g1", "c1")
	rg.hook = func() {
		fg.remove("g1", "bob")
		e.sendGroup(t, "alice", "g1", "after-bob-left")
	}
	var l convList
	if r := get(t, srv, "bob", "/chat/conversations", &l); r.Status != http.StatusOK {
		t.Fatalf("conversations: %d %s", r.Status, r.Body)
	}
	for _, c := range l.Conversations {
		if c.LastMessage.CID == "after-bob-left" {
			t.Fatalf("the removed member's conversation list shows the message sent after the removal: %+v", l)
		}
	}
}

// A delivered receipt may name a message the device got through another
// node, which this node has not applied yet: DeliveredUpTo catches up
// before it clamps the receipt to the newest message it holds (else a
// true receipt would tell less than it says). A receipt within what the
// node holds costs no barrier; a node that cannot reach its leader
// answers from what it holds.
func TestDeliveredReceiptWaitsForAMessageThisNodeHasNotAppliedYet(t *testing.T) {
	held := &testutil.LaggingNode{}
	e := newEnv(t, withReadBarrier(held.Barrier))
	ctx := context.Background()
	m1 := e.send(t, "alice", "bob", "c1")
	var m2 wire.Envelope
	held.Hold(func() { m2 = e.send(t, "alice", "bob", "c2") })
	if got, err := e.svc.DeliveredUpTo(ctx, "bob", "alice", ^snowflake.ID(0)); err != nil || m2.ID == 0 || got != m2.ID {
		t.Fatalf("DeliveredUpTo past the end = %v, %v; want %v (the message the barrier applied)", got, err, m2.ID)
	}
	before := held.Barriers()
	if got, err := e.svc.DeliveredUpTo(ctx, "bob", "alice", m1.ID); err != nil || got != m1.ID || held.Barriers() != before {
		t.Fatalf("DeliveredUpTo(%v) = %v, %v, %d barriers; want it as is, no barrier", m1.ID, got, err, held.Barriers()-before)
	}
	held.SetDown(wire.ErrUnavailable)
	if got, err := e.svc.DeliveredUpTo(ctx, "bob", "alice", m2.ID+1); err != nil || got != m2.ID {
		t.Fatalf("DeliveredUpTo without a leader = %v, %v; want %v", got, err, m2.ID)
	}
	if got, err := e.svc.DeliveredUpTo(ctx, "carol", "alice", m2.ID); err != nil || got != 0 {
		t.Fatalf("DeliveredUpTo of a conversation without messages = %v, %v; want 0", got, err)
	}
}
