package node

import (
	"context"
	"time"

	"github.com/edgechat/edgechat/cluster/featurelevel"
	"github.com/edgechat/edgechat/internal/wire"
)

// defaultFeatureLevelEvery is how often the leader asks the members
// which feature level they support, besides every membership change.
const defaultFeatureLevelEvery = 10 * time.Second

// supportedFeatureLevel is the feature level this node tells the others
// it supports (Edge.Info).
func (n *Node) supportedFeatureLevel() uint32 {
	if n.cfg.ReportFeatureLevel != nil {
		return n.cfg.ReportFeatureLevel()
	}
	return featurelevel.Supported
}

// runFeatureLevel raises the cluster's feature level, while this node
// leads, to the lowest level its members support, once that is above the
// committed one: at every membership change (a node joined, left, or
// came back upgraded: a restart changes the leader or the member's
// address) and periodically. A member that does not answer keeps the
// level where it is until it does.
func (n *Node) runFeatureLevel(ctx context.Context) error {
	every := n.cfg.FeatureLevelEvery
	if every <= 0 {
		every = defaultFeatureLevelEvery
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		changed := n.raft.MembersChanged()
		if n.raft.IsLeader() {
			n.raiseFeatureLevel(ctx)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-t.C:
		}
	}
}

// raiseFeatureLevel asks every member of the configuration (voters and
// nonvoters) which level it supports and proposes the lowest when it is
// above the committed level.
func (n *Node) raiseFeatureLevel(ctx context.Context) {
	if n.features.Level() >= n.supportedFeatureLevel() {
		n.featureChecks.Add(1)
		return // as high as this node goes: nothing to ask the members
	}
	// No member joins between the question and the commit (one that did
	// would not have been asked); a join after it is refused below the
	// level.
	release := n.raft.HoldJoins()
	defer release()
	low := n.supportedFeatureLevel()
	for _, m := range n.raft.Members() {
		if m.Name == n.cfg.NodeID {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		info, err := n.peerInfo(cctx, m)
		cancel()
		if err != nil {
			n.log.Debug("feature level: a member did not answer", "member", m.Name, "err", err)
			return
		}
		low = min(low, info.FeatureLevel)
	}
	n.featureChecks.Add(1)
	if low <= n.features.Level() {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := n.raft.Propose(cctx, wire.CmdFeatureLevel, featurelevel.Payload(low)); err != nil {
		n.log.Warn("feature level: raising failed; tried again later", "level", low, "err", err)
		return
	}
	n.log.Info("cluster feature level raised", "level", low)
}

// FeatureLevel is the cluster's feature level as this node applied it.
func (n *Node) FeatureLevel() uint32 { return n.features.Level() }
