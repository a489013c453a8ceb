package archive

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/cluster/fsm/fsmtest"
	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/internal/wire"
)

// The fixture in testdata/oldformat was written by the archive as it was
// at commit 42b79dc (every message body under m/{id}, c/ holding the
// sender, s/ and dedup/ holding 8-byte IDs): an FSM snapshot of a store
// built by oldFormatScenario, and the answers that version gave
// (answers.json). A newer version must restore that snapshot and give
// the same answers, then keep storing on top of it.
//
// EDGECHAT_WRITE_OLDFORMAT=1 rewrites the fixture with the code under
// test: only ever do that on the version the fixture stands for.
const oldFormatDir = "testdata/oldformat"

// oldFormatScenario stores direct messages both ways, to oneself, a
// retried cid, read cursors and a group's messages.
func oldFormatScenario(t *testing.T, e *env) {
	t.Helper()
	e.groups.add("g1", "alice", "bob", "carol")
	ctx := context.Background()
	for i := range 7 {
		e.send(t, "alice", "bob", fmt.Sprint("ab", i))
		if i%2 == 0 {
			e.send(t, "bob", "alice", fmt.Sprint("ba", i))
		}
	}
	e.send(t, "alice", "alice", "self0")
	e.send(t, "bob", "carol", "bc0")
	if _, _, dup, err := e.svc.SendDirect(ctx, "alice", "bob", text("ab3", "retried")); err != nil || !dup {
		t.Fatalf("retry: dup %v, %v", dup, err)
	}
	for i := range 5 {
		e.sendGroup(t, []string{"alice", "bob", "carol"}[i%3], "g1", fmt.Sprint("g", i))
	}
	hist, _, err := e.svc.historyPage(context.Background(), directConv("alice", "bob"), nil, 100)
	if err != nil {
		t.Fatal(err)
	}
	var mid struct{ ID snowflake.ID }
	if err := json.Unmarshal(hist[len(hist)/2], &mid); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.MarkRead(ctx, "bob", "alice", mid.ID); err != nil {
		t.Fatal(err)
	}
	e.send(t, "carol", "bob", "cb0")
	e.sendGroup(t, "carol", "g1", "g5")
}

// oldFormatAnswers is what a store answers to every read the archive
// serves: history and sync pages (small pages, to cross page ends),
// conversation lists, unread totals, messages by ID and the highest ID.
type oldFormatAnswers struct {
	History       map[string][]string
	Sync          map[string][]string
	Conversations map[string][]string
	UnreadTotal   map[string]int
	ByID          map[string]string
	HighestID     snowflake.ID
}

func collectAnswers(t *testing.T, e *env) oldFormatAnswers {
	t.Helper()
	a := oldFormatAnswers{History: map[string][]string{}, Sync: map[string][]string{},
		Conversations: map[string][]string{}, UnreadTotal: map[string]int{}, ByID: map[string]string{}}
	for _, conv := range []string{directConv("alice", "bob"), directConv("alice", "alice"),
		directConv("bob", "carol"), groupConv("g1")} {
		var before *snowflake.ID
		for {
			msgs, more, err := e.svc.historyPage(context.Background(), conv, before, 3)
			if err != nil {
				t.Fatalf("history %s: %v", conv, err)
			}
			for _, m := range msgs {
				a.History[conv] = append(a.History[conv], string(m))
				var id struct{ ID snowflake.ID }
				if err := json.Unmarshal(m, &id); err != nil {
					t.Fatal(err)
				}
				a.ByID[id.ID.String()] = ""
				before = &id.ID
			}
			if !more {
				break
			}
		}
	}
	for _, uid := range []string{"alice", "bob", "carol", "dave"} {
		var since uint64
		for {
			msgs, next, more, err := e.svc.syncPage(context.Background(), uid, since, 4)
			if err != nil {
				t.Fatalf("sync %s: %v", uid, err)
			}
			for _, m := range msgs {
				a.Sync[uid] = append(a.Sync[uid], string(m))
			}
			a.Sync[uid] = append(a.Sync[uid], fmt.Sprint("next ", next))
			since = next
			if !more {
				break
			}
		}
		convs, _, err := e.svc.conversations(context.Background(), uid, 100)
		if err != nil {
			t.Fatalf("conversations %s: %v", uid, err)
		}
		for _, c := range convs {
			a.Conversations[uid] = append(a.Conversations[uid],
				fmt.Sprintf("peer=%s group=%s unread=%d last=%s", c.Peer, c.Group, c.Unread, c.Last))
		}
		if a.UnreadTotal[uid], err = e.svc.UnreadTotal(uid); err != nil {
			t.Fatal(err)
		}
	}
	ids := make([]string, 0, len(a.ByID))
	for id := range a.ByID {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, s := range ids {
		id, err := snowflake.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		p, ok, err := e.svc.Message(id)
		if err != nil || !ok {
			t.Fatalf("Message(%s) = %v, %v", s, ok, err)
		}
		a.ByID[s] = string(p)
	}
	var err error
	if a.HighestID, err = e.svc.HighestID(); err != nil {
		t.Fatal(err)
	}
	return a
}

// loadOldFormat reads the old layout's snapshot and its answers.
func loadOldFormat(t *testing.T) ([]byte, oldFormatAnswers) {
	t.Helper()
	snap, err := os.ReadFile(filepath.Join(oldFormatDir, "snapshot.bin"))
	if err != nil {
		t.Fatal(err)
	}
	golden, err := os.ReadFile(filepath.Join(oldFormatDir, "answers.json"))
	if err != nil {
		t.Fatal(err)
	}
	var want oldFormatAnswers
	if err := json.Unmarshal(golden, &want); err != nil {
		t.Fatal(err)
	}
	return snap, want
}

// restoreOldFormat is a service on the old layout's store.
func restoreOldFormat(t *testing.T, snap []byte, want oldFormatAnswers, opts ...envOpt) *env {
	t.Helper()
	e := newEnv(t, append([]envOpt{withGroups(), withIDs(&seqIDs{next: int64(want.HighestID) + 1, step: 1})}, opts...)...)
	e.groups.add("g1", "alice", "bob", "carol")
	fsmtest.Restore(t, e.f, snap)
	applied, err := e.f.AppliedIndex()
	if err != nil {
		t.Fatal(err)
	}
	e.prop.SetIndex(applied)
	return e
}

// Sealing a store of the old layout changes no answer: history, sync,
// lookups by ID, and the unread counts of direct conversations (kept
// before their messages leave the hot history).
func TestOldFormatStoreSeals(t *testing.T) {
	snap, want := loadOldFormat(t)
	segs, _ := localSegments(t, false)
	e := restoreOldFormat(t, snap, want, withSegments(segs))
	st, err := e.svc.SealOnce(context.Background(), SealConfig{MaxMessages: 2}, time.Now())
	if err != nil || st.Segments == 0 || st.Stale != 0 {
		t.Fatalf("sealing the old layout: %+v %v", st, err)
	}
	got := collectAnswers(t, e)
	for _, part := range []struct {
		name      string
		got, want any
	}{{"history", got.History, want.History}, {"sync", got.Sync, want.Sync}, {"by ID", got.ByID, want.ByID}} {
		if gb, wb := fmt.Sprint(part.got), fmt.Sprint(part.want); gb != wb {
			t.Errorf("%s after sealing the old layout:\n got %s\nwant %s", part.name, gb, wb)
		}
	}
	for uid, convs := range want.Conversations {
		for i, c := range convs {
			if strings.Contains(c, "group=g1") {
				continue // a group of the old layout counts over its hot history
			}
			if i >= len(got.Conversations[uid]) || got.Conversations[uid][i] != c {
				t.Errorf("%s's conversations after sealing: %q, want %q", uid, got.Conversations[uid], convs)
			}
		}
	}
}

// A store written by the old layout, restored from its snapshot, gives
// the old version's answers, and messages stored on top of it (in the
// new layout) join its history, sync and unread counts.
func TestOldFormatStoreReads(t *testing.T) {
	if os.Getenv("EDGECHAT_WRITE_OLDFORMAT") == "1" {
		e := newEnv(t, withGroups())
		oldFormatScenario(t, e)
		writeFixture(t, e)
		return
	}
	snap, want := loadOldFormat(t)
	e := restoreOldFormat(t, snap, want)
	got := collectAnswers(t, e)
	gb, _ := json.MarshalIndent(got, "", " ")
	wb, _ := json.MarshalIndent(want, "", " ")
	if !bytes.Equal(gb, wb) {
		t.Fatalf("answers from the old store differ:\n got %s\nwant %s", gb, wb)
	}

	// A sealer reading the old layout gets the envelopes history serves
	// (issue 11: sealRange resolves m/ bodies).
	for conv, page := range want.History {
		all, err := e.svc.sealRange(conv, 0, want.HighestID, 1000)
		if err != nil || len(all) != len(page) {
			t.Fatalf("sealRange(%s) of the old layout: %d messages, want %d, %v", conv, len(all), len(page), err)
		}
		for i, m := range all {
			body, err := expandSealed(conv, snowflake.ID(m.ID), m.Body)
			if err != nil || string(body) != page[len(page)-1-i] {
				t.Fatalf("sealRange(%s)[%d] = %s (%v), history has %s", conv, i, body, err, page[len(page)-1-i])
			}
		}
	}

	// A retry of a cid stored in the old layout is still a duplicate and
	// hands back the original.
	_, p, dup, err := e.svc.SendDirect(context.Background(), "alice", "bob", text("ab3", "again"))
	if err != nil || !dup || !bytes.Contains(p, []byte(`"hi ab3"`)) {
		t.Fatalf("retry of an old cid: dup %v, %s, %v", dup, p, err)
	}
	_, p, dup, err = e.svc.SendGroup(context.Background(), "bob", "g1", text("g1", "again"))
	if err != nil || !dup || !bytes.Contains(p, []byte(`"hi g1"`)) {
		t.Fatalf("retry of an old group cid: dup %v, %s, %v", dup, p, err)
	}

	// New messages on top: history, sync and unread counts continue.
	n1 := e.send(t, "alice", "bob", "new0")
	n2 := e.sendGroup(t, "alice", "g1", "new1")
	hist, _, err := e.svc.historyPage(context.Background(), directConv("alice", "bob"), nil, 100)
	if err != nil || len(hist) != len(want.History[directConv("alice", "bob")])+1 {
		t.Fatalf("history after a new message: %d messages, %v", len(hist), err)
	}
	if !bytes.Contains(hist[0], []byte(`"new0"`)) || string(hist[1]) != want.History[directConv("alice", "bob")][0] {
		t.Fatalf("history after a new message starts %s, %s", hist[0], hist[1])
	}
	ghist, _, err := e.svc.historyPage(context.Background(), groupConv("g1"), nil, 100)
	if err != nil || len(ghist) != len(want.History[groupConv("g1")])+1 || !bytes.Contains(ghist[0], []byte(`"new1"`)) {
		t.Fatalf("group history after a new message: %d, %v", len(ghist), err)
	}
	bobSync := want.Sync["bob"]
	var last uint64
	if _, err := fmt.Sscanf(bobSync[len(bobSync)-1], "next %d", &last); err != nil {
		t.Fatal(err)
	}
	msgs, _, _, err := e.svc.syncPage(context.Background(), "bob", last, 10)
	if err != nil || len(msgs) != 2 || !bytes.Contains(msgs[0], []byte(`"new0"`)) || !bytes.Contains(msgs[1], []byte(`"new1"`)) {
		t.Fatalf("bob's sync after the old store: %q, %v", msgs, err)
	}
	if u, err := e.svc.UnreadTotal("bob"); err != nil || u != want.UnreadTotal["bob"]+2 {
		t.Fatalf("bob's unread total %d (was %d), %v", u, want.UnreadTotal["bob"], err)
	}
	for _, n := range []wire.Envelope{n1, n2} {
		if p, ok, err := e.svc.MessageIn(n.ID, n.From, n.To, n.Group); err != nil || !ok || !bytes.Contains(p, []byte(n.ID.String())) {
			t.Fatalf("MessageIn(%d) = %s, %v, %v", n.ID, p, ok, err)
		}
	}
	// Old messages are found in their conversation too.
	for _, m := range want.History[groupConv("g1")] {
		var env wire.Envelope
		if err := json.Unmarshal([]byte(m), &env); err != nil {
			t.Fatal(err)
		}
		if p, ok, err := e.svc.MessageIn(env.ID, "", "", "g1"); err != nil || !ok || string(p) != m {
			t.Fatalf("MessageIn(%d) of the old layout = %s, %v, %v", env.ID, p, ok, err)
		}
	}
	if hi, err := e.svc.HighestID(); err != nil || hi != n2.ID {
		t.Fatalf("HighestID = %d, %v; want %d", hi, err, n2.ID)
	}
}

// The commands that built the fixture, applied by this version (an old
// log replayed on a new node, which writes the new layout), give the
// answers the old version gave. The messages are staged for push (as
// with push configured), so that they can be found by ID alone.
func TestOldLogReplaysToSameAnswers(t *testing.T) {
	golden, err := os.ReadFile(filepath.Join(oldFormatDir, "answers.json"))
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, withGroups(), withOutbox(&recordingOutbox{}))
	oldFormatScenario(t, e)
	got, _ := json.MarshalIndent(collectAnswers(t, e), "", " ")
	if string(append(got, '\n')) != string(golden) {
		t.Fatalf("answers after replaying the scenario's commands differ:\n got %s\nwant %s", got, golden)
	}
}

func writeFixture(t *testing.T, e *env) {
	t.Helper()
	if err := os.MkdirAll(oldFormatDir, 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := json.MarshalIndent(collectAnswers(t, e), "", " ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(oldFormatDir, "answers.json"), append(b, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(oldFormatDir, "snapshot.bin"), fsmtest.Snapshot(t, e.f), 0o644); err != nil {
		t.Fatal(err)
	}
}

// senderOf reads "from" from the head of a stored envelope, and decodes
// an envelope of another form.
func TestSenderOf(t *testing.T) {
	env := text("c1", `a body with "from":"mallory"`)
	env.ID, env.From, env.To = 42, "alice", "bob"
	for _, c := range []struct{ env, want string }{
		{string(env.Marshal()), "alice"},
		{`{"from":"bob","id":"7","body":"x"}`, "bob"},
		{`{"id":"7","to":"carol","from":"dave"}`, "dave"},
		{`{"id":"7","from":"e\u0076e"}`, "eve"},
		{`{"id":"7"}`, ""},
	} {
		if got := string(senderOf([]byte(c.env))); got != c.want {
			t.Errorf("senderOf(%s) = %q, want %q", c.env, got, c.want)
		}
	}
	if from, _, has, ok := readBody("d:alice:bob", 1, []byte("alice"), false); string(from) != "alice" || has || !ok {
		t.Errorf("an older c/ value reads as %q %v %v", from, has, ok)
	}
}

// A stored envelope is kept without the head its key names and read back
// byte for byte, for both sides of a direct conversation, oneself and a
// group; an envelope of another head is kept whole.
func TestCompactBodyRoundTrip(t *testing.T) {
	reply := snowflake.ID(99)
	for _, c := range []struct{ from, to, group string }{
		{"alice", "bob", ""}, {"bob", "alice", ""}, {"carol", "carol", ""}, {"dave", "", "team-1"},
	} {
		env := text("c1", `body with "quotes" and \ and é`)
		env.ID, env.From, env.To, env.Group = 1<<40+7, c.from, c.to, c.group
		env.ReplyTo, env.Mentions = &reply, []string{"bob"}
		payload := env.Marshal()
		conv := groupConv(c.group)
		if c.group == "" {
			conv = directConv(c.from, c.to)
		}
		kb := newKeyBuf(0)
		v := compactBody(&kb, payload, env.ID, c.from, c.to, c.group)
		if v[0] == '{' || len(v) >= len(payload)-len(env.ID.String()) {
			t.Fatalf("%v: value %q is not compact", c, v)
		}
		_, body, has, ok := readBody(conv, env.ID, v, true)
		from, _, _, _ := readBody(conv, env.ID, v, false)
		if !ok || !has || string(from) != c.from || !bytes.Equal(body, payload) {
			t.Fatalf("%v: read back %q from %q, want %s", c, body, from, payload)
		}
	}
	other := []byte(`{"from":"bob","id":"7","cid":"x"}`)
	kb := newKeyBuf(0)
	if v := compactBody(&kb, other, 7, "bob", "alice", ""); !bytes.Equal(v, other) {
		t.Fatalf("an envelope of another head kept as %q", v)
	}
	_, body, has, _ := readBody("d:alice:bob", 7, other, true)
	if from, _, _, _ := readBody("d:alice:bob", 7, other, false); string(from) != "bob" || !has || !bytes.Equal(body, other) {
		t.Fatalf("a whole envelope read as %q from %q", body, from)
	}

	// Through the service: every read gives the bytes delivered.
	e := newEnv(t, withGroups())
	e.groups.add("g1", "alice", "bob")
	env := text("r1", "reply")
	env.ReplyTo, env.Mentions = &reply, []string{"alice"}
	stored, payload, _, err := e.svc.SendDirect(context.Background(), "bob", "alice", env)
	if err != nil {
		t.Fatal(err)
	}
	_, gpayload, _, err := e.svc.SendGroup(context.Background(), "alice", "g1", text("g1", "to the group"))
	if err != nil {
		t.Fatal(err)
	}
	h, _, err := e.svc.historyPage(context.Background(), directConv("alice", "bob"), nil, 10)
	if err != nil || len(h) != 1 || !bytes.Equal(h[0], payload) {
		t.Fatalf("history %q, want %s (%v)", h, payload, err)
	}
	s, _, _, err := e.svc.syncPage(context.Background(), "alice", 0, 10)
	if err != nil || len(s) != 2 || !bytes.Equal(s[0], payload) || !bytes.Equal(s[1], gpayload) {
		t.Fatalf("sync %q, want %s and %s (%v)", s, payload, gpayload, err)
	}
	if p, ok, err := e.svc.MessageIn(stored.ID, "alice", "bob", ""); err != nil || !ok || !bytes.Equal(p, payload) {
		t.Fatalf("MessageIn = %q, %v, %v", p, ok, err)
	}
	err = e.db.View(func(tx *badger.Txn) error {
		it, err := tx.Get(convKey(directConv("alice", "bob"), stored.ID))
		if err != nil {
			return err
		}
		return it.Value(func(v []byte) error {
			if v[0] != compactDirect {
				t.Errorf("stored value %q is not compact", v)
			}
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
}
