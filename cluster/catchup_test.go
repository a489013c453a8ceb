package cluster

import "testing"

// A follower that keeps up but is always an entry behind (the entry in
// flight) is never fed a barrier, whether or not the log grows during the
// checks; a follower that stays behind once the log stops growing is fed
// from the second check on, until it has caught up.
func TestCatchUpStepFeedsOnlyAFollowerThatStaysBehind(t *testing.T) {
	type check struct {
		leaderLast   uint64 // leader's last index when the check starts
		followerLast uint64 // what the follower answers
		grew         bool   // the log grew while the follower was asked
		wantFeed     bool
		wantAgain    bool
	}
	run := func(name string, checks []check) {
		t.Helper()
		var target uint64
		for i, c := range checks {
			behindLast := c.followerLast < c.leaderLast
			behindTarget := c.followerLast < target
			feed, again, next := catchUpStep(behindLast, behindTarget, c.grew, target, c.leaderLast)
			if feed != c.wantFeed || again != c.wantAgain {
				t.Errorf("%s: check %d (target %d): feed %v again %v, want %v %v", name, i, target, feed, again, c.wantFeed, c.wantAgain)
			}
			target = next
		}
	}
	run("steady load, follower one entry behind", []check{
		{leaderLast: 100, followerLast: 99, wantAgain: true},
		{leaderLast: 103, followerLast: 102, wantAgain: true}, // has 100: keeps up
		{leaderLast: 104, followerLast: 103, wantAgain: true},
		{leaderLast: 107, followerLast: 106, grew: true, wantAgain: true},
		{leaderLast: 109, followerLast: 109},
	})
	run("load stops with a follower far behind", []check{
		{leaderLast: 5000, followerLast: 1000, wantAgain: true},                 // first sighting: look again
		{leaderLast: 5000, followerLast: 1000, wantFeed: true, wantAgain: true}, // still behind 5000
		{leaderLast: 5001, followerLast: 1512, wantFeed: true, wantAgain: true}, // behind 5000 (its barrier is 5001)
		{leaderLast: 5002, followerLast: 5001, wantAgain: true},                 // has 5001: keeps up
		{leaderLast: 5002, followerLast: 5002},
	})
	run("far behind while the load goes on", []check{
		{leaderLast: 5000, followerLast: 1000, grew: true, wantAgain: true},
		{leaderLast: 5100, followerLast: 2000, grew: true, wantAgain: true},
		{leaderLast: 5150, followerLast: 3000, wantAgain: true}, // load stopped: first sighting
		{leaderLast: 5150, followerLast: 3512, wantFeed: true, wantAgain: true},
	})
	run("in step", []check{
		{leaderLast: 10, followerLast: 10},
	})
}
