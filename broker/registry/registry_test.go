package registry

import (
	"context"
	"errors"
	"fmt"
	"sync"
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

func cmd(t *testing.T, h *fsmtest.Harness, typ byte, id, node string, gen uint64) {
	t.Helper()
	p, err := EncodeClient(id, node, gen)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Propose(context.Background(), typ, p); err != nil {
		t.Fatalf("command %#x %s %s %d: %v", typ, id, node, gen, err)
	}
}

func lookup(t *testing.T, tab *Table, id string) (Entry, bool) {
	t.Helper()
	e, ok, err := tab.Lookup(id)
	if err != nil {
		t.Fatal(err)
	}
	return e, ok
}

func TestRegisterLaterIsNewer(t *testing.T) {
	h, tab := newTable(t)
	var mu sync.Mutex
	var seen []Change
	tab.OnChange(func(c Change) { mu.Lock(); seen = append(seen, c); mu.Unlock() })
	cmd(t, h, wire.CmdClientRegister, "alice/phone", "n1", 7)
	e1, ok := lookup(t, tab, "alice/phone")
	if !ok || e1.Node != "n1" || e1.Gen != 7 || e1.Seq == 0 {
		t.Fatalf("after register on n1: %+v %v", e1, ok)
	}
	cmd(t, h, wire.CmdClientRegister, "alice/phone", "n2", 3)
	e2, _ := lookup(t, tab, "alice/phone")
	if e2.Node != "n2" || e2.Gen != 3 || e2.Seq <= e1.Seq {
		t.Fatalf("after register on n2: %+v (first %+v)", e2, e1)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 2 || !seen[1].Set || seen[1].ClientID != "alice/phone" || seen[1].Entry != e2 {
		t.Fatalf("changes %+v", seen)
	}
}

// A late withdraw (of n1's older connection, or of an older connection
// on the same node) must not erase the newer entry.
func TestWithdrawOnlyTheSameConnection(t *testing.T) {
	h, tab := newTable(t)
	cmd(t, h, wire.CmdClientRegister, "alice/phone", "n1", 1)
	cmd(t, h, wire.CmdClientRegister, "alice/phone", "n2", 1)
	cmd(t, h, wire.CmdClientWithdraw, "alice/phone", "n1", 1)
	if e, ok := lookup(t, tab, "alice/phone"); !ok || e.Node != "n2" {
		t.Fatalf("late withdraw of n1 erased n2's entry: %+v %v", e, ok)
	}
	cmd(t, h, wire.CmdClientRegister, "alice/phone", "n2", 2)
	cmd(t, h, wire.CmdClientWithdraw, "alice/phone", "n2", 1)
	if e, ok := lookup(t, tab, "alice/phone"); !ok || e.Gen != 2 {
		t.Fatalf("withdraw of an older connection on the same node: %+v %v", e, ok)
	}
	cmd(t, h, wire.CmdClientWithdraw, "alice/phone", "n2", 2)
	if e, ok := lookup(t, tab, "alice/phone"); ok {
		t.Fatalf("withdraw of the current connection left %+v", e)
	}
}

func TestDropNode(t *testing.T) {
	h, tab := newTable(t)
	for i := range 10 {
		node := "n1"
		if i%2 == 1 {
			node = "n2"
		}
		cmd(t, h, wire.CmdClientRegister, fmt.Sprintf("u%d/d", i), node, uint64(i))
	}
	p, _ := EncodeDropNode("n1")
	v, err := h.Propose(context.Background(), wire.CmdClientsDropNode, p)
	if err != nil {
		t.Fatal(err)
	}
	if v.(*change).More() {
		t.Fatal("a small drop reported more")
	}
	if c, _ := tab.Clients("n1"); len(c) != 0 {
		t.Fatalf("n1 still has %v", c)
	}
	counts, err := tab.Counts()
	if err != nil || counts["n2"] != 5 || len(counts) != 1 {
		t.Fatalf("counts %v %v", counts, err)
	}
}

func TestBadInputChangesNothing(t *testing.T) {
	h, tab := newTable(t)
	for _, tc := range []struct{ id, node string }{{"", "n1"}, {"a/b", ""}, {"a/b", "n/1"}, {"a\x00", "n1"}, {string(make([]byte, MaxClientID+1)), "n1"}} {
		if _, err := EncodeClient(tc.id, tc.node, 1); !errors.Is(err, wire.ErrInvalid) {
			t.Fatalf("EncodeClient(%q, %q): %v", tc.id, tc.node, err)
		}
	}
	for _, p := range [][]byte{nil, {0x80}, {1, 9, 'n'}, {1, 2, 'n', '1'}} {
		if _, err := h.Propose(context.Background(), wire.CmdClientRegister, p); !errors.Is(err, wire.ErrInvalid) {
			t.Fatalf("register %q: %v", p, err)
		}
	}
	if _, err := h.Propose(context.Background(), wire.CmdClientsDropNode, []byte("a/b")); !errors.Is(err, wire.ErrInvalid) {
		t.Fatalf("drop of a bad node name: %v", err)
	}
	if c, _ := tab.Counts(); len(c) != 0 {
		t.Fatalf("bad input changed the registry: %v", c)
	}
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	p, err := EncodeClient("alice/phone/x", "node-1", 1<<40)
	if err != nil {
		t.Fatal(err)
	}
	id, node, gen, err := DecodeClient(p)
	if err != nil || id != "alice/phone/x" || node != "node-1" || gen != 1<<40 {
		t.Fatalf("round trip: %q %q %d %v", id, node, gen, err)
	}
}

// register puts n clients of each node in nodes, interleaved in key
// order, in one entry.
func registerMany(t *testing.T, h *fsmtest.Harness, n int, nodes ...string) {
	t.Helper()
	var cmds []fsm.Command
	for i := range n {
		for _, node := range nodes {
			p, err := EncodeClient(fmt.Sprintf("u%06d-%s/d", i, node), node, 1)
			if err != nil {
				t.Fatal(err)
			}
			cmds = append(cmds, fsm.Command{Type: wire.CmdClientRegister, Payload: p})
		}
	}
	if _, err := h.ProposeBatch(context.Background(), cmds); err != nil {
		t.Fatal(err)
	}
}

func dropStep(t *testing.T, h *fsmtest.Harness, node string) bool {
	t.Helper()
	p, _ := EncodeDropNode(node)
	v, err := h.Propose(context.Background(), wire.CmdClientsDropNode, p)
	if err != nil {
		t.Fatal(err)
	}
	return v.(*change).More()
}

// Dropping a node's clients in many steps visits each registry entry
// about once over the whole walk, not once per step (each step used to
// scan the registry from its start: seconds of every node's state
// machine for a node that held a few hundred thousand clients).
func TestDropNodeStepsDoNotRescan(t *testing.T) {
	h, tab := newTable(t)
	tab.dropBatch = 100
	registerMany(t, h, 1000, "n1", "n2", "n3") // 3,000 entries, 1,000 of n1
	steps := 0
	for dropStep(t, h, "n1") {
		steps++
	}
	if steps < 9 {
		t.Fatalf("%d steps: the test does not walk in steps", steps)
	}
	if c, _ := tab.Clients("n1"); len(c) != 0 {
		t.Fatalf("%d clients of n1 left", len(c))
	}
	if counts, _ := tab.Counts(); counts["n2"] != 1000 || counts["n3"] != 1000 {
		t.Fatalf("counts %v", counts)
	}
	// 3,000 entries; rescanning from the start each step visited ~16,500.
	if v := tab.dropVisits.Load(); v > 3000+int64(steps)+1 {
		t.Fatalf("the walk visited %d entries of 3,000", v)
	}
}

// A client registered on the node during its drop walk, below where
// the last step stopped, is dropped too, whether its registration comes
// in the same entry as a step, after it (that step's mark is set first)
// or before it; and a follower that applies the same log ends with the
// same registry (the walk's mark is where to look, never what to delete).
func TestDropNodeSeesClientsRegisteredDuringTheWalk(t *testing.T) {
	for _, registerFirst := range []bool{false, true} {
		t.Run(fmt.Sprintf("registered-first=%v", registerFirst), func(t *testing.T) {
			h, tab := newTable(t)
			tab.dropBatch = 100
			follower := h.NewFollower(t)
			ftab, err := New(follower.DB(), follower)
			if err != nil {
				t.Fatal(err)
			}
			ftab.dropBatch = 100
			registerMany(t, h, 500, "n1", "n2")
			if !dropStep(t, h, "n1") || !dropStep(t, h, "n1") {
				t.Fatal("the walk ended early")
			}
			// u000000-late… sorts below every mark.
			late, _ := EncodeClient("u000000-late/d", "n1", 2)
			drop, _ := EncodeDropNode("n1")
			cmds := []fsm.Command{{Type: wire.CmdClientsDropNode, Payload: drop}, {Type: wire.CmdClientRegister, Payload: late}}
			if registerFirst {
				cmds[0], cmds[1] = cmds[1], cmds[0]
			}
			if _, err := h.ProposeBatch(context.Background(), cmds); err != nil {
				t.Fatal(err)
			}
			for dropStep(t, h, "n1") {
			}
			for _, tb := range []*Table{tab, ftab} {
				if c, _ := tb.Clients("n1"); len(c) != 0 {
					t.Fatalf("clients of n1 left: %v", c)
				}
				if counts, _ := tb.Counts(); counts["n2"] != 500 || len(counts) != 1 {
					t.Fatalf("counts %v", counts)
				}
			}
		})
	}
}
