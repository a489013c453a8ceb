package node_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/eclipse/paho.golang/paho"

	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
	"github.com/edgechat/edgechat/services/backup"
)

// TestARestoredClusterServesWhatTheOldOneDid: after a backup and a
// restore into a new data directory, the new cluster answers as the old
// one did: sign-ins with the old passwords, old access tokens (their
// keys are in the state), conversations with their unread counts and
// read cursors, groups, contacts, mutes, push registrations, the Web
// Push key, presence last-seen and the feature level.
func TestARestoredClusterServesWhatTheOldOneDid(t *testing.T) {
	store := t.TempDir()
	opts := []nodetest.Option{withPush(t), nodetest.WithPresence(200*time.Millisecond, 200*time.Millisecond),
		nodetest.WithConfig(func(c *node.Config) { c.BackupEvery, c.BackupTo, c.BackupKeep = time.Hour, store, 2 })}
	n := nodetest.StartNode(t, opts...)
	rootTok := n.NewUser(t, "root")
	aliceTok, bobTok, carolTok := n.NewUser(t, "alice"), n.NewUser(t, "bob"), n.NewUser(t, "carol")
	var g struct{ GroupID string }
	if st := api(t, n, aliceTok, "POST", "/user/groups", map[string]any{"name": "team", "members": []string{"bob", "carol"}}, &g); st != 201 {
		t.Fatalf("group: %d", st)
	}
	for i := range 3 {
		if st := api(t, n, aliceTok, "POST", "/chat/messages", map[string]string{"to": "bob", "cid": fmt.Sprintf("d%d", i), "type": "text", "body": "hi"}, nil); st != 201 {
			t.Fatalf("send: %d", st)
		}
		if st := api(t, n, carolTok, "POST", "/chat/messages", map[string]string{"group": g.GroupID, "cid": fmt.Sprintf("g%d", i), "type": "text", "body": "hey"}, nil); st != 201 {
			t.Fatalf("group send: %d", st)
		}
	}
	var first syncPage
	if st := api(t, n, bobTok, "GET", "/chat/sync", nil, &first); st != 200 || len(first.Messages) < 2 {
		t.Fatalf("bob's sync: %d %d", st, len(first.Messages))
	}
	if st := api(t, n, bobTok, "POST", "/chat/read", map[string]string{"with": "alice", "upTo": first.Messages[0].ID}, nil); st != 204 {
		t.Fatalf("read: %d", st)
	}
	for _, c := range []struct{ tok, path, uid string }{{bobTok, "/user/me/contacts", "alice"}, {carolTok, "/user/me/blocks", "bob"}} {
		if st := api(t, n, c.tok, "POST", c.path, map[string]string{"uid": c.uid}, nil); st != 201 && st != 200 {
			t.Fatalf("POST %s: %d", c.path, st)
		}
	}
	if st := api(t, n, bobTok, "POST", "/user/me/devices", map[string]any{"device": "pixel", "platform": "fcm", "token": fcmToken("bob")}, nil); st != 200 {
		t.Fatalf("bob's device: %d", st)
	}
	if st := api(t, n, bobTok, "PUT", "/user/me/mutes/user:carol", nil, nil); st != 200 {
		t.Fatalf("mute: %d", st)
	}
	// bob online, then gone: a last-seen.
	c := mustConnectV5(t, n.MQTTURL, "bob", "phone", bobTok)
	_ = c.Disconnect(&paho.Disconnect{})
	nodetest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		if b := raw(t, n, aliceTok, "/presence/bob"); !strings.Contains(b, "lastSeen") || !strings.Contains(b, "offline") {
			return fmt.Errorf("presence of bob: %s", b)
		}
		return nil
	})

	type view struct{ tok, path string }
	views := []view{
		{bobTok, "/chat/conversations"}, {aliceTok, "/chat/conversations"}, {carolTok, "/chat/conversations"},
		{bobTok, "/user/groups"}, {bobTok, "/user/groups/" + g.GroupID + "/members"},
		{bobTok, "/user/me/contacts"}, {carolTok, "/user/me/blocks"}, {bobTok, "/user/me/devices"},
		{bobTok, "/user/me/mutes"}, {bobTok, "/user/me/push"}, {aliceTok, "/presence/bob"}, {"", "/push/vapid"},
		{bobTok, "/user/me"}, {rootTok, "/admin/users"},
	}
	who := map[string]string{rootTok: "root", aliceTok: "alice", bobTok: "bob", carolTok: "carol", "": "anyone"}
	before := map[string]string{}
	for _, v := range views {
		before[v.path+" as "+who[v.tok]] = raw(t, n, v.tok, v.path)
	}
	var cs struct{ FeatureLevel int }
	if st := api(t, n, rootTok, "GET", "/cluster/status", nil, &cs); st != 200 {
		t.Fatalf("status %d", st)
	}
	m, err := n.Backup.Scheduler().BackupNow(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Stop(); err != nil {
		t.Fatal(err)
	}

	dir := restoreBackup(t, store, m.ID)
	n = nodetest.StartNode(t, append(opts, nodetest.WithDataDir(dir))...)
	var diffs []string
	for _, v := range views {
		k := v.path + " as " + who[v.tok]
		if got := raw(t, n, v.tok, v.path); got != before[k] {
			diffs = append(diffs, fmt.Sprintf("GET %s (an old token):\n  before %s\n  after  %s", k, before[k], got))
		}
	}
	var cs2 struct{ FeatureLevel int }
	if st := api(t, n, rootTok, "GET", "/cluster/status", nil, &cs2); st != 200 || cs2.FeatureLevel != cs.FeatureLevel {
		diffs = append(diffs, fmt.Sprintf("feature level %d, was %d (%d)", cs2.FeatureLevel, cs.FeatureLevel, st))
	}
	n.Token(t, "carol") // her password signs her in
	if len(diffs) > 0 {
		t.Fatalf("the restored cluster answers otherwise:\n%s", strings.Join(diffs, "\n"))
	}
}

func raw(t *testing.T, n *nodetest.Node, tok, path string) string {
	t.Helper()
	req, _ := http.NewRequest("GET", n.HTTPURL+path, nil)
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(b)))
}

// restoreBackup restores the backup id of the directory store into a
// new data directory, as `edgechat restore` does, and returns it.
func restoreBackup(t *testing.T, store, id string) string {
	t.Helper()
	dir := t.TempDir()
	ds, err := backup.NewDirStore(store)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := backup.Restore(context.Background(), ds, id, backup.RestoreOptions{
		DataDir:      dir,
		OpenDB:       func(d string) (*badger.DB, error) { return node.OpenDatabase(d, slog.New(slog.DiscardHandler)) },
		DropPrefixes: node.RestoreDropPrefixes(),
		RefOf:        node.BackupRefOf,
	}); err != nil {
		t.Fatal(err)
	}
	return dir
}
