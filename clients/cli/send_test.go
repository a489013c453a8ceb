package cli

import (
	"errors"
	"testing"
)

// A message whose send gave up (the 2-minute timeout, the server away)
// may have been stored all the same: when its stored copy arrives (the
// catch-up after the reconnection), it replaces the "not sent" line
// rather than showing next to it, so that the user does not send it
// again.
func TestAFailedSendIsReplacedByItsStoredCopy(t *testing.T) {
	s := newState("me")
	s.openConv("alice")
	s.addPending("alice", "cid-1", "hello", t0)
	s.sendFailed("alice", "cid-1", errors.New("context deadline exceeded"))
	stored := msg(5, "me", "alice", "hello")
	stored.CID = "cid-1"
	s.receive(stored)
	c := s.conv("alice")
	if len(c.entries) != 1 || c.entries[0].failed != "" || c.entries[0].ID != stored.ID {
		t.Fatalf("entries after the stored copy came: %+v", c.entries)
	}
}
