package broker

import (
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgechat/edgechat/internal/wire"
)

// DisconnectUser closes every live connection of uid on this node (v5:
// DISCONNECT 0x98 administrative action; 3.1.1: the socket is closed).
// The node calls it on every node once the deletion of uid's account
// commits; reconnecting fails, since the account's tokens are refused.
// Safe from any goroutine.
func (b *Broker) DisconnectUser(uid string) {
	if uid == "" {
		return
	}
	for _, cl := range b.users.sessions(uid) {
		_ = b.srv.DisconnectClient(cl, packets.ErrAdministrativeAction)
	}
}

// RevokeAdmin takes the admin role from uid's live connections on this
// node: the role was checked at CONNECT, and a connection authorized with
// it would otherwise keep its $SYS subscriptions (and could make new
// ones) after the revocation. The connections stay open as a user's; their
// $SYS subscriptions are dropped (the client is not told: MQTT has no
// server-initiated UNSUBSCRIBE) and $SYS deliveries and subscriptions are
// refused from then on. The node calls it on every node once the
// revocation commits; a connection still in its handshake then is caught
// by OnSessionEstablished's second token check. Cheap and safe from any
// goroutine.
func (b *Broker) RevokeAdmin(uid string) {
	if uid == "" {
		return
	}
	for _, cl := range b.users.sessions(uid) {
		b.revokeAdmin(cl)
	}
}

// revokeAdmin makes one connection a user's: deliveries and subscriptions
// are checked as a user's from the flag on, then the subscriptions only
// an admin may hold go.
func (b *Broker) revokeAdmin(cl *mqtt.Client) {
	ci := b.connOf(cl)
	if ci == nil || !ci.p.Admin || ci.adminRevoked.Swap(true) {
		return
	}
	b.dropRevokedSubscriptions(cl, b.principal(cl))
	b.log.Info("admin role revoked: the connection keeps no $SYS subscription", "client", cl.ID)
}

// DisconnectKey closes every live user connection on this node whose
// access token was signed with the key kid (the key was revoked: a
// forger may hold it). The node calls it on every node once the
// revocation commits; the clients reconnect with a token of another key.
// Safe from any goroutine.
func (b *Broker) DisconnectKey(kid string) {
	if kid != "" {
		b.disconnectWhere(func(p wire.Principal) bool { return p.KeyID == kid })
	}
}

// DisconnectSession closes every live connection on this node made with
// an access token of the user session sid (the user ended it, say for a
// lost phone). The node calls it on every node once the end commits.
// Safe from any goroutine.
func (b *Broker) DisconnectSession(sid string) {
	if sid != "" {
		b.disconnectWhere(func(p wire.Principal) bool { return p.SessionID == sid })
	}
}

// ResyncClients closes every signed-in user's connection on this node
// (v5: DISCONNECT 0x89 Server busy; 3.1.1: the socket is closed) so that
// its client reconnects and syncs. The node calls it after its state was
// replaced by a snapshot from the leader (it had fallen too far behind to
// be sent the log): the chat messages that snapshot brought were never
// applied here one by one, so none of them was delivered live, and a
// client that stayed connected through the lag would never get them.
// Region links are left alone (their handoff is durable, not live).
// Safe from any goroutine.
func (b *Broker) ResyncClients() {
	if n := b.resyncClients(busySnapshot); n > 0 {
		b.log.Info("caught up from a snapshot: closed the signed-in connections so that their clients sync", "connections", n)
	}
}

// LeftCluster is called once this node has left its cluster (`edgechat
// cluster leave` answered) or learnt that it was removed: it no longer
// gets the log, so nothing
// committed from then on reaches its clients, live or by sync, and their
// publishes cannot commit. It closes every signed-in user's connection
// as ResyncClients does (v5: DISCONNECT 0x89; their sessions end), and
// every region link's (0x8B server shutting down), so that they
// reconnect to another node (this one answers /readyz 503), and refuses
// new connections from then on (CONNACK 0x88 server unavailable; 3.1.1:
// 0x03). Safe from any goroutine.
func (b *Broker) LeftCluster() {
	if b.left.Swap(true) {
		return // once
	}
	n := b.resyncClients(busyLeft)
	links := b.connsWhere(func(p wire.Principal) bool { return p.Link != "" })
	for _, cl := range links {
		_ = b.srv.DisconnectClient(cl, packets.ErrServerShuttingDown)
	}
	b.log.Info("left the cluster: closed the connections so that their clients move to another node; refusing new ones",
		"connections", n, "links", len(links))
}

// SetCutOff tells the broker whether its node counts itself cut off
// from its cluster: it has heard from no leader for --node-down-after
// while the other voters are a quorum (cluster.Raft.CutOff), so they go
// on committing without it. Nothing committed there reaches this node,
// and none of its users' publishes commits: a client that only receives
// would sit on it, getting nothing, for as long as the partition lasts,
// and the other nodes already show its users offline. When it becomes
// cut off it closes every signed-in user's connection as ResyncClients
// does (v5: DISCONNECT 0x89; their sessions end), so that they
// reconnect to another node and sync, and refuses theirs while it is
// (CONNACK 0x88 server unavailable; 3.1.1: 0x03); once it hears a
// leader again it takes them as before. So for other regions' links
// (DISCONNECT 0x89, no session to end): their batches could not commit
// here, and what they receive (presence, typing, receipts the other
// region subscribed to) is live and would not reach them; closed, the
// link dials its URL again (the region's load balancer, which this node
// no longer passes /readyz) and the other region shows the presence it
// watches as unknown meanwhile. Anonymous --dev clients are left
// alone. Safe from any goroutine.
func (b *Broker) SetCutOff(cut bool) {
	if b.cutOff.Swap(cut) == cut {
		return
	}
	if !cut {
		b.log.Info("a leader is heard again: taking connections again")
		return
	}
	n := b.resyncClients(busyCutOff)
	links := b.connsWhere(func(p wire.Principal) bool { return p.Link != "" })
	for _, cl := range links {
		_ = b.srv.DisconnectClient(cl, busyCutOffLink)
	}
	b.log.Warn("cut off from the cluster: closed the signed-in connections so that their clients move to another node; refusing new ones until a leader is heard again",
		"connections", n, "links", len(links))
}

// The reason strings of the DISCONNECT 0x89 (Server busy) that closes a
// v5 connection so that its client syncs: what happened, and what to do.
// Without them a client could read only "server busy", and a node cut
// off from its cluster looked like a loaded one worth reconnecting to.
var (
	busyCutOff = packets.Code{Code: packets.ErrServerBusy.Code, Reason: "server busy: this node is cut off from its cluster; reconnect to another node and sync"}
	// busyCutOffLink closes another region's link (it has nothing to sync).
	busyCutOffLink = packets.Code{Code: packets.ErrServerBusy.Code, Reason: "server busy: this node is cut off from its cluster; reconnect to another node"}
	busyLeft       = packets.Code{Code: packets.ErrServerBusy.Code, Reason: "server busy: this node left its cluster; reconnect to another node and sync"}
	busySnapshot   = packets.Code{Code: packets.ErrServerBusy.Code, Reason: "server busy: this node caught up with its cluster from a snapshot; reconnect and sync"}
	busyLiveQueue  = packets.Code{Code: packets.ErrServerBusy.Code, Reason: "server busy: committed messages did not fit this node's live delivery queue; reconnect and sync"}
	busySlow       = packets.Code{Code: packets.ErrServerBusy.Code, Reason: "server busy: a message did not fit this connection (its queue, its unacknowledged deliveries or its maximum packet size); reconnect and sync"}
	busyRoute      = packets.Code{Code: packets.ErrServerBusy.Code, Reason: "server busy: the subscription could not be committed to the cluster; reconnect, subscribe again and sync"}
)

// resyncClients closes the signed-in users' connections with 0x89 (the
// reason string why) and returns how many. The users' persistent sessions left offline missed
// the same messages (nothing was queued for them either): they end
// first, so that their clients come back to session present 0 and sync,
// rather than resume a session that lacks them.
func (b *Broker) resyncClients(why packets.Code) int {
	b.endOfflineSessions()
	doomed := b.connsWhere(func(p wire.Principal) bool { return p.Link == "" })
	for _, cl := range doomed {
		b.closeToSync(cl, 0, why)
	}
	return len(doomed)
}

// closeToSync closes a live connection whose client missed a chat
// message or a presence update (v5: DISCONNECT 0x89 Server busy, written
// within wait, 0: mochi's default; 3.1.1: the socket is closed), and
// ends its session: a persistent one resumed at the reconnection (session
// present 1) would lack what was missed, and a 3.1.1 client, which gets
// no DISCONNECT, could not tell this close from a network drop. Marked
// lost first, so that a reconnection taking it over meanwhile does not
// resume it either. The client comes back to session present 0,
// subscribes again and syncs.
func (b *Broker) closeToSync(cl *mqtt.Client, wait time.Duration, why packets.Code) {
	cl.LoseSession()
	if wait > 0 {
		_ = b.srv.DisconnectClientWithin(cl, why, wait)
	} else {
		_ = b.srv.DisconnectClient(cl, why)
	}
	b.srv.EndSession(cl)
}

// endOfflineSessions ends every signed-in user's persistent session left
// offline on this node (marked lost first: a reconnection that takes one
// over meanwhile does not resume it).
func (b *Broker) endOfflineSessions() {
	for _, cl := range b.srv.Clients.GetAll() {
		if cl.Net.Inline || !cl.Closed() || isLinkID(cl.ID) {
			continue
		}
		if _, _, err := wire.ParseClientID(cl.ID); err != nil {
			continue // an anonymous dev client: it reads no chat
		}
		cl.LoseSession()
		b.srv.EndSession(cl)
	}
}

// disconnectWhere closes the user connections whose principal matches.
func (b *Broker) disconnectWhere(match func(wire.Principal) bool) {
	b.disconnectWhereCode(match, packets.ErrAdministrativeAction)
}

// disconnectWhereCode closes the user connections whose principal
// matches with code, and returns how many.
func (b *Broker) disconnectWhereCode(match func(wire.Principal) bool, code packets.Code) int {
	doomed := b.connsWhere(match)
	for _, cl := range doomed {
		_ = b.srv.DisconnectClient(cl, code)
	}
	return len(doomed)
}

// connsWhere is the signed-in users' connections and other regions'
// links (not anonymous --dev clients) whose principal matches.
func (b *Broker) connsWhere(match func(wire.Principal) bool) []*mqtt.Client {
	var doomed []*mqtt.Client
	b.conns.Range(func(k, v any) bool {
		if ci := v.(*connInfo); (ci.p.UserID != "" || ci.p.Link != "") && match(ci.p) {
			doomed = append(doomed, k.(*mqtt.Client))
		}
		return true
	})
	return doomed
}
