package node_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
	"github.com/edgechat/edgechat/services/archive"
	"github.com/edgechat/edgechat/services/media"
)

type deleteAnswer struct {
	UserID   string    `json:"userId"`
	DeleteAt time.Time `json:"deleteAt"`
	Kept     []struct {
		What   string `json:"what"`
		Detail string `json:"detail"`
	} `json:"kept"`
}

type profileView struct {
	UserID      string `json:"userId"`
	DisplayName string `json:"displayName"`
	Deleted     bool   `json:"deleted"`
}

// erasedKeys lists the keys of the services' replicated state that still
// name uid, other than its two tombstones (the user ID stays reserved),
// and those outside the archive whose value names it (the archive's
// group messages keep their sender).
func erasedKeys(t *testing.T, n *nodetest.Node, uid string) []string {
	t.Helper()
	var left []string
	for _, prefix := range []string{"r/auth/", "r/user/", "r/push/", "r/media/", "r/arch/", "r/presence/"} {
		for k, v := range node.DumpState(t, n.Node, prefix) {
			if k == "r/auth/gone/"+uid || k == "r/user/gone/"+uid {
				continue
			}
			if strings.Contains(k, uid) {
				left = append(left, k)
			} else if prefix != "r/arch/" && (strings.Contains(v, `"`+uid+`"`) || strings.Contains(v, uid+"/")) {
				left = append(left, k+" (value)")
			}
		}
	}
	slices.Sort(left)
	return left
}

// waitErased waits until no key of n's replicated state names uid
// (erasedKeys).
func waitErased(t *testing.T, n *nodetest.Node, uid string, within time.Duration) {
	t.Helper()
	checkFor(t, within, 20*time.Millisecond, func() error {
		if left := erasedKeys(t, n, uid); len(left) > 0 {
			return fmt.Errorf("%d keys still name %s: %v", len(left), uid, left[:min(len(left), 5)])
		}
		return nil
	})
}

// bob deletes his account; alice and carol keep what is theirs.
func TestAccountDeletionErasesDirectHistoryKeepsGroups(t *testing.T) {
	const grace = 2 * time.Second
	n := nodetest.StartNode(t, withPush(t), nodetest.WithConfig(func(c *node.Config) {
		c.AccountDeleteGrace = grace
		c.MediaSweepEvery = 100 * time.Millisecond
	}))
	aliceTok, bobTok, carolTok := n.NewUser(t, "alice"), n.NewUser(t, "bob"), n.NewUser(t, "carol")

	// bob owns a group; carol is its admin, alice a member.
	g := createGroup(t, n, bobTok, "team", "alice", "carol")
	if st := api(t, n, bobTok, "POST", "/user/groups/"+g.GroupID+"/members", map[string]string{"uid": "carol", "role": "admin"}, nil); st != 200 {
		t.Fatalf("carol admin: %d", st)
	}

	// bob's social graph (carol blocks him once he added her) and push data.
	for _, c := range []struct{ tok, method, path string }{
		{bobTok, "POST", "/user/me/contacts"}, {aliceTok, "POST", "/user/me/contacts"}, {carolTok, "POST", "/user/me/blocks"},
	} {
		uid := "alice"
		if c.tok != bobTok {
			uid = "bob"
		}
		if st := api(t, n, c.tok, c.method, c.path, map[string]string{"uid": uid}, nil); st != 201 && st != 200 {
			t.Fatalf("%s %s: %d", c.method, c.path, st)
		}
	}
	if st := api(t, n, bobTok, "POST", "/user/me/devices", map[string]any{"device": "pixel", "platform": "fcm", "token": fcmToken("bob")}, nil); st != 200 {
		t.Fatalf("bob's device: %d", st)
	}
	if st := api(t, n, bobTok, "PUT", "/user/me/mutes/user:carol", nil, nil); st != 200 {
		t.Fatalf("bob's mute: %d", st)
	}
	// Chat over MQTT: direct messages both ways, group messages, a photo.
	bob := mustConnectV5(t, n.MQTTURL, "bob", "phone", bobTok)
	bob.MustSub(t, "user/bob/newMessage")
	alice := mustConnectV5(t, n.MQTTURL, "alice", "laptop", aliceTok)
	for i := 0; i < 3; i++ {
		if code, _ := alice.Pub(t, "user/bob/newMessage", 1, textMsg(fmt.Sprintf("a%d", i), "hi bob")); code != 0 {
			t.Fatalf("alice → bob: %#x", code)
		}
		if code, _ := bob.Pub(t, "user/alice/newMessage", 1, textMsg(fmt.Sprintf("b%d", i), "hi alice")); code != 0 {
			t.Fatalf("bob → alice: %#x", code)
		}
	}
	topic := "group/" + g.GroupID + "/newMessage"
	for _, p := range []struct {
		from string
		pub  func() byte
	}{
		{"bob", func() byte { c, _ := bob.Pub(t, topic, 1, textMsg("g-b1", "from bob 1")); return c }},
		{"alice", func() byte { c, _ := alice.Pub(t, topic, 1, textMsg("g-a1", "from alice")); return c }},
		{"bob", func() byte { c, _ := bob.Pub(t, topic, 1, textMsg("g-b2", "from bob 2")); return c }},
	} {
		if code := p.pub(); code != 0 {
			t.Fatalf("%s → group: %#x", p.from, code)
		}
	}
	photo := upload(t, n, bobTok, "p.png", "image/png", pngBytes(t, halves(16, 16)))
	checkFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if r, err := n.Media.Get(photo); err != nil || r.Status != media.StatusReady {
			return fmt.Errorf("photo %+v %v", r, err)
		}
		return nil
	})
	if code, _ := bob.Pub(t, "user/alice/newMessage", 1, fmt.Sprintf(`{"cid":"photo","type":"media","media":{"id":%q}}`, photo)); code != 0 {
		t.Fatalf("bob's photo: %#x", code)
	}
	var hist historyPage
	if st := api(t, n, aliceTok, "GET", "/chat/history?with=bob", nil, &hist); st != 200 || len(hist.Messages) != 7 {
		t.Fatalf("alice's history with bob before: %d %d", st, len(hist.Messages))
	}
	bobLogin, err := n.Auth.Login(context.Background(), "bob", nodetest.Password("bob"), "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}

	// What the erasure must remove is there (so that its absence later means something).
	named := map[string]int{}
	for _, k := range erasedKeys(t, n, "bob") {
		named[strings.Join(strings.SplitN(k, "/", 4)[:3], "/")]++
	}
	for _, p := range []string{"r/auth/acct", "r/auth/rtfam", "r/user/p", "r/user/c", "r/user/b", "r/user/ug", "r/user/g",
		"r/push/d", "r/push/t", "r/push/m", "r/media/q", "r/media/m", "r/arch/c", "r/arch/s", "r/arch/v", "r/arch/x", "r/arch/dedup"} {
		if named[p] == 0 {
			t.Fatalf("no key under %s/ names bob before the deletion: %v", p, named)
		}
	}

	// A wrong password: 403, and nothing changes. (The media index walk
	// the leader starts with the node writes its marks in the background:
	// waited for, so that they are not taken for the refusal's.)
	checkFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if _, ok := node.DumpState(t, n.Node, "r/media/ix/")["r/media/ix/done"]; !ok {
			return errors.New("the media index walk has not completed")
		}
		return nil
	})
	before := node.DumpState(t, n.Node, "r/")
	var e apiError
	if st := api(t, n, bobTok, "DELETE", "/user/me", map[string]string{"password": "not-bobs"}, &e); st != 403 || e.Error.Code != "forbidden" {
		t.Fatalf("wrong password: %d %+v", st, e)
	}
	if after := node.DumpState(t, n.Node, "r/"); !maps.Equal(before, after) {
		t.Fatalf("a refused deletion changed the state: %v", changedKeys(before, after))
	}
	if st := api(t, n, bobTok, "GET", "/user/me", nil, nil); st != 200 {
		t.Fatalf("bob after a refused deletion: %d", st)
	}
	if _, ok := bob.ServerDisconnect(); ok {
		t.Fatal("bob was disconnected by a refused deletion")
	}

	// The right password: 202, disabled at once.
	var ans deleteAnswer
	asked := time.Now()
	if st := api(t, n, bobTok, "DELETE", "/user/me", map[string]string{"password": nodetest.Password("bob")}, &ans); st != 202 {
		t.Fatalf("delete: %d %+v", st, ans)
	}
	if ans.UserID != "bob" || ans.DeleteAt.Before(asked.Add(grace-time.Second)) || ans.DeleteAt.After(time.Now().Add(grace)) {
		t.Fatalf("answer %+v", ans)
	}
	kept := map[string]bool{}
	for _, k := range ans.Kept {
		kept[k.What] = k.Detail != ""
	}
	if !kept["group_messages"] || !kept["user_id"] {
		t.Fatalf("kept %+v", ans.Kept)
	}
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if _, ok := bob.ServerDisconnect(); !ok {
			return errors.New("bob's session is still connected")
		}
		return nil
	})
	if st := api(t, n, bobTok, "GET", "/user/me", nil, nil); st != 401 {
		t.Fatalf("bob's token after deletion: %d", st)
	}
	if _, err := n.Auth.Login(context.Background(), "bob", nodetest.Password("bob"), "127.0.0.1"); err == nil {
		t.Fatal("bob logged in after deleting his account")
	}
	if _, err := n.Auth.Refresh(context.Background(), bobLogin.RefreshToken); err == nil {
		t.Fatal("bob refreshed after deleting his account")
	}
	if code := connack(t, n.MQTTAddr(), "bob/phone2", "bob", bobTok); code != 0x86 {
		t.Fatalf("bob's CONNECT after deletion: %#x, want 0x86", code)
	}
	if code, _ := alice.Pub(t, "user/bob/newMessage", 1, textMsg("late", "still there?")); code != 0x90 {
		t.Fatalf("a message to a deleted account: %#x, want 0x90 no such user", code)
	}

	// After the grace period: gone from alice's history, sync and list.
	checkFor(t, grace+20*time.Second, 50*time.Millisecond, func() error {
		if left := erasedKeys(t, n, "bob"); len(left) > 0 {
			return fmt.Errorf("%d keys still name bob: %v", len(left), left[:min(len(left), 5)])
		}
		return nil
	})
	if time.Since(asked) < grace {
		t.Fatalf("erased after %v, before the grace period of %v", time.Since(asked), grace)
	}
	if st := api(t, n, aliceTok, "GET", "/chat/history?with=bob", nil, &hist); st != 200 || len(hist.Messages) != 0 {
		t.Fatalf("alice's history with bob after: %d %+v", st, hist.Messages)
	}
	var convs conversations
	if st := api(t, n, aliceTok, "GET", "/chat/conversations", nil, &convs); st != 200 {
		t.Fatalf("conversations: %d", st)
	}
	for _, c := range convs.Conversations {
		if c.Peer == "bob" {
			t.Fatalf("alice still lists her conversation with bob: %+v", convs)
		}
	}
	var sync syncPage
	if st := api(t, n, aliceTok, "GET", "/chat/sync", nil, &sync); st != 200 {
		t.Fatalf("sync: %d", st)
	}
	groupFromBob := 0
	for _, m := range sync.Messages {
		if m.To == "bob" || (m.From == "bob" && m.To != "") {
			t.Fatalf("alice's sync still has a direct message with bob: %+v", m)
		}
		if m.From == "bob" {
			groupFromBob++
		}
	}
	if groupFromBob != 2 {
		t.Fatalf("alice's sync has %d of bob's group messages, want 2", groupFromBob)
	}

	// The group keeps bob's messages; their sender reads as "deleted user".
	if st := api(t, n, aliceTok, "GET", "/chat/history?group="+g.GroupID, nil, &hist); st != 200 || len(hist.Messages) != 3 {
		t.Fatalf("group history: %d %d", st, len(hist.Messages))
	}
	if hist.Messages[0].From != "bob" || hist.Messages[0].Body != "from bob 2" || hist.Messages[2].From != "bob" {
		t.Fatalf("group history %+v", hist.Messages)
	}
	var prof profileView
	if st := api(t, n, aliceTok, "GET", "/user/bob", nil, &prof); st != 200 || prof.DisplayName != "deleted user" || !prof.Deleted {
		t.Fatalf("bob's profile: %d %+v", st, prof)
	}
	var found struct {
		Users []profileView `json:"users"`
	}
	if st := api(t, n, aliceTok, "GET", "/user/search?q=bo", nil, &found); st != 200 || len(found.Users) != 0 {
		t.Fatalf("search finds the deleted user: %d %+v", st, found)
	}
	var grp group
	if st := api(t, n, aliceTok, "GET", "/user/groups/"+g.GroupID, nil, &grp); st != 200 || grp.Owner != "carol" || grp.MemberCount != 2 {
		t.Fatalf("group after: %d %+v", st, grp)
	}
	// Contacts, blocks, devices are gone; a contact cannot be re-added.
	var contacts struct {
		Contacts []profileView `json:"contacts"`
	}
	if st := api(t, n, aliceTok, "GET", "/user/me/contacts", nil, &contacts); st != 200 || len(contacts.Contacts) != 0 {
		t.Fatalf("alice's contacts: %d %+v", st, contacts)
	}
	if st := api(t, n, aliceTok, "POST", "/user/me/contacts", map[string]string{"uid": "bob"}, nil); st != 404 {
		t.Fatalf("adding the deleted user as a contact: %d", st)
	}
	if devs, err := n.Push.Devices("bob"); err != nil || len(devs) != 0 {
		t.Fatalf("bob's devices: %+v %v", devs, err)
	}
	// bob's photo (only in a direct conversation) goes, files too.
	checkFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		if _, err := n.Media.Get(photo); !errors.Is(err, media.ErrNotFound) {
			return fmt.Errorf("bob's photo: %v", err)
		}
		return nil
	})
	// The user ID stays reserved.
	if st := api(t, n, "", "POST", "/auth/register", map[string]string{"username": "bob", "password": "new-bob-password"}, &e); st != 409 || e.Error.Code != "username_taken" {
		t.Fatalf("registering bob again: %d %+v", st, e)
	}
	// alice and carol are untouched.
	if st := api(t, n, aliceTok, "GET", "/user/me", nil, nil); st != 200 {
		t.Fatalf("alice: %d", st)
	}
	if code, _ := alice.Pub(t, "user/carol/newMessage", 1, textMsg("to-carol", "hi")); code != 0 {
		t.Fatalf("alice → carol: %#x", code)
	}
}

// The erasure is one replicated decision: every node of a cluster ends
// with the same state, byte for byte, and none keeps the erased user's
// keys, whichever node took the request and whichever leads.
func TestAccountErasureIdenticalOnEveryNode(t *testing.T) {
	nodes := nodetest.StartCluster(t, 3, nodetest.WithConfig(func(c *node.Config) { c.AccountDeleteGrace = 0 }))
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	aliceTok := n1.NewUser(t, "alice")
	n1.NewUser(t, "bob")
	carolTok := n1.NewUser(t, "carol")
	bobTok := n3.Token(t, "bob")
	g := createGroup(t, n1, carolTok, "team", "alice", "bob")
	if st := api(t, n1, carolTok, "POST", "/user/me/contacts", map[string]string{"uid": "bob"}, nil); st != 201 {
		t.Fatalf("contact: %d", st)
	}
	alice := mustConnectV5(t, n2.MQTTURL, "alice", "laptop", aliceTok)
	bob := mustConnectV5(t, n3.MQTTURL, "bob", "phone", bobTok)
	// Enough direct messages that the erasure takes several steps.
	const each = 450
	for i := 0; i < each; i++ {
		if code, _ := alice.Pub(t, "user/bob/newMessage", 1, textMsg(fmt.Sprintf("a%d", i), "hi bob")); code != 0 {
			t.Fatalf("alice → bob: %#x", code)
		}
		if code, _ := bob.Pub(t, "user/alice/newMessage", 1, textMsg(fmt.Sprintf("b%d", i), "hi alice")); code != 0 {
			t.Fatalf("bob → alice: %#x", code)
		}
	}
	if code, _ := bob.Pub(t, "group/"+g.GroupID+"/newMessage", 1, textMsg("g1", "bye all")); code != 0 {
		t.Fatalf("bob → group: %#x", code)
	}
	if code, _ := alice.Pub(t, "user/carol/newMessage", 1, textMsg("c1", "hi carol")); code != 0 {
		t.Fatalf("alice → carol: %#x", code)
	}
	for _, n := range nodes {
		checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
			var h historyPage
			if st := api(t, n, aliceTok, "GET", "/chat/history?with=bob&limit=200", nil, &h); st != 200 || len(h.Messages) != 200 || !h.HasMore {
				return fmt.Errorf("%s: history %d %d", n.Config.NodeID, st, len(h.Messages))
			}
			return nil
		})
	}

	// Seal most of it on the leader: every node keeps its copy of each
	// segment (local stores) and the same index.
	// (On the node that leads when it runs: leadership may move on a
	// loaded machine, and a sweep that lost it seals nothing; the next
	// leader's sweep goes on.)
	sealed := 0
	checkFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		for _, n := range nodes {
			if !n.IsLeader() {
				continue
			}
			st, err := n.Archive.SealOnce(context.Background(), archive.SealConfig{MaxMessages: 64, HotAge: time.Millisecond}, time.Now())
			sealed += st.Segments
			if err != nil {
				return fmt.Errorf("seal on %s: %+v %w", n.Config.NodeID, st, err)
			}
		}
		if sealed < 5 {
			return fmt.Errorf("%d segments sealed", sealed)
		}
		return nil
	})
	for _, n := range nodes {
		checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
			if len(node.DumpState(t, n.Node, "r/arch/sg/d:alice:bob/")) < 5 {
				return fmt.Errorf("%s: the seals are not applied yet", n.Config.NodeID)
			}
			return nil
		})
	}
	if st := api(t, n3, bobTok, "DELETE", "/user/me", map[string]string{"password": nodetest.Password("bob")}, nil); st != 202 {
		t.Fatalf("delete on n3: %d", st)
	}
	for _, n := range nodes {
		checkFor(t, 30*time.Second, 50*time.Millisecond, func() error {
			if left := erasedKeys(t, n, "bob"); len(left) > 0 {
				return fmt.Errorf("%s: %d keys still name bob: %q", n.Config.NodeID, len(left), left)
			}
			return nil
		})
	}
	// Every node holds the same state (once the last entry applied everywhere).
	prefixes := []string{"r/auth/", "r/user/", "r/push/", "r/media/", "r/arch/", "r/presence/"}
	dump := func(n *nodetest.Node) map[string]string {
		out := map[string]string{}
		for _, p := range prefixes {
			maps.Copy(out, node.DumpState(t, n.Node, p))
		}
		return out
	}
	checkFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		want := dump(n1)
		for _, n := range nodes[1:] {
			if got := dump(n); !maps.Equal(want, got) {
				return fmt.Errorf("%s holds %d keys, n1 %d, or values differ", n.Config.NodeID, len(got), len(want))
			}
		}
		return nil
	})
	steps := 0.0
	for _, n := range nodes {
		mfs, err := n.Registry().Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "edgechat_account_erase_steps_total" {
				steps += mf.GetMetric()[0].GetCounter().GetValue()
			}
		}
	}
	if steps < 2 {
		t.Fatalf("the erasure took %v steps; the test wants several", steps)
	}
	// What stays is the same everywhere too: the group message, alice's
	// conversation with carol, the tombstone profile.
	for _, n := range nodes {
		var h historyPage
		if st := api(t, n, aliceTok, "GET", "/chat/history?group="+g.GroupID, nil, &h); st != 200 || len(h.Messages) != 1 || h.Messages[0].From != "bob" {
			t.Fatalf("%s: group history %d %+v", n.Config.NodeID, st, h.Messages)
		}
		if st := api(t, n, aliceTok, "GET", "/chat/history?with=bob", nil, &h); st != 200 || len(h.Messages) != 0 {
			t.Fatalf("%s: history with bob %d %d", n.Config.NodeID, st, len(h.Messages))
		}
		if st := api(t, n, aliceTok, "GET", "/chat/history?with=carol", nil, &h); st != 200 || len(h.Messages) != 1 {
			t.Fatalf("%s: history with carol %d %d", n.Config.NodeID, st, len(h.Messages))
		}
		var p profileView
		if st := api(t, n, aliceTok, "GET", "/user/bob", nil, &p); st != 200 || p.DisplayName != "deleted user" {
			t.Fatalf("%s: bob's profile %d %+v", n.Config.NodeID, st, p)
		}
		if st := api(t, n, bobTok, "GET", "/user/me", nil, nil); st != 401 {
			t.Fatalf("%s: bob's token %d", n.Config.NodeID, st)
		}
	}
}

// A restart during the grace period keeps the account disabled, and the
// erasure still happens when it is due.
func TestAccountDeletionSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	const grace = 3 * time.Second
	opts := []nodetest.Option{nodetest.WithDataDir(dir), nodetest.WithConfig(func(c *node.Config) { c.AccountDeleteGrace = grace })}
	n := nodetest.StartNode(t, opts...)
	aliceTok, bobTok := n.NewUser(t, "alice"), n.NewUser(t, "bob")
	if st := api(t, n, aliceTok, "POST", "/chat/messages", map[string]string{"to": "bob", "cid": "c1", "type": "text", "body": "hi"}, nil); st != 201 {
		t.Fatalf("send: %d", st)
	}
	if st := api(t, n, bobTok, "DELETE", "/user/me", map[string]string{"password": nodetest.Password("bob")}, nil); st != 202 {
		t.Fatalf("delete: %d", st)
	}
	if err := n.Stop(); err != nil {
		t.Fatal(err)
	}
	n = nodetest.StartNode(t, opts...)
	if st := api(t, n, bobTok, "GET", "/user/me", nil, nil); st != 401 {
		t.Fatalf("bob's token after a restart: %d", st)
	}
	if _, err := n.Auth.Login(context.Background(), "bob", nodetest.Password("bob"), "127.0.0.1"); err == nil {
		t.Fatal("bob logged in after a restart")
	}
	checkFor(t, grace+20*time.Second, 50*time.Millisecond, func() error {
		if left := erasedKeys(t, n, "bob"); len(left) > 0 {
			return fmt.Errorf("%d keys still name bob", len(left))
		}
		return nil
	})
	var h historyPage
	if st := api(t, n, aliceTok, "GET", "/chat/history?with=bob", nil, &h); st != 200 || len(h.Messages) != 0 {
		t.Fatalf("history: %d %d", st, len(h.Messages))
	}
}

// segmentPaths lists the segment files under dir.
func segmentPaths(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".seg") {
			out = append(out, p)
		}
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Both tiers: a direct conversation partly sealed into segments (the
// local archive store) is erased hot and sealed; the sealer then
// collects its segment objects, and the other conversations' segments
// and reads stay.
func TestAccountErasureBothTiers(t *testing.T) {
	n := nodetest.StartNode(t, nodetest.WithConfig(func(c *node.Config) { c.AccountDeleteGrace = 0 }))
	aliceTok, bobTok := n.NewUser(t, "alice"), n.NewUser(t, "bob")
	n.NewUser(t, "carol")
	for i := 0; i < 30; i++ {
		for _, m := range []struct{ tok, to string }{{aliceTok, "bob"}, {bobTok, "alice"}, {aliceTok, "carol"}} {
			if st := api(t, n, m.tok, "POST", "/chat/messages", map[string]string{"to": m.to, "cid": fmt.Sprintf("c%d-%s", i, m.to), "type": "text", "body": "hi"}, nil); st != 201 {
				t.Fatalf("send: %d", st)
			}
		}
	}
	var carolBefore historyPage
	api(t, n, aliceTok, "GET", "/chat/history?with=carol&limit=100", nil, &carolBefore)
	ctx := context.Background()
	st, err := n.Archive.SealOnce(ctx, archive.SealConfig{MaxMessages: 8, HotAge: time.Millisecond}, time.Now())
	if err != nil || st.Segments < 4 {
		t.Fatalf("seal: %+v %v", st, err)
	}
	dir := filepath.Join(n.Config.DataDir, "archive")
	var bobFiles, otherFiles []string
	for _, p := range segmentPaths(t, dir) {
		if strings.Contains(p, "bob") {
			bobFiles = append(bobFiles, p)
		} else {
			otherFiles = append(otherFiles, p)
		}
	}
	if len(bobFiles) == 0 || len(otherFiles) == 0 {
		t.Fatalf("segments: bob's %v, others %v", bobFiles, otherFiles)
	}
	var h historyPage
	if st := api(t, n, aliceTok, "GET", "/chat/history?with=bob&limit=100", nil, &h); st != 200 || len(h.Messages) != 60 {
		t.Fatalf("history with bob across tiers: %d %d", st, len(h.Messages))
	}

	if st := api(t, n, bobTok, "DELETE", "/user/me", map[string]string{"password": nodetest.Password("bob")}, nil); st != 202 {
		t.Fatalf("delete: %d", st)
	}
	checkFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		if left := erasedKeys(t, n, "bob"); len(left) > 0 {
			return fmt.Errorf("%d keys still name bob: %v", len(left), left[:min(3, len(left))])
		}
		return nil
	})
	if st := api(t, n, aliceTok, "GET", "/chat/history?with=bob&limit=100", nil, &h); st != 200 || len(h.Messages) != 0 {
		t.Fatalf("history with bob after: %d %d", st, len(h.Messages))
	}
	var sync syncPage
	if st := api(t, n, aliceTok, "GET", "/chat/sync", nil, &sync); st != 200 || len(sync.Messages) != 30 {
		t.Fatalf("alice's sync after: %d %d messages, want her 30 to carol", st, len(sync.Messages))
	}
	// The sealer collects the objects no index entry references any more,
	// once it has seen them unreferenced for the grace period.
	if _, err := n.Archive.SealOnce(ctx, archive.SealConfig{HotAge: time.Millisecond, OrphanGrace: time.Hour}, time.Now().Add(2*time.Hour)); err != nil {
		t.Fatalf("first sweep: %v", err)
	}
	if st, err := n.Archive.SealOnce(ctx, archive.SealConfig{HotAge: time.Millisecond, OrphanGrace: time.Hour}, time.Now().Add(3*time.Hour)); err != nil || st.Orphans < len(bobFiles) {
		t.Fatalf("collection: %+v %v", st, err)
	}
	for _, p := range segmentPaths(t, dir) {
		if strings.Contains(p, "bob") {
			t.Fatalf("segment %s of an erased conversation left", p)
		}
	}
	for _, p := range otherFiles {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("another conversation's segment: %v", err)
		}
	}
	var carolAfter historyPage
	if st := api(t, n, aliceTok, "GET", "/chat/history?with=carol&limit=100", nil, &carolAfter); st != 200 || len(carolAfter.Messages) != len(carolBefore.Messages) {
		t.Fatalf("history with carol: %d %d, want %d", st, len(carolAfter.Messages), len(carolBefore.Messages))
	}
}

// A deleted account is disabled at once: during the grace period nobody
// can add it to a group or to their contacts (it is an unknown user, as
// for messages), where it would sit as a member who never reads until
// the erase took it out days later.
func TestDeletedAccountCannotBeAddedDuringGrace(t *testing.T) {
	n := nodetest.StartNode(t)
	aliceTok, bobTok := n.NewUser(t, "alice"), n.NewUser(t, "bob")
	n.NewUser(t, "carol")
	g := createGroup(t, n, aliceTok, "team", "carol")
	var ans deleteAnswer
	if st := api(t, n, bobTok, "DELETE", "/user/me", map[string]string{"password": nodetest.Password("bob")}, &ans); st != 202 {
		t.Fatalf("delete: %d %+v", st, ans)
	}
	for _, c := range []struct {
		method, path string
		body         any
		status       int
		code         string
	}{
		{"POST", "/user/groups", map[string]any{"name": "g", "members": []string{"carol", "bob"}}, 400, "unknown_users"},
		{"POST", "/user/groups/" + g.GroupID + "/members", map[string]string{"uid": "bob"}, 400, "unknown_users"},
		{"POST", "/user/me/contacts", map[string]string{"uid": "bob"}, 404, "not_found"},
	} {
		var e apiError
		if st := api(t, n, aliceTok, c.method, c.path, c.body, &e); st != c.status || e.Error.Code != c.code {
			t.Errorf("%s %s with the deleted bob: %d %+v, want %d %s", c.method, c.path, st, e, c.status, c.code)
		}
	}
	var after group
	if st := api(t, n, aliceTok, "GET", "/user/groups/"+g.GroupID, nil, &after); st != 200 || after.MemberCount != 2 {
		t.Fatalf("the group after: %d %+v", st, after)
	}
	var found struct {
		Users []profileView `json:"users"`
	}
	if st := api(t, n, aliceTok, "GET", "/user/search?q=b", nil, &found); st != 200 || len(found.Users) != 0 {
		t.Fatalf("search finds the deleted bob during the grace: %d %+v", st, found)
	}
}

// changedKeys lists the keys added, removed or changed between two dumps.
func changedKeys(before, after map[string]string) []string {
	var out []string
	for k, v := range after {
		if old, ok := before[k]; !ok || old != v {
			out = append(out, k)
		}
	}
	for k := range before {
		if _, ok := after[k]; !ok {
			out = append(out, k+" (removed)")
		}
	}
	slices.Sort(out)
	return out
}
