package cluster

import (
	"log/slog"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// quickElection lets a node that is the only voter of its cluster (a
// single node, or the first of a cluster not yet formed) elect itself as
// soon as Raft runs. Raft makes a follower wait one heartbeat timeout, a
// random time between HeartbeatTimeout and twice that (0.5–1 s with the
// default 500 ms), for a leader before it stands; a lone voter waits for a
// leader that cannot exist, and the node serves nothing until it leads.
//
// start lowers the heartbeat timeout through ReloadConfig: on a shorter
// timeout Raft re-arms the follower's timer at once, and a follower that
// has never heard from a leader then stands at once. led gives the
// configured timeouts back as soon as the node leads, before anything
// else can happen: another voter can only be added by this leader, so no
// cluster of several voters ever runs with the short timeout. A node with
// other voters in its configuration is left alone.
type quickElection struct {
	mu      sync.Mutex
	pending bool                  // the short timeouts are in force
	orig    raft.ReloadableConfig // what to give back
}

func (q *quickElection) start(r *raft.Raft, self raft.ServerID, leaderLease time.Duration, log *slog.Logger) {
	f := r.GetConfiguration()
	if f.Error() != nil {
		return
	}
	servers := f.Configuration().Servers
	if len(servers) != 1 || servers[0].ID != self || servers[0].Suffrage != raft.Voter {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	orig := r.ReloadableConfig()
	// Raft requires HeartbeatTimeout >= LeaderLeaseTimeout (not
	// reloadable) and ElectionTimeout >= HeartbeatTimeout; any shorter
	// heartbeat timeout re-arms the timer, and the timer then finds no
	// contact with a leader ever.
	short := orig
	short.HeartbeatTimeout = leaderLease
	short.ElectionTimeout = short.HeartbeatTimeout
	if short.HeartbeatTimeout >= orig.HeartbeatTimeout {
		return
	}
	if r.State() == raft.Leader {
		return
	}
	if err := r.ReloadConfig(short); err != nil {
		log.Warn("quick election of a lone voter: not possible", "err", err)
		return
	}
	q.orig, q.pending = orig, true
	log.Info("lone voter: standing for election at once")
}

// led gives the configured timeouts back once this node leads.
func (q *quickElection) led(r *raft.Raft, log *slog.Logger) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.pending {
		return
	}
	q.pending = false
	if err := r.ReloadConfig(q.orig); err != nil {
		log.Error("restoring the raft timeouts after a quick election", "err", err)
		return
	}
	log.Info("lone voter leads: raft timeouts restored", "heartbeat_timeout", q.orig.HeartbeatTimeout)
}
