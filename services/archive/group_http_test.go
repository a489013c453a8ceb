package archive

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"testing"

	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/internal/wire"
)

func TestHTTPBlockedSend(t *testing.T) {
	e := newEnv(t, withGroups())
	e.blocks.block("bob", "alice")
	srv := e.server(t)
	r := postJSON(t, srv, "alice", `{"to":"bob","cid":"c1","type":"text","body":"hi"}`)
	if r.Status != http.StatusForbidden || r.code() != "forbidden" {
		t.Fatalf("blocked POST = %d %s", r.Status, r.Body)
	}
	if len(dump(t, e.db)) != 0 || len(e.pub.published()) != 0 {
		t.Fatal("a blocked message was stored or published")
	}
	if r := postJSON(t, srv, "bob", `{"to":"alice","cid":"c1","type":"text","body":"hi"}`); r.Status != http.StatusCreated {
		t.Fatalf("the blocker's own send = %d %s", r.Status, r.Body)
	}
}

func TestHTTPSendGroupPublishes(t *testing.T) {
	e := newEnv(t, withGroups())
	e.groups.add("team", "alice", "bob")
	srv := e.server(t)
	body := `{"group":"team","cid":"g-1","type":"text","body":"hello team"}`
	r := postJSON(t, srv, "alice", body)
	if r.Status != http.StatusCreated {
		t.Fatalf("POST = %d %s", r.Status, r.Body)
	}
	var got wire.Envelope
	if err := json.Unmarshal(r.Body, &got); err != nil {
		t.Fatal(err)
	}
	if got.ID == 0 || got.From != "alice" || got.Group != "team" || got.To != "" {
		t.Fatalf("response envelope %+v", got)
	}
	pubs := e.pub.published()
	if len(pubs) != 1 || pubs[0].Topic != wire.GroupTopic("team") || string(pubs[0].Payload) != string(r.Body) || pubs[0].QoS != 1 {
		t.Fatalf("publishes %+v", pubs)
	}
	if !slices.Equal(pubs[0].UserProps, []wire.Prop{{Key: "id", Value: got.ID.String()}, {Key: "from", Value: "alice"}}) {
		t.Fatalf("user props %v", pubs[0].UserProps)
	}
	// A retry answers 200 with the original and publishes nothing.
	if r2 := postJSON(t, srv, "alice", body); r2.Status != http.StatusOK || string(r2.Body) != string(r.Body) {
		t.Fatalf("retry = %d %s", r2.Status, r2.Body)
	}
	if len(e.pub.published()) != 1 {
		t.Fatal("a retry published again")
	}
}

// Group refusals: validation with exact codes, non-members, and a node
// without groups. None changes anything.
func TestHTTPGroupRefusals(t *testing.T) {
	e := newEnv(t, withGroups())
	e.groups.add("team", "alice", "bob")
	srv := e.server(t)
	g1 := e.sendGroup(t, "alice", "team", "seed")
	before := dump(t, e.db)
	up := fmt.Sprintf(`"upTo":"%s"`, g1.ID)
	cases := []struct {
		name, user, method, path, body string
		status                         int
		code                           string
	}{
		{"both to and group", "alice", "POST", "/chat/messages", `{"to":"bob","group":"team","cid":"c","type":"text","body":"x"}`, 400, "validation_failed"},
		{"neither", "alice", "POST", "/chat/messages", `{"cid":"c","type":"text","body":"x"}`, 400, "validation_failed"},
		{"bad gid", "alice", "POST", "/chat/messages", `{"group":"te/am","cid":"c","type":"text","body":"x"}`, 400, "validation_failed"},
		{"empty gid", "alice", "POST", "/chat/messages", `{"group":"","cid":"c","type":"text","body":"x"}`, 400, "validation_failed"},
		{"gid wrong type", "alice", "POST", "/chat/messages", `{"group":5,"cid":"c","type":"text","body":"x"}`, 400, "validation_failed"},
		{"group bad envelope", "alice", "POST", "/chat/messages", `{"group":"team","cid":"c","type":"text"}`, 400, "invalid_envelope"},
		{"non-member send", "carol", "POST", "/chat/messages", `{"group":"team","cid":"c","type":"text","body":"x"}`, 403, "forbidden"},
		{"unknown group send", "alice", "POST", "/chat/messages", `{"group":"nope","cid":"c","type":"text","body":"x"}`, 403, "forbidden"},
		{"non-member history", "carol", "GET", "/chat/history?group=team", "", 404, "not_found"},
		{"unknown group history", "alice", "GET", "/chat/history?group=nope", "", 404, "not_found"},
		{"read both", "bob", "POST", "/chat/read", `{"with":"alice","group":"team",` + up + `}`, 400, "validation_failed"},
		{"read neither", "bob", "POST", "/chat/read", `{` + up + `}`, 400, "validation_failed"},
		{"read no upTo", "bob", "POST", "/chat/read", `{"group":"team"}`, 400, "validation_failed"},
		{"read bad upTo", "bob", "POST", "/chat/read", `{"group":"team","upTo":"-1"}`, 400, "validation_failed"},
		{"read numeric upTo", "bob", "POST", "/chat/read", `{"group":"team","upTo":5}`, 400, "validation_failed"},
		{"read bad gid", "bob", "POST", "/chat/read", `{"group":"a:b",` + up + `}`, 400, "validation_failed"},
		{"read bad with", "bob", "POST", "/chat/read", `{"with":"A",` + up + `}`, 400, "validation_failed"},
		{"read unknown field", "bob", "POST", "/chat/read", `{"group":"team",` + up + `,"x":1}`, 400, "unknown_field"},
		{"read not json", "bob", "POST", "/chat/read", `nope`, 400, "invalid_json"},
		{"read query", "bob", "POST", "/chat/read?x=1", `{"group":"team",` + up + `}`, 400, "validation_failed"},
		{"read non-member", "carol", "POST", "/chat/read", `{"group":"team",` + up + `}`, 404, "not_found"},
		{"read no principal", "", "POST", "/chat/read", `{"group":"team",` + up + `}`, 401, "unauthorized"},
	}
	for _, c := range cases {
		r := do(t, srv, c.user, c.method, c.path, "application/json", []byte(c.body))
		if r.Status != c.status || r.code() != c.code {
			t.Errorf("%s: %d %s, want %d %s", c.name, r.Status, r.Body, c.status, c.code)
		}
	}
	if r := do(t, srv, "bob", "POST", "/chat/read", "text/plain", []byte(`{"group":"team",`+up+`}`)); r.Status != 415 {
		t.Errorf("read with a wrong content type = %d", r.Status)
	}
	if !maps.Equal(before, dump(t, e.db)) {
		t.Fatal("a refused request changed the state")
	}
	if n := len(e.pub.published()); n != 0 {
		t.Fatalf("refused requests published %d messages", n)
	}
	// A node without groups answers 404 for group sends.
	plain := newEnv(t)
	if r := postJSON(t, plain.server(t), "alice", `{"group":"team","cid":"c","type":"text","body":"x"}`); r.Status != 404 || r.code() != "not_found" {
		t.Fatalf("no groups: %d %s", r.Status, r.Body)
	}
}

// Group history pages newest first with no gaps, for members only, and a
// removed member loses it.
func TestHTTPGroupHistoryPaging(t *testing.T) {
	e := newEnv(t, withGroups())
	e.groups.add("team", "alice", "bob", "carol")
	e.groups.add("other", "alice", "dave")
	var sent []snowflake.ID
	for i := range 230 {
		sent = append(sent, e.sendGroup(t, []string{"alice", "bob", "carol"}[i%3], "team", fmt.Sprint("m", i)).ID)
		if i%40 == 0 {
			e.sendGroup(t, "alice", "other", fmt.Sprint("noise", i))
			e.send(t, "alice", "bob", fmt.Sprint("dm", i))
		}
	}
	srv := e.server(t)
	var got []snowflake.ID
	path := "/chat/history?group=team&limit=60"
	for pages := 0; ; pages++ {
		if pages > 10 {
			t.Fatal("paging does not end")
		}
		var p page
		if r := get(t, srv, "bob", path, &p); r.Status != http.StatusOK {
			t.Fatalf("GET %s = %d %s", path, r.Status, r.Body)
		}
		for _, m := range p.Messages {
			if m.Group != "team" {
				t.Fatalf("history of team holds %+v", m)
			}
			got = append(got, m.ID)
		}
		if p.HasMore != (len(got) < len(sent)) {
			t.Fatalf("hasMore %v after %d of %d", p.HasMore, len(got), len(sent))
		}
		if !p.HasMore {
			break
		}
		path = fmt.Sprintf("/chat/history?group=team&limit=60&before=%s", p.Messages[len(p.Messages)-1].ID)
	}
	want := slices.Clone(sent)
	slices.Reverse(want)
	if !slices.Equal(got, want) {
		t.Fatalf("got %d ids, want the %d sent, newest first", len(got), len(sent))
	}
	if r := get(t, srv, "dave", "/chat/history?group=team", nil); r.Status != http.StatusNotFound {
		t.Fatalf("non-member history = %d", r.Status)
	}
	e.groups.remove("team", "carol")
	if r := get(t, srv, "carol", "/chat/history?group=team", nil); r.Status != http.StatusNotFound {
		t.Fatalf("removed member's history = %d", r.Status)
	}
}

// Sync merges direct messages and two groups in commit order across
// pages with no gaps or duplicates, even with IDs out of order; after
// leaving a group, its new messages are not synced.
func TestHTTPSyncMergesGroups(t *testing.T) {
	e := newEnv(t, withGroups(), withIDs(&seqIDs{next: 1 << 40, step: -1000}))
	e.groups.add("g1", "alice", "bob")
	e.groups.add("g2", "alice", "carol")
	e.groups.add("g3", "bob", "carol") // alice is not in it
	srv := e.server(t)
	var forAlice []snowflake.ID
	step := func(i int) {
		switch i % 6 {
		case 0:
			forAlice = append(forAlice, e.send(t, "bob", "alice", fmt.Sprint("d", i)).ID)
		case 1:
			forAlice = append(forAlice, e.sendGroup(t, "bob", "g1", fmt.Sprint("a", i)).ID)
		case 2:
			forAlice = append(forAlice, e.sendGroup(t, "carol", "g2", fmt.Sprint("b", i)).ID)
		case 3:
			e.sendGroup(t, "carol", "g3", fmt.Sprint("c", i))
		case 4:
			forAlice = append(forAlice, e.sendGroup(t, "alice", "g2", fmt.Sprint("e", i)).ID)
		case 5:
			e.send(t, "bob", "carol", fmt.Sprint("f", i))
		}
	}
	for i := range 200 {
		step(i)
	}
	syncAll := func(user, since string, limit int) ([]snowflake.ID, string) {
		t.Helper()
		var got []snowflake.ID
		seen := map[snowflake.ID]bool{}
		cursor := since
		for range 1000 {
			var p page
			path := fmt.Sprintf("/chat/sync?since=%s&limit=%d", cursor, limit)
			if r := get(t, srv, user, path, &p); r.Status != http.StatusOK {
				t.Fatalf("GET %s = %d %s", path, r.Status, r.Body)
			}
			for _, m := range p.Messages {
				if seen[m.ID] {
					t.Fatalf("%s got %d twice", user, m.ID)
				}
				seen[m.ID] = true
				got = append(got, m.ID)
			}
			cursor = p.Cursor
			if !p.HasMore {
				return got, cursor
			}
			if len(p.Messages) != limit {
				t.Fatalf("page of %d with hasMore", len(p.Messages))
			}
		}
		t.Fatal("sync does not end")
		return nil, ""
	}
	for _, limit := range []int{1, 7, 1000} {
		if got, _ := syncAll("alice", "", limit); !slices.Equal(got, forAlice) {
			t.Fatalf("limit %d: alice synced %d messages, want %d in commit order", limit, len(got), len(forAlice))
		}
	}
	if slices.IsSorted(forAlice) {
		t.Fatal("test is void: ids follow commit order")
	}
	_, cursor := syncAll("alice", "0", 50)

	// alice leaves g2: new g2 messages no longer reach her, the rest do,
	// and a full resync no longer holds g2 at all.
	e.groups.remove("g2", "alice")
	var after, g2 []snowflake.ID
	for i := range 30 {
		after = append(after, e.send(t, "bob", "alice", fmt.Sprint("x", i)).ID)
		g2 = append(g2, e.sendGroup(t, "carol", "g2", fmt.Sprint("y", i)).ID)
		after = append(after, e.sendGroup(t, "bob", "g1", fmt.Sprint("z", i)).ID)
	}
	if got, _ := syncAll("alice", cursor, 7); !slices.Equal(got, after) {
		t.Fatalf("after leaving g2: %d messages, want %d", len(got), len(after))
	}
	all, _ := syncAll("alice", "", 1000)
	for _, id := range all {
		if slices.Contains(g2, id) {
			t.Fatal("a full resync after leaving still holds g2")
		}
	}
	// carol, still in g2, gets every one of them.
	got, _ := syncAll("carol", cursor, 1000)
	for _, id := range g2 {
		if !slices.Contains(got, id) {
			t.Fatalf("carol misses g2 message %d", id)
		}
	}
}

// Conversations list direct conversations and groups together by last
// activity, with unread counts that POST /chat/read moves forward only.
func TestHTTPConversationsWithGroups(t *testing.T) {
	e := newEnv(t, withGroups())
	e.groups.add("team", "alice", "bob", "carol")
	e.groups.add("quiet", "bob", "dave") // no messages: not listed
	e.groups.add("gone", "alice", "carol")
	srv := e.server(t)
	e.sendGroup(t, "carol", "gone", "x1")
	e.groups.remove("gone", "bob") // never a member: not listed either
	a1 := e.send(t, "alice", "bob", "a1")
	t1 := e.sendGroup(t, "alice", "team", "t1")
	e.sendGroup(t, "bob", "team", "t2")
	t3 := e.sendGroup(t, "carol", "team", "t3")
	a2 := e.send(t, "alice", "bob", "a2")

	list := func() convList {
		t.Helper()
		var cl convList
		if r := get(t, srv, "bob", "/chat/conversations", &cl); r.Status != http.StatusOK {
			t.Fatalf("%d %s", r.Status, r.Body)
		}
		return cl
	}
	type row struct {
		key    string
		unread int
		last   snowflake.ID
	}
	rows := func() []row {
		var out []row
		for _, c := range list().Conversations {
			k := "peer:" + c.Peer
			if c.Group != "" {
				if c.Peer != "" {
					t.Fatalf("entry with peer and group: %+v", c)
				}
				k = "group:" + c.Group
			}
			out = append(out, row{k, c.Unread, c.LastMessage.ID})
		}
		return out
	}
	want := []row{{"peer:alice", 2, a2.ID}, {"group:team", 2, t3.ID}}
	if got := rows(); !slices.Equal(got, want) {
		t.Fatalf("conversations %+v, want %+v", got, want)
	}
	// New activity in the group moves it to the top.
	t4 := e.sendGroup(t, "alice", "team", "t4")
	want = []row{{"group:team", 3, t4.ID}, {"peer:alice", 2, a2.ID}}
	if got := rows(); !slices.Equal(got, want) {
		t.Fatalf("after t4: %+v, want %+v", got, want)
	}
	read := func(body string) {
		t.Helper()
		if r := do(t, srv, "bob", http.MethodPost, "/chat/read", "application/json", []byte(body)); r.Status != http.StatusNoContent || len(r.Body) != 0 {
			t.Fatalf("POST /chat/read %s = %d %s", body, r.Status, r.Body)
		}
	}
	read(fmt.Sprintf(`{"group":"team","upTo":"%s"}`, t3.ID))
	read(fmt.Sprintf(`{"group":"team","upTo":"%s"}`, t1.ID)) // never backwards
	read(fmt.Sprintf(`{"with":"alice","upTo":"%s"}`, a1.ID))
	want = []row{{"group:team", 1, t4.ID}, {"peer:alice", 1, a2.ID}}
	if got := rows(); !slices.Equal(got, want) {
		t.Fatalf("after reading: %+v, want %+v", got, want)
	}
	// The DM read was told to alice as an MQTT read receipt would be.
	pubs := e.pub.published()
	if len(pubs) != 1 || pubs[0].Topic != wire.ReceiptsTopic("alice") {
		t.Fatalf("publishes %+v", pubs)
	}
	var rc wire.Receipt
	if err := json.Unmarshal(pubs[0].Payload, &rc); err != nil || rc != (wire.Receipt{Type: wire.ReceiptRead, UpTo: a1.ID, Peer: "bob"}) {
		t.Fatalf("receipt %s: %v", pubs[0].Payload, err)
	}
	// MarkGroupRead and the HTTP read share the cursor.
	if err := e.svc.MarkGroupRead(t.Context(), "bob", "team", t4.ID); err != nil {
		t.Fatal(err)
	}
	read(fmt.Sprintf(`{"group":"team","upTo":"%s"}`, t3.ID))
	if got := rows(); got[0] != (row{"group:team", 0, t4.ID}) {
		t.Fatalf("after MarkGroupRead: %+v", got)
	}
	// limit counts groups and peers together.
	var cl convList
	get(t, srv, "bob", "/chat/conversations?limit=1", &cl)
	if len(cl.Conversations) != 1 || !cl.HasMore || cl.Conversations[0].Group != "team" {
		t.Fatalf("limit=1: %+v", cl)
	}
	// alice sees her own messages as read and carol's "gone" group.
	cl = convList{}
	get(t, srv, "alice", "/chat/conversations", &cl)
	if len(cl.Conversations) != 3 || cl.Conversations[2].Group != "gone" || cl.Conversations[2].Unread != 1 || cl.Conversations[0].Unread != 2 {
		t.Fatalf("alice: %+v", cl)
	}
}

// A retried POST /chat/messages whose message was stored before the
// state that refuses it now (the recipient blocked the sender, the
// sender left the group) answers the original (200), as every retry
// does: before, it was refused (403), so a client whose first answer was
// lost showed "not sent" for a message the others had received. A new
// cid is still refused, and nothing more is stored or published.
func TestHTTPRetryOfAStoredMessageIsNotRefused(t *testing.T) {
	e := newEnv(t, withGroups())
	e.groups.add("team", "alice", "bob")
	srv := e.server(t)
	send := func(body string) (response, wire.Envelope) {
		t.Helper()
		r := postJSON(t, srv, "alice", body)
		var env wire.Envelope
		if r.Status/100 == 2 {
			if err := json.Unmarshal(r.Body, &env); err != nil {
				t.Fatal(err)
			}
		}
		return r, env
	}
	direct := `{"to":"bob","cid":"d1","type":"text","body":"hi bob"}`
	group := `{"group":"team","cid":"g1","type":"text","body":"hi team"}`
	r1, d1 := send(direct)
	r2, g1 := send(group)
	if r1.Status != http.StatusCreated || r2.Status != http.StatusCreated {
		t.Fatalf("first sends: %d %s, %d %s", r1.Status, r1.Body, r2.Status, r2.Body)
	}
	e.blocks.block("bob", "alice")
	e.groups.remove("team", "alice")
	state, published := dump(t, e.db), len(e.pub.published())

	for _, tc := range []struct {
		name, body string
		want       wire.Envelope
		payload    []byte
	}{{"direct", direct, d1, r1.Body}, {"group", group, g1, r2.Body}} {
		r, got := send(tc.body)
		if r.Status != http.StatusOK || got.ID != tc.want.ID || !bytes.Equal(r.Body, tc.payload) {
			t.Errorf("%s retry = %d %s, want 200 with the original %s", tc.name, r.Status, r.Body, tc.payload)
		}
	}
	if r, _ := send(`{"to":"bob","cid":"d2","type":"text","body":"again"}`); r.Status != http.StatusForbidden {
		t.Errorf("new direct message to a blocker = %d %s", r.Status, r.Body)
	}
	if r, _ := send(`{"group":"team","cid":"g2","type":"text","body":"again"}`); r.Status != http.StatusForbidden {
		t.Errorf("new group message of a former member = %d %s", r.Status, r.Body)
	}
	if !maps.Equal(dump(t, e.db), state) || len(e.pub.published()) != published {
		t.Fatal("the retries or the refusals stored or published something")
	}
	if metric(t, e, resultDuplicate) != 2 || metric(t, e, resultRefused) != 2 {
		t.Fatalf("metrics duplicate=%v refused=%v", metric(t, e, resultDuplicate), metric(t, e, resultRefused))
	}
}
