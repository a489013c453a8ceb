package cluster

import (
	"context"
	"fmt"
)

// forward handles a proposal made on a node that is not the leader. This
// is the seam for leader forwarding: the multi-node work replaces the
// body with a call to the leader over the peer link (the leader then
// runs Propose locally). Until then the caller gets ErrNotLeader or
// ErrNoLeader, both wrapping wire.ErrUnavailable.
func (n *Node) forward(_ context.Context, _ byte, _ []byte) (any, error) {
	addr, id := n.raft.LeaderWithID()
	if addr == "" {
		return nil, ErrNoLeader
	}
	return nil, fmt.Errorf("%w (leader is %s at %s)", ErrNotLeader, id, addr)
}
