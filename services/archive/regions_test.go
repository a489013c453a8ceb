package archive

import (
	"context"
	"errors"
	"maps"
	"testing"

	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/internal/wire"
)

type fakeRegions struct {
	local string
	links map[string]bool
}

func (r fakeRegions) Local() string             { return r.local }
func (r fakeRegions) Linked(region string) bool { return r.links[region] }

var euLinkedToUS = fakeRegions{local: "eu", links: map[string]bool{"us": true}}

// A message to a user of a linked region is stored (history, the
// outbox with its payload); name@{own region} is the local user; an
// unknown region is wire.ErrNoRegion and stores nothing.
func TestSendDirectAcrossRegions(t *testing.T) {
	o := &recordingOutbox{}
	e := newEnv(t, withRegions(euLinkedToUS), withOutbox(o))
	m := e.send(t, "alice", "bob@us", "c1")
	if m.To != "bob@us" || m.From != "alice" {
		t.Fatalf("stored %+v", m)
	}
	local := e.send(t, "alice", "bob@eu", "c2")
	if local.To != "bob" {
		t.Fatalf("bob@eu stored as to %q, want bob", local.To)
	}
	for _, to := range []string{"bob@mars", "bob@"} {
		_, _, _, err := e.svc.SendDirect(context.Background(), "alice", to, text("c3", "x"))
		if to == "bob@mars" && !errors.Is(err, wire.ErrNoRegion) || to == "bob@" && !errors.Is(err, wire.ErrInvalid) {
			t.Fatalf("to %s: %v", to, err)
		}
	}
	h, _, err := e.svc.historyPage(context.Background(), directConv("alice", "bob@us"), nil, 10)
	if err != nil || len(h) != 1 {
		t.Fatalf("history with bob@us: %d, %v", len(h), err)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.committed) != 2 || o.committed[0].To != "bob@us" {
		t.Fatalf("outbox got %+v", o.committed)
	}
	// Without links every qualified recipient is unknown.
	plain := newEnv(t)
	if _, _, _, err := plain.svc.SendDirect(context.Background(), "alice", "bob@us", text("c1", "x")); !errors.Is(err, wire.ErrNoRegion) {
		t.Fatalf("no regions: %v", err)
	}
}

// A message from another region keeps its ID, is stored once however
// often it is resent, and is refused when malformed or for nobody.
func TestStoreRemote(t *testing.T) {
	e := newEnv(t, withRegions(fakeRegions{local: "us", links: map[string]bool{"eu": true}}))
	in := wire.Envelope{ID: 7211938138472448001, From: "alice@eu", To: "bob", CID: "c1", Type: wire.TypeText, Body: "hi"}
	stored, _, dup, err := e.svc.StoreRemote(context.Background(), in)
	if err != nil || dup || stored.ID != in.ID || stored.From != "alice@eu" || stored.To != "bob" {
		t.Fatalf("StoreRemote = %+v, dup %v, %v", stored, dup, err)
	}
	again, _, dup, err := e.svc.StoreRemote(context.Background(), in)
	if err != nil || !dup || again.ID != in.ID {
		t.Fatalf("resend = %+v, dup %v, %v", again, dup, err)
	}
	// Another message of the same sender with the same cid is not a
	// resend: the dedupe key is the origin's ID.
	other := in
	other.ID++
	if _, _, dup, err := e.svc.StoreRemote(context.Background(), other); err != nil || dup {
		t.Fatalf("second message: dup %v, %v", dup, err)
	}
	h, _, err := e.svc.historyPage(context.Background(), directConv("bob", "alice@eu"), nil, 10)
	if err != nil || len(h) != 2 {
		t.Fatalf("history: %d, %v", len(h), err)
	}
	for _, bad := range []struct {
		env  wire.Envelope
		want error
	}{
		{wire.Envelope{ID: 5, From: "alice", To: "bob", CID: "c", Type: wire.TypeText, Body: "x"}, wire.ErrInvalid},     // unqualified
		{wire.Envelope{From: "alice@eu", To: "bob", CID: "c", Type: wire.TypeText, Body: "x"}, wire.ErrInvalid},         // no ID
		{wire.Envelope{ID: 6, From: "alice@eu", To: "zed", CID: "c", Type: wire.TypeText, Body: "x"}, wire.ErrNotFound}, // nobody
		{wire.Envelope{ID: 7, From: "alice@eu", To: "bob@us", CID: "c", Type: wire.TypeText, Body: "x"}, wire.ErrInvalid},
		// a media message with no media service to record it (services/media AttachRemote)
		{wire.Envelope{ID: 8, From: "alice@eu", To: "bob", CID: "c", Type: wire.TypeMedia, Media: &wire.Media{ID: "abcdefghijklmnopqrstuvwx"}}, wire.ErrInvalid},
	} {
		if _, _, _, err := e.svc.StoreRemote(context.Background(), bad.env); !errors.Is(err, bad.want) {
			t.Errorf("StoreRemote(%+v) = %v, want %v", bad.env, err, bad.want)
		}
	}
}

// Machine numbers are unique per region only: an origin ID that clashes
// with a stored message of the same conversation is stored under a new
// ID rather than stopping the link, and a resend still dedupes.
func TestStoreRemoteIDClash(t *testing.T) {
	ids := &seqIDs{next: 900, step: 1}
	e := newEnv(t, withIDs(ids), withRegions(fakeRegions{local: "us", links: map[string]bool{"eu": true}}))
	local := e.send(t, "bob", "alice@eu", "b1") // bob's message takes ID 900
	in := wire.Envelope{ID: local.ID, From: "alice@eu", To: "bob", CID: "a1", Type: wire.TypeText, Body: "hi"}
	stored, _, dup, err := e.svc.StoreRemote(context.Background(), in)
	if err != nil || dup || stored.ID == local.ID || stored.ID == snowflake.ID(0) {
		t.Fatalf("clashing remote message = %+v, dup %v, %v", stored, dup, err)
	}
	if again, _, dup, err := e.svc.StoreRemote(context.Background(), in); err != nil || !dup || again.ID != stored.ID {
		t.Fatalf("resend = %+v, dup %v, %v", again, dup, err)
	}
}

// A link resends a message whose acknowledgement it lost. Stored before
// the recipient blocked the sender (or before the sender left the group
// here), the resend is a duplicate, not a refusal: before, it was
// refused for good, and the sender's region marked a message the
// recipient had as undeliverable. A new message is still refused.
func TestLinkResendOfAStoredMessageIsNotRefused(t *testing.T) {
	e := newEnv(t, withGroups(), withRegions(fakeRegions{local: "us", links: map[string]bool{"eu": true}}))
	e.groups.add("g1", "bob", "carol@eu")
	ctx := context.Background()
	direct := wire.Envelope{ID: 7211938138472448001, From: "alice@eu", To: "bob", CID: "c1", Type: wire.TypeText, Body: "hi"}
	group := wire.Envelope{ID: 7211938138472448002, From: "carol@eu", Group: "g1", CID: "c2", Type: wire.TypeText, Body: "hi all"}
	if _, _, _, err := e.svc.StoreRemote(ctx, direct); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := e.svc.StoreRemoteGroup(ctx, group); err != nil {
		t.Fatal(err)
	}
	e.blocks.block("bob", "alice@eu")
	e.groups.remove("g1", "carol@eu")
	state := dump(t, e.db)
	if got, _, dup, err := e.svc.StoreRemote(ctx, direct); err != nil || !dup || got.ID != direct.ID {
		t.Errorf("resend to a recipient who blocked the sender since: %v dup %v, %v", got.ID, dup, err)
	}
	if got, _, dup, err := e.svc.StoreRemoteGroup(ctx, group); err != nil || !dup || got.ID != group.ID {
		t.Errorf("resend of a sender who left the group since: %v dup %v, %v", got.ID, dup, err)
	}
	next := direct
	next.ID++
	if _, _, _, err := e.svc.StoreRemote(ctx, next); !errors.Is(err, wire.ErrForbidden) {
		t.Errorf("a new message to a recipient who blocked the sender: %v", err)
	}
	nextGroup := group
	nextGroup.ID += 2
	if _, _, _, err := e.svc.StoreRemoteGroup(ctx, nextGroup); !errors.Is(err, wire.ErrForbidden) {
		t.Errorf("a new group message of a former member: %v", err)
	}
	if !maps.Equal(dump(t, e.db), state) {
		t.Error("the resends or the refusals changed the state")
	}
}
