package archive

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/internal/wire"
)

// History pages through 450 messages newest first with no gaps or
// duplicates, and only the two participants see them.
func TestHTTPHistoryPaging(t *testing.T) {
	e := newEnv(t)
	var sent []snowflake.ID
	for i := range 450 {
		from, to := "alice", "bob"
		if i%4 == 1 {
			from, to = "bob", "alice"
		}
		sent = append(sent, e.send(t, from, to, fmt.Sprint("m", i)).ID)
		if i%50 == 0 {
			e.send(t, "alice", "carol", fmt.Sprint("noise", i)) // another conversation
		}
	}
	srv := e.server(t)

	for _, limit := range []int{0, 100, 7, 200} {
		var got []snowflake.ID
		path := "/chat/history?with=bob"
		if limit > 0 {
			path += fmt.Sprint("&limit=", limit)
		}
		want := limit
		if want == 0 {
			want = historyDefault
		}
		for pages := 0; ; pages++ {
			if pages > 500 {
				t.Fatal("paging does not end")
			}
			var p page
			if r := get(t, srv, "alice", path, &p); r.Status != http.StatusOK {
				t.Fatalf("GET %s = %d %s", path, r.Status, r.Body)
			}
			for _, m := range p.Messages {
				got = append(got, m.ID)
			}
			remaining := 450 - len(got)
			if p.HasMore != (remaining > 0) {
				t.Fatalf("limit %d: hasMore %v with %d remaining", limit, p.HasMore, remaining)
			}
			if !p.HasMore {
				break
			}
			if len(p.Messages) != want {
				t.Fatalf("limit %d: page of %d", limit, len(p.Messages))
			}
			path = fmt.Sprintf("/chat/history?with=bob&limit=%d&before=%s", want, p.Messages[len(p.Messages)-1].ID)
		}
		wantIDs := slices.Clone(sent)
		slices.Reverse(wantIDs)
		if !slices.Equal(got, wantIDs) {
			t.Fatalf("limit %d: got %d ids, want the 450 sent, newest first", limit, len(got))
		}
	}

	// bob sees the same conversation; carol sees none of it.
	var p page
	get(t, srv, "bob", "/chat/history?with=alice&limit=200", &p)
	if len(p.Messages) != 200 || p.Messages[0].ID != sent[449] {
		t.Fatalf("bob's view: %d messages", len(p.Messages))
	}
	p = page{}
	get(t, srv, "carol", "/chat/history?with=bob", &p)
	if len(p.Messages) != 0 || p.HasMore {
		t.Fatalf("carol sees %d messages of alice and bob", len(p.Messages))
	}
	if r := get(t, srv, "carol", "/chat/history?with=bob", nil); !bytes.Contains(r.Body, []byte(`"messages":[]`)) {
		t.Fatalf("an empty page must hold an empty list: %s", r.Body)
	}
	p = page{}
	get(t, srv, "alice", "/chat/history?with=bob&before=0", &p)
	if len(p.Messages) != 0 || p.HasMore {
		t.Fatalf("before=0 returned %d messages", len(p.Messages))
	}
}

// Messages whose IDs decrease (skewed clocks) still all arrive through
// sync, in commit order, across pages, with the sender's own messages.
func TestHTTPSyncOutOfOrderIDs(t *testing.T) {
	e := newEnv(t, withIDs(&seqIDs{next: 1 << 40, step: -1000}))
	srv := e.server(t)
	var forBob, forAlice []snowflake.ID
	pairs := [][2]string{{"alice", "bob"}, {"bob", "alice"}, {"carol", "bob"}, {"bob", "dave"}, {"alice", "carol"}}
	for i := range 123 {
		pr := pairs[i%len(pairs)]
		id := e.send(t, pr[0], pr[1], fmt.Sprint("s", i)).ID
		if pr[0] == "bob" || pr[1] == "bob" {
			forBob = append(forBob, id)
		}
		if pr[0] == "alice" || pr[1] == "alice" {
			forAlice = append(forAlice, id)
		}
	}
	syncAll := func(user, since string, limit int) ([]snowflake.ID, string) {
		t.Helper()
		var got []snowflake.ID
		cursor := since
		for range 1000 {
			var p page
			path := fmt.Sprintf("/chat/sync?since=%s&limit=%d", cursor, limit)
			if r := get(t, srv, user, path, &p); r.Status != http.StatusOK {
				t.Fatalf("GET %s = %d %s", path, r.Status, r.Body)
			}
			for _, m := range p.Messages {
				if m.From != user && m.To != user {
					t.Fatalf("%s got a message of %s→%s", user, m.From, m.To)
				}
				got = append(got, m.ID)
			}
			if p.Cursor == "" {
				t.Fatal("no cursor")
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
	got, cursor := syncAll("bob", "", 7)
	if !slices.Equal(got, forBob) {
		t.Fatalf("bob synced %d messages, want %d in commit order", len(got), len(forBob))
	}
	if slices.IsSorted(got) {
		t.Fatal("test is void: ids were not out of order")
	}
	if got, _ := syncAll("alice", "0", 1000); !slices.Equal(got, forAlice) {
		t.Fatalf("alice synced %d messages, want %d", len(got), len(forAlice))
	}
	// Nothing new: the same cursor comes back with no messages.
	if got, c := syncAll("bob", cursor, 5); len(got) != 0 || c != cursor {
		t.Fatalf("idle sync returned %d messages and cursor %s (was %s)", len(got), c, cursor)
	}
	// A message with a LOWER id than everything before still arrives after the cursor.
	late := e.send(t, "dave", "bob", "late").ID
	if got, _ := syncAll("bob", cursor, 5); !slices.Equal(got, []snowflake.ID{late}) {
		t.Fatalf("after the cursor: %v, want [%d]", got, late)
	}
	var p page
	get(t, srv, "bob", "/chat/sync", &p)
	if len(p.Messages) != len(forBob)+1 || p.HasMore {
		t.Fatalf("default sync returned %d", len(p.Messages))
	}
}

func TestHTTPConversations(t *testing.T) {
	e := newEnv(t)
	srv := e.server(t)
	e.send(t, "alice", "bob", "1")
	e.send(t, "alice", "bob", "2")
	last := e.send(t, "carol", "bob", "3")
	var cl convList
	if r := get(t, srv, "bob", "/chat/conversations", &cl); r.Status != http.StatusOK {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	if len(cl.Conversations) != 2 || cl.HasMore {
		t.Fatalf("conversations: %+v", cl)
	}
	c0, c1 := cl.Conversations[0], cl.Conversations[1]
	if c0.Peer != "carol" || c0.Unread != 1 || c0.LastMessage.ID != last.ID || c1.Peer != "alice" || c1.Unread != 2 {
		t.Fatalf("conversations: %+v", cl)
	}
	cl = convList{}
	get(t, srv, "bob", "/chat/conversations?limit=1", &cl)
	if len(cl.Conversations) != 1 || !cl.HasMore {
		t.Fatalf("limit=1: %+v", cl)
	}
	cl = convList{}
	if r := get(t, srv, "dave", "/chat/conversations", &cl); !bytes.Contains(r.Body, []byte(`"conversations":[]`)) {
		t.Fatalf("no conversations must be an empty list: %s", r.Body)
	}
}

// Every refused request answers with a stable code and changes nothing.
func TestHTTPRefusalsChangeNothing(t *testing.T) {
	e := newEnv(t)
	srv := e.server(t)
	e.send(t, "alice", "bob", "seed")
	before := dump(t, e.db)
	ok := `{"to":"bob","cid":"c1","type":"text","body":"hi"}`
	cases := []struct {
		name, user, method, path, ctype, body string
		status                                int
		code                                  string
	}{
		{"no principal", "", "GET", "/chat/sync", "", "", 401, "unauthorized"},
		{"no principal post", "", "POST", "/chat/messages", "application/json", ok, 401, "unauthorized"},
		{"history unknown param", "alice", "GET", "/chat/history?with=bob&x=1", "", "", 400, "validation_failed"},
		{"history limit 0", "alice", "GET", "/chat/history?with=bob&limit=0", "", "", 400, "validation_failed"},
		{"history limit 201", "alice", "GET", "/chat/history?with=bob&limit=201", "", "", 400, "validation_failed"},
		{"history limit text", "alice", "GET", "/chat/history?with=bob&limit=ten", "", "", 400, "validation_failed"},
		{"history bad before", "alice", "GET", "/chat/history?with=bob&before=-1", "", "", 400, "validation_failed"},
		{"history no peer", "alice", "GET", "/chat/history", "", "", 400, "validation_failed"},
		{"history both", "alice", "GET", "/chat/history?with=bob&group=g1", "", "", 400, "validation_failed"},
		{"history bad uid", "alice", "GET", "/chat/history?with=Bob%2Fx", "", "", 400, "validation_failed"},
		{"history twice", "alice", "GET", "/chat/history?with=bob&with=carol", "", "", 400, "validation_failed"},
		{"history bad query", "alice", "GET", "/chat/history?with=bob&%zz", "", "", 400, "validation_failed"},
		{"history group", "alice", "GET", "/chat/history?group=g1", "", "", 404, "not_found"},
		{"history bad group", "alice", "GET", "/chat/history?group=g%2F1", "", "", 400, "validation_failed"},
		{"sync bad cursor", "alice", "GET", "/chat/sync?since=abc", "", "", 400, "validation_failed"},
		{"sync negative cursor", "alice", "GET", "/chat/sync?since=-1", "", "", 400, "validation_failed"},
		{"sync plus cursor", "alice", "GET", "/chat/sync?since=%2B5", "", "", 400, "validation_failed"},
		{"sync huge cursor", "alice", "GET", "/chat/sync?since=99999999999999999999999", "", "", 400, "validation_failed"},
		{"sync limit 1001", "alice", "GET", "/chat/sync?limit=1001", "", "", 400, "validation_failed"},
		{"sync unknown param", "alice", "GET", "/chat/sync?cursor=5", "", "", 400, "validation_failed"},
		{"conversations param", "alice", "GET", "/chat/conversations?peer=bob", "", "", 400, "validation_failed"},
		{"post unknown field", "alice", "POST", "/chat/messages", "application/json", `{"to":"bob","cid":"c","type":"text","body":"x","color":"red"}`, 400, "unknown_field"},
		{"post server field", "alice", "POST", "/chat/messages", "application/json", `{"to":"bob","from":"carol","cid":"c","type":"text","body":"x"}`, 400, "unknown_field"},
		{"post oversized", "alice", "POST", "/chat/messages", "application/json", `{"to":"bob","cid":"c","type":"text","body":"` + strings.Repeat("x", MaxSendBody) + `"}`, 413, "payload_too_large"},
		{"post body over envelope limit", "alice", "POST", "/chat/messages", "application/json", `{"to":"bob","cid":"c","type":"text","body":"` + strings.Repeat("x", wire.MaxBodyBytes+1) + `"}`, 400, "invalid_envelope"},
		{"post unknown recipient", "alice", "POST", "/chat/messages", "application/json", `{"to":"zed","cid":"c","type":"text","body":"x"}`, 404, "not_found"},
		{"post bad type", "alice", "POST", "/chat/messages", "application/json", `{"to":"bob","cid":"c","type":"bogus","body":"x"}`, 400, "invalid_envelope"},
		{"post no cid", "alice", "POST", "/chat/messages", "application/json", `{"to":"bob","type":"text","body":"x"}`, 400, "invalid_envelope"},
		{"post empty text", "alice", "POST", "/chat/messages", "application/json", `{"to":"bob","cid":"c","type":"text"}`, 400, "invalid_envelope"},
		{"post bad replyTo", "alice", "POST", "/chat/messages", "application/json", `{"to":"bob","cid":"c","type":"text","body":"x","replyTo":"abc"}`, 400, "invalid_envelope"},
		{"post bad mention", "alice", "POST", "/chat/messages", "application/json", `{"to":"bob","cid":"c","type":"text","body":"x","mentions":["a/b"]}`, 400, "invalid_envelope"},
		{"post mentions not a list", "alice", "POST", "/chat/messages", "application/json", `{"to":"bob","cid":"c","type":"text","body":"x","mentions":"bob"}`, 400, "invalid_envelope"},
		{"post cid wrong type", "alice", "POST", "/chat/messages", "application/json", `{"to":"bob","cid":5,"type":"text","body":"x"}`, 400, "invalid_envelope"},
		{"post no to", "alice", "POST", "/chat/messages", "application/json", `{"cid":"c","type":"text","body":"x"}`, 400, "validation_failed"},
		{"post bad to", "alice", "POST", "/chat/messages", "application/json", `{"to":"user/bob","cid":"c","type":"text","body":"x"}`, 400, "validation_failed"},
		{"post not json", "alice", "POST", "/chat/messages", "application/json", `hello`, 400, "invalid_json"},
		{"post trailing", "alice", "POST", "/chat/messages", "application/json", ok + `{}`, 400, "invalid_json"},
		{"post array", "alice", "POST", "/chat/messages", "application/json", `[1]`, 400, "validation_failed"},
		{"post wrong ctype", "alice", "POST", "/chat/messages", "text/plain", ok, 415, "unsupported_media_type"},
		{"post query", "alice", "POST", "/chat/messages?x=1", "application/json", ok, 400, "validation_failed"},
	}
	for _, c := range cases {
		r := do(t, srv, c.user, c.method, c.path, c.ctype, []byte(c.body))
		if r.Status != c.status || r.code() != c.code {
			t.Errorf("%s: %d %s, want %d %s", c.name, r.Status, r.Body, c.status, c.code)
		}
	}
	if !maps.Equal(before, dump(t, e.db)) {
		t.Fatal("a refused request changed the state")
	}
	if n := len(e.pub.published()); n != 0 {
		t.Fatalf("refused requests published %d messages", n)
	}
}

func TestHTTPSendPublishes(t *testing.T) {
	e := newEnv(t)
	srv := e.server(t)
	body := `{"to":"bob","cid":"c-7f3a","type":"text","body":"hello","replyTo":"7211938138472448001"}`
	r := postJSON(t, srv, "alice", body)
	if r.Status != http.StatusCreated {
		t.Fatalf("POST = %d %s", r.Status, r.Body)
	}
	var got wire.Envelope
	if err := json.Unmarshal(r.Body, &got); err != nil {
		t.Fatal(err)
	}
	if got.ID == 0 || got.From != "alice" || got.To != "bob" || got.CID != "c-7f3a" || got.ReplyTo == nil || *got.ReplyTo != 7211938138472448001 {
		t.Fatalf("response envelope %+v", got)
	}
	pubs := e.pub.published()
	if len(pubs) != 2 {
		t.Fatalf("%d publishes, want 2", len(pubs))
	}
	topics := []string{pubs[0].Topic, pubs[1].Topic}
	slices.Sort(topics)
	if !slices.Equal(topics, []string{wire.DirectTopic("alice"), wire.DirectTopic("bob")}) {
		t.Fatalf("topics %v", topics)
	}
	for _, p := range pubs {
		if !bytes.Equal(p.Payload, r.Body) {
			t.Fatalf("published %s, responded %s", p.Payload, r.Body)
		}
		if !slices.Equal(p.UserProps, []wire.Prop{{Key: "id", Value: got.ID.String()}, {Key: "from", Value: "alice"}}) {
			t.Fatalf("user props %v", p.UserProps)
		}
	}
	stored, _, _ := e.svc.historyPage(context.Background(), directConv("alice", "bob"), nil, 10)
	if len(stored) != 1 || !bytes.Equal(stored[0], r.Body) {
		t.Fatalf("stored %q", stored)
	}

	// The retry answers 200 with the same envelope and publishes nothing.
	r2 := postJSON(t, srv, "alice", body)
	if r2.Status != http.StatusOK || !bytes.Equal(r2.Body, r.Body) {
		t.Fatalf("retry = %d %s", r2.Status, r2.Body)
	}
	if n := len(e.pub.published()); n != 2 {
		t.Fatalf("retry published: %d publishes", n)
	}

	// A note to oneself is published once.
	if r := postJSON(t, srv, "carol", `{"to":"carol","cid":"n1","type":"media","media":{"id":"m1","mime":"image/png"}}`); r.Status != http.StatusCreated {
		t.Fatalf("self send = %d %s", r.Status, r.Body)
	}
	if n := len(e.pub.published()); n != 3 {
		t.Fatalf("self send: %d publishes in total, want 3", n)
	}
	if metric(t, e, resultStored) != 2 || metric(t, e, resultDuplicate) != 1 {
		t.Fatalf("metrics stored=%v duplicate=%v", metric(t, e, resultStored), metric(t, e, resultDuplicate))
	}
}

// A publish failure does not fail the request: the message is stored and
// reaches clients through sync.
func TestHTTPSendPublishFailure(t *testing.T) {
	e := newEnv(t)
	e.pub.err = fmt.Errorf("broker gone")
	srv := e.server(t)
	if r := postJSON(t, srv, "alice", `{"to":"bob","cid":"c","type":"text","body":"x"}`); r.Status != http.StatusCreated {
		t.Fatalf("POST = %d %s", r.Status, r.Body)
	}
	var p page
	get(t, srv, "bob", "/chat/sync", &p)
	if len(p.Messages) != 1 {
		t.Fatalf("sync has %d messages", len(p.Messages))
	}
}

func TestHTTPSendUnavailable(t *testing.T) {
	e := newEnv(t)
	e.prop.SetErr(fmt.Errorf("no quorum: %w", wire.ErrUnavailable))
	srv := e.server(t)
	r := postJSON(t, srv, "alice", `{"to":"bob","cid":"c","type":"text","body":"x"}`)
	if r.Status != http.StatusServiceUnavailable || r.code() != "unavailable" || r.Header.Get("Retry-After") == "" {
		t.Fatalf("POST = %d %s %v", r.Status, r.Body, r.Header)
	}
	if len(dump(t, e.db)) != 0 || len(e.pub.published()) != 0 {
		t.Fatal("an unavailable send changed something")
	}
}

// POST /chat/read moves the reader's cursor, and its receipt reaches the
// peer unless the peer blocked the reader: receipts to a user who blocked
// the sender are never delivered, over HTTP as over MQTT.
func TestHTTPReadReceiptSkipsAPeerWhoBlockedTheReader(t *testing.T) {
	e := newEnv(t, withGroups())
	fromBob := e.send(t, "bob", "alice", "c1")
	fromCarol := e.send(t, "carol", "alice", "c2")
	e.blocks.block("bob", "alice") // after writing to her
	srv := e.server(t)
	for _, c := range []struct{ peer, id string }{{"bob", fromBob.ID.String()}, {"carol", fromCarol.ID.String()}} {
		if r := do(t, srv, "alice", "POST", "/chat/read", "application/json", []byte(fmt.Sprintf(`{"with":%q,"upTo":%q}`, c.peer, c.id))); r.Status != http.StatusNoContent {
			t.Fatalf("alice reads %s's message: %d %s", c.peer, r.Status, r.Body)
		}
	}
	got := map[string]int{}
	for _, o := range e.pub.published() {
		got[o.Topic]++
	}
	if got[wire.ReceiptsTopic("bob")] != 0 {
		t.Errorf("bob, who blocked alice, got her read receipt")
	}
	if got[wire.ReceiptsTopic("carol")] != 1 {
		t.Errorf("carol got %d read receipts from alice, want 1", got[wire.ReceiptsTopic("carol")])
	}
	if n, err := e.svc.UnreadTotal("alice"); err != nil || n != 0 {
		t.Errorf("alice's unread after reading both: %d %v (her cursor must move either way)", n, err)
	}
}

// The conversation list says how far the peer has read (peerRead), so
// that a client shows its sent messages as read after a reload, not
// only once a live receipt came: nothing before the peer reads, the
// peer's cursor after (clamped to the newest message), not in a
// conversation with oneself, and not while I have blocked the peer
// (their receipts do not reach me live either).
func TestConversationsSayHowFarThePeerRead(t *testing.T) {
	e := newEnv(t, withGroups())
	srv := e.server(t)
	ctx := context.Background()
	a1 := e.send(t, "alice", "bob", "a1")
	a2 := e.send(t, "alice", "bob", "a2")
	e.send(t, "alice", "alice", "note")
	peerRead := func(user, peer string) string {
		t.Helper()
		var cl convList
		if r := get(t, srv, user, "/chat/conversations", &cl); r.Status != http.StatusOK {
			t.Fatalf("%d %s", r.Status, r.Body)
		}
		for _, c := range cl.Conversations {
			if c.Peer == peer {
				return c.PeerRead
			}
		}
		t.Fatalf("%s has no conversation with %s: %+v", user, peer, cl)
		return ""
	}
	if got := peerRead("alice", "bob"); got != "" {
		t.Fatalf("before bob read: peerRead %q", got)
	}
	if err := e.svc.MarkRead(ctx, "bob", "alice", a1.ID); err != nil {
		t.Fatal(err)
	}
	if got := peerRead("alice", "bob"); got != a1.ID.String() {
		t.Fatalf("after bob read a1: peerRead %q, want %s", got, a1.ID)
	}
	if got := peerRead("bob", "alice"); got != "" {
		t.Fatalf("bob's list says alice read %q; she read nothing", got)
	}
	if err := e.svc.MarkRead(ctx, "bob", "alice", 1<<62); err != nil {
		t.Fatal(err)
	}
	if got := peerRead("alice", "bob"); got != a2.ID.String() {
		t.Fatalf("after bob read past the end: peerRead %q, want the newest %s", got, a2.ID)
	}
	if err := e.svc.MarkRead(ctx, "alice", "alice", 1<<62); err != nil {
		t.Fatal(err)
	}
	if got := peerRead("alice", "alice"); got != "" {
		t.Fatalf("a conversation with oneself: peerRead %q", got)
	}
	e.blocks.block("alice", "bob")
	if got := peerRead("alice", "bob"); got != "" {
		t.Fatalf("alice blocked bob: peerRead %q", got)
	}
}
