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

// Retention takes expired messages off unread counts in a conversation
// with a user of a linked region too (docs/protocol.md: direct and group
// conversations alike), sealed ones included, and deletes their retry
// records: the sealed messages from bob@us that expired above alice's
// cursor stayed in her unread count for good (the sweep passed over
// every message whose sender is region-qualified), and the link's
// retry records (dedupe keys) of the expired messages stayed behind.
func TestRetentionTakesExpiredSealedMessagesFromAnotherRegionOffUnread(t *testing.T) {
	start := time.Now().Add(-200 * time.Hour).Truncate(time.Hour)
	ids := hourIDs(start)
	segs, _ := localSegments(t, true)
	e := newEnv(t, withRegions(euLinkedToUS), withIDs(ids), withSegments(segs))
	ctx := context.Background()
	var remote []wire.Envelope
	for i := range 12 { // hours 0..11 old, then 2 recent ones
		id := ids.Next()
		if i >= 10 {
			id = snowflake.Make(uint64(start.Add(190*time.Hour+time.Duration(i)*time.Minute).Sub(snowflake.Epoch).Milliseconds()), 2, 0)
		}
		env := wire.Envelope{ID: id, From: "bob@us", To: "alice", CID: fmt.Sprintf("b%d", i), Type: wire.TypeText, Body: "hi"}
		stored, _, dup, err := e.svc.StoreRemote(ctx, env)
		if err != nil || dup {
			t.Fatalf("StoreRemote %d: dup %v, %v", i, dup, err)
		}
		remote = append(remote, stored)
	}
	if n := e.unreadOf(t, "alice", "bob@us"); n != 12 {
		t.Fatalf("alice's unread before: %d, want 12", n)
	}
	now := start.Add(200 * time.Hour)
	// Everything older than 100 hours is sealed: the 10 old messages.
	if st, err := e.svc.SealOnce(ctx, SealConfig{HotAge: 100 * time.Hour, MaxMessages: 4}, now); err != nil || st.Messages != 10 {
		t.Fatalf("sealed %+v, %v; want the 10 old messages", st, err)
	}
	if _, err := e.svc.ExpireOnce(ctx, RetentionPolicy{Days: 4}, now); err != nil {
		t.Fatal(err)
	}
	msgs, _, err := e.svc.historyPage(ctx, directConv("alice", "bob@us"), nil, 50)
	if err != nil || len(msgs) != 2 {
		t.Fatalf("history after retention: %d messages, %v; want the 2 recent ones", len(msgs), err)
	}
	if n := e.unreadOf(t, "alice", "bob@us"); n != 2 {
		t.Errorf("alice's unread after the old messages expired: %d, want 2", n)
	}
	if n, err := e.svc.UnreadTotal("alice"); err != nil || n != 2 {
		t.Errorf("alice's unread total: %d, %v; want 2", n, err)
	}
	// The link's retry records (dedupe keys) of the expired messages go
	// with them; those of the kept ones stay.
	if err := e.db.View(func(tx *badger.Txn) error {
		for i, m := range remote {
			_, err := tx.Get(dedupKey("bob@us", "@"+m.ID.String()))
			switch gone := errors.Is(err, badger.ErrKeyNotFound); {
			case err != nil && !gone:
				return err
			case gone != (i < 10):
				t.Errorf("message %d: retry record gone=%v, want %v", i, gone, i < 10)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
