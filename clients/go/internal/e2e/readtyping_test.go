package e2e_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	edgechat "github.com/edgechat/edgechat/clients/go"
	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/node/nodetest"
)

// notices records what OnRead and OnTypingNotice got.
type notices struct {
	mu     sync.Mutex
	reads  []edgechat.ReadState
	typing []edgechat.TypingNotice
}

func (n *notices) options(o *edgechat.Options) {
	o.OnRead = func(r edgechat.ReadState) {
		n.mu.Lock()
		defer n.mu.Unlock()
		n.reads = append(n.reads, r)
	}
	o.OnTypingNotice = func(t edgechat.TypingNotice) {
		n.mu.Lock()
		defer n.mu.Unlock()
		n.typing = append(n.typing, t)
	}
}

func (n *notices) waitRead(t *testing.T, who string, want edgechat.ReadState) {
	t.Helper()
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		n.mu.Lock()
		defer n.mu.Unlock()
		if !slices.Contains(n.reads, want) {
			return fmt.Errorf("%s's OnRead got %+v, want %+v among them", who, n.reads, want)
		}
		return nil
	})
}

func (n *notices) hasTyping(want edgechat.TypingNotice) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Contains(n.typing, want)
}

// A conversation read on one of my devices is told to every other one
// (the server's conversation.read event): OnRead gets where the cursor
// stands and the unread count after it, for direct conversations
// (MarkRead, an MQTT receipt) and groups (MarkGroupRead, POST
// /chat/read) alike, and the count is the one Conversations answers.
func TestAReadOnAnotherDeviceReachesOnRead(t *testing.T) {
	n := nodetest.StartNode(t)
	aliceTok, bobTok := n.NewUser(t, "alice"), n.NewUser(t, "bob")
	gid := newGroup(t, n, bobTok, "team", "alice")
	phoneN, laptopN := &notices{}, &notices{}
	phone := dial(t, []string{n.WSURL}, "", aliceTok, nil, phoneN.options)
	laptop := dial(t, []string{n.MQTTURL}, n.HTTPURL, aliceTok, nil, laptopN.options)
	bob := dial(t, []string{n.WSURL}, "", bobTok, nil, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var dms, gms []edgechat.Message
	for i := range 3 {
		m, err := bob.Send(ctx, "alice", fmt.Sprint("dm ", i))
		if err != nil {
			t.Fatal(err)
		}
		dms = append(dms, m)
		if m, err = bob.SendGroup(ctx, gid, fmt.Sprint("group ", i)); err != nil {
			t.Fatal(err)
		}
		gms = append(gms, m)
	}

	if err := phone.MarkRead(ctx, "bob", dms[1].ID); err != nil {
		t.Fatal(err)
	}
	want := edgechat.ReadState{Peer: "bob", UpTo: dms[1].ID, Unread: 1}
	laptopN.waitRead(t, "the laptop", want)
	phoneN.waitRead(t, "the phone (which read)", want)

	if err := phone.MarkGroupRead(ctx, gid, gms[2].ID); err != nil {
		t.Fatal(err)
	}
	laptopN.waitRead(t, "the laptop", edgechat.ReadState{Group: gid, UpTo: gms[2].ID, Unread: 0})

	// What OnRead said is what the conversation list says.
	convs, err := laptop.Conversations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range convs {
		if c.Peer == "bob" && c.Unread != 1 || c.Group == gid && c.Unread != 0 {
			t.Errorf("the laptop's conversation list %+v disagrees with OnRead", c)
		}
	}
	laptopN.mu.Lock()
	defer laptopN.mu.Unlock()
	if len(laptopN.reads) != 2 {
		t.Errorf("the laptop's OnRead got %+v, want the two reads once each", laptopN.reads)
	}
}

// Typing notices as the protocol has them: started and stopped, to a
// user and in a group. OnTypingNotice gets them all; OnTyping still
// gets only a direct start; my own group notices do not come back to me.
func TestTypingStartedStoppedAndInGroups(t *testing.T) {
	n := nodetest.StartNode(t)
	aliceTok, bobTok := n.NewUser(t, "alice"), n.NewUser(t, "bob")
	gid := newGroup(t, n, aliceTok, "team", "bob")
	an, bn, bb := &notices{}, &notices{}, newInbox()
	ab := newInbox()
	alice := dial(t, []string{n.WSURL}, "", aliceTok, ab, an.options)
	bob := dial(t, []string{n.WSURL}, "", bobTok, bb, bn.options)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	waitTyping := func(who string, nt *notices, want edgechat.TypingNotice, send func() error) {
		t.Helper()
		// QoS 0 and the group topics are followed a moment after Dial:
		// sent again until it arrives.
		testutil.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
			if nt.hasTyping(want) {
				return nil
			}
			if err := send(); err != nil {
				return err
			}
			return fmt.Errorf("%s got no %+v", who, want)
		})
	}

	waitTyping("bob", bn, edgechat.TypingNotice{From: "alice", State: edgechat.TypingStarted}, func() error { return alice.Typing(ctx, "bob") })
	waitTyping("bob", bn, edgechat.TypingNotice{From: "alice", State: edgechat.TypingStopped}, func() error { return alice.StopTyping(ctx, "bob") })
	waitTyping("bob", bn, edgechat.TypingNotice{From: "alice", Group: gid, State: edgechat.TypingStarted}, func() error { return alice.TypingGroup(ctx, gid) })
	waitTyping("bob", bn, edgechat.TypingNotice{From: "alice", Group: gid, State: edgechat.TypingStopped}, func() error { return alice.StopTypingGroup(ctx, gid) })
	waitTyping("alice", an, edgechat.TypingNotice{From: "bob", Group: gid, State: edgechat.TypingStarted}, func() error { return bob.TypingGroup(ctx, gid) })

	bb.mu.Lock()
	if slices.ContainsFunc(bb.typing, func(from string) bool { return from != "alice" }) || len(bb.typing) == 0 {
		t.Errorf("bob's OnTyping got %q, want only alice's direct starts", bb.typing)
	}
	bb.mu.Unlock()

	// alice follows the group's typing (she got bob's): her own notice,
	// published before a message of hers, would have come before it.
	if err := alice.TypingGroup(ctx, gid); err != nil {
		t.Fatal(err)
	}
	m, err := alice.SendGroup(ctx, gid, "after my typing")
	if err != nil {
		t.Fatal(err)
	}
	ab.waitOnce(t, m.ID)
	an.mu.Lock()
	for _, nt := range an.typing {
		if nt.From == "alice" {
			t.Errorf("alice got her own typing notice %+v", nt)
		}
	}
	an.mu.Unlock()

	if err := alice.TypingGroup(ctx, "not/a/group"); !errors.Is(err, edgechat.ErrInvalidArgument) {
		t.Errorf("TypingGroup with a malformed group ID: %v, want ErrInvalidArgument", err)
	}
	if err := alice.StopTyping(ctx, "Not A User"); !errors.Is(err, edgechat.ErrInvalidArgument) {
		t.Errorf("StopTyping with a malformed user ID: %v, want ErrInvalidArgument", err)
	}
}
