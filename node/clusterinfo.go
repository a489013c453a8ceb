package node

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/edgechat/edgechat/cluster"
	"github.com/edgechat/edgechat/internal/wire"
	"github.com/edgechat/edgechat/services/clusterapi"
)

// retainedPresence reads this node's copies of the retained presence/{uid}
// (the broker copies every retained publish to every node).
type retainedPresence struct{ n *Node }

func (r retainedPresence) RetainedPresence(uid string) (wire.Presence, bool) {
	if r.n.Broker == nil || wire.ValidUserID(uid) != nil {
		return wire.Presence{}, false
	}
	var p wire.Presence
	pk, ok := r.n.Broker.Server().Topics.Retained.Get(wire.PresenceTopic(uid))
	if !ok || json.Unmarshal(pk.Payload, &p) != nil || p.Status == "" {
		return wire.Presence{}, false
	}
	return p, true
}

// EachRetainedPresence reads mochi's retained store directly: its
// wildcard scan (Topics.Messages with +) reads the topic tree unlocked.
func (r retainedPresence) EachRetainedPresence(fn func(uid string, p wire.Presence)) {
	if r.n.Broker == nil {
		return
	}
	for topic, pk := range r.n.Broker.Server().Topics.Retained.GetAll() {
		t := wire.ParseTopic(topic)
		var p wire.Presence
		if t.Kind == wire.KindPresence && json.Unmarshal(pk.Payload, &p) == nil && p.Status != "" {
			fn(t.Owner, p)
		}
	}
}

// leave withdraws this node's routes and client registry entries while
// it can still commit, then leaves the Raft configuration.
func (n *Node) leave(ctx context.Context) error {
	if err := n.Broker.DropNodeRoutes(ctx, n.cfg.NodeID); err != nil {
		return fmt.Errorf("node: dropping routes before leaving: %w", err)
	}
	if err := n.Broker.DropNodeClients(ctx, n.cfg.NodeID); err != nil {
		return fmt.Errorf("node: dropping client registry entries before leaving: %w", err)
	}
	return n.raft.Leave(ctx)
}

// remove takes a dead node out of the configuration and drops its routes
// and client registry entries.
func (n *Node) remove(ctx context.Context, name string) error {
	if err := n.raft.Remove(ctx, name); err != nil {
		return err
	}
	if err := n.Broker.DropNodeRoutes(ctx, name); err != nil {
		return err
	}
	return n.Broker.DropNodeClients(ctx, name)
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
	mqttURL, wsURL := n.cfg.AdvertiseMQTT, n.cfg.AdvertiseWS
	if mqttURL == "" && n.MQTTAddr() != "" {
		mqttURL = "tcp://" + n.MQTTAddr()
	}
	if wsURL == "" {
		wsURL = n.WebSocketURL()
	}
	httpURL := n.HTTPURL()
	if n.cfg.AdvertiseWS != "" {
		// The public HTTP base is the WebSocket URL without /mqtt.
		httpURL = strings.TrimSuffix(strings.Replace(strings.Replace(wsURL, "wss://", "https://", 1), "ws://", "http://", 1), "/mqtt")
	}
	return clusterapi.NodeInfo{Name: n.cfg.NodeID, MQTT: mqttURL, WS: wsURL, HTTP: httpURL,
		Connections: n.Broker.Connections(), Ready: n.Ready()}
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
	return out
}
