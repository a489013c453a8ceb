package e2e_test

import (
	"context"
	"errors"
	"testing"
	"time"

	edgechat "github.com/edgechat/edgechat/clients/go"
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
