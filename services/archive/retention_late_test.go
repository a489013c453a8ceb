package archive

import (
	"context"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/internal/wire"
)

// A message of another region that arrived late, its origin's ID below
// the reader's cursor, counts as unread until the reader's next read
// (docs/regions.md). When retention deleted it before that read, it
// stayed in the count for good: alice's conversation with bob@us (and
// her unread total) showed an unread message that was gone. Expired, it
// leaves the count, and only it: a message below the cursor that a read
// had already taken off changes nothing, nor do the unread messages above
// the cursor.
func TestRetentionTakesAnExpiredLateMessageOffUnread(t *testing.T) {
	t.Run("hot", func(t *testing.T) { lateMessageExpires(t, false) })
	t.Run("sealed", func(t *testing.T) { lateMessageExpires(t, true) })
}

func lateMessageExpires(t *testing.T, sealed bool) {
	start := time.Now().Add(-200 * time.Hour).Truncate(time.Hour)
	ids := hourIDs(start)
	opts := []envOpt{withRegions(euLinkedToUS), withIDs(ids)}
	if sealed {
		segs, _ := localSegments(t, true)
		opts = append(opts, withSegments(segs))
	}
	e := newEnv(t, opts...)
	ctx := context.Background()
	remoteAt := func(h int) snowflake.ID {
		return snowflake.Make(uint64(start.Add(time.Duration(h)*time.Hour).Sub(snowflake.Epoch).Milliseconds()), 2, 0)
	}
	store := func(id snowflake.ID, cid string) {
		t.Helper()
		if _, _, dup, err := e.svc.StoreRemote(ctx, wire.Envelope{ID: id, From: "bob@us", To: "alice", CID: cid, Type: wire.TypeText, Body: "hi"}); err != nil || dup {
			t.Fatalf("StoreRemote %s: dup %v, %v", cid, dup, err)
		}
	}
	for range 150 { // alice's clock: hour 150
		ids.Next()
	}
	// An early message of bob's, read (the read takes it off).
	store(remoteAt(1), "b-read")
	own, _, _, err := e.svc.SendDirect(ctx, "alice", "bob@us", wire.Envelope{CID: "a0", Type: wire.TypeText, Body: "anyone?"})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.svc.MarkRead(ctx, "alice", "bob@us", own.ID); err != nil {
		t.Fatal(err)
	}
	// A message that waited in us's outbox: its ID is below alice's
	// cursor, and it counts as unread.
	store(remoteAt(2), "b-late")
	if n := e.unreadOf(t, "alice", "bob@us"); n != 1 {
		t.Fatalf("unread after the late message: %d, want 1", n)
	}
	// Two recent messages of bob's, above the cursor.
	store(remoteAt(195), "b-new1")
	store(remoteAt(196), "b-new2")
	if n := e.unreadOf(t, "alice", "bob@us"); n != 3 {
		t.Fatalf("unread before retention: %d, want 3", n)
	}

	if sealed { // the early messages (and alice's) go into segments
		if st, err := e.svc.SealOnce(ctx, SealConfig{HotAge: 20 * time.Hour, MaxMessages: 4}, start.Add(200*time.Hour)); err != nil || st.Messages != 3 {
			t.Fatalf("sealed %+v, %v; want the 3 old messages", st, err)
		}
	}
	// Hours 0..100 expire: both early messages of bob's.
	if _, err := e.svc.ExpireOnce(ctx, RetentionPolicy{Days: 4}, start.Add(200*time.Hour)); err != nil {
		t.Fatal(err)
	}
	msgs, _, err := e.svc.historyPage(ctx, directConv("alice", "bob@us"), nil, 50)
	if err != nil || len(msgs) != 3 {
		t.Fatalf("history after retention: %d messages, %v; want alice's and bob's 2 recent ones", len(msgs), err)
	}
	if n := e.unreadOf(t, "alice", "bob@us"); n != 2 {
		t.Errorf("alice's unread after the late message expired: %d, want 2 (the recent ones)", n)
	}
	if n, err := e.svc.UnreadTotal("alice"); err != nil || n != 2 {
		t.Errorf("alice's unread total: %d, %v; want 2", n, err)
	}
}
