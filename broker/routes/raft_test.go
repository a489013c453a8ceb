package routes_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/edgechat/edgechat/broker/routes"
	"github.com/edgechat/edgechat/cluster/clustertest"
	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/internal/wire"
)

// The route table over real Raft (in-memory transport): a member cut off
// in a minority sees none of the routes the majority commits, cannot
// commit its own, and converges after the partition heals.
func TestRouteTableAcrossAPartition(t *testing.T) {
	tables := map[string]*routes.Table{}
	c := clustertest.StartInmem(t, 3, clustertest.WithHandlers(func(m *clustertest.Server) {
		tb, err := routes.New(m.DB, m.FSM)
		if err != nil {
			t.Fatal(err)
		}
		tables[m.ID] = tb
	}))
	add := func(m *clustertest.Server, node, filter string) (uint64, error) {
		p, err := routes.EncodeRoute(node, filter)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, idx, err := m.Propose(ctx, fsm.Command{Type: wire.CmdRouteAdd, Payload: p})
		return idx, err
	}
	leader := c.Leader()
	idx, err := add(leader, "n1", "user/bob/#")
	if err != nil {
		t.Fatal(err)
	}
	c.WaitApplied(idx)
	// Cut the leader off with nobody: it is a minority of one.
	c.Partition(leader.ID)
	var majority []string
	for _, m := range c.Servers {
		if m.ID != leader.ID {
			majority = append(majority, m.ID)
		}
	}
	newLeader := c.Leader(majority...)
	idx, err = add(newLeader, "n2", "group/g1/newMessage")
	if err != nil {
		t.Fatalf("majority cannot commit: %v", err)
	}
	c.WaitApplied(idx, majority...)
	// The old leader cannot commit a route of its own.
	if _, err := add(leader, "n3", "user/carol/#"); err == nil {
		t.Fatal("a minority committed a route")
	}
	if got := tables[leader.ID].Match("group/g1/newMessage"); len(got) != 0 {
		t.Fatalf("minority sees the majority's route: %v", got)
	}
	for _, id := range majority {
		if got := tables[id].Match("group/g1/newMessage"); !slices.Equal(got, []string{"n2"}) {
			t.Fatalf("%s: %v", id, got)
		}
	}
	c.Heal()
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		for id, tb := range tables {
			if got := tb.Match("group/g1/newMessage"); !slices.Equal(got, []string{"n2"}) {
				return fmt.Errorf("%s after heal: %v", id, got)
			}
			if got := tb.Match("user/carol/newMessage"); len(got) != 0 {
				return fmt.Errorf("%s kept the minority's uncommitted route: %v", id, got)
			}
			if got := tb.Match("user/bob/newMessage"); !slices.Equal(got, []string{"n1"}) {
				return fmt.Errorf("%s lost a committed route: %v", id, got)
			}
		}
		return nil
	})
}
