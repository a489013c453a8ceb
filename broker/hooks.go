package broker

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgechat/edgechat/internal/wire"
)

// hook is the broker's single mochi hook; it delegates to the Broker.
type hook struct {
	mqtt.HookBase
	b *Broker
}

var _ mqtt.Hook = (*hook)(nil)

func (h *hook) ID() string { return "edgechat" }

// Provides is asked by mochi before every hook call (for each delivery
// several times), so it is a switch rather than a search.
func (h *hook) Provides(b byte) bool {
	switch b {
	case mqtt.OnConnect,
		mqtt.OnConnectAuthenticate,
		mqtt.OnACLCheck,
		mqtt.OnSelectSubscribers,
		mqtt.OnSessionEstablish,
		mqtt.OnSessionEstablished,
		mqtt.OnDisconnect,
		mqtt.OnPublish,
		mqtt.OnPublishDropped,
		mqtt.OnPacketSent,
		mqtt.OnSubscribe,
		mqtt.OnSubscribed,
		mqtt.OnUnsubscribed,
		mqtt.OnClientExpired,
		mqtt.OnWillSent,
		mqtt.OnPublished,
		mqtt.OnQosDropped,
		mqtt.OnQosPublish,
		mqtt.OnQosComplete,
		mqtt.OnPacketEncode,
		mqtt.OnRetainMessage:
		return true
	}
	return false
}

// CONNECT refusal codes: v5 reason codes and the 3.1.1 return codes we
// send instead (mochi's own v5→v3 map turns 0x86 into 5 and lacks 0x87).
var (
	refuseNoCredentials = connRefusal{v5: packets.Code{Code: 0x87, Reason: "not authorized: username and access token required"}, v3: 0x05, metric: "connect_no_credentials"}
	refuseBadToken      = connRefusal{v5: packets.Code{Code: 0x86, Reason: "bad username or password: invalid or expired access token"}, v3: 0x04, metric: "connect_bad_token"}
	// A token that cannot be checked now (an OIDC provider's keys cannot
	// be fetched, the node has no signing keys yet): "server unavailable",
	// so that a client retries, where 0x86 tells many libraries to stop
	// and ask the user for new credentials.
	refuseUnavailable  = connRefusal{v5: packets.Code{Code: 0x88, Reason: "server unavailable: the token cannot be checked now; retry"}, v3: 0x03, metric: "connect_unavailable"}
	refuseLeft         = connRefusal{v5: packets.Code{Code: 0x88, Reason: "server unavailable: this node left its cluster; connect to another node"}, v3: 0x03, metric: "connect_unavailable"}
	refuseCutOff       = connRefusal{v5: packets.Code{Code: 0x88, Reason: "server unavailable: this node is cut off from its cluster; connect to another node"}, v3: 0x03, metric: "connect_unavailable"}
	refuseWrongUser    = connRefusal{v5: packets.Code{Code: 0x86, Reason: "bad username or password: token belongs to another user"}, v3: 0x04, metric: "connect_bad_token"}
	refuseClientID     = connRefusal{v5: packets.Code{Code: 0x85, Reason: "client identifier not valid: want {userID}/{deviceID} of the authenticated user"}, v3: 0x02, metric: "connect_client_id"}
	refuseAnonClientID = connRefusal{v5: packets.Code{Code: 0x85, Reason: "client identifier not valid: the {userID}/{deviceID} form needs credentials"}, v3: 0x02, metric: "connect_client_id"}
	refuseWill         = connRefusal{v5: packets.Code{Code: 0x87, Reason: "not authorized: will topic not allowed"}, v3: 0x05, metric: "connect_will"}
)

type connRefusal struct {
	v5     packets.Code
	v3     byte
	metric string
}

// hint is the refusal with more said in its reason string (a user ID
// spelled with capitals: what to send instead).
func (r connRefusal) hint(more string) *connRefusal {
	r.v5.Reason += " (" + more + ")"
	return &r
}

// validClientID reports whether id is a {userID}/{deviceID} client ID.
func validClientID(id string) bool {
	_, _, err := wire.ParseClientID(id)
	return err == nil
}

// OnConnect authenticates the client and picks the CONNACK code itself:
// mochi's OnConnectAuthenticate can only answer 0x86, so a refusal is
// sent from here and the returned error makes mochi drop the connection
// without another CONNACK.
func (h *hook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	b := h.b
	var p wire.Principal
	var refusal *connRefusal
	if b.left.Load() {
		refusal = &refuseLeft // it no longer gets the log: nothing would reach the client
	} else if !b.allowConnect(cl) {
		refusal = &refuseConnectRate // before any token work: floods stay cheap
	} else {
		p, refusal = b.authenticate(cl, pk)
	}
	if refusal == nil && pk.Connect.WillFlag && !b.willAllowed(p, pk.Connect.WillTopic) {
		refusal = &refuseWill
	}
	if refusal == nil && b.cutOff.Load() && cutOffRefuses(p) {
		refusal = &refuseCutOff
	}
	// Last, so that a refusal for another reason takes no place: a user's
	// live connections on this node (a client ID already connected, a
	// takeover, is not one more).
	userSlot := false
	if refusal == nil && p.UserID != "" && p.Link == "" && !cl.Net.Inline {
		if !b.userConns.acquire(p.UserID, cl.ID, b.cfg.ConnectionsPerUser) {
			refusal = refuseUserConnections.hint("at most " + strconv.Itoa(b.cfg.ConnectionsPerUser))
		} else {
			userSlot = true
		}
	}
	if refusal != nil {
		return b.refuseConnect(cl, refusal)
	}
	gen := b.connSeq.Add(1)
	ci := &connInfo{p: p, connID: cl.ID + "#" + strconv.FormatUint(gen, 10), gen: gen, pipe: newPipeline(b, cl), userSlot: userSlot}
	b.conns.Store(cl, ci)
	if b.cutOff.Load() && cutOffRefuses(p) {
		// Cut off since the check above: SetCutOff's sweep may have
		// missed this connection, so it is refused here.
		b.conns.Delete(cl)
		if userSlot {
			b.userConns.release(p.UserID, cl.ID)
		}
		return b.refuseConnect(cl, &refuseCutOff)
	}
	cl.HookData.Store(ci) // connOf
	return nil
}

// cutOffRefuses tells the connections a node cut off from its cluster
// refuses (SetCutOff): a signed-in user's and a region link's (its
// batches cannot commit here, and what it subscribes to is live); not an
// anonymous --dev client's (it reads no chat).
func cutOffRefuses(p wire.Principal) bool { return p.UserID != "" || p.Link != "" }

// refuseConnect answers a CONNECT with refusal's CONNACK; its error makes
// mochi drop the connection without another CONNACK.
func (b *Broker) refuseConnect(cl *mqtt.Client, refusal *connRefusal) error {
	b.m.refused.WithLabelValues(refusal.metric).Inc()
	code := refusal.v5
	if cl.Properties.ProtocolVersion < 5 {
		code = packets.Code{Code: refusal.v3}
	}
	if err := b.srv.SendConnack(cl, code, false, nil); err != nil {
		b.log.Debug("send connack", "client", cl.ID, "error", err)
	}
	level := slog.LevelInfo
	if refusal == &refuseConnectRate {
		level = slog.LevelDebug // a flood would flood the log too
	}
	b.log.Log(context.Background(), level, "connect refused", "client", loggedID(cl.ID), "remote", cl.Net.Remote, "reason", refusal.v5.Reason)
	return refusal.v5
}

// authenticate checks CONNECT credentials against the client ID.
func (b *Broker) authenticate(cl *mqtt.Client, pk packets.Packet) (wire.Principal, *connRefusal) {
	if isLinkID(cl.ID) || isLinkID(string(pk.Connect.Username)) {
		return b.authenticateLink(cl, pk)
	}
	hasPass := pk.Connect.PasswordFlag && len(pk.Connect.Password) > 0
	hasUser := pk.Connect.UsernameFlag && len(pk.Connect.Username) > 0
	if b.cfg.Dev && !hasPass {
		// Anonymous: the {user}/{device} form is reserved for verified
		// users, so that an anonymous client never takes over (and
		// inherits the queued messages of) a user's session.
		if _, _, err := wire.ParseClientID(cl.ID); err == nil {
			return wire.Principal{}, &refuseAnonClientID
		}
		return wire.Principal{}, nil
	}
	if !hasUser || !hasPass {
		return wire.Principal{}, &refuseNoCredentials
	}
	cidUser, device, err := wire.ParseClientID(cl.ID)
	if err != nil {
		if user, device, ok := strings.Cut(cl.ID, "/"); ok && strings.ToLower(user) != user {
			if lower := strings.ToLower(user) + "/" + device; validClientID(lower) {
				return wire.Principal{}, refuseClientID.hint("user IDs are lowercase: client ID " + lower)
			}
		}
		if user, _, ok := strings.Cut(cl.ID, "/"); ok && wire.ValidUserID(user) == nil {
			// The user part is fine: the device ID is what is wrong.
			return wire.Principal{}, refuseClientID.hint("device ID: " + wire.NewDeviceIDRule)
		}
		return wire.Principal{}, &refuseClientID
	}
	if wire.ValidNewDeviceID(device) != nil {
		// Taken before the rule of new device IDs: the client names it
		// anew at each CONNECT, so the stricter rule applies here.
		return wire.Principal{}, refuseClientID.hint("device ID: " + wire.NewDeviceIDRule)
	}
	if b.deps.Verifier == nil {
		return wire.Principal{}, &refuseBadToken
	}
	p, err := b.deps.Verifier.VerifyAccessToken(string(pk.Connect.Password))
	if errors.Is(err, wire.ErrUnavailable) {
		return wire.Principal{}, &refuseUnavailable
	}
	if err != nil || p.UserID == "" {
		return wire.Principal{}, &refuseBadToken
	}
	if p.UserID != string(pk.Connect.Username) {
		if strings.ToLower(string(pk.Connect.Username)) == p.UserID {
			return wire.Principal{}, refuseWrongUser.hint("user IDs are lowercase: username " + p.UserID)
		}
		return wire.Principal{}, &refuseWrongUser
	}
	if cidUser != p.UserID {
		return wire.Principal{}, &refuseClientID
	}
	return p, nil
}

// willAllowed: mochi publishes wills straight to subscribers, without
// OnPublish, so a will may only target topics that need no server
// processing: open non-chat topics in dev mode.
func (b *Broker) willAllowed(p wire.Principal, topic string) bool {
	return b.cfg.Dev && wire.ParseTopic(topic).Kind == wire.KindOther && allowed(p, b.cfg.Dev, nil, nil, topic, true)
}

// OnConnectAuthenticate accepts: OnConnect has already refused whoever
// it had to.
func (h *hook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	return h.b.connOf(cl) != nil
}

func (h *hook) OnSessionEstablished(cl *mqtt.Client, pk packets.Packet) {
	b := h.b
	b.nconn.Add(1)
	ci := b.connOf(cl)
	if ci == nil {
		return
	}
	ci.counted.Store(true)
	if b.ck != nil && !cl.Net.Inline {
		b.ck.established(cl, ci.gen)
	}
	if ci.p.UserID == "" {
		return
	}
	b.users.add(ci.p.UserID, cl)
	b.pruneOffline(ci.p.UserID) // this client may have been offline
	// A sign-out everywhere (a password change, a suspension, a
	// deletion) committed since OnConnect checked the token closed the
	// user's connections without this one, which was not in the index
	// yet: the token is checked again now that it is (the check of a
	// token seen a moment ago is a cache hit). Either this check sees
	// the change, or the change's DisconnectUser finds this connection.
	// So may a revocation of the admin role (RevokeAdmin): the token's
	// role is checked again too.
	p, valid := b.stillValid(ci.p, pk)
	if !valid {
		b.log.Info("connection closed: its token was refused during the handshake", "client", cl.ID)
		go func() { _ = b.srv.DisconnectClient(cl, packets.ErrAdministrativeAction) }()
	} else if ci.p.Admin && !p.Admin {
		ci.adminRevoked.Store(true)
	}
	// A resumed session brings its old subscriptions: drop those the
	// user lost meanwhile (a group left while offline).
	b.dropRevokedSubscriptions(cl, b.principal(cl))
	if !valid {
		// Not shown online, even for a moment, and nothing it sends
		// before it is closed counts (principalOf). Set after the
		// subscriptions were checked as the user's: a resumed session's
		// are kept as they were.
		ci.refused.Store(true)
	}
	ci.established.Store(true)
	if valid {
		b.handOwedPresence(cl) // statuses it may see again since it went offline
	}
	if ci.missedEarly.Load() {
		b.tellToSync(cl, ci) // a delivery was dropped during the handshake
	}
	if b.deps.Presence != nil && !ci.refused.Load() {
		b.deps.Presence.Connected(ci.p.UserID, ci.connID)
	}
}

// stillValid checks the CONNECT's token again: it must still verify, as
// the same user, session and key. It returns what it verifies as now (the
// admin role may be gone).
func (b *Broker) stillValid(was wire.Principal, pk packets.Packet) (wire.Principal, bool) {
	if b.deps.Verifier == nil {
		return was, true // no verified users: nothing to check again
	}
	p, err := b.deps.Verifier.VerifyAccessToken(string(pk.Connect.Password))
	return p, err == nil && p.UserID == was.UserID && p.SessionID == was.SessionID && p.KeyID == was.KeyID
}

func (h *hook) OnDisconnect(cl *mqtt.Client, err error, expire bool) {
	b := h.b
	if b.acks != nil {
		b.acks.ended(cl) // what it never acknowledged (unacked.go)
	}
	v, ok := b.conns.LoadAndDelete(cl)
	if !ok {
		b.nconn.Add(-1)
		return
	}
	cl.HookData.Store((*connInfo)(nil)) // connOf: gone with b.conns's entry
	ci := v.(*connInfo)
	if ci.userSlot {
		b.userConns.release(ci.p.UserID, cl.ID)
	}
	if !ci.counted.Load() {
		// Lost before its CONNACK (mochi patch 41): never established,
		// counted, indexed or shown online.
		return
	}
	b.nconn.Add(-1)
	if b.ck != nil {
		b.ck.disconnected(cl)
	}
	if ci.p.UserID == "" {
		return
	}
	b.users.remove(ci.p.UserID, cl)
	if b.deps.Presence != nil && !ci.refused.Load() {
		b.deps.Presence.Disconnected(ci.p.UserID, ci.connID)
	}
	if !expire {
		b.sessionLeftOffline(ci.p.UserID, cl)
	}
}

// OnACLCheck is called for publishes (topic name, write), subscribes
// (filter) and each delivery (topic name, !write; retained messages sent
// on SUBSCRIBE and $SYS updates included), so revoked visibility stops
// deliveries at once. Group deliveries to live sessions outside dev mode
// skip the membership look-up: a removal drops the subscriptions instead
// (groupDeliveryChecked). In dev mode the same check keeps chat topics
// matched by a wildcard (#, +/+, user/#) to those who may read them by
// name.
func (h *hook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if cl.Net.Inline {
		return true
	}
	b := h.b
	if b.cfg.Dev && devOpen(topic) && (!write || !strings.ContainsAny(topic, "+#")) {
		// Most dev-mode publishes and deliveries: an open topic, decided
		// without looking up the client or parsing the topic (allowed
		// decides the same).
		return true
	}
	if !write && b.groupDeliveryChecked(cl, topic) {
		return true // a big group's fan-out: no membership look-up per member
	}
	if _, own := b.ownQualifiedPresence(topic); own && !write {
		return false // presence/{name}@{this region}: see ownQualifiedPresence
	}
	p := b.principal(cl)
	ok := allowed(p, b.cfg.Dev, b.deps.Visibility, b.deps.Membership, topic, write)
	if !ok && write && archiveDecides(p, topic) {
		return true
	}
	if !ok {
		switch b.mayBeLagging(cl, p, topic, write) {
		case caughtUp:
			ok = allowed(p, b.cfg.Dev, b.deps.Visibility, b.deps.Membership, topic, write)
		case cannotCatchUp:
			if !write {
				if ci := b.connOf(cl); ci != nil {
					ci.unverified = append(ci.unverified, topic)
				}
			}
		}
	} else if !write && b.withheldFrom(cl, topic) {
		ok = false // could not be checked against the cluster: "retry"
	}
	if !ok && write {
		b.m.refused.WithLabelValues("acl_publish").Inc()
		// mochi answers this refusal itself: not before the pipelined
		// publishes that came first.
		if pipe := b.pipelineOf(cl); pipe != nil {
			pipe.drain()
		}
	}
	return ok
}

// OnSelectSubscribers keeps chat topics away from shared subscriptions
// (granted in dev mode only, and only with a filter that may match other
// topics, like $share/g/#): a shared group would hand a message to one
// member chosen at random, and the delivery check would then drop it for
// the whole group unless that member may read it. Nobody may subscribe
// to a chat topic through a shared subscription, so no member gets it.
// mochi calls this only when a publish matches a shared subscription.
func (h *hook) OnSelectSubscribers(subs *mqtt.Subscribers, pk packets.Packet) *mqtt.Subscribers {
	if underChat(pk.TopicName) {
		subs.Shared = nil
		subs.SharedSelected = nil
	}
	return subs
}

// OnSubscribe marks the connection as subscribing until OnSubscribed
// (mochi calls both for every SUBSCRIBE, with nothing in between that
// returns early): mochi checks each filter with the same OnACLCheck call
// as a delivery, and a filter check must not take the delivery shortcut
// (groupDeliveryChecked). A SUBSCRIBE that names a group's topics first
// waits until this node has caught up with the cluster
// (catchUpToSubscribe), in the client's read loop, before mochi checks
// its filters.
//
// It also applies the subscribe rate (limitSubscribe).
func (h *hook) OnSubscribe(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	if ci := h.b.connOf(cl); ci != nil {
		pk = h.b.limitSubscribe(cl, ci, pk)
		ci.subscribing.Add(1)
		filters := pk.Filters
		ci.subscribingTo.Store(&filters)
		h.b.catchUpToSubscribe(cl, ci, filters)
	}
	return pk
}

func (h *hook) OnSubscribed(cl *mqtt.Client, pk packets.Packet, reasonCodes []byte) {
	ci := h.b.connOf(cl)
	overQuota := 0
	if ci != nil {
		overQuota = h.b.quotaRefused(cl, ci, reasonCodes)
		if overQuota > 0 {
			h.b.m.refused.WithLabelValues("subscribe_quota").Add(float64(overQuota))
		}
	}
	h.b.retryUnverified(cl, pk.Filters, reasonCodes)
	refused := 0
	for _, c := range reasonCodes {
		if c >= packets.ErrUnspecifiedError.Code {
			refused++
		}
	}
	if refused -= overQuota; refused > 0 {
		h.b.m.refused.WithLabelValues("subscribe").Add(float64(refused))
	}
	h.b.recheckGroupSubscriptions(cl, pk.Filters, reasonCodes)
	if ci != nil {
		ci.subscribingTo.Store(nil)
		ci.subCatchUp.Store(int32(notLagging))
		ci.withheld.Store(nil)
		ci.subscribing.Add(-1)
		reason := h.b.ownPresenceReason(pk.Filters, reasonCodes)
		if reason == "" && overQuota > 0 {
			reason = subscribeQuotaReason
		}
		if reason != "" && cl.Properties.ProtocolVersion == 5 {
			ci.subackMu.Lock()
			if ci.subackReasons == nil {
				ci.subackReasons = map[uint16]string{}
			}
			ci.subackReasons[pk.PacketID] = reason
			ci.subackMu.Unlock()
		}
	}
	if k := h.b.rk; k != nil && !cl.Net.Inline {
		unrouted := ""
		for i, sub := range pk.Filters {
			if i < len(reasonCodes) && reasonCodes[i] < packets.ErrUnspecifiedError.Code {
				k.subscribed(cl.ID, sub.Filter)
				// mochi writes the SUBACK after this hook: commit a new
				// route first, so that a client that subscribes and then
				// syncs misses no chat message published on another node.
				if !k.ensure(h.b.baseCtx, sub.Filter) && underChat(sub.Filter) && unrouted == "" {
					unrouted = sub.Filter
				}
			}
		}
		if unrouted != "" {
			// A SUBACK now would promise what the node cannot keep: the
			// chat messages committed on other nodes until the keeper's
			// retry lands the route would reach no one, after the
			// client's catch-up sync. Refuse the connection instead (v5
			// 0x89 Server busy); the client reconnects, subscribes again
			// and syncs from where it was.
			h.b.m.refused.WithLabelValues("route").Inc()
			h.b.log.Warn("route not committed; disconnecting the subscriber", "client", cl.ID, "filter", unrouted)
			_ = h.b.srv.DisconnectClient(cl, busyRoute)
		}
	}
}

// OnUnsubscribed also runs when mochi ends a session (UnsubscribeClient:
// a clean disconnect, a clean takeover), which keeps the route refcount.
func (h *hook) OnUnsubscribed(cl *mqtt.Client, pk packets.Packet) {
	if k := h.b.rk; k != nil && !cl.Net.Inline {
		for _, sub := range pk.Filters {
			k.unsubscribed(cl.ID, sub.Filter)
		}
	}
}

// OnClientExpired: an expired persistent session. Our copy of mochi
// unsubscribes it first (patch 37; OnUnsubscribed releases the routes);
// upstream mochi does not, so its routes are released here as well.
func (h *hook) OnClientExpired(cl *mqtt.Client) {
	if k := h.b.rk; k != nil {
		k.clientGone(cl.ID)
	}
	if uid, _, err := wire.ParseClientID(cl.ID); err == nil {
		h.b.pruneOffline(uid)
	}
}

// OnPublished runs after mochi delivered a publish locally (client
// publishes, our inline injects): forward it to the other nodes that
// want it. Ignored packets (committed chat messages are delivered by
// inject instead, heartbeats, duplicates), packets that came from
// another node and committed messages delivered from this node's apply
// (every node delivers its own) are not forwarded; neither are
// node-local $ topics.
func (h *hook) OnPublished(cl *mqtt.Client, pk packets.Packet) {
	f := h.b.fwd
	if f == nil || cl == f.peerIn || cl == h.b.committed.in || pk.Ignore || pk.TopicName == "" || pk.TopicName[0] == '$' {
		return
	}
	f.forward(pk)
}

// OnWillSent: mochi publishes a will (--dev: open topics only) straight
// to this node's subscribers, without OnPublished; it goes to the other
// nodes as any publish does (a retained one is retained there too).
func (h *hook) OnWillSent(cl *mqtt.Client, pk packets.Packet) {
	h.OnPublished(cl, pk)
}

func (h *hook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil
	}
	b := h.b
	// One lookup of the connection per publish (this runs for every one).
	ci := b.connOf(cl)
	if !pipelined(pk) && ci != nil && ci.pipe != nil {
		// Answered by mochi (or not at all): only once every pipelined
		// publish before it has its answer.
		ci.pipe.drain()
	}
	// A publish by topic alias comes with its topic resolved: our copy
	// of mochi sets and resolves aliases before OnACLCheck (patch 51).
	return b.onPublish(cl, pk, principalOf(ci, cl))
}

// OnPublishDropped: a delivery to cl dropped instead of sent, because
// the client's outbound queue or its session's store of unacknowledged
// deliveries is full ("queue_full"), or because it is larger than the
// client's MQTT 5 Maximum Packet Size ("too_large", mochi patch 52).
// Either way a client that missed a chat message or a presence update
// is told to sync (missedStored).
func (h *hook) OnPublishDropped(cl *mqtt.Client, pk packets.Packet) {
	reason := "queue_full"
	if tooLargeFor(cl, pk) {
		reason = "too_large"
	}
	h.b.m.dropped.WithLabelValues(wire.ParseTopic(pk.TopicName).Kind.String(), reason).Inc()
	if w := h.b.acks; w != nil {
		w.dropped(cl, pk) // a device that does not have it (unacked.go)
	}
	h.b.missedStored(cl, pk)
}

// tooLargeFor reports whether pk, encoded for cl, is larger than the
// Maximum Packet Size cl set (a drop, rare: it encodes the packet).
func tooLargeFor(cl *mqtt.Client, pk packets.Packet) bool {
	limit := cl.Properties.Props.MaximumPacketSize
	if limit == 0 {
		return false
	}
	pk.ProtocolVersion = cl.Properties.ProtocolVersion
	pk.Mods.MaxSize = 0
	var buf bytes.Buffer
	if err := pk.PublishEncode(&buf); err != nil {
		return false
	}
	return uint32(buf.Len()) > limit
}

// OnQosDropped: a QoS>0 delivery the session held is gone without its
// acknowledgement. Counted by the class of its topic (the stored copy
// names it: mochi patch 36) and why: "session_ended" for those discarded
// with their session (a clean start, an expired or ended session: mochi
// patch 48), "qos_expired" for one whose message expiry passed.
func (h *hook) OnQosDropped(cl *mqtt.Client, pk packets.Packet) {
	class := kindUnknown.String()
	if pk.TopicName != "" {
		class = wire.ParseTopic(pk.TopicName).Kind.String()
	}
	reason := "qos_expired"
	if cl.SessionEnded() {
		reason = "session_ended"
	}
	h.b.m.dropped.WithLabelValues(class, reason).Inc()
}

// OnQosPublish: a QoS >= 1 delivery stored for cl, to be acknowledged
// (unacked.go).
func (h *hook) OnQosPublish(cl *mqtt.Client, pk packets.Packet, _ int64, _ int) {
	if w := h.b.acks; w != nil {
		w.delivered(cl, pk)
	}
}

// OnQosComplete: an exchange ended; the client's PUBACK (PUBCOMP) of a
// delivery acknowledges it (unacked.go). Not OnPacketRead, which would
// copy every packet read through the hook (docs/perf/fanout.md).
func (h *hook) OnQosComplete(cl *mqtt.Client, pk packets.Packet) {
	if w := h.b.acks; w != nil {
		w.completed(cl, pk.PacketID)
	}
}

func (h *hook) OnPacketSent(cl *mqtt.Client, pk packets.Packet, _ []byte) {
	if pk.FixedHeader.Type != packets.Publish {
		return
	}
	kind := kindUnknown // an outbound topic alias hides the name
	if pk.TopicName != "" {
		kind = wire.ParseTopic(pk.TopicName).Kind
	}
	h.b.m.outCounter(kind).Inc()
}

// OnPacketEncode works around two mochi encoding bugs:
//   - a QoS 1 PUBACK is built with reason 0x01 (granted QoS 1), which goes
//     on the wire as soon as the PUBACK carries properties (ours carry id
//     and from); 0x01 is not a PUBACK reason code, success is 0x00;
//   - a client that sets Request Problem Information to 0 (paho.golang
//     does whenever it sends CONNECT properties) loses the user
//     properties of PUBLISH packets too, which [MQTT-3.1.2-29] allows.
//
// It gives a SUBACK the reason string OnSubscribed decided (a
// presence/{name}@{this region} refused: ownQualifiedPresence).
//
// It also tells MQTT 5 clients the packet size limit and the topic
// alias maximum in the CONNACK (mochi enforces both capabilities but
// says neither), so that their library refuses a larger publish itself
// [MQTT-3.2.2-15] rather than having its connection closed, and may use
// aliases at all (none are allowed where the CONNACK names no maximum,
// [MQTT-3.2.2-17]); and, outside --dev, that shared subscriptions are not
// available.
func (h *hook) OnPacketEncode(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	switch pk.FixedHeader.Type {
	case packets.Connack:
		if pk.ProtocolVersion == 5 && pk.ReasonCode < packets.ErrUnspecifiedError.Code {
			if pk.Properties.MaximumPacketSize == 0 {
				pk.Properties.MaximumPacketSize = uint32(h.b.cfg.MaxPacketSize)
			}
			if pk.Properties.TopicAliasMaximum == 0 {
				pk.Properties.TopicAliasMaximum = TopicAliasMaximum
			}
			if !h.b.cfg.Dev {
				// Every $share filter is refused outside --dev: say so, or
				// a client takes them as available (the property absent).
				pk.Properties.SharedSubAvailable, pk.Properties.SharedSubAvailableFlag = 0, true
			}
		}
	case packets.Puback:
		if pk.ReasonCode > 0 && pk.ReasonCode < packets.ErrUnspecifiedError.Code {
			pk.ReasonCode = packets.CodeSuccess.Code
		}
	case packets.Publish:
		pk.Mods.DisallowProblemInfo = false // PUBLISH has no reason string; user properties stay
	case packets.Suback:
		// The reason OnSubscribed decided (mochi writes the SUBACK after
		// it and gives it no reason of a hook's).
		if ci := h.b.connOf(cl); ci != nil {
			ci.subackMu.Lock()
			reason, ok := ci.subackReasons[pk.PacketID]
			delete(ci.subackReasons, pk.PacketID)
			ci.subackMu.Unlock()
			if ok && pk.Properties.ReasonString == "" {
				pk.Properties.ReasonString = reason
			}
		}
	}
	return pk
}
