package archive

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/edgechat/edgechat/cluster/featurelevel"
	"github.com/edgechat/edgechat/internal/wire"
)

// The reason "expired" (a message the region link's --link-retention
// dropped) is taken from feature level 4: below it a node of an earlier
// version would refuse the command, so every node refuses it (nothing
// stored, nobody told), the proposer before proposing and the FSM when
// a command comes anyway.
func TestUndeliverableExpiredFromLevel4(t *testing.T) {
	e := newEnv(t, withRegions(euLinkedToUS))
	featurelevel.Register(e.f)
	ctx := context.Background()
	m := e.send(t, "alice", "bob@us", "c1")
	if err := e.svc.MarkUndeliverable(ctx, m.ID, "alice", "bob@us", ReasonExpired); !errors.Is(err, wire.ErrInvalid) {
		t.Fatalf("expired at level 0: %v, want it refused", err)
	}
	b, _ := json.Marshal(undeliverableCmd{ID: m.ID, From: "alice", To: "bob@us", Reason: ReasonExpired, V: 1})
	if _, err := e.prop.Propose(ctx, wire.CmdUndeliverable, b); !errors.Is(err, wire.ErrInvalid) {
		t.Fatalf("an expired command at level 0: %v, want it refused", err)
	}
	if n := len(e.pub.published()); n != 0 {
		t.Fatalf("%d events below level 4", n)
	}
	if _, err := e.prop.Propose(ctx, wire.CmdFeatureLevel, featurelevel.Payload(featurelevel.ExpiredUndeliverable)); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.MarkUndeliverable(ctx, m.ID, "alice", "bob@us", ReasonExpired); err != nil {
		t.Fatal(err)
	}
	evs := e.pub.published()
	var ev map[string]string
	if len(evs) != 1 || json.Unmarshal(evs[0].Payload, &ev) != nil || ev["reason"] != ReasonExpired || ev["to"] != "bob@us" {
		t.Fatalf("events %+v", evs)
	}
}
