package e2e_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	edgechat "github.com/edgechat/edgechat/clients/go"
	"github.com/edgechat/edgechat/node/nodetest"
)

// A group message's mentions (the users the server found spelled
// @name in its body) reach the SDK's OnMessage and History, as the
// envelope carries them (protocol.md, Message envelope).
func TestMentionsReachTheSDK(t *testing.T) {
	n := nodetest.StartNode(t)
	aliceTok, bobTok := n.NewUser(t, "alice"), n.NewUser(t, "bob")
	n.NewUser(t, "carol")
	gid := newGroup(t, n, aliceTok, "team", "bob", "carol")
	bb := newInbox()
	alice := dial(t, []string{n.WSURL}, "", aliceTok, nil, nil)
	bob := dial(t, []string{n.WSURL}, "", bobTok, bb, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	m, err := alice.SendGroup(ctx, gid, "@bob can you look at this?")
	if err != nil {
		t.Fatal(err)
	}
	bb.waitOnce(t, m.ID)
	got := bb.find(m.ID)
	hist, _, err := bob.GroupHistory(ctx, gid, "", 10)
	if err != nil || len(hist) == 0 || hist[0].ID != m.ID {
		t.Fatalf("history %+v, %v", hist, err)
	}
	for what, msg := range map[string]any{"Send's answer": m, "OnMessage": got, "GroupHistory": hist[0]} {
		b, _ := json.Marshal(msg)
		if !strings.Contains(string(b), `"mentions":["bob"]`) {
			t.Errorf("the message of %s is %s, want it to mention bob", what, b)
		}
	}

	// Mentions a UI picked go out with the message, before those of the body.
	picked, err := alice.SendMessage(ctx, edgechat.Message{Group: gid, Body: "thanks @bob", Mentions: []string{"carol"}})
	if err != nil {
		t.Fatal(err)
	}
	bb.waitOnce(t, picked.ID)
	for what, msg := range map[string]edgechat.Message{"Send's answer": picked, "OnMessage": bb.find(picked.ID)} {
		if !slices.Equal(msg.Mentions, []string{"carol", "bob"}) {
			t.Errorf("the message of %s mentions %q, want carol (picked) and bob (in the body)", what, msg.Mentions)
		}
	}
	if _, err := alice.SendMessage(ctx, edgechat.Message{Group: gid, Body: "x", Mentions: []string{"Not A User!"}}); !errors.Is(err, edgechat.ErrInvalidMessage) {
		t.Errorf("a malformed mention: %v, want ErrInvalidMessage", err)
	}
}
