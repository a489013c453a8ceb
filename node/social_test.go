package node_test

import (
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	mqtt3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
)

type group struct {
	GroupID     string `json:"groupId"`
	Owner       string `json:"owner"`
	MemberCount int    `json:"memberCount"`
	Role        string `json:"role"`
	Members     []struct {
		UserID string `json:"userId"`
		Role   string `json:"role"`
	} `json:"members"`
}

type apiError struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func createGroup(t *testing.T, n *nodetest.Node, ownerTok, name string, members ...string) group {
	t.Helper()
	var g group
	if st := api(t, n, ownerTok, "POST", "/user/groups", map[string]any{"name": name, "members": members}, &g); st != 201 {
		t.Fatalf("create group: %d", st)
	}
	return g
}

func TestGroupLifecycleRoleRules(t *testing.T) {
	n := nodetest.StartNode(t)
	owner, adm, mem, out := n.NewUser(t, "olga"), n.NewUser(t, "adam"), n.NewUser(t, "mia"), n.NewUser(t, "otto")
	g := createGroup(t, n, owner, "team", "adam", "mia")
	if g.Owner != "olga" || g.MemberCount != 3 {
		t.Fatalf("group %+v", g)
	}
	path := "/user/groups/" + g.GroupID
	if st := api(t, n, owner, "POST", path+"/members", map[string]string{"uid": "adam", "role": "admin"}, nil); st != 200 {
		t.Fatalf("owner promotes adam: %d", st)
	}
	forbidden := []struct {
		who, method, path string
		body              any
		status            int
		code              string
	}{
		{mem, "PATCH", path, map[string]string{"name": "x"}, 403, "forbidden"},
		{mem, "POST", path + "/members", map[string]string{"uid": "otto"}, 403, "forbidden"},
		{mem, "DELETE", path + "/members/adam", nil, 403, "forbidden"},
		{adm, "POST", path + "/members", map[string]string{"uid": "otto", "role": "admin"}, 403, "forbidden"},
		{adm, "DELETE", path + "/members/olga", nil, 403, "forbidden"},
		{owner, "DELETE", path + "/members/olga", nil, 409, "owner_must_transfer"},
		{out, "GET", path, nil, 404, "not_found"},
		{out, "PATCH", path, map[string]string{"name": "x"}, 404, "not_found"},
		{owner, "POST", path + "/owner", map[string]string{"uid": "otto"}, 404, "not_a_member"},
	}
	for i, f := range forbidden {
		var e apiError
		if st := api(t, n, f.who, f.method, f.path, f.body, &e); st != f.status || e.Error.Code != f.code {
			t.Errorf("case %d %s %s: %d %q, want %d %q", i, f.method, f.path, st, e.Error.Code, f.status, f.code)
		}
	}
	var after group
	api(t, n, owner, "GET", path, nil, &after)
	if after.MemberCount != 3 {
		t.Fatalf("refusals changed the group: %+v", after)
	}
	// Allowed: admin adds a member, member leaves, owner transfers and leaves.
	if st := api(t, n, adm, "POST", path+"/members", map[string]string{"uid": "otto"}, nil); st != 200 {
		t.Fatalf("admin adds otto: %d", st)
	}
	if st := api(t, n, mem, "DELETE", path+"/members/mia", nil, nil); st != 204 {
		t.Fatalf("mia leaves: %d", st)
	}
	if st := api(t, n, owner, "POST", path+"/owner", map[string]string{"uid": "adam"}, nil); st != 200 {
		t.Fatalf("transfer: %d", st)
	}
	if st := api(t, n, owner, "DELETE", path+"/members/olga", nil, nil); st != 204 {
		t.Fatalf("old owner leaves: %d", st)
	}
	api(t, n, adm, "GET", path, nil, &after)
	if after.Owner != "adam" || after.MemberCount != 2 {
		t.Fatalf("final group %+v", after)
	}
}

func TestGroupMessagesFanOutAndRemovedMemberStops(t *testing.T) {
	n := nodetest.StartNode(t)
	aTok, bTok, cTok, xTok := n.NewUser(t, "anna"), n.NewUser(t, "ben"), n.NewUser(t, "cleo"), n.NewUser(t, "xena")
	g := createGroup(t, n, aTok, "fans", "ben", "cleo")
	topic := "group/" + g.GroupID + "/newMessage"

	ben := mustConnectV5(t, n.MQTTURL, "ben", "tcp", bTok)
	if r := ben.Sub(t, topic); r[0] > 2 {
		t.Fatalf("member cannot subscribe: %#x", r[0])
	}
	// cleo listens over WebSocket with an MQTT 3.1.1 client.
	cleoGot := make(chan []byte, 10)
	cleo := mqtt3.NewClient(mqtt3.NewClientOptions().AddBroker(n.WSURL).SetClientID("cleo/ws").
		SetUsername("cleo").SetPassword(cTok).SetProtocolVersion(4).SetAutoReconnect(false))
	if tk := cleo.Connect(); !tk.WaitTimeout(10*time.Second) || tk.Error() != nil {
		t.Fatalf("cleo connect: %v", tk.Error())
	}
	defer cleo.Disconnect(100)
	if tk := cleo.Subscribe(topic, 1, func(_ mqtt3.Client, m mqtt3.Message) { cleoGot <- m.Payload() }); !tk.WaitTimeout(5*time.Second) || tk.Error() != nil {
		t.Fatalf("cleo subscribe: %v", tk.Error())
	}
	xena := mustConnectV5(t, n.MQTTURL, "xena", "d", xTok)
	if r := xena.Sub(t, topic); r[0] <= 2 {
		t.Fatal("a non-member subscribed to the group")
	}
	if code, _ := xena.Pub(t, topic, 1, textMsg("x1", "let me in")); code != 0x87 {
		t.Fatalf("non-member publish: %#x, want 0x87", code)
	}

	anna := mustConnectV5(t, n.MQTTURL, "anna", "d", aTok)
	if code, _ := anna.Pub(t, topic, 1, textMsg("g1", "hello group")); code != 0 {
		t.Fatalf("member publish: %#x", code)
	}
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if len(ben.Received(topic)) != 1 {
			return errors.New("ben has not got it")
		}
		return nil
	})
	e := decodeEnvelope(t, ben.Received(topic)[0].Payload)
	if e.From != "anna" || e.Body != "hello group" {
		t.Fatalf("delivered %+v", e)
	}
	select {
	case p := <-cleoGot:
		if !strings.Contains(string(p), `"group":"`+g.GroupID+`"`) {
			t.Fatalf("cleo got %s", p)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("cleo (3.1.1 over WebSocket) got nothing")
	}

	// Remove ben: his live subscription stops at once, his publish is refused.
	if st := api(t, n, aTok, "DELETE", "/user/groups/"+g.GroupID+"/members/ben", nil, nil); st != 204 {
		t.Fatalf("remove ben: %d", st)
	}
	if code, _ := ben.Pub(t, topic, 1, textMsg("b1", "still here?")); code != 0x87 {
		t.Fatalf("removed member publish: %#x, want 0x87", code)
	}
	if code, _ := anna.Pub(t, topic, 1, textMsg("g2", "after removal")); code != 0 {
		t.Fatalf("publish after removal: %#x", code)
	}
	select {
	case <-cleoGot:
	case <-time.After(5 * time.Second):
		t.Fatal("cleo did not get the second message")
	}
	// cleo got the second message, delivered after ben's removal; ben must not have.
	if got := len(ben.Received(topic)); got != 1 {
		t.Fatalf("removed member received %d messages, want 1", got)
	}
	// History and conversations include the group.
	var page historyPage
	if st := api(t, n, cTok, "GET", "/chat/history?group="+g.GroupID, nil, &page); st != 200 || len(page.Messages) != 2 {
		t.Fatalf("group history: %d %+v", st, page)
	}
	if st := api(t, n, xTok, "GET", "/chat/history?group="+g.GroupID, nil, nil); st != 404 {
		t.Fatalf("non-member history: %d, want 404", st)
	}
	var convs struct {
		Conversations []struct {
			Group  string `json:"group"`
			Unread int    `json:"unread"`
		} `json:"conversations"`
	}
	api(t, n, cTok, "GET", "/chat/conversations", nil, &convs)
	if len(convs.Conversations) != 1 || convs.Conversations[0].Group != g.GroupID || convs.Conversations[0].Unread != 2 {
		t.Fatalf("cleo's conversations: %+v", convs)
	}
}

func TestBlockingRefusesMessagesAndHidesPresence(t *testing.T) {
	n := nodetest.StartNode(t)
	aTok, mTok := n.NewUser(t, "alice"), n.NewUser(t, "mallory")
	// A conversation would normally make presence visible both ways.
	if st := api(t, n, mTok, "POST", "/chat/messages", map[string]string{"to": "alice", "cid": "m0", "type": "text", "body": "hi"}, nil); st != 201 {
		t.Fatalf("first message: %d", st)
	}
	if st := api(t, n, mTok, "GET", "/presence/alice", nil, nil); st != 200 {
		t.Fatalf("presence before block: %d", st)
	}
	var fromAlice envelope
	if st := api(t, n, aTok, "POST", "/chat/messages", map[string]string{"to": "mallory", "cid": "a0", "type": "text", "body": "go away"}, &fromAlice); st != 201 {
		t.Fatalf("alice's message: %d", st)
	}
	if st := api(t, n, aTok, "POST", "/user/me/blocks", map[string]string{"uid": "mallory"}, nil); st != 201 && st != 200 && st != 204 {
		t.Fatalf("block: %d", st)
	}
	var e apiError
	if st := api(t, n, mTok, "POST", "/chat/messages", map[string]string{"to": "alice", "cid": "m1", "type": "text", "body": "hi again"}, &e); st != 403 {
		t.Fatalf("blocked HTTP send: %d %+v", st, e)
	}
	mal := mustConnectV5(t, n.MQTTURL, "mallory", "d", mTok)
	if code, _ := mal.Pub(t, "user/alice/newMessage", 1, textMsg("m2", "hi via mqtt")); code != 0x87 {
		t.Fatalf("blocked MQTT send: %#x, want 0x87", code)
	}
	// A retry over MQTT of a message stored before the block (its PUBACK
	// was lost) is acknowledged as the duplicate it is, not refused: the
	// message was stored and delivered. Nothing is stored again.
	if code, _ := mal.Pub(t, "user/alice/newMessage", 1, textMsg("m0", "hi")); code != 0 {
		t.Fatalf("MQTT retry of a message stored before the block: %#x, want 0", code)
	}
	// mallory reading alice's message over MQTT moves her own cursor (the
	// receipt reaches nobody): the conversation does not stay unread.
	if code, _ := mal.Pub(t, "user/alice/receipts", 1, `{"type":"read","upTo":"`+fromAlice.ID+`"}`); code != 0 {
		t.Fatalf("read receipt to a blocker: %#x, want 0", code)
	}
	var convs conversations
	if api(t, n, mTok, "GET", "/chat/conversations", nil, &convs); len(convs.Conversations) != 1 || convs.Conversations[0].Unread != 0 {
		t.Fatalf("mallory's conversations after reading: %+v", convs)
	}
	if r := mal.Sub(t, "presence/alice"); r[0] <= 2 {
		t.Fatal("blocked user may watch the blocker's presence")
	}
	if st := api(t, n, mTok, "GET", "/presence/alice", nil, nil); st != 403 {
		t.Fatalf("blocked presence over HTTP: %d, want 403", st)
	}
	var page historyPage
	api(t, n, aTok, "GET", "/chat/history?with=mallory", nil, &page)
	if len(page.Messages) != 2 {
		t.Fatalf("blocked messages were stored: %d messages, want 2", len(page.Messages))
	}
}

func TestPresenceVisibilityMatrix(t *testing.T) {
	n := nodetest.StartNode(t)
	tok := map[string]string{}
	for _, u := range []string{"sam", "cora", "gina", "dora", "stan", "bert"} {
		tok[u] = n.NewUser(t, u)
	}
	// sam lists cora as a contact; gina shares a group with sam; dora has a
	// conversation with sam; stan is a stranger; bert is in the group but blocked.
	api(t, n, tok["sam"], "POST", "/user/me/contacts", map[string]string{"uid": "cora"}, nil)
	createGroup(t, n, tok["sam"], "club", "gina", "bert")
	api(t, n, tok["dora"], "POST", "/chat/messages", map[string]string{"to": "sam", "cid": "d1", "type": "text", "body": "yo"}, nil)
	api(t, n, tok["sam"], "POST", "/user/me/blocks", map[string]string{"uid": "bert"}, nil)
	want := map[string]bool{"sam": true, "cora": true, "gina": true, "dora": true, "stan": false, "bert": false}
	for viewer, visible := range want {
		c := mustConnectV5(t, n.MQTTURL, viewer, "v", tok[viewer])
		r := c.Sub(t, "presence/sam")
		if ok := r[0] <= 2; ok != visible {
			t.Errorf("%s subscribing presence/sam: reason %#x, want visible=%v", viewer, r[0], visible)
		}
		st := api(t, n, tok[viewer], "GET", "/presence/sam", nil, nil)
		if (st == 200) != visible {
			t.Errorf("%s GET /presence/sam: %d, want visible=%v", viewer, st, visible)
		}
	}
}

func TestHTTPRateLimitHitAndRecovered(t *testing.T) {
	n := nodetest.StartNode(t, nodetest.WithConfig(func(c *node.Config) { c.NoRateLimits = false }))
	tok := n.NewUser(t, "rita")
	var retryAfter int
	limited := false
	for i := 0; i < 500 && !limited; i++ {
		req, _ := http.NewRequest("GET", n.HTTPURL+"/user/me", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusTooManyRequests {
			limited = true
			retryAfter, _ = strconv.Atoi(resp.Header.Get("Retry-After"))
		}
	}
	if !limited || retryAfter < 1 {
		t.Fatalf("no 429 with Retry-After after 500 requests (retry-after %d)", retryAfter)
	}
	// Honour Retry-After: this wait is the behaviour under test.
	time.Sleep(time.Duration(retryAfter) * time.Second)
	if st := api(t, n, tok, "GET", "/user/me", nil, nil); st != 200 {
		t.Fatalf("after Retry-After: %d", st)
	}
}

func TestValidationRefusalsHaveStableCodes(t *testing.T) {
	n := nodetest.StartNode(t)
	tok := n.NewUser(t, "vera")
	cases := []struct {
		method, path string
		body         any
		status       int
		code         string
	}{
		{"POST", "/user/groups", map[string]any{"name": "g", "bogus": 1}, 400, "unknown_field"},
		{"POST", "/user/groups", map[string]any{"name": 42}, 400, "validation_failed"},
		{"POST", "/user/groups", map[string]any{"name": ""}, 400, "invalid_group_name"},
		{"POST", "/user/groups", map[string]any{"name": "g", "members": []string{"nobody1"}}, 400, "unknown_users"},
		{"PATCH", "/user/me", map[string]any{"about": strings.Repeat("x", 300)}, 400, "invalid_about"},
		{"POST", "/user/me/contacts", map[string]any{"uid": "vera"}, 400, "self_not_allowed"},
		{"GET", "/chat/history?with=vera&limit=abc", nil, 400, "validation_failed"},
		{"POST", "/auth/register", map[string]any{"username": "Search", "password": "long enough pw"}, 400, "invalid_username"},
		{"GET", "/no/such/route", nil, 404, "not_found"},
		{"GET", "/admin/stats", nil, 403, "forbidden"},
	}
	// vera is the first account, hence an admin: use a second user for the admin check.
	plain := n.NewUser(t, "walt")
	for _, c := range cases {
		who := tok
		if c.path == "/admin/stats" {
			who = plain
		}
		var e apiError
		if st := api(t, n, who, c.method, c.path, c.body, &e); st != c.status || e.Error.Code != c.code {
			t.Errorf("%s %s: %d %q, want %d %q", c.method, c.path, st, e.Error.Code, c.status, c.code)
		}
	}
	var stats struct {
		Users  int `json:"users"`
		Groups int `json:"groups"`
	}
	if st := api(t, n, tok, "GET", "/admin/stats", nil, &stats); st != 200 || stats.Users != 2 || stats.Groups != 0 {
		t.Fatalf("admin stats: %d %+v", st, stats)
	}
}

func TestETagRoundTripAndCacheInvalidation(t *testing.T) {
	n := nodetest.StartNode(t)
	tok := n.NewUser(t, "erin")
	bobTok := n.NewUser(t, "bob")
	get := func(path, etag string) (int, string) {
		req, _ := http.NewRequest("GET", n.HTTPURL+path, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		if etag != "" {
			req.Header.Set("If-None-Match", etag)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode, resp.Header.Get("ETag")
	}
	st, etag := get("/user/erin", "")
	if st != 200 || etag == "" {
		t.Fatalf("profile: %d etag %q", st, etag)
	}
	if st, _ := get("/user/erin", etag); st != 304 {
		t.Fatalf("If-None-Match: %d, want 304", st)
	}
	api(t, n, tok, "PATCH", "/user/me", map[string]string{"displayName": "Erin E."}, nil)
	if st, etag2 := get("/user/erin", etag); st != 200 || etag2 == etag {
		t.Fatalf("after PATCH: %d, etag %q (was %q)", st, etag2, etag)
	}
	// Membership change is visible at once (caches invalidated on commit):
	// the new member may read the group and publish to it right away.
	g := createGroup(t, n, tok, "cache")
	gst, getag := get("/user/groups/"+g.GroupID, "")
	if gst != 200 {
		t.Fatalf("group: %d", gst)
	}
	if st := api(t, n, tok, "POST", "/user/groups/"+g.GroupID+"/members", map[string]string{"uid": "bob"}, nil); st != 200 {
		t.Fatalf("add bob: %d", st)
	}
	if st, e2 := get("/user/groups/"+g.GroupID, getag); st != 200 || e2 == getag {
		t.Fatalf("group after membership change: %d etag %q", st, e2)
	}
	bob := mustConnectV5(t, n.MQTTURL, "bob", "d", bobTok)
	if code, _ := bob.Pub(t, "group/"+g.GroupID+"/newMessage", 1, textMsg("b1", "I'm in")); code != 0 {
		t.Fatalf("new member publish right after add: %#x", code)
	}
}

func TestProfilerIsForAdminsOnly(t *testing.T) {
	n := nodetest.StartNode(t)
	adminTok := n.NewUser(t, "ada") // first account: admin
	userTok := n.NewUser(t, "ursula")
	if st := api(t, n, userTok, "GET", "/debug/pprof/", nil, nil); st != 403 {
		t.Fatalf("pprof for a user: %d, want 403", st)
	}
	req, _ := http.NewRequest("GET", n.HTTPURL+"/debug/pprof/heap?debug=1", nil)
	req.Header.Set("Authorization", "Bearer "+adminTok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), "heap profile") {
		t.Fatalf("pprof heap for admin: %d %.80s", resp.StatusCode, b)
	}
}

// A group message retried over MQTT after its sender left the group (the
// PUBACK was lost on the way: the message was stored and delivered) is
// acknowledged as the duplicate it is, as a direct message retried after
// a block is; a new message of the former member is still refused.
func TestGroupRetryAfterLeavingIsAcknowledged(t *testing.T) {
	n := nodetest.StartNode(t)
	oTok, bTok := n.NewUser(t, "olive"), n.NewUser(t, "barry")
	g := createGroup(t, n, oTok, "crew", "barry")
	bar := mustConnectV5(t, n.MQTTURL, "barry", "phone", bTok)
	topic := "group/" + g.GroupID + "/newMessage"
	if code, _ := bar.Pub(t, topic, 1, textMsg("b1", "before leaving")); code != 0 {
		t.Fatalf("member's message: %#x", code)
	}
	if st := api(t, n, bTok, "DELETE", "/user/groups/"+g.GroupID+"/members/barry", nil, nil); st != 204 {
		t.Fatalf("leave: %d", st)
	}
	if code, _ := bar.Pub(t, topic, 1, textMsg("b1", "before leaving")); code != 0 {
		t.Fatalf("MQTT retry of a message stored before leaving: %#x, want 0", code)
	}
	if code, _ := bar.Pub(t, topic, 1, textMsg("b2", "after leaving")); code != 0x87 {
		t.Fatalf("former member's new message: %#x, want 0x87", code)
	}
	var page historyPage
	if st := api(t, n, oTok, "GET", "/chat/history?group="+g.GroupID, nil, &page); st != 200 || len(page.Messages) != 1 {
		t.Fatalf("group history: %d, %d messages, want 1", st, len(page.Messages))
	}
}
