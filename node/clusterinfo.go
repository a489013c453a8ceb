package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"

	"github.com/edgechat/edgechat/cluster"
	"github.com/edgechat/edgechat/services/clusterapi"
)

// leave withdraws this node's routes and client registry entries while
// it can still commit, then leaves the Raft configuration and closes its
// clients' connections (Broker.LeftCluster). A leave that
// is refused (the last voter) drops nothing, and one that fails later
// puts everything back: the node stays a member and must keep serving.
func (n *Node) leave(ctx context.Context) error {
	if _, err := n.raft.CanLeave(); err != nil {
		return err
	}
	err := n.Broker.DropNodeRoutes(ctx, n.cfg.NodeID)
	if err != nil {
		err = fmt.Errorf("node: dropping routes before leaving: %w", err)
	} else if err = n.Broker.DropNodeClients(ctx, n.cfg.NodeID); err != nil {
		err = fmt.Errorf("node: dropping client registry entries before leaving: %w", err)
	} else {
		err = n.raft.Leave(ctx)
	}
	if err != nil {
		n.Broker.CancelLeave()
		n.log.Warn("leave failed; routes and client registrations restored", "error", err)
		return err
	}
	// No longer a member: its clients would get nothing more here.
	n.Broker.LeftCluster()
	return nil
}

// leftWhenRemoved closes this node's clients' connections and refuses
// new ones (Broker.LeftCluster) once it is no longer a member: removed
// by an operator while it ran (or while it was cut off: it learns it
// when it can ask again, cluster.Raft.NotAMember). It runs until ctx
// ends.
func (n *Node) leftWhenRemoved(ctx context.Context) {
	for {
		changed := n.raft.MembersChanged()
		if n.raft.NotAMember() {
			n.log.Warn(notAMember)
			n.Broker.LeftCluster()
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
	}
}

// refuseWhileCutOff tells the broker whether this node counts itself
// cut off from its cluster (cluster.Raft.CutOff: no leader heard for
// --node-down-after while the other voters are a quorum), at every
// announced change, until ctx ends: the broker then closes its
// signed-in clients' connections and refuses theirs, so that they move
// to a node that gets the log (Broker.SetCutOff).
func (n *Node) refuseWhileCutOff(ctx context.Context) {
	for {
		changed := n.raft.MembersChanged()
		// Now, not as announced: a node counts itself cut off from its
		// start until its first tick after it found a leader, and its
		// broker runs only once it has (start); read as announced, the
		// broker refused every CONNECT for that tick after a restart.
		n.Broker.SetCutOff(n.raft.CutOffNow())
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
	}
}

// remove takes a dead node out of the configuration and drops its routes
// and client registry entries. For a name that is no member it still
// drops them before answering ErrUnknownNode: the retry of a removal
// that committed but whose drop failed finds the name gone, and would
// otherwise leave the removed node's routes and entries for good. This
// node's own name is a leave.
func (n *Node) remove(ctx context.Context, name string) error {
	if name == n.cfg.NodeID {
		// Removing itself is a leave: its routes and registry entries go
		// first, while it can still commit (after the removal it could
		// not, and every retry sent to it would fail), a leader hands
		// its leadership over, and its clients move on.
		return n.leave(ctx)
	}
	rerr := n.raft.Remove(ctx, name)
	if rerr != nil && !errors.Is(rerr, cluster.ErrUnknownNode) {
		return rerr
	}
	if err := n.Broker.DropNodeRoutes(ctx, name); err != nil {
		return err
	}
	if err := n.Broker.DropNodeClients(ctx, name); err != nil {
		return err
	}
	return rerr
}

// edgeRPC is the node-to-node RPC service "Edge": what a node tells the
// others about itself (its public URLs and load), for /cluster/nodes and
// /cluster/connect.
type edgeRPC struct{ n *Node }

// InfoArgs is the (empty) request of Edge.Info.
type InfoArgs struct{}

// Info answers with this node's public URLs and load.
func (e *edgeRPC) Info(_ *InfoArgs, reply *clusterapi.NodeInfo) error {
	*reply = e.n.selfInfo()
	return nil
}

func (n *Node) selfInfo() clusterapi.NodeInfo {
	// URLs not advertised are the bound addresses, with an unspecified
	// host ([::], 0.0.0.0) kept as it is: the cluster API puts the host a
	// client can reach in its place (clusterapi.Service.Nodes).
	mqttURL, wsURL := n.cfg.AdvertiseMQTT, n.cfg.AdvertiseWS
	if mqttURL == "" && n.MQTTAddr() != "" {
		mqttURL = "tcp://" + n.MQTTAddr()
	}
	httpURL := n.Gateway.ListenURL()
	if wsURL == "" {
		wsURL = "ws" + strings.TrimPrefix(httpURL, "http") + "/mqtt"
	}
	if n.cfg.AdvertiseWS != "" {
		// The public HTTP base is the WebSocket URL without /mqtt.
		httpURL = strings.TrimSuffix(strings.Replace(strings.Replace(wsURL, "wss://", "https://", 1), "ws://", "http://", 1), "/mqtt")
	}
	// Ready is what /readyz says (a leader reachable, the Raft log
	// writable, applies moving), not only "joined": /cluster/connect must
	// not send clients to a node cut off in a minority or with a full disk.
	// The members reach this node's HTTP API where it listens (with the
	// host of its cluster address when it listens on every interface),
	// not at its public URL, which may be one they cannot reach; over
	// HTTPS they use the public URL it advertises, whose host its
	// certificate names.
	peerHTTP := n.Gateway.ListenURL()
	if n.tls != nil && n.cfg.AdvertiseWS != "" {
		peerHTTP = ""
	}
	return clusterapi.NodeInfo{Name: n.cfg.NodeID, MQTT: mqttURL, WS: wsURL, HTTP: httpURL,
		Connections: n.Broker.Connections(), Ready: n.readiness() == nil, PeerHTTP: peerHTTP,
		FeatureLevel: n.supportedFeatureLevel(), ArchiveStore: n.cfg.archiveStoreID()}
}

// peerHTTPURL is the base URL of member m's HTTP API for this node's own
// requests, from what m says of itself: where it listens, with the host
// of its cluster address (which this node reaches) when it listens on
// every interface; its public URL when it gives no address (see
// clusterapi.NodeInfo.PeerHTTP).
func peerHTTPURL(m cluster.Member, info clusterapi.NodeInfo) string {
	u, err := url.Parse(info.PeerHTTP)
	if info.PeerHTTP == "" || err != nil {
		return info.HTTP
	}
	host, port, err := net.SplitHostPort(u.Host)
	if err != nil {
		return info.HTTP
	}
	if ip, perr := netip.ParseAddr(host); perr == nil && ip.IsUnspecified() {
		if host, _, err = net.SplitHostPort(m.Addr); err != nil {
			return info.HTTP
		}
	}
	return u.Scheme + "://" + net.JoinHostPort(host, port)
}

func (n *Node) peerInfo(ctx context.Context, m cluster.Member) (clusterapi.NodeInfo, error) {
	var info clusterapi.NodeInfo
	err := n.raft.Call(ctx, m.Addr, "Edge.Info", &InfoArgs{}, &info)
	return info, err
}

func (n *Node) clusterStatus() clusterapi.Status {
	st := n.raft.Stats()
	out := clusterapi.Status{Node: n.cfg.NodeID, State: st.State, Leader: st.LeaderID, Term: st.Term,
		LastIndex: st.LastIndex, CommitIndex: st.CommitIndex, AppliedIndex: st.AppliedIndex}
	out.Members = st.Members
	out.FeatureLevel = n.features.Level()
	return out
}
