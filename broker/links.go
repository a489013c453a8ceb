package broker

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"strings"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgechat/edgechat/internal/address"
	"github.com/edgechat/edgechat/internal/wire"
)

// LinkPrefix starts the client IDs, usernames and topics of region
// links (bridge/region): no user may take them.
const LinkPrefix = "$link/"

// Links is the receiving end of the links of other regions
// (bridge/region). A link connects with client ID and username
// $link/{region} and the link's secret as its password, and publishes at
// QoS 1 under $link/{region}/.
type Links interface {
	// Authenticate checks a link's CONNECT (number is its user property
	// region-number, "" when absent; password is nil without one; certs
	// is the client certificate chain the TLS handshake verified, leaf
	// first, nil on a connection without TLS or without a client
	// certificate) and returns the peer region. Any error refuses the
	// connection; one wrapping wire.ErrForbidden (a right peer that is
	// misconfigured) is told to the peer as the CONNACK's reason.
	Authenticate(clientID, username string, password []byte, number string, certs []*x509.Certificate) (region string, err error)
	// Receive handles one publish of region's link: it returns once the
	// message is committed (and delivered), and the broker then sends the
	// PUBACK. Errors wrap wire.ErrForbidden (a spoofed sender),
	// wire.ErrNotFound (no such recipient), wire.ErrInvalid (a malformed
	// message): the link skips those; anything else (wire.ErrUnavailable)
	// it resends.
	Receive(ctx context.Context, region, topic string, payload []byte) error
	// Linked tells whether region is a configured link.
	Linked(region string) bool
	// Answer handles a request of region's link: a QoS 1 publish with an
	// MQTT 5 response topic (under $link/{region}/). The broker publishes
	// the answer there with the request's correlation data, then sends
	// the PUBACK. Errors as for Receive.
	Answer(ctx context.Context, region, topic string, payload []byte) ([]byte, error)
}

// GroupTypist is a Links that carries group typing across regions
// (bridge/region, grouptyping.go): the broker tells it of every typing
// notification a user of this region publishes on a group's topic, once
// accepted (from is the user, state typing or stopped).
type GroupTypist interface {
	GroupTyping(gid, from, state string)
}

// linkGroupTyping tells whether topic is group/{gid}/typing/{region}
// (or the filter group/+/typing/{region}): group typing this region
// hands to the link of region (bridge/region, grouptyping.go). Users
// cannot read it (four levels under group/ are no chat topic).
func linkGroupTyping(topic, region string) bool {
	rest, ok := strings.CutPrefix(topic, "group/")
	if !ok {
		return false
	}
	gid, tail, ok := strings.Cut(rest, "/")
	return ok && tail == "typing/"+region && (gid == "+" || wire.ValidGroupID(gid) == nil)
}

var refuseLink = connRefusal{v5: packets.Code{Code: 0x86, Reason: "bad username or password: not a link of this region, or not its secret or certificate"}, v3: 0x04, metric: "connect_link"}

// isLinkID tells whether a client ID or username is a link's.
func isLinkID(s string) bool { return strings.HasPrefix(s, LinkPrefix) }

// authenticateLink checks the CONNECT of a client ID or username under
// $link/: only a configured peer with its secret or its certificate gets
// in (never a user, in dev mode neither).
func (b *Broker) authenticateLink(cl *mqtt.Client, pk packets.Packet) (wire.Principal, *connRefusal) {
	certs := peerCertificates(cl.Net.Conn)
	if b.deps.Links == nil || !pk.Connect.UsernameFlag || !pk.Connect.PasswordFlag && certs == nil {
		b.log.Warn("link refused: no links configured or no credentials", "client", loggedID(cl.ID), "remote", cl.Net.Remote)
		return wire.Principal{}, &refuseLink
	}
	number := ""
	for _, u := range pk.Properties.User {
		if u.Key == "region-number" {
			number = u.Val
		}
	}
	var password []byte
	if pk.Connect.PasswordFlag {
		password = pk.Connect.Password
	}
	region, err := b.deps.Links.Authenticate(cl.ID, string(pk.Connect.Username), password, number, certs)
	if err != nil || address.ValidRegion(region) != nil {
		b.log.Warn("link refused", "client", loggedID(cl.ID), "remote", cl.Net.Remote, "error", err)
		if errors.Is(err, wire.ErrForbidden) {
			return wire.Principal{}, &connRefusal{v5: packets.Code{Code: 0x87, Reason: err.Error()}, v3: 0x05, metric: "connect_link"}
		}
		return wire.Principal{}, &refuseLink
	}
	return wire.Principal{Link: region}, nil
}

// peerCertificates is the client certificate chain that the TLS
// handshake of c verified (the TLS listener, or the gateway's HTTPS
// under a WebSocket), leaf first; nil without TLS, without a client
// certificate, or when the listener verifies none (no link CA).
func peerCertificates(c net.Conn) []*x509.Certificate {
	if ws, ok := c.(*wsConn); ok {
		c = ws.Conn
	}
	tc, ok := c.(*tls.Conn)
	if !ok {
		return nil
	}
	st := tc.ConnectionState()
	if len(st.VerifiedChains) == 0 || len(st.VerifiedChains[0]) == 0 {
		return nil
	}
	return st.VerifiedChains[0]
}

// linkAllowed is the ACL of a link connection: it publishes under its own
// $link/{region}/. It reads the ephemeral traffic its region is
// interested in (bridge/region, ephemeral.go): it subscribes to
// user/+/typing and user/+/receipts, of which it gets only what is
// addressed to users of its region (user/bob@{region}/typing), to
// group/+/typing/{region} (group typing for its region), and to
// presence/{name} of users of this region, one by one.
func linkAllowed(p wire.Principal, topic string, write bool) bool {
	if write {
		return strings.HasPrefix(topic, LinkPrefix+p.Link+"/") && !strings.ContainsAny(topic, "+#")
	}
	if topic == "user/+/typing" || topic == "user/+/receipts" {
		return true // a filter: each delivery is checked below
	}
	if linkGroupTyping(topic, p.Link) {
		return true
	}
	if rest, ok := strings.CutPrefix(topic, LinkPrefix+p.Link+"/reply/"); ok {
		return rest != "" && !strings.ContainsAny(rest, "/+#") // a query connection's answers (bridge/region, profile.go)
	}
	t := wire.ParseTopic(topic)
	switch t.Kind {
	case wire.KindUserTyping, wire.KindReceipts:
		return address.RegionOf(t.Owner) == p.Link
	case wire.KindPresence:
		return strings.IndexByte(t.Owner, '@') < 0
	}
	return false
}

// publishLink hands a link's publish to Links and acknowledges it only
// once Receive committed it. QoS 0 is refused (a link's message must be
// acknowledged).
func (b *Broker) publishLink(cl *mqtt.Client, pk packets.Packet, p wire.Principal) (packets.Packet, error) {
	const class = "link"
	if b.deps.Links == nil || pk.FixedHeader.Qos != 1 {
		return b.refuse(cl, pk, class, "forbidden", packets.ErrNotAuthorized)
	}
	ctx, cancel := context.WithTimeout(b.baseCtx, b.cfg.CommitTimeout)
	defer cancel()
	if rt := pk.Properties.ResponseTopic; rt != "" {
		return b.answerLink(ctx, cl, pk, p, rt)
	}
	// A link keeps several publishes in flight, which must commit in the
	// order sent: after one failed (it will be sent again), the later
	// ones of this connection are refused, never committed ahead of it.
	ci := b.connOf(cl)
	if ci != nil && ci.linkFailed.Load() {
		return b.refuse(cl, pk, class, "unavailable", packets.Code{Code: packets.ErrUnspecifiedError.Code, Reason: "an earlier publish of this link failed: reconnect"})
	}
	if err := b.deps.Links.Receive(ctx, p.Link, pk.TopicName, pk.Payload); err != nil {
		if ci != nil && !errors.Is(err, wire.ErrForbidden) && !errors.Is(err, wire.ErrNotFound) && !errors.Is(err, wire.ErrInvalid) {
			ci.linkFailed.Store(true)
		}
		code, reason := depCode(err)
		if errors.Is(err, wire.ErrForbidden) || errors.Is(err, wire.ErrNotFound) {
			code.Reason = err.Error() // the peer logs why it was refused
		}
		// Warn: only an authenticated region's link gets here, and a
		// refusal means it sent what this region cannot take (its side
		// logs only the code).
		b.log.Warn("link message refused", "region", p.Link, "topic", pk.TopicName, "error", err)
		return b.refuse(cl, pk, class, reason, code)
	}
	return pk, packets.CodeSuccessIgnore // committed: acknowledged, delivered by Receive
}

// localPeer resolves the recipient of user/{to}/newMessage: name@{own
// region} is the local user name; another region stays qualified.
func (b *Broker) localPeer(to string) (peer string, remote bool) {
	if strings.IndexByte(to, '@') < 0 {
		return to, false
	}
	a, err := address.Parse(to)
	if err != nil {
		return to, true
	}
	if a.IsLocal(b.cfg.Region) {
		return a.Name, false
	}
	return to, true
}

// ephemeralPeer resolves the owner of user/{owner}/typing or
// .../receipts: name@{own region} is the local name (the topic is
// rewritten to it); a user of a linked region stays qualified (the
// message goes to the region link's subscription, bridge/region); any
// other region is ok false.
func (b *Broker) ephemeralPeer(pk *packets.Packet, owner, leaf string) (peer string, ok bool) {
	peer, remote := b.localPeer(owner)
	if remote {
		return peer, b.deps.Links != nil && b.deps.Links.Linked(address.RegionOf(peer))
	}
	if peer != owner {
		pk.TopicName = "user/" + peer + "/" + leaf
	}
	return peer, true
}

// answerLink answers a link's request on its response topic, which must
// be under the link's own $link/{region}/ (a link reads nothing else).
func (b *Broker) answerLink(ctx context.Context, cl *mqtt.Client, pk packets.Packet, p wire.Principal, rt string) (packets.Packet, error) {
	const class = "link"
	if !linkAllowed(p, rt, true) {
		return b.refuse(cl, pk, class, "forbidden", packets.ErrNotAuthorized)
	}
	answer, err := b.deps.Links.Answer(ctx, p.Link, pk.TopicName, pk.Payload)
	if err != nil {
		code, reason := depCode(err)
		b.log.Debug("link request refused", "region", p.Link, "topic", pk.TopicName, "error", err)
		return b.refuse(cl, pk, class, reason, code)
	}
	out := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
		TopicName:   rt,
		Payload:     answer,
		Properties:  packets.Properties{CorrelationData: pk.Properties.CorrelationData},
		PacketID:    1, // mochi needs an ID for validation; inline publishes never use it
	}
	if err := b.srv.InjectPacket(b.inline, out); err != nil {
		b.log.Warn("link answer not published", "region", p.Link, "topic", rt, "error", err)
		return b.refuse(cl, pk, class, "unavailable", packets.Code{Code: packets.ErrImplementationSpecificError.Code, Reason: reasonNotCommitted})
	}
	return pk, packets.CodeSuccessIgnore
}
