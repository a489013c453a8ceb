package archive

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/internal/wire"
)

// A notice that another region refused alice's message sets the stored
// message's status (history and sync read it) and tells her devices
// once; a notice about a message that is not hers to that region (bob@us's
// message to her, another conversation, an unknown ID) or with a bad
// reason changes nothing.
func TestMarkUndeliverable(t *testing.T) {
	e := newEnv(t, withRegions(euLinkedToUS))
	ctx := context.Background()
	m := e.send(t, "alice", "bob@us", "c1")
	in := wire.Envelope{ID: m.ID + 1000, From: "bob@us", To: "alice", CID: "r1", Type: wire.TypeText, Body: "hi"}
	if _, _, _, err := e.svc.StoreRemote(ctx, in); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []struct {
		id       uint64
		from, to string
		reason   string
		want     error
	}{
		{uint64(m.ID), "alice", "bob@us", "bored", wire.ErrInvalid},
		{uint64(m.ID), "alice", "bob", ReasonNoSuchUser, wire.ErrInvalid}, // not of another region
		{uint64(m.ID), "alice", "carl@us", ReasonNoSuchUser, wire.ErrNotFound},
		{uint64(m.ID) + 1, "alice", "bob@us", ReasonNoSuchUser, wire.ErrNotFound},
		{uint64(in.ID), "alice", "bob@us", ReasonNoSuchUser, wire.ErrNotFound}, // bob's message, not alice's
	} {
		if err := e.svc.MarkUndeliverable(ctx, snowflake.ID(bad.id), bad.from, bad.to, bad.reason); !errors.Is(err, bad.want) {
			t.Fatalf("%+v: %v", bad, err)
		}
	}
	if n := len(e.pub.published()); n != 0 {
		t.Fatalf("%d events for refused notices", n)
	}
	for range 2 { // a notice sent again changes nothing
		if err := e.svc.MarkUndeliverable(ctx, m.ID, "alice", "bob@us", ReasonNoSuchUser); err != nil {
			t.Fatal(err)
		}
	}
	h, _, err := e.svc.historyPage(ctx, directConv("alice", "bob@us"), nil, 10)
	if err != nil || len(h) != 2 {
		t.Fatalf("history: %d %v", len(h), err)
	}
	var got struct {
		ID             string
		Body           string
		Status, Reason string
	}
	for _, b := range h {
		if bytes.Contains(b, []byte(`"cid":"r1"`)) {
			if bytes.Contains(b, []byte("status")) {
				t.Fatalf("bob's message got a status: %s", b)
			}
			continue
		}
		if err := json.Unmarshal(b, &got); err != nil || got.Status != StatusUndeliverable || got.Reason != ReasonNoSuchUser || got.ID != m.ID.String() {
			t.Fatalf("history: %s", b)
		}
	}
	msgs, _, _, err := e.svc.syncPage(ctx, "alice", 0, 10)
	if err != nil || len(msgs) != 2 || !bytes.Contains(msgs[0], []byte(`"status":"undeliverable","reason":"no_such_user"`)) {
		t.Fatalf("sync: %q %v", msgs, err)
	}
	evs := e.pub.published()
	if len(evs) != 1 || evs[0].Topic != "user/alice/events" || evs[0].QoS != 1 {
		t.Fatalf("events %+v", evs)
	}
	var ev map[string]string
	if err := json.Unmarshal(evs[0].Payload, &ev); err != nil || ev["type"] != "undeliverable" || ev["id"] != m.ID.String() || ev["to"] != "bob@us" || ev["reason"] != ReasonNoSuchUser {
		t.Fatalf("event %s", evs[0].Payload)
	}
}

// A notice about a message already sealed into a segment tells the
// sender once, as for a hot one: sealed messages kept no trace of a
// notice, so each notice sent again (a link's retry) repeated the
// undeliverable event on the sender's devices.
func TestMarkUndeliverableSealedOnce(t *testing.T) {
	segs, _ := localSegments(t, false)
	e := newEnv(t, withRegions(euLinkedToUS), withSegments(segs))
	ctx := context.Background()
	m := e.send(t, "alice", "bob@us", "c1")
	for i := range 3 {
		e.send(t, "alice", "bob@us", fmt.Sprintf("c%d", i+2))
	}
	if _, err := e.svc.SealOnce(ctx, SealConfig{MaxMessages: 1}, time.Now()); err != nil {
		t.Fatal(err)
	}
	if n := hotCount(t, e.db, directConv("alice", "bob@us")); n != 1 {
		t.Fatalf("%d hot messages after sealing, want 1", n)
	}
	for range 3 {
		if err := e.svc.MarkUndeliverable(ctx, m.ID, "alice", "bob@us", ReasonNoSuchUser); err != nil {
			t.Fatal(err)
		}
	}
	if evs := e.pub.published(); len(evs) != 1 {
		t.Fatalf("%d undeliverable events for one sealed message, want 1", len(evs))
	}
	// The mark goes with the message when retention deletes it.
	if _, err := e.svc.ExpireOnce(ctx, RetentionPolicy{Days: 1}, time.Now().Add(48*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := e.db.View(func(tx *badger.Txn) error {
		if left, err := anyKey(tx, undeliverablePrefix(directConv("alice", "bob@us"))); err != nil || left {
			return fmt.Errorf("undeliverable mark left after retention: %v %v", left, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// A message of bob to a group of another region (its mirror here,
// k3x9@eu) that the home refused gets the status like a direct one, and
// bob one event naming the group; a notice about someone else's message
// of the group, or of another group, changes nothing.
func TestMarkGroupUndeliverable(t *testing.T) {
	e := newEnv(t, withGroups(), withRegions(fakeRegions{local: "us", links: map[string]bool{"eu": true}}))
	ctx := context.Background()
	e.groups.add("k3x9@eu", "bob", "dave", "alice@eu")
	m := e.sendGroup(t, "bob", "k3x9@eu", "b1")
	d := e.sendGroup(t, "dave", "k3x9@eu", "d1")
	for _, bad := range []struct {
		id        snowflake.ID
		from, gid string
		want      error
	}{
		{d.ID, "bob", "k3x9@eu", wire.ErrNotFound}, // dave's
		{m.ID, "bob", "zz99@eu", wire.ErrNotFound}, // another group
		{m.ID, "bob", "k3x9", wire.ErrInvalid},     // not of another region
	} {
		if err := e.svc.MarkGroupUndeliverable(ctx, bad.id, bad.from, bad.gid, ReasonForbidden); !errors.Is(err, bad.want) {
			t.Fatalf("%+v: %v", bad, err)
		}
	}
	for range 2 {
		if err := e.svc.MarkGroupUndeliverable(ctx, m.ID, "bob", "k3x9@eu", ReasonForbidden); err != nil {
			t.Fatal(err)
		}
	}
	h, _, err := e.svc.historyPage(ctx, groupConv("k3x9@eu"), nil, 10)
	if err != nil || len(h) != 2 {
		t.Fatalf("history: %d %v", len(h), err)
	}
	for _, b := range h {
		var got struct{ ID, Status, Reason string }
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatal(err)
		}
		if want := got.ID == m.ID.String(); want != (got.Status == StatusUndeliverable && got.Reason == ReasonForbidden) {
			t.Fatalf("history: %s", b)
		}
	}
	var evs []string
	for _, o := range e.pub.published() {
		if o.Topic == "user/bob/events" {
			evs = append(evs, string(o.Payload))
		}
	}
	var ev map[string]string
	if len(evs) != 1 || json.Unmarshal([]byte(evs[0]), &ev) != nil || ev["type"] != "undeliverable" || ev["id"] != m.ID.String() ||
		ev["group"] != "k3x9@eu" || ev["reason"] != ReasonForbidden || ev["to"] != "" {
		t.Fatalf("events %q", evs)
	}
}

// A notice about a sealed message is checked like one about a hot
// message: it must name the sender's own message to that recipient. A
// linked region naming its own user's sealed message to alice, or an ID
// of the sealed range that is no message, was accepted (the sealed
// branch only checked that the ID fell in a segment's range), and
// alice's devices got an undeliverable event about bob's message.
func TestMarkUndeliverableSealedChecksSender(t *testing.T) {
	segs, _ := localSegments(t, false)
	e := newEnv(t, withRegions(euLinkedToUS), withSegments(segs))
	ctx := context.Background()
	m := e.send(t, "alice", "bob@us", "c1")
	in := wire.Envelope{ID: m.ID + 10, From: "bob@us", To: "alice", CID: "r1", Type: wire.TypeText, Body: "hi"}
	if _, _, _, err := e.svc.StoreRemote(ctx, in); err != nil {
		t.Fatal(err)
	}
	e.ids.mu.Lock()
	e.ids.next = int64(m.ID) + 20
	e.ids.mu.Unlock()
	for i := range 3 {
		e.send(t, "alice", "bob@us", fmt.Sprintf("c%d", i+2))
	}
	// The first segment holds m, bob's message and alice's next one.
	if _, err := e.svc.SealOnce(ctx, SealConfig{MaxMessages: 3}, time.Now()); err != nil {
		t.Fatal(err)
	}
	if n := hotCount(t, e.db, directConv("alice", "bob@us")); n != 1 {
		t.Fatalf("%d hot messages after sealing, want 1", n)
	}
	for _, bad := range []snowflake.ID{in.ID, m.ID + 5} { // bob's message; no message
		if err := e.svc.MarkUndeliverable(ctx, bad, "alice", "bob@us", ReasonNoSuchUser); !errors.Is(err, wire.ErrNotFound) {
			t.Errorf("notice about sealed %d (not alice's message): %v, want not found", bad, err)
		}
	}
	if evs := e.pub.published(); len(evs) != 0 {
		t.Fatalf("%d undeliverable events for notices about messages that are not alice's: %s", len(evs), evs[0].Payload)
	}
	// Alice's own sealed message is still marked, once.
	for range 2 {
		if err := e.svc.MarkUndeliverable(ctx, m.ID, "alice", "bob@us", ReasonNoSuchUser); err != nil {
			t.Fatal(err)
		}
	}
	if evs := e.pub.published(); len(evs) != 1 {
		t.Fatalf("%d undeliverable events for alice's sealed message, want 1", len(evs))
	}
}

// So for a message of a group of another region sealed in its mirror:
// bob's sealed message is marked, dave's is not bob's.
func TestMarkGroupUndeliverableSealedChecksSender(t *testing.T) {
	segs, _ := localSegments(t, false)
	e := newEnv(t, withGroups(), withSegments(segs), withRegions(fakeRegions{local: "us", links: map[string]bool{"eu": true}}))
	ctx := context.Background()
	e.groups.add("k3x9@eu", "bob", "dave", "alice@eu")
	m := e.sendGroup(t, "bob", "k3x9@eu", "b1")
	d := e.sendGroup(t, "dave", "k3x9@eu", "d1")
	e.sendGroup(t, "dave", "k3x9@eu", "d2")
	if _, err := e.svc.SealOnce(ctx, SealConfig{MaxMessages: 2}, time.Now()); err != nil {
		t.Fatal(err)
	}
	if n := hotCount(t, e.db, groupConv("k3x9@eu")); n != 1 {
		t.Fatalf("%d hot messages after sealing, want 1", n)
	}
	if err := e.svc.MarkGroupUndeliverable(ctx, d.ID, "bob", "k3x9@eu", ReasonForbidden); !errors.Is(err, wire.ErrNotFound) {
		t.Fatalf("notice about dave's sealed message as bob's: %v", err)
	}
	if err := e.svc.MarkGroupUndeliverable(ctx, m.ID, "bob", "k3x9@eu", ReasonForbidden); err != nil {
		t.Fatal(err)
	}
	if evs := e.pub.published(); len(evs) != 1 || evs[0].Topic != "user/bob/events" {
		t.Fatalf("events %+v", evs)
	}
}
