package registry

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

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
