package node_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
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
