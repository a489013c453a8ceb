// SPDX-License-Identifier: MIT

//go:build unix

package mqtt

import (
	"encoding/binary"
	"io"
	"net"
	"sync"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
)

// changeDuringCopyHook changes a retained message while its copy to a
// new subscription is on its way: the first delivery check of topic for
// client target publishes next to topic, retained, before it answers.
type changeDuringCopyHook struct {
	HookBase
	s            *Server
	target       string
	topic        string
	next         []string // published one by one, at each check until empty
	mu           sync.Mutex
	inCheck      bool
	checks, puts int
}

func (h *changeDuringCopyHook) ID() string           { return "change-during-copy" }
func (h *changeDuringCopyHook) Provides(b byte) bool { return b == OnACLCheck }
func (h *changeDuringCopyHook) OnACLCheck(cl *Client, topic string, write bool) bool {
	h.mu.Lock()
	if write || cl.ID != h.target || topic != h.topic || h.inCheck || len(h.next) == 0 {
		h.mu.Unlock()
		return true
	}
	h.inCheck = true
	p := h.next[0]
	h.next = h.next[1:]
	h.checks++
	h.mu.Unlock()
	// The retained copy being checked was read before this publish; the
	// publish reaches the subscriber live (its delivery check comes back
	// here and is let through).
	if err := h.s.Publish(topic, []byte(p), true, 0); err != nil {
		panic(err)
	}
	h.mu.Lock()
	h.inCheck = false
	h.puts++
	h.mu.Unlock()
	return true
}

// retainedCopyScenario subscribes a 3.1.1 client to topic, which holds
// "online", while the hook changes it during the copies to each of
// changes in turn, and returns the payloads the client got, in order.
func retainedCopyScenario(t *testing.T, changes ...string) []string {
	t.Helper()
	s := New(&Options{Logger: directTestLogger, ClientDirectWrites: true, InlineClient: true})
	s.Options.Capabilities.MaximumMessageExpiryInterval = 0
	h := &changeDuringCopyHook{s: s, target: "watcher", topic: "presence/alice", next: changes}
	if err := s.AddHook(h, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Publish("presence/alice", []byte("online"), true, 0); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	peer, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c, err := ln.Accept()
	ln.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	cl := s.NewClient(c, "tcp", "watcher", false)
	cl.Properties.ProtocolVersion = 4
	s.Clients.Add(cl)
	sub := packets.Subscription{Filter: "presence/+"}
	s.Topics.Subscribe(cl.ID, sub) // as processSubscribe: in place before the copies
	s.publishRetainedToClient(cl, sub, false)
	c.Close()

	b, err := io.ReadAll(peer)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for len(b) > 0 { // QoS 0 3.1.1 PUBLISH: type, length, topic, payload
		if b[0]>>4 != packets.Publish {
			t.Fatalf("packet type %d", b[0]>>4)
		}
		n, i := 0, 1
		for shift := 0; ; shift += 7 {
			n |= int(b[i]&0x7f) << shift
			i++
			if b[i-1]&0x80 == 0 {
				break
			}
		}
		body := b[i : i+n]
		tl := int(binary.BigEndian.Uint16(body))
		got = append(got, string(body[2+tl:]))
		b = b[i+n:]
	}
	return got
}

// A retained message that changes between its read and its copy's write
// reached the new subscriber live, before the older copy: the subscriber
// must not end on the older one.
func TestRetainedCopyNeverLeavesAnOlderMessageLast(t *testing.T) {
	got := retainedCopyScenario(t, "offline")
	if len(got) == 0 || got[len(got)-1] != "offline" {
		t.Fatalf("the subscriber got %q: it ends on an older message than the topic holds", got)
	}
	// Changes at every copy: the copies stop after a few, the last of
	// which is what the topic held when it was read.
	changes := []string{"c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8", "c9", "c10"}
	got = retainedCopyScenario(t, changes...)
	if len(got) > 2*(maxRetainedRecopies+1) {
		t.Fatalf("%d deliveries for one subscription: %q", len(got), got)
	}
	// Unchanged: one copy.
	if got := retainedCopyScenario(t); len(got) != 1 || got[0] != "online" {
		t.Fatalf("an unchanged retained message: the subscriber got %q, want one online", got)
	}
}
