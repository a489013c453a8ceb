package node_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
	"github.com/edgechat/edgechat/services/archive"
	"github.com/edgechat/edgechat/services/media"
)

// mediaFiles lists the files under dir whose name starts with id (the
// processed file and its preview, in every tier).
func mediaFiles(t *testing.T, dir, id string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasPrefix(d.Name(), id) {
			out = append(out, p)
		}
		return nil
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	return out
}

// Retention deletes the media of expired messages (issue 11): on one
// node with the local store, media sent only in expired messages (a
// direct one, sealed, and a group one) answers 404 to everyone, its
// uploader included, and its files leave the disk with its record; a
// media also sent in a newer message of the same conversation, or in
// another conversation, stays readable there.
func TestRetentionDeletesMediaOfExpiredMessages(t *testing.T) {
	n := nodetest.StartNode(t, nodetest.WithConfig(func(c *node.Config) {
		c.MediaSweepEvery = 100 * time.Millisecond
		c.ArchiveHotAge = time.Hour
		c.RetentionDays = 1
		c.RetentionStraddlerLag = -1 // the straddler rewritten at once
	}))
	ctx := context.Background()
	aliceTok, bobTok, carolTok := n.NewUser(t, "alice"), n.NewUser(t, "bob"), n.NewUser(t, "carol")
	g := createGroup(t, n, aliceTok, "team", "bob", "carol")
	alice := mustConnectV5(t, n.MQTTURL, "alice", "phone", aliceTok)
	photos := map[string]string{}
	for i, name := range []string{"directOnly", "resent", "alsoGroup", "groupOnly"} {
		photos[name] = upload(t, n, aliceTok, name+".png", "image/png", pngBytes(t, halves(16+i, 16)))
	}
	checkFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		for name, id := range photos {
			if r, err := n.Media.Get(id); err != nil || r.Status != media.StatusReady {
				return fmt.Errorf("%s: %+v %v", name, r, err)
			}
		}
		return nil
	})
	send := func(topic, cid, photo string) {
		t.Helper()
		if code, _ := alice.Pub(t, topic, 1, fmt.Sprintf(`{"cid":%q,"type":"media","media":{"id":%q}}`, cid, photos[photo])); code != 0 {
			t.Fatalf("%s: PUBACK %#x", cid, code)
		}
	}
	toBob, toGroup := "user/bob/newMessage", "group/"+g.GroupID+"/newMessage"
	send(toBob, "old1", "directOnly")
	send(toBob, "old2", "resent")
	send(toBob, "old3", "alsoGroup")
	send(toGroup, "old4", "groupOnly")
	time.Sleep(20 * time.Millisecond)
	mid := time.Now()
	time.Sleep(20 * time.Millisecond)
	send(toBob, "new2", "resent")
	send(toGroup, "new3", "alsoGroup")
	if code, _ := alice.Pub(t, toGroup, 1, textMsg("new5", "the newest")); code != 0 {
		t.Fatalf("PUBACK %#x", code)
	}
	// Seal what is older than an hour as of two hours from now: every
	// message but each conversation's newest.
	if _, st, err := n.SweepArchive(ctx, time.Now().Add(2*time.Hour)); err != nil || st.Messages == 0 {
		t.Fatalf("seal: %+v %v", st, err)
	}
	// A day after mid: the messages before it expire.
	ex, _, err := n.SweepArchive(ctx, mid.Add(24*time.Hour))
	if err != nil || ex.Media != 4 || ex.Dedup != 4 {
		t.Fatalf("retention: %+v %v", ex, err)
	}
	var hist historyPage
	if code := api(t, n, bobTok, "GET", "/chat/history?with=alice", nil, &hist); code != 200 || len(hist.Messages) != 1 || hist.Messages[0].CID != "new2" {
		t.Fatalf("bob's history with alice: %d %+v", code, hist.Messages)
	}
	for _, c := range []struct {
		photo, who, tok string
		code            int
	}{
		{"directOnly", "bob", bobTok, 404}, {"directOnly", "alice", aliceTok, 404},
		{"groupOnly", "carol", carolTok, 404}, {"groupOnly", "alice", aliceTok, 404},
		{"resent", "bob", bobTok, 200}, {"resent", "carol", carolTok, 404},
		{"alsoGroup", "carol", carolTok, 200}, {"alsoGroup", "bob", bobTok, 200}, {"alsoGroup", "alice", aliceTok, 200},
	} {
		if code, _, _ := get(t, n, c.tok, "/media/"+photos[c.photo], nil); code != c.code {
			t.Errorf("%s reads %s: %d, want %d", c.who, c.photo, code, c.code)
		}
	}
	dir := filepath.Join(n.Config.DataDir, "media")
	checkFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		for _, name := range []string{"directOnly", "groupOnly"} {
			if files := mediaFiles(t, dir, photos[name]); len(files) != 0 {
				return fmt.Errorf("%s: files left: %v", name, files)
			}
			if _, err := n.Media.Get(photos[name]); !errors.Is(err, media.ErrNotFound) {
				return fmt.Errorf("%s: record left: %v", name, err)
			}
		}
		return nil
	})
	for _, name := range []string{"resent", "alsoGroup"} {
		if files := mediaFiles(t, dir, photos[name]); len(files) == 0 {
			t.Errorf("%s: its files went", name)
		}
		if code, _, body := get(t, n, bobTok, "/media/"+photos[name], nil); code != 200 || len(body) == 0 {
			t.Errorf("bob reads %s after the sweep: %d", name, code)
		}
	}
}

// Retention with media in a 3-node cluster (local stores): the leader
// sweeps; the media only expired messages carried answers 404 on every
// node, its files leave the node that holds them and its record every
// node; the media a newer message carries is served by every node; and
// every node holds the same archive and media state.
func TestRetentionMediaIdenticalOnEveryNode(t *testing.T) {
	nodes := nodetest.StartCluster(t, 3, nodetest.WithConfig(func(c *node.Config) {
		c.MediaSweepEvery = 100 * time.Millisecond
		c.RetentionDays = 1
	}))
	ctx := context.Background()
	n1, n2 := nodes[0], nodes[1]
	aliceTok := n1.NewUser(t, "alice")
	n1.NewUser(t, "bob")
	bobTok := n2.Token(t, "bob")
	alice := mustConnectV5(t, n2.MQTTURL, "alice", "laptop", aliceTok)
	old := upload(t, n2, aliceTok, "old.png", "image/png", pngBytes(t, halves(16, 16)))
	kept := upload(t, n2, aliceTok, "kept.png", "image/png", pngBytes(t, halves(17, 16)))
	checkFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		for _, id := range []string{old, kept} {
			if r, err := n2.Media.Get(id); err != nil || r.Status != media.StatusReady {
				return fmt.Errorf("%s: %+v %v", id, r, err)
			}
		}
		return nil
	})
	send := func(cid, id string) {
		t.Helper()
		if code, _ := alice.Pub(t, "user/bob/newMessage", 1, fmt.Sprintf(`{"cid":%q,"type":"media","media":{"id":%q}}`, cid, id)); code != 0 {
			t.Fatalf("%s: PUBACK %#x", cid, code)
		}
	}
	send("p1", old)
	send("p2", kept)
	for i := range 30 {
		if code, _ := alice.Pub(t, "user/bob/newMessage", 1, textMsg(fmt.Sprintf("t%d", i), "words")); code != 0 {
			t.Fatalf("PUBACK %#x", code)
		}
	}
	time.Sleep(20 * time.Millisecond)
	mid := time.Now()
	time.Sleep(20 * time.Millisecond)
	send("p3", kept)
	var leader *nodetest.Node
	for _, n := range nodes {
		checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
			var h historyPage
			if st := api(t, n, bobTok, "GET", "/chat/history?with=alice&limit=100", nil, &h); st != 200 || len(h.Messages) != 33 {
				return fmt.Errorf("%s: history %d %d", n.Config.NodeID, st, len(h.Messages))
			}
			return nil
		})
		if n.IsLeader() {
			leader = n
		}
	}
	if leader == nil {
		t.Fatal("no leader")
	}
	// Sealed first (every node keeps its copy of each segment), then expired.
	if st, err := leader.Archive.SealOnce(ctx, archive.SealConfig{MaxMessages: 8, HotAge: time.Millisecond}, time.Now()); err != nil || st.Segments < 3 {
		t.Fatalf("seal: %+v %v", st, err)
	}
	ex, _, err := leader.SweepArchive(ctx, mid.Add(24*time.Hour))
	if err != nil || ex.Media != 2 || ex.Dedup != 32 {
		t.Fatalf("retention: %+v %v", ex, err)
	}
	for _, n := range nodes {
		checkFor(t, 20*time.Second, 50*time.Millisecond, func() error {
			if _, err := n.Media.Get(old); !errors.Is(err, media.ErrNotFound) {
				return fmt.Errorf("%s: the expired media's record: %v", n.Config.NodeID, err)
			}
			if files := mediaFiles(t, filepath.Join(n.Config.DataDir, "media"), old); len(files) != 0 {
				return fmt.Errorf("%s: files left: %v", n.Config.NodeID, files)
			}
			return nil
		})
		for _, c := range []struct {
			id, tok string
			code    int
		}{{old, bobTok, 404}, {old, aliceTok, 404}, {kept, bobTok, 200}, {kept, aliceTok, 200}} {
			if code, _, _ := get(t, n, c.tok, "/media/"+c.id, nil); code != c.code {
				t.Errorf("%s: GET /media/%s: %d, want %d", n.Config.NodeID, c.id, code, c.code)
			}
		}
		var h historyPage
		if st := api(t, n, bobTok, "GET", "/chat/history?with=alice", nil, &h); st != 200 || len(h.Messages) != 1 || h.Messages[0].CID != "p3" {
			t.Fatalf("%s: history after retention %d %+v", n.Config.NodeID, st, h.Messages)
		}
	}
	dump := func(n *nodetest.Node) map[string]string {
		out := map[string]string{}
		for _, p := range []string{"r/media/", "r/arch/"} {
			maps.Copy(out, node.DumpState(t, n.Node, p))
		}
		return out
	}
	checkFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		want := dump(nodes[0])
		for _, n := range nodes[1:] {
			if got := dump(n); !maps.Equal(want, got) {
				return fmt.Errorf("%s holds %d keys, %s %d, or values differ", n.Config.NodeID, len(got), nodes[0].Config.NodeID, len(want))
			}
		}
		return nil
	})
}
