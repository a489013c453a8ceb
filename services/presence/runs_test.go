package presence

import (
	"context"
	"errors"
	"testing"

	"github.com/edgechat/edgechat/cluster"
	"github.com/edgechat/edgechat/internal/peerrpc"
	"github.com/edgechat/edgechat/internal/testutil"
)

// oneNode is a one-node Cluster ("n1", which homes every user) whose
// presence methods the test calls itself, as peers would.
type oneNode struct{}

func (oneNode) Self() string                                         { return "n1" }
func (oneNode) Members() []cluster.Member                            { return nil }
func (oneNode) MembersChanged() <-chan struct{}                      { return make(chan struct{}) }
func (oneNode) RegisterRPC(string, peerrpc.Methods) error            { return nil }
func (oneNode) Call(context.Context, string, string, any, any) error { return errors.New("no peers") }

func connsOf(s *Service, uid string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if u := s.users[uid]; u != nil {
		return len(u.conns)
	}
	return 0
}

// A node's runs are told apart by their number, not ordered by it: a
// node that restarts with its clock set back (a smaller run number than
// its previous run's) is a new run all the same. Its connections count
// at their homes, and those of the run before end; before, its
// Connected events were dropped as those of an ended run, and the
// previous run's connections counted for good.
func TestARunWithASmallerNumberIsANewRun(t *testing.T) {
	s, err := New(Config{Interval: interval, Grace: grace}, Deps{
		Publisher: &recorder{},
		Logger:    testutil.QuietLogger(),
		Cluster:   oneNode{},
	})
	if err != nil {
		t.Fatal(err)
	}
	rpc := &presenceRPC{s}
	events := func(inc uint64, kind byte, conn string) {
		t.Helper()
		var reply EventsReply
		if err := rpc.Events(&EventsArgs{From: "n2", Inc: inc, Events: []Event{{Kind: kind, UID: "alice", ConnID: conn}}}, &reply); err != nil || reply.NotHome {
			t.Fatalf("Events: %v, %+v", err, reply)
		}
	}
	events(200, EventConnected, "alice/phone")
	if n := connsOf(s, "alice"); n != 1 {
		t.Fatalf("alice has %d connections, want 1", n)
	}
	// n2 restarted, its clock set back: run 100.
	events(100, EventConnected, "alice/tab")
	if n := connsOf(s, "alice"); n != 1 {
		t.Fatalf("after n2's new run: alice has %d connections, want 1 (the tab; the phone ended with run 200)", n)
	}
	events(100, EventDisconnected, "alice/tab")
	if n := connsOf(s, "alice"); n != 0 {
		t.Fatalf("after the tab left: alice has %d connections, want 0", n)
	}
	// A goodbye ends a run; a late Connected of that run does not count.
	events(100, EventConnected, "alice/tab2")
	if err := rpc.Bye(&HelloArgs{From: "n2", Inc: 100}, &struct{}{}); err != nil {
		t.Fatal(err)
	}
	events(100, EventConnected, "alice/tab3")
	if n := connsOf(s, "alice"); n != 0 {
		t.Fatalf("after run 100's goodbye: alice has %d connections, want 0", n)
	}
}
