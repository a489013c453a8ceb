package broker

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/internal/wire"
)

// bob blocked alice: her direct messages, typing and receipts to bob are
// refused (v5 QoS 1: 0x87) or dropped, never stored or delivered; others
// still reach bob, and bob still reaches alice.
func TestBlockedSenderRefused(t *testing.T) {
	e := startBroker(t, nil)
	e.blk.set("bob", "alice", true)
	bob := mustV5(t, e.addr, "bob", "phone")
	bob.MustSub(t, "user/bob/#")
	alice := mustV5(t, e.addr, "alice", "phone")
	alice.MustSub(t, "user/alice/newMessage")
	id := snowflake.Make(5000, 2, 7).String()

	for _, tc := range []struct {
		topic, payload string
		code           byte
	}{
		{"user/bob/newMessage", `{"cid":"b1","type":"text","body":"let me in"}`, 0x87},
		{"user/bob/typing", `{"state":"typing"}`, 0x87},
		{"user/bob/receipts", `{"type":"delivered","upTo":"` + id + `"}`, 0x87},
		// A read receipt moves alice's own cursor (else bob's messages
		// stay unread for her for good) and reaches nobody.
		{"user/bob/receipts", `{"type":"read","upTo":"` + id + `"}`, 0},
	} {
		if code, _ := alice.Pub(t, tc.topic, 1, tc.payload); code != tc.code {
			t.Fatalf("%s %s: PUBACK 0x%02x, want 0x%02x", tc.topic, tc.payload, code, tc.code)
		}
		alice.Pub(t, tc.topic, 0, tc.payload) // dropped silently
	}
	if n := e.chat.callCount(); n != 0 {
		t.Fatalf("ChatStore called %d times for a blocked sender", n)
	}
	testutil.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		if calls := e.rec.get(); len(calls) != 2 || calls[0].reader != "alice" || calls[0].peer != "bob" {
			return fmt.Errorf("the blocked reader's read receipts moved her cursor %+v, want twice (QoS 1 and 0)", calls)
		}
		return nil
	})
	// carol is not blocked: hers is the first thing bob sees.
	carol := mustV5(t, e.addr, "carol", "phone")
	if code, _ := carol.Pub(t, "user/bob/typing", 1, ""); code != 0 {
		t.Fatalf("carol typing: 0x%02x", code)
	}
	if m := bob.Next(t); m.Topic != "user/bob/typing" || string(m.Payload) != `{"state":"typing","from":"carol"}` {
		t.Fatalf("bob got %s %q first", m.Topic, m.Payload)
	}
	// One-way: bob still writes to alice.
	if code, _ := bob.Pub(t, "user/alice/newMessage", 1, `{"cid":"r","type":"text","body":"no"}`); code != 0 {
		t.Fatalf("blocker to blocked: 0x%02x", code)
	}
	if got := envOf(t, alice.Next(t).Payload); got.From != "bob" {
		t.Fatalf("alice got %+v", got)
	}
	// alice's last QoS 0 publish has no answer to wait for: its drop may
	// be counted a moment after what came back on other connections.
	testutil.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		for class, want := range map[string]float64{"direct": 2, "user_typing": 2, "receipts": 4} {
			if v := testutil.CounterValue(t, e.b.m.dropped.WithLabelValues(class, "blocked")); v != want {
				return fmt.Errorf("dropped{%s,blocked} = %v, want %v", class, v, want)
			}
		}
		return nil
	})
}

// On 3.1.1 a blocked (or, from the ChatStore, forbidden) direct message
// is dropped and counted, and the connection stays open.
func TestBlockedV3DroppedNotDisconnected(t *testing.T) {
	e := startBroker(t, nil)
	e.blk.set("bob", "alice", true)
	bob := mustV5(t, e.addr, "bob", "phone")
	bob.MustSub(t, "user/bob/newMessage")
	carol := mustV5(t, e.addr, "carol", "phone")
	carol.MustSub(t, "user/carol/newMessage")
	alice, _, err := dialV3(t, e.addr, "alice/v3", "alice", "tok:alice")
	if err != nil {
		t.Fatal(err)
	}
	blocked := alice.Publish("user/bob/newMessage", 1, false, `{"cid":"x1","type":"text","body":"blocked"}`)
	alice.Publish("user/bob/typing", 0, false, "")
	// The ChatStore has the last word (blocks it knows of, the broker not).
	e.chat.setErr(fmt.Errorf("blocked: %w", wire.ErrForbidden))
	alice.Publish("user/carol/newMessage", 1, false, `{"cid":"x2","type":"text","body":"refused by the store"}`)
	testutil.CheckFor(t, waitFor, 5*time.Millisecond, func() error {
		if e.chat.callCount() != 1 {
			return errors.New("store not reached")
		}
		return nil
	})
	e.chat.setErr(nil)
	ok := alice.Publish("user/carol/newMessage", 1, false, `{"cid":"x3","type":"text","body":"fine"}`)
	if !ok.WaitTimeout(waitFor) || ok.Error() != nil {
		t.Fatalf("publish after refusals: %v (connection closed?)", ok.Error())
	}
	if got := envOf(t, carol.Next(t).Payload); got.CID != "x3" {
		t.Fatalf("carol got %+v", got)
	}
	select {
	case <-blocked.Done():
		t.Fatal("blocked v3 publish acknowledged")
	default:
	}
	if !alice.IsConnectionOpen() {
		t.Fatal("v3 client disconnected")
	}
	if v := testutil.CounterValue(t, e.b.m.dropped.WithLabelValues("direct", "blocked")); v != 1 {
		t.Fatalf("dropped{direct,blocked} = %v", v)
	}
	if v := testutil.CounterValue(t, e.b.m.dropped.WithLabelValues("direct", "forbidden")); v != 1 {
		t.Fatalf("dropped{direct,forbidden} = %v", v)
	}
	if v := testutil.CounterValue(t, e.b.m.dropped.WithLabelValues("user_typing", "blocked")); v != 1 {
		t.Fatalf("dropped{user_typing,blocked} = %v", v)
	}
	if code, _ := carol.Pub(t, "user/bob/newMessage", 1, `{"cid":"c","type":"text","body":"barrier"}`); code != 0 {
		t.Fatalf("carol: 0x%02x", code)
	}
	if got := envOf(t, bob.Next(t).Payload); got.CID != "c" {
		t.Fatalf("bob got %+v first", got)
	}
}
