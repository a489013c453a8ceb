package cluster

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Commands a follower proposes one after the other without waiting
// (a connection's pipelined publishes) commit in the order they were
// proposed, although the follower's batches travel to the leader
// concurrently and the leader handles each on a goroutine of its own.
func TestFollowerProposalsCommitInTheOrderMade(t *testing.T) {
	// Slow timeouts: the test is about order, and the fast failover
	// timeouts of the other tests let a loaded machine (CI runs the web
	// client's Chromium tests alongside) lose the leader's lease in the
	// middle of 2,000 proposals, failing them for a reason not tested here.
	ms := startClusterWith(t, 3, func(c *Config) {
		c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout = 2*time.Second, 2*time.Second, time.Second
	})
	leader := waitVoters(t, ms, 3)
	var follower *member
	for _, m := range ms {
		if m != leader {
			follower = m
			break
		}
	}
	const n = 2000
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	waits := make([]func(context.Context) (any, error), n)
	for i := range n {
		waits[i] = follower.ProposeAsync(ctx, cmdOrder, []byte(strconv.Itoa(i)))
	}
	for i, wait := range waits {
		if _, err := wait(ctx); err != nil {
			t.Fatalf("proposal %d: %v", i, err)
		}
	}
	// The apply order, from the positions the handler stored them at.
	var got []int
	err := follower.db.View(func(tx *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = []byte("r/test/order/")
		it := tx.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			i, err := strconv.Atoi(string(v))
			if err != nil {
				return err
			}
			got = append(got, i)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != n {
		t.Fatalf("%d commands applied, want %d", len(got), n)
	}
	for i, v := range got {
		if v != i {
			t.Fatalf("the %d-th command applied is proposal %d: out of order (around it: %v)", i, v, got[max(0, i-3):min(len(got), i+3)])
		}
	}
}

// The leader's side alone: a batch waits for the one numbered before it,
// not for those the follower already had answered (low), and a restarted
// follower (a new epoch) starts afresh.
func TestForwardOrderWaitsForThePredecessorOnly(t *testing.T) {
	var o forwardOrder
	first := o.wait("n2", 7, 1, 1) // its turn at once
	second := make(chan func(), 1)
	go func() { second <- o.wait("n2", 7, 2, 1) }()
	select {
	case <-second:
		t.Fatal("batch 2 went before batch 1 was handed over")
	case <-time.After(50 * time.Millisecond):
	}
	first()
	var handed2 func()
	select {
	case handed2 = <-second:
	case <-time.After(5 * time.Second):
		t.Fatal("batch 2 still waits after batch 1 was handed over")
	}
	handed2()
	handed2() // harmless twice

	// Batches 3 and 4 were answered by another leader (low 5): 5 goes.
	done := make(chan struct{})
	go func() { o.wait("n2", 7, 5, 5)(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("batch 5 waited for batches the follower had had answered")
	}
	// A restarted follower numbers from 1 again.
	restarted := make(chan struct{})
	go func() { o.wait("n2", 9, 1, 1)(); close(restarted) }()
	select {
	case <-restarted:
	case <-time.After(5 * time.Second):
		t.Fatal("a new epoch's batch 1 waited")
	}
	// A predecessor that never comes holds a batch for forwardOrderWait,
	// not for ever.
	lost := make(chan struct{})
	go func() { o.wait("n2", 9, 3, 3)(); o.wait("n2", 9, 5, 4)(); close(lost) }()
	select {
	case <-lost:
	case <-time.After(5 * time.Second):
		t.Fatal("a batch whose predecessor is lost waits for ever")
	}
}
