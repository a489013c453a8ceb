package archive

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"sync"
	"testing"

	"github.com/dgraph-io/badger/v4"
)

// recordingOutbox writes a key per staged message (so that the test sees
// it committed with the message) and records what was committed.
type recordingOutbox struct {
	mu        sync.Mutex
	staged    []Stored
	committed []Stored
}

func (o *recordingOutbox) Stage(tx *badger.Txn, m Stored) (func(), error) {
	if err := tx.Set([]byte("r/test/outbox/"+m.ID.String()), nil); err != nil {
		return nil, err
	}
	if len(m.Payload) == 0 {
		return nil, errors.New("staged without its payload")
	}
	m.Payload = nil // valid only during Stage; compared without it
	o.mu.Lock()
	o.staged = append(o.staged, m)
	o.mu.Unlock()
	return func() {
		o.mu.Lock()
		o.committed = append(o.committed, m)
		o.mu.Unlock()
	}, nil
}

// Each new message is staged in its own transaction and announced after
// the commit; a retried one (same cid) is not staged again.
func TestOutboxStagesNewMessagesOnce(t *testing.T) {
	o := &recordingOutbox{}
	e := newEnv(t, withGroups(), withOutbox(o))
	e.groups.add("g1", "alice", "bob")
	dm := e.send(t, "alice", "bob", "c1")
	if _, _, dup, err := e.svc.SendDirect(context.Background(), "alice", "bob", text("c1", "again")); err != nil || !dup {
		t.Fatalf("retry: dup %v, %v", dup, err)
	}
	gm := e.sendGroup(t, "bob", "g1", "c2")
	want := []Stored{{ID: dm.ID, From: "alice", To: "bob"}, {ID: gm.ID, From: "bob", Group: "g1"}}
	o.mu.Lock()
	committed := slices.Clone(o.committed)
	o.mu.Unlock()
	same := func(a, b Stored) bool { return a.ID == b.ID && a.From == b.From && a.To == b.To && a.Group == b.Group }
	if !slices.EqualFunc(committed, want, same) {
		t.Fatalf("committed %+v, want %+v", committed, want)
	}
	err := e.db.View(func(tx *badger.Txn) error {
		for _, m := range want {
			if _, err := tx.Get([]byte("r/test/outbox/" + m.ID.String())); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("the outbox's write did not commit with the message: %v", err)
	}
}

func TestReadUpToAndUnreadTotal(t *testing.T) {
	e := newEnv(t, withGroups(), withOutbox(&recordingOutbox{}))
	e.groups.add("g1", "alice", "bob")
	m1 := e.send(t, "alice", "bob", "c1")
	e.send(t, "alice", "bob", "c2")
	e.sendGroup(t, "alice", "g1", "c3")
	e.sendGroup(t, "bob", "g1", "c4") // bob's own: not unread for him
	if n, err := e.svc.UnreadTotal("bob"); err != nil || n != 3 {
		t.Fatalf("UnreadTotal = %d, %v; want 3", n, err)
	}
	if err := e.svc.MarkRead(context.Background(), "bob", "alice", m1.ID); err != nil {
		t.Fatal(err)
	}
	if cur, err := e.svc.ReadUpTo("bob", "alice", ""); err != nil || cur != m1.ID {
		t.Fatalf("ReadUpTo = %v, %v; want %v", cur, err, m1.ID)
	}
	if cur, err := e.svc.ReadUpTo("bob", "", "g1"); err != nil || cur != 0 {
		t.Fatalf("group ReadUpTo = %v, %v; want 0", cur, err)
	}
	if n, _ := e.svc.UnreadTotal("bob"); n != 2 {
		t.Fatalf("UnreadTotal after reading one = %d, want 2", n)
	}
	if p, ok, err := e.svc.Message(m1.ID); err != nil || !ok || len(p) == 0 {
		t.Fatalf("Message = %q %v %v", p, ok, err)
	}
	if _, ok, err := e.svc.Message(12345); err != nil || ok {
		t.Fatalf("Message of an unknown id = %v %v", ok, err)
	}
	if p, ok, err := e.svc.MessageIn(m1.ID, "bob", "alice", ""); err != nil || !ok || !bytes.Contains(p, []byte(`"c1"`)) {
		t.Fatalf("MessageIn = %q %v %v", p, ok, err)
	}
	for _, in := range [][3]string{{"alice", "carol", ""}, {"alice", "bob", "g1"}} {
		if p, ok, err := e.svc.MessageIn(m1.ID, in[0], in[1], in[2]); err != nil || ok {
			t.Fatalf("MessageIn %v of a message of another conversation = %q %v %v", in, p, ok, err)
		}
	}
}
