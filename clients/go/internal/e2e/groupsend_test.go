package e2e_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	edgechat "github.com/edgechat/edgechat/clients/go"
	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/node/nodetest"
)

// newGroup creates a group owned by ownerTok's user with members, over
// the HTTP API, and returns its ID.
func newGroup(t *testing.T, n *nodetest.Node, ownerTok, name string, members ...string) string {
	t.Helper()
	var g struct {
		ID string `json:"groupId"`
	}
	postJSON(t, n.HTTPURL+"/user/groups", ownerTok, map[string]any{"name": name, "members": members}, &g)
	if g.ID == "" {
		t.Fatal("no group id")
	}
	return g.ID
}

// groupUnread is the unread count of group gid in c's conversation list
// (-1 when the group is not listed).
func groupUnread(ctx context.Context, t *testing.T, c *edgechat.Client, gid string) int {
	t.Helper()
	convs, err := c.Conversations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, cv := range convs {
		if cv.Group == gid {
			return cv.Unread
		}
	}
	return -1
}

// SendGroup publishes to the group's topic: the message is stored,
// returned with its ID, and reaches every member's client once, the
// sender's own included. A group I am not in, or a malformed group ID,
// is refused at once.
func TestSendGroupReachesEveryMemberOnce(t *testing.T) {
	n := nodetest.StartNode(t)
	aliceTok, bobTok, carolTok := n.NewUser(t, "alice"), n.NewUser(t, "bob"), n.NewUser(t, "carol")
	gid := newGroup(t, n, aliceTok, "team", "bob")
	ab, bb := newInbox(), newInbox()
	alice := dial(t, []string{n.WSURL}, "", aliceTok, ab, nil)
	dial(t, []string{n.WSURL}, "", bobTok, bb, nil)
	carol := dial(t, []string{n.WSURL}, "", carolTok, nil, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	m, err := alice.SendGroup(ctx, gid, "hi team")
	if err != nil {
		t.Fatal(err)
	}
	if m.ID == "" || m.Group != gid || m.To != "" || m.From != "alice" || m.Body != "hi team" || m.Time.IsZero() {
		t.Fatalf("SendGroup returned %+v", m)
	}
	bb.waitOnce(t, m.ID)
	ab.waitOnce(t, m.ID)
	if _, err := carol.SendGroup(ctx, gid, "let me in"); !errors.Is(err, edgechat.ErrForbidden) {
		t.Fatalf("a non-member's group send: %v, want ErrForbidden", err)
	}
	if ctx.Err() != nil {
		t.Fatal("a refusal must not be retried until the deadline")
	}
	for name, bad := range map[string]edgechat.Message{
		"malformed group":     {Group: "no/slashes", Body: "x"},
		"both user and group": {To: "bob", Group: gid, Body: "x"},
	} {
		if _, err := alice.SendMessage(ctx, bad); !errors.Is(err, edgechat.ErrInvalidArgument) {
			t.Errorf("%s: %v, want ErrInvalidArgument", name, err)
		}
	}
}

// GroupHistory pages a group's messages newest first, for its members
// (also one who joined after they were sent); to anyone else the group
// does not exist.
func TestGroupHistoryPagesForMembersOnly(t *testing.T) {
	n := nodetest.StartNode(t)
	aliceTok, bobTok, carolTok, daveTok := n.NewUser(t, "alice"), n.NewUser(t, "bob"), n.NewUser(t, "carol"), n.NewUser(t, "dave")
	gid := newGroup(t, n, aliceTok, "team", "bob")
	alice := dial(t, []string{n.WSURL}, "", aliceTok, nil, nil)
	bob := dial(t, []string{n.WSURL}, "", bobTok, nil, nil)
	carol := dial(t, []string{n.WSURL}, "", carolTok, nil, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var sent []edgechat.Message
	for i := range 3 {
		m, err := alice.SendGroup(ctx, gid, fmt.Sprint("message ", i))
		if err != nil {
			t.Fatal(err)
		}
		sent = append(sent, m)
	}
	page, more, err := bob.GroupHistory(ctx, gid, "", 2)
	if err != nil || len(page) != 2 || !more || page[0].CID != sent[2].CID || page[1].CID != sent[1].CID || page[0].Group != gid {
		t.Fatalf("newest page: %+v, hasMore %v, %v", page, more, err)
	}
	older, more, err := bob.GroupHistory(ctx, gid, page[1].ID, 2)
	if err != nil || len(older) != 1 || more || older[0].CID != sent[0].CID {
		t.Fatalf("older page: %+v, hasMore %v, %v", older, more, err)
	}
	if _, _, err := carol.GroupHistory(ctx, gid, "", 10); !errors.Is(err, edgechat.ErrNotFound) {
		t.Fatalf("a non-member's group history: %v, want ErrNotFound", err)
	}
	if _, _, err := carol.GroupHistory(ctx, "no/slashes", "", 10); !errors.Is(err, edgechat.ErrInvalidArgument) {
		t.Fatalf("a malformed group ID: %v, want ErrInvalidArgument", err)
	}
	postJSON(t, n.HTTPURL+"/user/groups/"+gid+"/members", aliceTok, map[string]any{"uid": "dave"}, nil)
	dave := dial(t, []string{n.WSURL}, "", daveTok, nil, nil)
	all, _, err := dave.GroupHistory(ctx, gid, "", 10)
	if err != nil || len(all) != 3 {
		t.Fatalf("a member who joined later: %d messages, %v; want the 3 sent before", len(all), err)
	}
}

// MarkGroupRead moves my read cursor of a group: its unread count drops
// to what came after, and never moves back.
func TestMarkGroupReadMovesTheUnreadCount(t *testing.T) {
	n := nodetest.StartNode(t)
	aliceTok, bobTok, carolTok := n.NewUser(t, "alice"), n.NewUser(t, "bob"), n.NewUser(t, "carol")
	gid := newGroup(t, n, aliceTok, "team", "bob")
	alice := dial(t, []string{n.WSURL}, "", aliceTok, nil, nil)
	bob := dial(t, []string{n.WSURL}, "", bobTok, nil, nil)
	carol := dial(t, []string{n.WSURL}, "", carolTok, nil, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var sent []edgechat.Message
	for i := range 3 {
		m, err := alice.SendGroup(ctx, gid, fmt.Sprint("message ", i))
		if err != nil {
			t.Fatal(err)
		}
		if m.ID == "" {
			t.Fatalf("SendGroup returned no ID: %+v", m)
		}
		sent = append(sent, m)
	}
	if u := groupUnread(ctx, t, bob, gid); u != 3 {
		t.Fatalf("bob's unread before reading: %d, want 3", u)
	}
	if err := bob.MarkGroupRead(ctx, gid, sent[1].ID); err != nil {
		t.Fatal(err)
	}
	if u := groupUnread(ctx, t, bob, gid); u != 1 {
		t.Fatalf("bob's unread after reading up to the second: %d, want 1", u)
	}
	if err := bob.MarkGroupRead(ctx, gid, sent[2].ID); err != nil {
		t.Fatal(err)
	}
	if err := bob.MarkGroupRead(ctx, gid, sent[0].ID); err != nil { // backwards: no move
		t.Fatal(err)
	}
	if u := groupUnread(ctx, t, bob, gid); u != 0 {
		t.Fatalf("bob's unread after reading everything: %d, want 0", u)
	}
	if err := carol.MarkGroupRead(ctx, gid, sent[2].ID); !errors.Is(err, edgechat.ErrNotFound) {
		t.Fatalf("a non-member marking the group read: %v, want ErrNotFound", err)
	}
	if err := bob.MarkGroupRead(ctx, gid, "not-an-id"); !errors.Is(err, edgechat.ErrInvalidArgument) {
		t.Fatalf("a malformed message ID: %v, want ErrInvalidArgument", err)
	}
}

// A group message whose PUBACK is lost with the connection is published
// again under its CID on the next connection: stored once, delivered
// once to each member.
func TestGroupSendSurvivesDroppedConnection(t *testing.T) {
	n := nodetest.StartNode(t)
	aliceTok, bobTok := n.NewUser(t, "alice"), n.NewUser(t, "bob")
	gid := newGroup(t, n, aliceTok, "team", "bob")
	px := newProxy(t, strings.TrimPrefix(n.MQTTURL, "tcp://"))
	ab, bb := newInbox(), newInbox()
	alice := dial(t, []string{px.URL()}, n.HTTPURL, aliceTok, ab, nil)
	dial(t, []string{n.WSURL}, "", bobTok, bb, nil)

	px.set(func(p *proxy) { p.cutOnPublish = true })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	m, err := alice.SendGroup(ctx, gid, "through the cut")
	if err != nil {
		t.Fatal(err)
	}
	px.mu.Lock()
	cuts := px.cuts
	px.mu.Unlock()
	if cuts != 1 {
		t.Fatalf("the proxy cut %d connections, want 1", cuts)
	}
	hist, _, err := alice.GroupHistory(ctx, gid, "", 50)
	if err != nil {
		t.Fatal(err)
	}
	var stored []edgechat.Message
	for _, h := range hist {
		if h.CID == m.CID {
			stored = append(stored, h)
		}
	}
	if len(stored) != 1 {
		t.Fatalf("%d stored copies of cid %s", len(stored), m.CID)
	}
	if m.ID != "" && m.ID != stored[0].ID {
		t.Fatalf("SendGroup returned id %s, stored %s", m.ID, stored[0].ID)
	}
	bb.waitOnce(t, stored[0].ID)
	ab.waitOnce(t, stored[0].ID)
	// Nothing more comes after a catch-up of both.
	if err := alice.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if a, b := ab.count(stored[0].ID), bb.count(stored[0].ID); a != 1 || b != 1 {
			return fmt.Errorf("delivered to alice %d times, to bob %d; want 1 and 1", a, b)
		}
		return nil
	})
}
