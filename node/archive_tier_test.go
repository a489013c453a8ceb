package node_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
	"github.com/edgechat/edgechat/services/archive"
	"github.com/edgechat/edgechat/services/media"
	"github.com/edgechat/edgechat/services/media/store/storetest"
)

// tieringFixture is a conversation history written over MQTT and HTTP:
// alice and bob in a direct conversation, alice and carol in another,
// and the three in a group.
type tieringFixture struct {
	tokens map[string]string
	gid    string
	sent   int
}

func writeTieringHistory(t *testing.T, n *nodetest.Node) *tieringFixture {
	t.Helper()
	f := &tieringFixture{tokens: map[string]string{}}
	for _, u := range []string{"alice", "bob", "carol"} {
		f.tokens[u] = n.NewUser(t, u)
	}
	var g struct {
		GroupID string `json:"groupId"`
	}
	if code := api(t, n, f.tokens["alice"], "POST", "/user/groups", map[string]any{"name": "room", "members": []string{"bob", "carol"}}, &g); code != 201 {
		t.Fatalf("create group: %d", code)
	}
	f.gid = g.GroupID
	alice := mustConnectV5(t, n.MQTTURL, "alice", "phone", f.tokens["alice"])
	bob := mustConnectV5(t, n.MQTTURL, "bob", "phone", f.tokens["bob"])
	for i := range 120 {
		if code, _ := alice.Pub(t, "user/bob/newMessage", 1, textMsg(fmt.Sprintf("ab%d", i), fmt.Sprintf("hello bob, number %d", i))); code != 0 {
			t.Fatalf("PUBACK %#x", code)
		}
		f.sent++
		if i%3 == 0 {
			if code, _ := bob.Pub(t, "user/alice/newMessage", 1, textMsg(fmt.Sprintf("ba%d", i), "hi alice")); code != 0 {
				t.Fatalf("PUBACK %#x", code)
			}
			f.sent++
		}
		if i%4 == 0 {
			if code, _ := alice.Pub(t, "user/carol/newMessage", 1, textMsg(fmt.Sprintf("ac%d", i), "hi carol")); code != 0 {
				t.Fatalf("PUBACK %#x", code)
			}
			f.sent++
		}
		if code, _ := bob.Pub(t, "group/"+f.gid+"/newMessage", 1, textMsg(fmt.Sprintf("g%d", i), "to the room")); code != 0 {
			t.Fatalf("group PUBACK %#x", code)
		}
		f.sent++
	}
	return f
}

// reads is every page users read over HTTP, as raw bytes: history of
// each conversation (paged back), sync of each user (paged forward) and
// conversation lists.
func (f *tieringFixture) reads(t *testing.T, n *nodetest.Node) map[string]string {
	t.Helper()
	out := map[string]string{}
	page := func(user, path string) json.RawMessage {
		var raw json.RawMessage
		if code := api(t, n, f.tokens[user], "GET", path, nil, &raw); code != 200 {
			t.Fatalf("GET %s as %s: %d %s", path, user, code, raw)
		}
		out[user+" "+path] = string(raw)
		return raw
	}
	for _, q := range []struct{ user, conv string }{{"bob", "with=alice"}, {"alice", "with=carol"}, {"carol", "group=" + f.gid}} {
		before := ""
		for {
			var p historyPage
			if err := json.Unmarshal(page(q.user, "/chat/history?"+q.conv+"&limit=33"+before), &p); err != nil {
				t.Fatal(err)
			}
			if !p.HasMore {
				break
			}
			before = "&before=" + p.Messages[len(p.Messages)-1].ID
		}
	}
	for _, u := range []string{"alice", "bob", "carol"} {
		since := ""
		for {
			var p syncPage
			if err := json.Unmarshal(page(u, "/chat/sync?limit=45"+since), &p); err != nil {
				t.Fatal(err)
			}
			if !p.HasMore {
				break
			}
			since = "&since=" + url.QueryEscape(p.Cursor)
		}
		page(u, "/chat/conversations")
	}
	return out
}

func sameReads(t *testing.T, node string, before, after map[string]string) {
	t.Helper()
	if len(before) != len(after) {
		t.Errorf("%s: %d pages before sealing, %d after", node, len(before), len(after))
	}
	for k, v := range before {
		if after[k] != v {
			t.Errorf("%s: %s differs after sealing:\nbefore %.200s\nafter  %.200s", node, k, v, after[k])
		}
	}
}

// sealAll seals everything but each conversation's newest message on
// the leader and waits until every node has applied it.
func sealAll(t *testing.T, nodes []*nodetest.Node, f *tieringFixture) archive.SealStats {
	t.Helper()
	leader := nodes[0]
	for _, n := range nodes {
		if n.IsLeader() {
			leader = n
		}
	}
	st, err := leader.Archive.SealOnce(context.Background(), archive.SealConfig{MaxMessages: 40, HotAge: time.Millisecond}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	const conversations = 3
	if st.Messages != f.sent-conversations || st.Stale != 0 {
		t.Fatalf("sealed %+v of %d messages in %d conversations", st, f.sent, conversations)
	}
	for _, n := range nodes {
		checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
			s, err := n.Archive.Status()
			if err != nil {
				return err
			}
			if s.SealedMessages != int64(st.Messages) || s.SealedSegments != st.Segments {
				return fmt.Errorf("%s: %+v", n.Config.NodeID, s)
			}
			return nil
		})
	}
	return st
}

// One node with the local store: sealing writes {data}/archive and every
// read answers the same bytes.
func TestArchiveTieringLocal(t *testing.T) {
	n := nodetest.StartNode(t)
	f := writeTieringHistory(t, n)
	before := f.reads(t, n)
	compact := func() int64 {
		t.Helper()
		if err := node.SettleStorage(context.Background(), n.Node); err != nil {
			t.Fatal(err)
		}
		if err := node.CompactStorage(n.Node); err != nil {
			t.Fatal(err)
		}
		return n.Archive.HotBytes()
	}
	hot := compact()
	st := sealAll(t, []*nodetest.Node{n}, f)
	// Badger shrinks once compaction drops the sealed keys.
	after := compact()
	if after >= hot*9/10 { // the history is a part of it: sync entries, dedupe keys, accounts stay
		t.Errorf("Badger's tables take %d bytes after sealing, %d before", after, hot)
	}
	t.Logf("Badger's tables: %d bytes before sealing, %d after", hot, after)
	if files := segmentFiles(t, filepath.Join(n.Config.DataDir, "archive")); files != st.Segments {
		t.Fatalf("%d segment files for %d segments", files, st.Segments)
	}
	sameReads(t, "node", before, f.reads(t, n))
	// A stopped and restarted node reads its segments again (cold cache).
	if err := n.Stop(); err != nil {
		t.Fatal(err)
	}
	n2 := nodetest.StartNode(t, nodetest.WithDataDir(n.Config.DataDir))
	sameReads(t, "restarted node", before, f.reads(t, n2))
}

// Three nodes with local stores: each writes its own copy of every
// segment when it applies the seal, and each answers the same bytes.
func TestArchiveTieringCluster(t *testing.T) {
	nodes := nodetest.StartCluster(t, 3)
	f := writeTieringHistory(t, nodes[0])
	before := make([]map[string]string, len(nodes))
	for i, n := range nodes {
		checkFor(t, 10*time.Second, 50*time.Millisecond, func() error {
			before[i] = f.reads(t, n)
			if fmt.Sprint(before[i]) != fmt.Sprint(f.reads(t, nodes[0])) {
				return fmt.Errorf("%s has not applied everything yet", n.Config.NodeID)
			}
			return nil
		})
	}
	st := sealAll(t, nodes, f)
	// The last node loses its segment files before it reads any (as after
	// installing a snapshot): it copies them from another node as it reads.
	lost := nodes[2]
	for _, d := range []string{"d", "g"} {
		if err := os.RemoveAll(filepath.Join(lost.Config.DataDir, "archive", d)); err != nil {
			t.Fatal(err)
		}
	}
	for i, n := range nodes[:2] {
		if files := segmentFiles(t, filepath.Join(n.Config.DataDir, "archive")); files != st.Segments {
			t.Errorf("%s: %d segment files for %d segments", n.Config.NodeID, files, st.Segments)
		}
		sameReads(t, n.Config.NodeID, before[i], f.reads(t, n))
	}
	sameReads(t, lost.Config.NodeID+" without its segment files", before[2], f.reads(t, lost))
	if files := segmentFiles(t, filepath.Join(lost.Config.DataDir, "archive")); files != st.Segments {
		t.Errorf("%d segment files copied back for %d segments", files, st.Segments)
	}
	// The segment endpoint is for admins (alice, the first account, is
	// one), and serves only indexed keys.
	if code := api(t, nodes[0], f.tokens["bob"], "GET", "/admin/archive/segments/g/"+f.gid+"/1-2.seg", nil, nil); code != 403 {
		t.Errorf("a user read a segment object: %d", code)
	}
	if code := api(t, nodes[0], f.tokens["alice"], "GET", "/admin/archive/segments/g/"+f.gid+"/1-2.seg", nil, nil); code != 404 {
		t.Errorf("an unindexed segment key: %d", code)
	}
}

// With the S3 store (a real MinIO), segments go to the archive bucket,
// read back before the seal commits, and reads answer the same bytes.
func TestArchiveTieringS3(t *testing.T) {
	m := storetest.StartMinIO(t)
	n := nodetest.StartNode(t, withMinIO(m, "tier"), nodetest.WithConfig(func(c *node.Config) { c.S3ArchiveBucket = "tier-archive" }))
	f := writeTieringHistory(t, n)
	before := f.reads(t, n)
	st := sealAll(t, []*nodetest.Node{n}, f)
	mc, err := minio.New(m.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(m.AccessKey, m.SecretKey, "")})
	if err != nil {
		t.Fatal(err)
	}
	objects := 0
	for o := range mc.ListObjects(context.Background(), "tier-archive", minio.ListObjectsOptions{Recursive: true}) {
		if o.Err != nil {
			t.Fatal(o.Err)
		}
		if strings.HasPrefix(o.Key, "o/") {
			continue // the owner's mark of a segment
		}
		if !strings.HasSuffix(o.Key, ".seg") {
			t.Errorf("unexpected object %s", o.Key)
		}
		objects++
	}
	if objects != st.Segments {
		t.Fatalf("%d objects in the archive bucket for %d segments", objects, st.Segments)
	}
	if _, err := os.Stat(filepath.Join(n.Config.DataDir, "archive")); err == nil {
		t.Error("the S3 store wrote a local archive directory")
	}
	sameReads(t, "node", before, f.reads(t, n))
}

func segmentFiles(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".seg") {
			n++
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// Retention against a real MinIO: a group's retentionDays (set over
// HTTP) deletes its messages from both tiers, the objects of its dropped
// segments are collected, and direct conversations (no server
// retention) keep everything.
func TestArchiveRetentionS3(t *testing.T) {
	m := storetest.StartMinIO(t)
	n := nodetest.StartNode(t, withMinIO(m, "ret"), nodetest.WithConfig(func(c *node.Config) {
		c.S3ArchiveBucket = "ret-archive"
		c.ArchiveOrphanGrace = time.Second
		c.MediaSweepEvery = 100 * time.Millisecond
	}))
	f := writeTieringHistory(t, n)
	ctx := context.Background()
	// A photo bob sends to the group (its newest message) expires with it.
	photo := upload(t, n, f.tokens["bob"], "p.png", "image/png", pngBytes(t, halves(16, 16)))
	checkFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		if r, err := n.Media.Get(photo); err != nil || r.Status != media.StatusReady {
			return fmt.Errorf("photo %+v %v", r, err)
		}
		return nil
	})
	bob := mustConnectV5(t, n.MQTTURL, "bob", "tablet", f.tokens["bob"])
	if code, _ := bob.Pub(t, "group/"+f.gid+"/newMessage", 1, fmt.Sprintf(`{"cid":"photo","type":"media","media":{"id":%q}}`, photo)); code != 0 {
		t.Fatalf("photo PUBACK %#x", code)
	}
	if code, _, _ := get(t, n, f.tokens["carol"], "/media/"+photo, nil); code != 200 {
		t.Fatalf("carol reads the photo: %d", code)
	}
	mc, err := minio.New(m.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(m.AccessKey, m.SecretKey, "")})
	if err != nil {
		t.Fatal(err)
	}
	if o := <-mc.ListObjects(ctx, n.Config.S3ProcessedBucket, minio.ListObjectsOptions{Prefix: photo, Recursive: true}); o.Err != nil || o.Key == "" {
		t.Fatalf("the photo is not in %s: %v", n.Config.S3ProcessedBucket, o.Err)
	}
	later := time.Now().Add(31 * 24 * time.Hour) // past the 30-day hot age: everything but the newest is sealed
	if _, st, err := n.SweepArchive(ctx, later); err != nil || st.Segments == 0 {
		t.Fatalf("seal: %+v %v", st, err)
	}
	before := f.reads(t, n)
	// Only admins and the owner may set it; the value is checked.
	if code := api(t, n, f.tokens["bob"], "PATCH", "/user/groups/"+f.gid, map[string]any{"retentionDays": 1}, nil); code != 403 {
		t.Fatalf("a member set the retention: %d", code)
	}
	if code := api(t, n, f.tokens["alice"], "PATCH", "/user/groups/"+f.gid, map[string]any{"retentionDays": -1}, nil); code != 400 {
		t.Fatalf("retentionDays -1: %d", code)
	}
	var g struct {
		RetentionDays int `json:"retentionDays"`
	}
	if code := api(t, n, f.tokens["alice"], "PATCH", "/user/groups/"+f.gid, map[string]any{"retentionDays": 1}, &g); code != 200 || g.RetentionDays != 1 {
		t.Fatalf("set retention: %d %+v", code, g)
	}
	ex, _, err := n.SweepArchive(ctx, later)
	if err != nil || ex.Hot != 1 || ex.Segments == 0 || ex.Media != 1 {
		t.Fatalf("retention: %+v %v", ex, err)
	}
	if code, _, _ := get(t, n, f.tokens["carol"], "/media/"+photo, nil); code != 404 {
		t.Fatalf("carol reads the expired photo: %d", code)
	}
	var hist historyPage
	if code := api(t, n, f.tokens["carol"], "GET", "/chat/history?group="+f.gid, nil, &hist); code != 200 || len(hist.Messages) != 0 || hist.HasMore {
		t.Fatalf("group history after retention: %d %d messages", code, len(hist.Messages))
	}
	var convs struct {
		Conversations []struct {
			Group string `json:"group"`
		} `json:"conversations"`
	}
	api(t, n, f.tokens["carol"], "GET", "/chat/conversations", nil, &convs)
	for _, c := range convs.Conversations {
		if c.Group == f.gid {
			t.Fatal("the expired group is still in carol's conversation list")
		}
	}
	after := f.reads(t, n)
	for k, v := range before {
		if strings.Contains(k, "with=") && after[k] != v {
			t.Errorf("direct history changed: %s", k)
		}
	}
	// The dropped segments' objects go once the grace period is over.
	checkFor(t, 10*time.Second, 200*time.Millisecond, func() error {
		if _, _, err := n.SweepArchive(ctx, time.Now()); err != nil {
			return err
		}
		s, _ := n.Archive.Status()
		objects, group := 0, 0
		for o := range mc.ListObjects(ctx, "ret-archive", minio.ListObjectsOptions{Recursive: true}) {
			if strings.HasPrefix(o.Key, "o/") { // the owner's mark of a segment
				if strings.Contains(o.Key, "/g/") {
					group++
				}
				continue
			}
			objects++
			if strings.HasPrefix(o.Key, "g/") {
				group++
			}
		}
		if objects != s.SealedSegments || group != 0 {
			return fmt.Errorf("%d objects (%d of the group) for %d segments", objects, group, s.SealedSegments)
		}
		return nil
	})
	// The expired photo's objects go from every media bucket, then its record.
	checkFor(t, 20*time.Second, 100*time.Millisecond, func() error {
		for _, bucket := range []string{n.Config.S3RawBucket, n.Config.S3ProcessedBucket, n.Config.S3ColdBucket} {
			for o := range mc.ListObjects(ctx, bucket, minio.ListObjectsOptions{Prefix: photo, Recursive: true}) {
				if minio.ToErrorResponse(o.Err).Code == "NoSuchBucket" {
					break // never created: nothing went to that tier
				}
				if o.Err != nil {
					return o.Err
				}
				return fmt.Errorf("%s/%s is left", bucket, o.Key)
			}
		}
		if _, err := n.Media.Get(photo); !errors.Is(err, media.ErrNotFound) {
			return fmt.Errorf("the photo's record: %v", err)
		}
		return nil
	})
}

// A leader whose scheduled backups stop succeeding says so in /readyz
// (still ready) once the newest is older than twice --backup-every, and
// GET /admin/archive reports the backups.
func TestReadyzWarnsOfOverdueBackup(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "backups")
	n := nodetest.StartNode(t, nodetest.WithConfig(func(c *node.Config) {
		c.BackupEvery, c.BackupTo = time.Second, dir
	}))
	admin := n.NewUser(t, "alice") // the first account is an admin
	readyz := func() string {
		var raw json.RawMessage
		if code := api(t, n, "", "GET", "/readyz", nil, &raw); code != 200 {
			t.Fatalf("/readyz: %d %s", code, raw)
		}
		return string(raw)
	}
	var st struct {
		Backup struct {
			LastID  string `json:"lastId"`
			Overdue bool   `json:"overdue"`
		} `json:"backup"`
	}
	checkFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		if api(t, n, admin, "GET", "/admin/archive", nil, &st); st.Backup.LastID == "" {
			return fmt.Errorf("no backup yet: %+v", st)
		}
		return nil
	})
	if r := readyz(); strings.Contains(r, "warnings") {
		t.Fatalf("warning while backups succeed: %s", r)
	}
	// The target turns into a file: every backup fails from now on.
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir, []byte("not a directory"), 0o600); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		if r := readyz(); !strings.Contains(r, "backup overdue") {
			return fmt.Errorf("/readyz: %s", r)
		}
		return nil
	})
	if api(t, n, admin, "GET", "/admin/archive", nil, &st); !st.Backup.Overdue {
		t.Fatalf("/admin/archive: %+v", st)
	}
}
