package node_test

import (
	"strconv"
	"testing"

	"github.com/edgechat/edgechat/node/nodetest"
)

// A sync cursor past the end of this cluster's stream was not made by
// it: a client kept it from a cluster made anew from nothing under the
// same names (a data directory wiped in development, a cluster rebuilt
// without its backup). Synced from it, the client got nothing, then
// nothing of what committed before the new log reached it, for good: it
// is answered from the beginning instead. A cursor this cluster made
// still syncs from where it is.
func TestSyncFromACursorPastTheEndStartsFromTheBeginning(t *testing.T) {
	n := nodetest.StartNode(t)
	aliceTok, bobTok := n.NewUser(t, "alice"), n.NewUser(t, "bob")
	var first envelope
	if st := api(t, n, aliceTok, "POST", "/chat/messages", map[string]string{"to": "bob", "cid": "c1", "type": "text", "body": "hello"}, &first); st != 201 {
		t.Fatalf("send: %d", st)
	}
	var end struct{ Cursor string }
	if st := api(t, n, bobTok, "GET", "/chat/sync/end", nil, &end); st != 200 {
		t.Fatalf("sync/end: %d", st)
	}
	var second envelope
	if st := api(t, n, aliceTok, "POST", "/chat/messages", map[string]string{"to": "bob", "cid": "c2", "type": "text", "body": "again"}, &second); st != 201 {
		t.Fatalf("send: %d", st)
	}
	sync := func(since string) []string {
		t.Helper()
		var page struct {
			Messages []envelope
			Cursor   string
		}
		if st := api(t, n, bobTok, "GET", "/chat/sync?since="+since, nil, &page); st != 200 {
			t.Fatalf("sync since %s: %d", since, st)
		}
		var ids []string
		for _, m := range page.Messages {
			ids = append(ids, m.ID)
		}
		return ids
	}
	foreign := strconv.FormatUint(1<<40, 10) // index 2^24 of another cluster's log
	if ids := sync(foreign); len(ids) != 2 || ids[0] != first.ID || ids[1] != second.ID {
		t.Errorf("sync from a cursor past the end: %v, want both messages %s %s", ids, first.ID, second.ID)
	}
	if ids := sync(end.Cursor); len(ids) != 1 || ids[0] != second.ID {
		t.Errorf("sync from this cluster's cursor %s: %v, want only %s", end.Cursor, ids, second.ID)
	}
}
