package node_test

import (
	"testing"
	"time"

	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
)

// A cluster restored from a backup goes on from the backup's state, but
// the old cluster went on after the backup too, and its clients keep
// sync cursors (commit positions) from then. The restored cluster's log
// starts past every position the old one can have reached: before, it
// started right after the backup's index, so a client syncing from its
// cursor got nothing of what was sent after the restore until the new
// log passed its cursor (here bob's cursor is past the backup by twenty
// messages; the CLI and the Go SDK resume from a saved cursor).
func TestSyncFromACursorOfTheOldClusterAfterARestore(t *testing.T) {
	store := t.TempDir()
	n := nodetest.StartNode(t, nodetest.WithConfig(func(c *node.Config) {
		c.BackupEvery, c.BackupTo, c.BackupKeep = time.Hour, store, 2
	}))
	aliceTok, bobTok := n.NewUser(t, "alice"), n.NewUser(t, "bob")
	send := func(n *nodetest.Node, tok, cid string) {
		t.Helper()
		if st := api(t, n, tok, "POST", "/chat/messages", map[string]string{"to": "bob", "cid": cid, "type": "text", "body": cid}, nil); st != 201 {
			t.Fatalf("send %s: %d", cid, st)
		}
	}
	send(n, aliceTok, "before the backup")
	m, err := n.Backup.Scheduler().BackupNow(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		send(n, aliceTok, "after the backup "+string(rune('a'+i)))
	}
	var old syncPage
	if st := api(t, n, bobTok, "GET", "/chat/sync", nil, &old); st != 200 || len(old.Messages) != 21 || old.HasMore {
		t.Fatalf("bob's sync on the old cluster: %d, %d messages, hasMore %v", st, len(old.Messages), old.HasMore)
	}
	if err := n.Stop(); err != nil {
		t.Fatal(err)
	}

	dir := restoreBackup(t, store, m.ID)
	n = nodetest.StartNode(t, nodetest.WithDataDir(dir))
	send(n, n.Token(t, "alice"), "after the restore")
	var p syncPage
	if st := api(t, n, n.Token(t, "bob"), "GET", "/chat/sync?since="+old.Cursor, nil, &p); st != 200 {
		t.Fatalf("sync from %s on the restored cluster: %d", old.Cursor, st)
	}
	if len(p.Messages) != 1 || p.Messages[0].Body != "after the restore" {
		t.Fatalf("bob's sync from his cursor %s of the old cluster on the restored one: %+v, want the message sent after the restore",
			old.Cursor, p.Messages)
	}
}
