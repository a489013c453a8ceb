// Copyright (c) edgechat. SPDX-License-Identifier: MPL-2.0

package raft

import (
	"sync"
	"testing"

	"github.com/hashicorp/go-hclog"
)

// Replication reads a follower's server while startStopReplication
// replaces it for a new address (under peerLock): the reads of the error
// logs and of updateLastAppended take the lock too (edgechat's patch 1,
// PATCHES.md; upstream hashicorp/raft#681). Run with -race: before the
// patch the race detector failed it.
func TestFollowerReplicationReadsThePeerUnderItsLock(t *testing.T) {
	r := &Raft{logger: hclog.NewNullLogger()}
	c := newCommitment(make(chan struct{}, 1), Configuration{Servers: []Server{{ID: "a", Address: "x", Suffrage: Voter}}}, 0)
	s := &followerReplication{
		peer:       Server{ID: "a", Address: "x", Suffrage: Voter},
		commitment: c,
		stepDown:   make(chan struct{}, 1),
		notify:     map[*verifyFuture]struct{}{},
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // startStopReplication: the member's new address
		defer wg.Done()
		for i := range 200 {
			s.peerLock.Lock()
			s.peer = Server{ID: "a", Address: ServerAddress(string(rune('x' + i%2))), Suffrage: Voter}
			s.peerLock.Unlock()
		}
	}()
	go func() {
		defer wg.Done()
		for i := range 200 {
			r.handleStaleTerm(s)
			updateLastAppended(s, &AppendEntriesRequest{Entries: []*Log{{Index: uint64(i + 1)}}})
		}
	}()
	wg.Wait()
	if got := s.peerNow().ID; got != "a" {
		t.Fatalf("peer %q", got)
	}
}
