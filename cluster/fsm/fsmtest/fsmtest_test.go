package fsmtest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/internal/wire"
)

const cmdPut byte = 0xF0

var errRefused = errors.New("refused")

// register installs a handler that stores key r/t/{payload} = its
// position and returns how many keys it saw before (so a later command of
// one entry proves it sees the earlier ones' writes); payload "bad" is
// refused without writing.
func register(f *fsm.FSM) {
	f.Register(cmdPut, func(tx *badger.Txn, at fsm.Position, p []byte) (any, error) {
		if string(p) == "bad" {
			return nil, errRefused
		}
		n := 0
		it := tx.NewIterator(badger.IteratorOptions{Prefix: []byte("r/t/")})
		for it.Rewind(); it.Valid(); it.Next() {
			n++
		}
		it.Close()
		return n, tx.Set([]byte("r/t/"+string(p)), []byte(fmt.Sprint(at.Index, ".", at.Sub)))
	})
}

func newHarness(t *testing.T, opts ...Option) *Harness {
	h := New(t, opts...)
	register(h.FSM)
	return h
}

// get reads key r/t/{k} ("" when missing).
func get(t *testing.T, db *badger.DB, k string) string {
	t.Helper()
	var v []byte
	err := db.View(func(tx *badger.Txn) error {
		it, err := tx.Get([]byte("r/t/" + k))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		v, err = it.ValueCopy(nil)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return string(v)
}

func TestProposeAppliesEachAsAnEntry(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	for i, k := range []string{"a", "b"} {
		v, err := h.Propose(ctx, cmdPut, []byte(k))
		if err != nil || v != i {
			t.Fatalf("Propose(%s) = %v, %v; want %d, nil", k, v, err, i)
		}
	}
	if get(t, h.DB, "a") != "1.0" || get(t, h.DB, "b") != "2.0" {
		t.Fatalf("positions a=%q b=%q, want 1.0 and 2.0", get(t, h.DB, "a"), get(t, h.DB, "b"))
	}
	if idx, err := h.FSM.AppliedIndex(); err != nil || idx != 2 || h.Index() != 2 || len(h.Logs()) != 2 {
		t.Fatalf("applied %d (%v), Index %d, %d logs; want 2 each", idx, err, h.Index(), len(h.Logs()))
	}
	// A handler's refusal comes back as the error and writes nothing.
	if _, err := h.Propose(ctx, cmdPut, []byte("bad")); !errors.Is(err, errRefused) {
		t.Fatalf("refused command: %v", err)
	}
	if get(t, h.DB, "bad") != "" {
		t.Fatal("refused command wrote")
	}
}

func TestWithBatchAppliesOneEntry(t *testing.T) {
	h := newHarness(t, WithBatch(3))
	var wg sync.WaitGroup
	seen := make([]int, 3)
	for i := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, err := h.Propose(context.Background(), cmdPut, []byte(fmt.Sprint("k", i)))
			if err != nil {
				t.Errorf("Propose %d: %v", i, err)
				return
			}
			seen[i] = v.(int)
		}()
	}
	wg.Wait()
	if n := len(h.Logs()); n != 1 || h.Index() != 1 {
		t.Fatalf("%d entries, index %d; want the 3 commands in entry 1", n, h.Index())
	}
	// Each later command of the entry saw the earlier ones' writes.
	total := seen[0] + seen[1] + seen[2]
	if total != 0+1+2 {
		t.Fatalf("commands saw %v keys before them, want 0, 1 and 2 in some order", seen)
	}
	cmds, err := fsm.DecodeBatch(h.Logs()[0].Data)
	if err != nil || len(cmds) != 3 {
		t.Fatalf("entry holds %d commands (%v)", len(cmds), err)
	}
}

func TestProposeBatch(t *testing.T) {
	h := newHarness(t, WithBatch(5)) // ProposeBatch does not wait for a batch
	res, err := h.ProposeBatch(context.Background(), []fsm.Command{
		{Type: cmdPut, Payload: []byte("x")}, {Type: cmdPut, Payload: []byte("bad")}, {Type: cmdPut, Payload: []byte("y")},
	})
	if err != nil || len(res) != 3 {
		t.Fatalf("ProposeBatch = %v, %v", res, err)
	}
	if res[0].Value != 0 || !errors.Is(res[1].Err, errRefused) || res[2].Value != 1 {
		t.Fatalf("results %+v", res)
	}
	if get(t, h.DB, "y") != "1.2" || h.Index() != 1 {
		t.Fatalf("y at %q, index %d; want 1.2 and 1", get(t, h.DB, "y"), h.Index())
	}
}

func TestSetErrRefusesAndAppliesNothing(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	h.SetErr(ErrDown)
	if _, err := h.Propose(ctx, cmdPut, []byte("a")); !errors.Is(err, wire.ErrUnavailable) {
		t.Fatalf("down: %v, want ErrUnavailable", err)
	}
	if _, err := h.ProposeBatch(ctx, []fsm.Command{{Type: cmdPut, Payload: []byte("a")}}); !errors.Is(err, ErrDown) {
		t.Fatalf("down batch: %v", err)
	}
	if h.Index() != 0 || get(t, h.DB, "a") != "" {
		t.Fatal("a refused proposal was applied")
	}
	h.SetErr(nil)
	if _, err := h.Propose(ctx, cmdPut, []byte("a")); err != nil || get(t, h.DB, "a") == "" {
		t.Fatalf("after recovery: %v", err)
	}
}

func TestDoneContextRefuses(t *testing.T) {
	h := newHarness(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := h.Propose(ctx, cmdPut, []byte("a")); !errors.Is(err, wire.ErrUnavailable) {
		t.Fatalf("done ctx: %v, want ErrUnavailable", err)
	}
	if h.Index() != 0 {
		t.Fatal("applied with a done context")
	}
}

func TestLoseValues(t *testing.T) {
	h := newHarness(t)
	h.LoseValues(true)
	v, err := h.Propose(context.Background(), cmdPut, []byte("a"))
	if v != nil || err != nil || get(t, h.DB, "a") == "" {
		t.Fatalf("lost value: %v, %v (applied %q)", v, err, get(t, h.DB, "a"))
	}
	if _, err := h.Propose(context.Background(), cmdPut, []byte("bad")); !errors.Is(err, errRefused) {
		t.Fatalf("error was lost too: %v", err)
	}
	h.LoseValues(false)
	if v, _ := h.Propose(context.Background(), cmdPut, []byte("b")); v != 1 {
		t.Fatalf("value after LoseValues(false) = %v, want 1", v)
	}
}

func TestBeforeNextRunsOnceFirst(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	calls := 0
	h.BeforeNext(func() {
		calls++
		if _, err := h.Propose(ctx, cmdPut, []byte("first")); err != nil {
			t.Error(err)
		}
	})
	if _, err := h.Propose(ctx, cmdPut, []byte("second")); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Propose(ctx, cmdPut, []byte("third")); err != nil {
		t.Fatal(err)
	}
	if calls != 1 || get(t, h.DB, "first") != "1.0" || get(t, h.DB, "second") != "2.0" {
		t.Fatalf("hook ran %d times; first at %q, second at %q", calls, get(t, h.DB, "first"), get(t, h.DB, "second"))
	}
}

func TestFollowerAppliesTheSameLog(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	if _, err := h.Propose(ctx, cmdPut, []byte("before")); err != nil {
		t.Fatal(err)
	}
	f := h.NewFollower(t)
	register(f)
	if _, err := h.ProposeBatch(ctx, []fsm.Command{{Type: cmdPut, Payload: []byte("a")}, {Type: cmdPut, Payload: []byte("b")}}); err != nil {
		t.Fatal(err)
	}
	if get(t, f.DB(), "a") != "2.0" || get(t, f.DB(), "b") != "2.1" || get(t, f.DB(), "before") != "" {
		t.Fatalf("follower: a=%q b=%q before=%q; want only the later entry", get(t, f.DB(), "a"), get(t, f.DB(), "b"), get(t, f.DB(), "before"))
	}
}

func TestSetIndex(t *testing.T) {
	h := newHarness(t)
	h.SetIndex(41)
	if _, err := h.Propose(context.Background(), cmdPut, []byte("a")); err != nil {
		t.Fatal(err)
	}
	if get(t, h.DB, "a") != "42.0" || h.Index() != 42 || h.Logs()[0].Index != 42 {
		t.Fatalf("a at %q, Index %d", get(t, h.DB, "a"), h.Index())
	}
}

func TestDump(t *testing.T) {
	h := newHarness(t)
	for _, k := range []string{"a", "b"} {
		if _, err := h.Propose(context.Background(), cmdPut, []byte(k)); err != nil {
			t.Fatal(err)
		}
	}
	all := Dump(t, h.DB, "r/")
	if len(all) != 2 || all["r/t/a"] != "1.0" || all["r/t/b"] != "2.0" {
		t.Fatalf("Dump(r/) = %v, want the two keys without the applied index", all)
	}
	if got := Dump(t, h.DB, "r/t/b"); len(got) != 1 {
		t.Fatalf("Dump(r/t/b) = %v", got)
	}
	if got := Dump(t, h.DB, "r/none/"); len(got) != 0 {
		t.Fatalf("Dump of an empty prefix = %v", got)
	}
}
