package archive

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/internal/wire"
)

// Retention deletes the m/ pointers sealed messages keep (every message
// the push outbox staged has one) with the messages, as it deletes the m/
// key of an expired hot message. Before, once their segment expired the
// pointers stayed forever.
func TestRetentionDeletesThePointersOfExpiredSealedMessages(t *testing.T) {
	segs, _ := localSegments(t, false)
	e := newEnv(t, withSegments(segs), withOutbox(&recordingOutbox{}))
	for i := range 30 {
		e.send(t, "alice", "bob", fmt.Sprintf("m%d", i))
	}
	if st, err := e.svc.SealOnce(context.Background(), SealConfig{}, time.Now()); err != nil || st.Messages != 29 {
		t.Fatalf("seal: %+v %v", st, err)
	}
	// Everything is far older than a day (the test IDs are from the epoch).
	if st, err := e.svc.ExpireOnce(context.Background(), RetentionPolicy{Days: 1}, time.Now()); err != nil || st.Segments == 0 || st.Pointers != 29 {
		t.Fatalf("retention: %+v %v", st, err)
	}
	left := 0
	if err := e.db.View(func(tx *badger.Txn) error {
		it := tx.NewIterator(badger.IteratorOptions{Prefix: msgPrefix()})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			left++
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if left != 0 {
		t.Fatalf("%d m/ keys of expired messages are left after retention deleted every message", left)
	}
}

// CmdRetentionPtrs deletes only pointers that name its conversation, and
// a malformed one is refused and changes nothing.
func TestRetentionPointersOnlyOfTheirConversation(t *testing.T) {
	e := newEnv(t, withOutbox(&recordingOutbox{}))
	m1 := e.send(t, "alice", "bob", "m1")
	m2 := e.send(t, "alice", "carol", "m2")
	conv := directConv("alice", "bob")
	ok := retentionPtrsCmd{Conv: conv, Cutoff: m2.ID + 1, IDs: []snowflake.ID{m1.ID}}
	good := ok.encode()
	before := dump(t, e.db)
	for name, p := range map[string][]byte{
		"version":     append([]byte{7}, good[1:]...),
		"truncated":   good[:len(good)-2],
		"trailing":    append(append([]byte(nil), good...), 0),
		"conv":        (&retentionPtrsCmd{Conv: "x:y", Cutoff: 5}).encode(),
		"cutoff 0":    (&retentionPtrsCmd{Conv: conv}).encode(),
		"not expired": (&retentionPtrsCmd{Conv: conv, Cutoff: m1.ID, IDs: []snowflake.ID{m1.ID}}).encode(),
		"too many":    (&retentionPtrsCmd{Conv: conv, Cutoff: m2.ID + 1, IDs: make([]snowflake.ID, refsBatch+1)}).encode(),
	} {
		if _, err := e.prop.Propose(context.Background(), wire.CmdRetentionPtrs, p); !errors.Is(err, ErrBadCommand) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if fmt.Sprint(dump(t, e.db)) != fmt.Sprint(before) {
		t.Fatal("a refused command changed the state")
	}
	// m2 is carol's conversation's: left alone.
	cmd := retentionPtrsCmd{Conv: conv, Cutoff: m2.ID + 1, IDs: []snowflake.ID{m1.ID, m2.ID}}
	v, err := e.prop.Propose(context.Background(), wire.CmdRetentionPtrs, cmd.encode())
	if r, _ := v.(*ptrsApplied); err != nil || r == nil || r.Deleted != 1 {
		t.Fatalf("apply: %+v %v", v, err)
	}
	if err := e.db.View(func(tx *badger.Txn) error {
		for id, want := range map[snowflake.ID]string{m1.ID: "", m2.ID: directConv("alice", "carol")} {
			if c, err := storedConv(tx, id); err != nil || c != want {
				t.Errorf("m/%d names %q (%v), want %q", id, c, err, want)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
