package presence

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/edgechat/edgechat/cluster"
	"github.com/edgechat/edgechat/internal/peerrpc"
	"github.com/edgechat/edgechat/internal/testutil"
)

// eagerCluster is a one-node Cluster whose RegisterRPC serves an Events
// call at once, as a peer forwarding presence to a node that is starting
// can.
type eagerCluster struct {
	t     *testing.T
	reply *EventsReply
}

func (c *eagerCluster) Self() string                    { return "n1" }
func (c *eagerCluster) Members() []cluster.Member       { return nil }
func (c *eagerCluster) MembersChanged() <-chan struct{} { return make(chan struct{}) }
func (c *eagerCluster) Call(context.Context, string, string, any, any) error {
	return errors.New("no peers")
}

func (c *eagerCluster) RegisterRPC(name string, methods peerrpc.Methods) error {
	h, ok := methods["Events"]
	if !ok {
		c.t.Fatalf("%s registered without Events", name)
	}
	args, _ := json.Marshal(EventsArgs{Events: []Event{{Kind: EventConnected, UID: "alice", ConnID: "alice/phone"}}})
	run, err := h(func(v any) error { return json.Unmarshal(args, v) })
	if err != nil {
		return err
	}
	reply, err := run()
	if err != nil {
		return err
	}
	c.reply = reply.(*EventsReply)
	return nil
}

// TestEventsServedAsSoonAsRegistered: a peer's Events call that arrives
// the moment the presence methods are registered is applied, not a nil
// dereference (it crashed a node restarting under load in the rolling
// restart test).
func TestEventsServedAsSoonAsRegistered(t *testing.T) {
	c := &eagerCluster{t: t}
	s, err := New(Config{Interval: interval, Grace: grace}, Deps{
		Publisher: &recorder{},
		Logger:    testutil.QuietLogger(),
		Cluster:   c,
	})
	if err != nil {
		t.Fatal(err)
	}
	if c.reply == nil || c.reply.NotHome {
		t.Fatalf("reply %+v: this node homes every user of a one-node cluster", c.reply)
	}
	if got := s.Status("alice").Status; got != "online" {
		t.Fatalf("alice is %q after the early Events call, want online", got)
	}
}
