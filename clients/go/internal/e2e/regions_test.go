package e2e_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	edgechat "github.com/edgechat/edgechat/clients/go"
	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/node/nodetest"
)

// The SDK across regions: alice of eu sends to bob@us, who gets it from
// alice@eu under the same ID and answers; each history holds both
// messages under the qualified peer; typing and presence cross too.
func TestSDKAcrossRegions(t *testing.T) {
	eu, us := nodetest.StartRegionPair(t, "eu", "us")
	aliceIn, bobIn := newInbox(), newInbox()
	alice := dial(t, []string{eu.WSURL}, eu.HTTPURL, eu.NewUser(t, "alice"), aliceIn, nil)
	bob := dial(t, []string{us.WSURL}, us.HTTPURL, us.NewUser(t, "bob"), bobIn, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	sent, err := alice.Send(ctx, "bob@us", "hello from eu")
	if err != nil || sent.ID == "" || sent.To != "bob@us" {
		t.Fatalf("send to bob@us: %+v %v", sent, err)
	}
	bobIn.waitOnce(t, sent.ID)
	if got := bobIn.find(sent.ID); got.From != "alice@eu" || got.Body != "hello from eu" {
		t.Fatalf("bob got %+v", got)
	}
	reply, err := bob.Send(ctx, "alice@eu", "hi back")
	if err != nil {
		t.Fatal(err)
	}
	aliceIn.waitOnce(t, reply.ID)
	if got := aliceIn.find(reply.ID); got.From != "bob@us" {
		t.Fatalf("alice got %+v", got)
	}
	for _, c := range []struct {
		cl   *edgechat.Client
		with string
	}{{alice, "bob@us"}, {bob, "alice@eu"}} {
		msgs, _, err := c.cl.History(ctx, c.with, "", 10)
		if err != nil || len(msgs) != 2 || msgs[0].ID != reply.ID || msgs[1].ID != sent.ID {
			t.Fatalf("history with %s: %+v %v", c.with, msgs, err)
		}
	}
	if err := alice.WatchPresence(ctx, "bob@us"); err != nil {
		t.Fatal(err)
	}
	testutil.CheckFor(t, 15*time.Second, 20*time.Millisecond, func() error {
		if s := aliceIn.lastPresence("bob@us"); s != "online" {
			return fmt.Errorf("alice sees bob@us %q", s)
		}
		return nil
	})
	testutil.CheckFor(t, 15*time.Second, 50*time.Millisecond, func() error {
		if err := bob.Typing(ctx, "alice@eu"); err != nil {
			return err
		}
		aliceIn.mu.Lock()
		defer aliceIn.mu.Unlock()
		for _, from := range aliceIn.typing {
			if from == "bob@us" {
				return nil
			}
		}
		return errors.New("alice has not seen bob@us typing")
	})
	if _, err := alice.Send(ctx, "bob@", "x"); !errors.Is(err, edgechat.ErrInvalidArgument) {
		t.Fatalf("a malformed address: %v", err)
	}
}

// find is the message with this ID (zero when none arrived).
func (b *inbox) find(id string) edgechat.Message {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, m := range b.msgs {
		if m.ID == id {
			return m
		}
	}
	return edgechat.Message{}
}
