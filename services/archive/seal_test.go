package archive

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/services/archive/segment"
)

// A segment built from a conversation's range holds exactly what history
// serves for it, byte for byte and in order, and only that conversation's
// messages in the range.
func TestSealRangeMatchesHistory(t *testing.T) {
	e := newEnv(t, withGroups())
	e.groups.add("room", "alice", "bob")
	var ids []snowflake.ID
	for i := range 120 {
		from, to := "alice", "bob"
		if i%3 == 0 {
			from, to = "bob", "alice"
		}
		ids = append(ids, e.send(t, from, to, fmt.Sprintf("c%d", i)).ID)
		e.send(t, "alice", "carol", fmt.Sprintf("x%d", i)) // another conversation, interleaved
		e.sendGroup(t, "bob", "room", fmt.Sprintf("g%d", i))
	}
	conv := directConv("alice", "bob")
	hist, _, err := e.svc.historyPage(context.Background(), conv, nil, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if len(hist) != 120 {
		t.Fatalf("history holds %d", len(hist))
	}

	// The middle 50: IDs 30..79 of the conversation.
	msgs, err := e.svc.sealRange(conv, ids[30], ids[79], 1000)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 50 {
		t.Fatalf("sealRange gave %d messages, want 50", len(msgs))
	}
	data, meta, err := segment.Write(conv, msgs, 1024)
	if err != nil {
		t.Fatal(err)
	}
	if meta.FirstID != uint64(ids[30]) || meta.LastID != uint64(ids[79]) {
		t.Fatalf("segment covers %d..%d", meta.FirstID, meta.LastID)
	}
	sr, err := segment.Open(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	dec, _ := segment.NewDecoder()
	defer dec.Close()
	var got []segment.Message
	for i := range sr.Blocks {
		b, err := sr.ReadBlock(i, dec)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, b...)
	}
	for i, m := range got {
		want := hist[len(hist)-1-(30+i)] // history is newest first
		body, err := expandSealed(conv, snowflake.ID(m.ID), m.Body)
		if err != nil || m.ID != uint64(ids[30+i]) || !bytes.Equal(body, want) {
			t.Fatalf("message %d: id %d body %s (%v), history has %s", i, m.ID, body, err, want)
		}
	}

	if msgs, _ := e.svc.sealRange(conv, ids[0], ids[119], 10); len(msgs) != 10 || msgs[0].ID != uint64(ids[0]) {
		t.Fatalf("limit 10 from the start: %d messages", len(msgs))
	}
	if msgs, _ := e.svc.sealRange(conv, ids[5], ids[4], 10); len(msgs) != 0 {
		t.Fatal("an empty range gave messages")
	}
}
