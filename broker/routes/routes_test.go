package routes

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/cluster/fsm/fsmtest"
	"github.com/edgechat/edgechat/internal/wire"
)

func newTable(t *testing.T) (*fsmtest.Harness, *Table) {
	t.Helper()
	h := fsmtest.New(t)
	tab, err := New(h.DB, h.FSM)
	if err != nil {
		t.Fatal(err)
	}
	return h, tab
}

func propose(t *testing.T, h *fsmtest.Harness, typ byte, payload []byte) error {
	t.Helper()
	_, err := h.Propose(context.Background(), typ, payload)
	return err
}

func add(t *testing.T, h *fsmtest.Harness, node, filter string) {
	t.Helper()
	p, err := EncodeRoute(node, filter)
	if err != nil {
		t.Fatal(err)
	}
	if err := propose(t, h, wire.CmdRouteAdd, p); err != nil {
		t.Fatalf("add %s %s: %v", node, filter, err)
	}
}

func del(t *testing.T, h *fsmtest.Harness, node, filter string) {
	t.Helper()
	p, err := EncodeRoute(node, filter)
	if err != nil {
		t.Fatal(err)
	}
	if err := propose(t, h, wire.CmdRouteDel, p); err != nil {
		t.Fatalf("del %s %s: %v", node, filter, err)
	}
}

func dropNode(t *testing.T, h *fsmtest.Harness, node string) {
	t.Helper()
	p, err := EncodeDropNode(node)
	if err != nil {
		t.Fatal(err)
	}
	if err := propose(t, h, wire.CmdRoutesDropNode, p); err != nil {
		t.Fatalf("drop %s: %v", node, err)
	}
}

func TestMatchWildcards(t *testing.T) {
	h, tab := newTable(t)
	add(t, h, "n1", "user/bob/newMessage")
	add(t, h, "n2", "user/bob/#")
	add(t, h, "n3", "user/+/newMessage")
	add(t, h, "n4", "group/g1/+")
	add(t, h, "n5", "#")
	add(t, h, "n6", "presence/alice")
	cases := []struct {
		topic string
		want  []string
	}{
		{"user/bob/newMessage", []string{"n1", "n2", "n3", "n5"}},
		{"user/bob/typing", []string{"n2", "n5"}},
		{"user/bob", []string{"n2", "n5"}}, // "#" also matches the parent level
		{"user/carol/newMessage", []string{"n3", "n5"}},
		{"group/g1/newMessage", []string{"n4", "n5"}},
		{"group/g1/a/b", []string{"n5"}},
		{"presence/alice", []string{"n5", "n6"}},
		{"$SYS/broker/uptime", nil}, // top-level wildcards never match $ topics
	}
	for _, c := range cases {
		if got := tab.Match(c.topic); !reflect.DeepEqual(got, c.want) {
			t.Errorf("Match(%q) = %v, want %v", c.topic, got, c.want)
		}
	}
	if tab.Len() != 6 {
		t.Errorf("Len = %d, want 6", tab.Len())
	}
}

func TestAddDelAndDropNode(t *testing.T) {
	h, tab := newTable(t)
	if tab.OtherNodes("n1") {
		t.Fatal("OtherNodes of an empty table")
	}
	add(t, h, "n1", "user/bob/newMessage")
	add(t, h, "n1", "user/bob/newMessage") // idempotent
	add(t, h, "n1", "group/g1/#")
	if tab.OtherNodes("n1") || !tab.OtherNodes("n2") {
		t.Fatal("OtherNodes with routes of n1 only")
	}
	add(t, h, "n2", "user/bob/newMessage")
	if !tab.OtherNodes("n1") {
		t.Fatal("OtherNodes(n1) with routes of n2")
	}
	if got := tab.Filters("n1"); !reflect.DeepEqual(got, []string{"group/g1/#", "user/bob/newMessage"}) {
		t.Fatalf("Filters(n1) = %v", got)
	}
	del(t, h, "n1", "user/bob/newMessage")
	del(t, h, "n1", "user/bob/newMessage") // idempotent
	if got := tab.Match("user/bob/newMessage"); !reflect.DeepEqual(got, []string{"n2"}) {
		t.Fatalf("after del: %v", got)
	}
	dropNode(t, h, "n2")
	if got := tab.Match("user/bob/newMessage"); got != nil {
		t.Fatalf("after drop n2: %v", got)
	}
	if tab.OtherNodes("n1") {
		t.Fatal("OtherNodes(n1) after n2 was dropped")
	}
	if got := tab.Nodes(); !reflect.DeepEqual(got, []string{"n1"}) {
		t.Fatalf("Nodes = %v", got)
	}
	// The database agrees with the index.
	dump := fsmtest.Dump(t, h.DB, KeyPrefix)
	if len(dump) != 1 || dump["r/route/group/g1/#/n1"] != "" {
		t.Fatalf("stored routes: %v", dump)
	}
	if _, ok := dump["r/route/group/g1/#/n1"]; !ok {
		t.Fatalf("stored routes: %v", dump)
	}
}

func TestDropNodeManyRoutesInSeveralCommands(t *testing.T) {
	h, tab := newTable(t)
	const n = maxDropPerCommand + 10
	cmds := make([]fsm.Command, 0, n)
	for i := range n {
		p, _ := EncodeRoute("big", fmt.Sprintf("t/%d", i))
		cmds = append(cmds, fsm.Command{Type: wire.CmdRouteAdd, Payload: p})
	}
	add(t, h, "other", "t/1")
	for i := 0; i < n; i += 1000 {
		if _, err := h.ProposeBatch(context.Background(), cmds[i:min(i+1000, n)]); err != nil {
			t.Fatal(err)
		}
	}
	if got := len(tab.Filters("big")); got != n {
		t.Fatalf("big has %d routes, want %d", got, n)
	}
	p, _ := EncodeDropNode("big")
	v, err := h.Propose(context.Background(), wire.CmdRoutesDropNode, p)
	if err != nil {
		t.Fatal(err)
	}
	if c, ok := v.(*change); !ok || !c.More() {
		t.Fatalf("first drop: %#v, want More", v)
	}
	if got := len(tab.Filters("big")); got != 10 {
		t.Fatalf("after one drop %d left, want 10", got)
	}
	dropNode(t, h, "big")
	if got := tab.Filters("big"); len(got) != 0 {
		t.Fatalf("after second drop: %d left", len(got))
	}
	if got := tab.Match("t/1"); !reflect.DeepEqual(got, []string{"other"}) {
		t.Fatalf("other node's route lost: %v", got)
	}
}

func TestInvalidCommandsChangeNothing(t *testing.T) {
	h, tab := newTable(t)
	add(t, h, "n1", "a/b")
	before := fsmtest.Dump(t, h.DB, "r/")
	bad := [][]byte{
		nil,
		{0xff},
		{5, 'n'},
		append([]byte{2}, "n1"...),           // empty filter
		append([]byte{2}, "n1a/#/b"...),      // # not last
		append([]byte{3}, "n/1a/b"...),       // node with '/'
		append([]byte{2}, "n1$share/g/a"...), // shared filter
	}
	for _, p := range bad {
		for _, typ := range []byte{wire.CmdRouteAdd, wire.CmdRouteDel} {
			if err := propose(t, h, typ, p); !errors.Is(err, ErrInvalid) {
				t.Errorf("type %#x payload %q: err %v, want ErrInvalid", typ, p, err)
			}
		}
	}
	for _, node := range []string{"", "a/b", "x\x00"} {
		if err := propose(t, h, wire.CmdRoutesDropNode, []byte(node)); !errors.Is(err, ErrInvalid) {
			t.Errorf("drop %q: err %v, want ErrInvalid", node, err)
		}
	}
	if after := fsmtest.Dump(t, h.DB, "r/"); !reflect.DeepEqual(before, after) {
		t.Errorf("refused commands changed state: %v -> %v", before, after)
	}
	if got := tab.Match("a/b"); !reflect.DeepEqual(got, []string{"n1"}) {
		t.Errorf("index changed: %v", got)
	}
	if _, err := EncodeRoute("n1", "a/#/b"); !errors.Is(err, ErrInvalid) {
		t.Errorf("EncodeRoute accepted a bad filter: %v", err)
	}
}

// A node restarting replays entries it has applied already (skipped by
// the FSM) and loads its index from Badger.
func TestReplayIsIdempotentAndLoadRebuilds(t *testing.T) {
	h, tab := newTable(t)
	add(t, h, "n1", "user/bob/#")
	add(t, h, "n2", "group/g1/newMessage")
	del(t, h, "n1", "user/bob/#")
	add(t, h, "n1", "user/carol/#")
	for _, l := range h.Logs() {
		for _, r := range h.FSM.Apply(l).([]fsm.Result) {
			if !errors.Is(r.Err, fsm.ErrReplayed) {
				t.Fatalf("replay applied again: %v", r.Err)
			}
		}
	}
	fresh, err := New(h.DB, fsm.New(h.DB, nil))
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range []*Table{tab, fresh} {
		if got := x.Nodes(); !reflect.DeepEqual(got, []string{"n1", "n2"}) {
			t.Errorf("Nodes = %v", got)
		}
		if got := x.Filters("n1"); !reflect.DeepEqual(got, []string{"user/carol/#"}) {
			t.Errorf("Filters(n1) = %v", got)
		}
	}
	// A follower fed the same log from scratch ends identical.
	f2 := fsm.New(fsmtest.OpenDB(t), nil)
	t2, err := New(f2.DB(), f2)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range h.Logs() {
		f2.Apply(l)
	}
	if !reflect.DeepEqual(fsmtest.Dump(t, h.DB, KeyPrefix), fsmtest.Dump(t, f2.DB(), KeyPrefix)) {
		t.Error("follower's stored routes differ")
	}
	if got := t2.Match("user/carol/newMessage"); !reflect.DeepEqual(got, []string{"n1"}) {
		t.Errorf("follower Match = %v", got)
	}
}

func TestSnapshotRestoreReloadsIndex(t *testing.T) {
	h, _ := newTable(t)
	add(t, h, "n1", "user/bob/#")
	add(t, h, "n2", "group/+/newMessage")
	snap := fsmtest.Snapshot(t, h.FSM)
	dst := fsm.New(fsmtest.OpenDB(t), nil)
	tab, err := New(dst.DB(), dst)
	if err != nil {
		t.Fatal(err)
	}
	changes := 0
	tab.OnChange(func(node, filter string) {
		if node == "" && filter == "" {
			changes++
		}
	})
	fsmtest.Restore(t, dst, snap)
	if got := tab.Match("group/g9/newMessage"); !reflect.DeepEqual(got, []string{"n2"}) {
		t.Errorf("after restore Match = %v", got)
	}
	if got := tab.Match("user/bob/typing"); !reflect.DeepEqual(got, []string{"n1"}) {
		t.Errorf("after restore Match = %v", got)
	}
	if changes != 1 {
		t.Errorf("OnChange after restore ran %d times, want 1", changes)
	}
}

func TestOnChangeReportsCommittedChanges(t *testing.T) {
	h, tab := newTable(t)
	var got []string
	tab.OnChange(func(node, filter string) { got = append(got, node+" "+filter) })
	add(t, h, "n1", "a/b")
	del(t, h, "n1", "a/b")
	dropNode(t, h, "n2")
	want := []string{"n1 a/b", "n1 a/b", "n2 "}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("OnChange calls %q, want %q", got, want)
	}
}

func TestParseKey(t *testing.T) {
	f, n, ok := parseKey([]byte("r/route/user/bob/#/n1"))
	if !ok || f != "user/bob/#" || n != "n1" {
		t.Errorf("parseKey = %q %q %v", f, n, ok)
	}
	for _, k := range []string{"r/route/", "r/route/x/", "r/route//n1", "r/user/a/b"} {
		if _, _, ok := parseKey([]byte(k)); ok {
			t.Errorf("parseKey(%q) ok", k)
		}
	}
}

func addMany(t *testing.T, h *fsmtest.Harness, n int, nodes ...string) {
	t.Helper()
	var cmds []fsm.Command
	for i := range n {
		for _, node := range nodes {
			p, err := EncodeRoute(node, fmt.Sprintf("user/u%06d/#", i))
			if err != nil {
				t.Fatal(err)
			}
			cmds = append(cmds, fsm.Command{Type: wire.CmdRouteAdd, Payload: p})
		}
	}
	if _, err := h.ProposeBatch(context.Background(), cmds); err != nil {
		t.Fatal(err)
	}
}

func dropStep(t *testing.T, h *fsmtest.Harness, node string) bool {
	t.Helper()
	p, _ := EncodeDropNode(node)
	v, err := h.Propose(context.Background(), wire.CmdRoutesDropNode, p)
	if err != nil {
		t.Fatal(err)
	}
	return v.(*change).More()
}

// Dropping a node's routes in many steps visits each route about once
// over the whole walk, not once per step.
func TestDropNodeStepsDoNotRescan(t *testing.T) {
	h, tab := newTable(t)
	tab.dropBatch = 100
	addMany(t, h, 1000, "n1", "n2", "n3")
	steps := 0
	for dropStep(t, h, "n1") {
		steps++
	}
	if steps < 9 {
		t.Fatalf("%d steps: the test does not walk in steps", steps)
	}
	if f := tab.Filters("n1"); len(f) != 0 {
		t.Fatalf("%d routes of n1 left", len(f))
	}
	if got := tab.Match("user/u000007/inbox"); !reflect.DeepEqual(got, []string{"n2", "n3"}) {
		t.Fatalf("match after the drop: %v", got)
	}
	if v := tab.dropVisits.Load(); v > 3000+int64(steps)+1 {
		t.Fatalf("the walk visited %d routes of 3,000", v)
	}
}

// A route added on the node during its drop walk, below where the last
// step stopped, is dropped too (in the same entry as a step, after it or
// before it), in Badger and in the index, on the leader and on a follower.
func TestDropNodeSeesRoutesAddedDuringTheWalk(t *testing.T) {
	for _, addFirst := range []bool{false, true} {
		t.Run(fmt.Sprintf("added-first=%v", addFirst), func(t *testing.T) {
			h, tab := newTable(t)
			tab.dropBatch = 100
			follower := h.NewFollower(t)
			ftab, err := New(follower.DB(), follower)
			if err != nil {
				t.Fatal(err)
			}
			ftab.dropBatch = 100
			addMany(t, h, 500, "n1", "n2")
			if !dropStep(t, h, "n1") || !dropStep(t, h, "n1") {
				t.Fatal("the walk ended early")
			}
			late, _ := EncodeRoute("n1", "user/a/#") // "user/a" sorts below every mark
			drop, _ := EncodeDropNode("n1")
			cmds := []fsm.Command{{Type: wire.CmdRoutesDropNode, Payload: drop}, {Type: wire.CmdRouteAdd, Payload: late}}
			if addFirst {
				cmds[0], cmds[1] = cmds[1], cmds[0]
			}
			if _, err := h.ProposeBatch(context.Background(), cmds); err != nil {
				t.Fatal(err)
			}
			for dropStep(t, h, "n1") {
			}
			for _, tb := range []*Table{tab, ftab} {
				if f := tb.Filters("n1"); len(f) != 0 {
					t.Fatalf("routes of n1 left in the index: %v", f)
				}
				if err := tb.Load(); err != nil {
					t.Fatal(err)
				}
				if f := tb.Filters("n1"); len(f) != 0 {
					t.Fatalf("routes of n1 left in Badger: %v", f)
				}
				if got := tb.Match("user/u000001/x"); !reflect.DeepEqual(got, []string{"n2"}) {
					t.Fatalf("match: %v", got)
				}
			}
		})
	}
}
