package archive

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"testing"

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
