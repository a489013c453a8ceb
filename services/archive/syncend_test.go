package archive

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/internal/wire"
)

// idsAt makes IDs created at a chosen time: at(d) makes the next ones
// d before now.
type idsAt struct{ *seqIDs }

func (s idsAt) at(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ms := uint64(time.Now().Add(-d).Sub(snowflake.Epoch).Milliseconds())
	s.next = int64(snowflake.Make(ms, 1, uint16(s.n)))
}

func TestHTTPSyncEnd(t *testing.T) {
	ids := idsAt{&seqIDs{step: 1}}
	e := newEnv(t, withIDs(ids.seqIDs), withGroups())
	e.groups.add("g1", "alice", "bob")
	e.groups.add("g2", "bob", "carol") // alice is not in it
	srv := e.server(t)
	syncAll := func(user, since string) ([]snowflake.ID, string) {
		t.Helper()
		var got []snowflake.ID
		cursor := since
		for range 1000 {
			var p page
			path := fmt.Sprintf("/chat/sync?since=%s&limit=7", cursor)
			if r := get(t, srv, user, path, &p); r.Status != http.StatusOK {
				t.Fatalf("GET %s = %d %s", path, r.Status, r.Body)
			}
			for _, m := range p.Messages {
				got = append(got, m.ID)
			}
			cursor = p.Cursor
			if !p.HasMore {
				return got, cursor
			}
		}
		t.Fatal("sync does not end")
		return nil, ""
	}
	end := func(user, query string) string {
		t.Helper()
		var out struct {
			Cursor string `json:"cursor"`
		}
		if r := get(t, srv, user, "/chat/sync/end"+query, &out); r.Status != http.StatusOK || out.Cursor == "" {
			t.Fatalf("GET /chat/sync/end%s = %d %s", query, r.Status, r.Body)
		}
		return out.Cursor
	}

	// A user with no message at all: the beginning is the end.
	if c := end("alice", ""); c != "0" {
		t.Fatalf("end of an empty stream = %s", c)
	}
	if c := end("alice", "?within=60"); c != "0" {
		t.Fatalf("end of an empty stream within 60 s = %s", c)
	}

	// Two hours ago: direct messages, alice's group and others.
	ids.at(2 * time.Hour)
	var old []snowflake.ID
	for i := range 30 {
		switch i % 4 {
		case 0:
			old = append(old, e.send(t, "bob", "alice", fmt.Sprint("o", i)).ID)
		case 1:
			old = append(old, e.sendGroup(t, "bob", "g1", fmt.Sprint("o", i)).ID)
		case 2:
			e.sendGroup(t, "carol", "g2", fmt.Sprint("o", i))
		case 3:
			e.send(t, "bob", "carol", fmt.Sprint("o", i))
		}
	}
	all, pagedEnd := syncAll("alice", "")
	if len(all) != len(old) {
		t.Fatalf("alice synced %d of %d", len(all), len(old))
	}
	// The end is where paging the whole stream ends, and nothing follows it.
	e1 := end("alice", "")
	if e1 != pagedEnd {
		t.Fatalf("end = %s, paging ends at %s", e1, pagedEnd)
	}
	if got, _ := syncAll("alice", e1); len(got) != 0 {
		t.Fatalf("a sync from the end returned %d messages", len(got))
	}
	// Nothing was created within the last minute: the end again.
	if c := end("alice", "?within=60"); c != e1 {
		t.Fatalf("within=60 with nothing recent = %s, want the end %s", c, e1)
	}
	// What commits later comes after the end, the group's too.
	ids.at(30 * time.Second)
	var recent []snowflake.ID
	for i := range 12 {
		switch i % 4 {
		case 0:
			recent = append(recent, e.send(t, "alice", "bob", fmt.Sprint("r", i)).ID)
		case 1:
			recent = append(recent, e.sendGroup(t, "bob", "g1", fmt.Sprint("r", i)).ID)
		case 2:
			e.sendGroup(t, "carol", "g2", fmt.Sprint("r", i))
		case 3:
			e.send(t, "carol", "bob", fmt.Sprint("r", i))
		}
	}
	// A message whose node's clock is a little behind (within the skew
	// the walk allows) commits last.
	ids.at(62 * time.Second)
	recent = append(recent, e.sendGroup(t, "bob", "g1", "late").ID)
	if got, _ := syncAll("alice", e1); !slices.Equal(got, recent) {
		t.Fatalf("after the old end: %v, want %v", got, recent)
	}
	// within=60: every recent message, none of the old ones.
	got, _ := syncAll("alice", end("alice", "?within=60"))
	if !slices.Equal(got, recent) {
		t.Fatalf("within=60: %v, want %v", got, recent)
	}
	// within a day: all of them.
	if got, _ := syncAll("alice", end("alice", "?within=86400")); len(got) != len(old)+len(recent) {
		t.Fatalf("within a day: %d messages, want %d", len(got), len(old)+len(recent))
	}
	// bob's end covers g2, which alice's does not.
	e.sendGroup(t, "carol", "g2", "last")
	_, bobPaged := syncAll("bob", "")
	if c := end("bob", ""); c != bobPaged {
		t.Fatalf("bob's end = %s, paging ends at %s", c, bobPaged)
	}
	if end("alice", "") == end("bob", "") {
		t.Fatal("test is void: alice's and bob's streams end at the same position")
	}
}

func TestHTTPSyncEndRefusals(t *testing.T) {
	e := newEnv(t)
	srv := e.server(t)
	for _, q := range []string{"?within=0", "?within=-1", "?within=abc", "?within=%2B5", "?within=604801", "?within=1&within=2", "?since=5", "?within="} {
		r := get(t, srv, "alice", "/chat/sync/end"+q, nil)
		if r.Status != http.StatusBadRequest || !strings.Contains(string(r.Body), `"code":"validation_failed"`) {
			t.Errorf("GET /chat/sync/end%s = %d %s, want 400 validation_failed", q, r.Status, r.Body)
		}
	}
	if r := get(t, srv, "", "/chat/sync/end", nil); r.Status != http.StatusUnauthorized {
		t.Errorf("without a principal: %d %s", r.Status, r.Body)
	}
}

// The walk back is bounded: past its budget, a sync has to start from
// the beginning, which is always complete.
func TestSyncEndWalkBudget(t *testing.T) {
	ids := idsAt{&seqIDs{step: 1}}
	e := newEnv(t, withIDs(ids.seqIDs))
	ids.at(time.Hour)
	e.send(t, "bob", "alice", "old")
	ids.at(time.Second)
	for i := range 5 {
		e.send(t, "bob", "alice", fmt.Sprint("r", i))
	}
	stop := time.Now().Add(-time.Minute)
	for _, tc := range []struct {
		budget    int
		wantFrom0 bool
	}{{5, true}, {6, false}} {
		var from uint64
		var newer bool
		err := e.svc.db.View(func(tx *badger.Txn) error {
			budget := walkBudget{steps: tc.budget, remote: syncEndRemoteSkip}
			var err error
			from, newer, err = walkBackTo(tx, syncPrefix("alice"), "", stop, &budget)
			return err
		})
		if err != nil || !newer || (from == 0) != tc.wantFrom0 {
			t.Errorf("budget %d: from %d, newer %v, %v; want from 0: %v", tc.budget, from, newer, err, tc.wantFrom0)
		}
	}
}

// A region link that delivers its backlog (after an outage between the
// regions) stores messages whose IDs are their region's, created long
// before they commit here. A sync from GET /chat/sync/end?within=60
// must still return the local messages created in the last minute that
// committed before the backlog: before, the walk stopped at the first
// backlog message (older than the window) and answered the end, so a
// first sync (the Go SDK's) missed them.
func TestSyncEndWithinLooksPastALinksBacklog(t *testing.T) {
	ids := idsAt{&seqIDs{step: 1}}
	e := newEnv(t, withIDs(ids.seqIDs), withGroups(),
		withRegions(fakeRegions{local: "us", links: map[string]bool{"eu": true}}))
	e.groups.add("g1", "alice", "bob", "carol@eu")
	ctx := context.Background()
	ids.at(time.Hour)
	e.send(t, "bob", "alice", "old")
	ids.at(30 * time.Second)
	recent := []snowflake.ID{e.send(t, "bob", "alice", "r1").ID, e.sendGroup(t, "bob", "g1", "r2").ID}
	// The backlog: created ten minutes ago in eu, committed now.
	ms := uint64(time.Now().Add(-10 * time.Minute).Sub(snowflake.Epoch).Milliseconds())
	for i := range uint16(5) {
		direct := wire.Envelope{ID: snowflake.Make(ms, 900, 2*i), From: "dave@eu", To: "alice", CID: fmt.Sprint("d", i), Type: wire.TypeText, Body: "late"}
		if _, _, _, err := e.svc.StoreRemote(ctx, direct); err != nil {
			t.Fatal(err)
		}
		group := wire.Envelope{ID: snowflake.Make(ms, 900, 2*i+1), From: "carol@eu", Group: "g1", CID: fmt.Sprint("g", i), Type: wire.TypeText, Body: "late"}
		if _, _, _, err := e.svc.StoreRemoteGroup(ctx, group); err != nil {
			t.Fatal(err)
		}
	}
	cursor, err := e.svc.syncEnd("alice", time.Now().Add(-time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	msgs, _, _, err := e.svc.syncPage(ctx, "alice", cursor, syncMax)
	if err != nil {
		t.Fatal(err)
	}
	got := map[snowflake.ID]bool{}
	for _, m := range msgs {
		var env wire.Envelope
		if err := json.Unmarshal(m, &env); err != nil {
			t.Fatal(err)
		}
		got[env.ID] = true
	}
	for _, id := range recent {
		if !got[id] {
			t.Errorf("a sync from the cursor of the last minute misses %v (created %s ago)", id, time.Since(id.Time()).Round(time.Second))
		}
	}
	if len(msgs) > len(recent)+10 {
		t.Errorf("a sync from the cursor of the last minute returned %d messages, the old one too", len(msgs))
	}

	// The walk steps past at most budget.remote such messages (shared by
	// the indexes): then they end it as any older message does, and the
	// cursor is not the beginning (a quiet index of another region's
	// messages costs a bounded walk, not a full sync).
	for _, tc := range []struct {
		remote    int
		wantNewer bool
	}{{4, false}, {5, true}} {
		var from uint64
		var newer bool
		err := e.svc.db.View(func(tx *badger.Txn) error {
			budget := walkBudget{steps: syncEndWalk, remote: tc.remote}
			var err error
			from, newer, err = walkBackTo(tx, syncPrefix("alice"), "", time.Now().Add(-time.Minute), &budget)
			return err
		})
		if err != nil || newer != tc.wantNewer || newer && from == 0 {
			t.Errorf("remote budget %d: from %d, newer %v, %v; want newer %v", tc.remote, from, newer, err, tc.wantNewer)
		}
	}
}
