package e2e_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	edgechat "github.com/edgechat/edgechat/clients/go"
	"github.com/edgechat/edgechat/node/nodetest"
)

// An app that saved Cursor() (after Sync) and starts a new client from
// it (Options.Cursor) gets exactly what was sent while no client of it
// ran, direct and group messages alike: each once, and none of what
// the earlier client had already received. A message sent after the
// resumption arrives live, once.
func TestResumeFromSavedCursorGetsExactlyWhatWasMissed(t *testing.T) {
	n := nodetest.StartNode(t)
	aliceTok, bobTok := n.NewUser(t, "alice"), n.NewUser(t, "bob")
	gid := newGroup(t, n, aliceTok, "team", "bob")
	alice := dial(t, []string{n.WSURL}, "", aliceTok, nil, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	first := newInbox()
	bob1 := dial(t, []string{n.WSURL}, "", bobTok, first, nil)
	dm0, err := alice.Send(ctx, "bob", "before the restart")
	if err != nil {
		t.Fatal(err)
	}
	g0, err := alice.SendGroup(ctx, gid, "before the restart, to the group")
	if err != nil {
		t.Fatal(err)
	}
	first.waitOnce(t, dm0.ID)
	first.waitOnce(t, g0.ID)
	if err := bob1.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	saved := bob1.Cursor()
	if saved == "" {
		t.Fatal("no cursor after Sync")
	}
	if err := bob1.Close(); err != nil {
		t.Fatal(err)
	}

	// While bob's app is not running.
	var missed []edgechat.Message
	for i := range 3 {
		m, err := alice.Send(ctx, "bob", fmt.Sprint("while away ", i))
		if err != nil {
			t.Fatal(err)
		}
		g, err := alice.SendGroup(ctx, gid, fmt.Sprint("while away, to the group ", i))
		if err != nil {
			t.Fatal(err)
		}
		missed = append(missed, m, g)
	}
	for _, m := range missed {
		if m.ID == "" {
			t.Fatalf("Send returned no ID: %+v", m)
		}
	}

	second := newInbox()
	bob2 := dial(t, []string{n.WSURL}, "", bobTok, second, func(o *edgechat.Options) { o.Cursor = saved })
	for _, m := range missed {
		second.waitOnce(t, m.ID)
	}
	live, err := alice.SendGroup(ctx, gid, "after the restart")
	if err != nil {
		t.Fatal(err)
	}
	second.waitOnce(t, live.ID)
	// Another catch-up (a reconnection's) replays nothing more.
	if err := bob2.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{live.ID: true}
	for _, m := range missed {
		want[m.ID] = true
	}
	second.mu.Lock()
	defer second.mu.Unlock()
	for id, k := range second.perID {
		if !want[id] || k != 1 {
			t.Errorf("message %s delivered %d times to the resumed client (sent while away or after: %v)", id, k, want[id])
		}
	}
	if len(second.perID) != len(want) {
		t.Errorf("the resumed client got %d distinct messages, want %d", len(second.perID), len(want))
	}
	if second.perID[dm0.ID] != 0 || second.perID[g0.ID] != 0 {
		t.Errorf("messages the first client had came again: direct %d times, group %d times", second.perID[dm0.ID], second.perID[g0.ID])
	}
}

// A saved cursor the server cannot parse fails Dial at once with
// ErrBadOptions rather than retrying the sync until the deadline.
func TestResumeFromMalformedCursorFailsDial(t *testing.T) {
	n := nodetest.StartNode(t)
	bobTok := n.NewUser(t, "bob")
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	_, err := edgechat.Dial(ctx, edgechat.Options{URLs: []string{n.WSURL}, Token: bobTok, Cursor: "not-a-cursor"})
	if !errors.Is(err, edgechat.ErrBadOptions) {
		t.Fatalf("Dial from a malformed cursor: %v, want ErrBadOptions", err)
	}
	if ctx.Err() != nil {
		t.Fatal("Dial waited for its deadline")
	}
}
