package push

import (
	"context"
	"slices"
	"sync"
	"testing"

	"github.com/edgechat/edgechat/internal/snowflake"
)

// An unacknowledged delivery is recorded for a message in the outbox to a
// registered device, once, heard of by OnUnacked, and goes with the
// message; one of a message done, of an unregistered device or of a
// message never staged records nothing.
func TestUnackedDeliveriesLiveWithTheirMessage(t *testing.T) {
	e := newEnv(t)
	stage, _ := withStaging(e)
	ctx := context.Background()
	if _, err := e.svc.Register(ctx, "bob", Registration{Device: "phone", Platform: PlatformAPNs, Token: apnsToken("bob")}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var heard []snowflake.ID
	e.svc.OnUnacked(func(id snowflake.ID) { mu.Lock(); heard = append(heard, id); mu.Unlock() })
	stage(StagedMessage{ID: 40, From: "alice", To: "bob"})
	if err := e.svc.ReportUnacked(ctx, []UnackedDelivery{{ID: 40, Client: "bob/phone"}, {ID: 40, Client: "bob/phone"},
		{ID: 40, Client: "bob/laptop"}, {ID: 41, Client: "bob/phone"}, {ID: 40, Client: "not a client"}}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		id     snowflake.ID
		client string
		want   bool
	}{{40, "bob/phone", true}, {40, "bob/laptop", false}, {41, "bob/phone", false}} {
		if got, err := e.svc.Unacked(c.id, c.client); err != nil || got != c.want {
			t.Errorf("Unacked(%d, %s) = %v, %v; want %v", c.id, c.client, got, err, c.want)
		}
	}
	mu.Lock()
	if !slices.Equal(heard, []snowflake.ID{40, 40}) {
		t.Errorf("OnUnacked heard %v, want 40 for each delivery recorded", heard)
	}
	mu.Unlock()
	if err := e.svc.RecordProgress(ctx, Progress{Done: []snowflake.ID{40}}); err != nil {
		t.Fatal(err)
	}
	if got, _ := e.svc.Unacked(40, "bob/phone"); got {
		t.Error("the record outlived its message")
	}
	if err := e.svc.ReportUnacked(ctx, []UnackedDelivery{{ID: 40, Client: "bob/phone"}}); err != nil {
		t.Fatal(err)
	}
	// A command that bypassed ReportUnacked's checks records nothing of a
	// message done either.
	if _, err := e.svc.propose(ctx, 0x57, unackedCmd{Deliveries: []UnackedDelivery{{ID: 40, Client: "bob/phone"}}}); err != nil {
		t.Fatal(err)
	}
	for k := range e.state() {
		if len(k) > len(prefixUnacked) && k[:len(prefixUnacked)] == prefixUnacked {
			t.Errorf("left behind: %q", k)
		}
	}
}
