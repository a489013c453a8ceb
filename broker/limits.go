package broker

import (
	"fmt"
	"net"
	"slices"
	"sync"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgechat/edgechat/internal/ratelimit"
	"github.com/edgechat/edgechat/internal/wire"
)

// Defaults of the MQTT rate limits (Config.PublishRate, Config.ConnectRate).
var (
	// DefaultPublishRate is per user, over all topics and all of the
	// user's connections: a chat client sends far less; a bulk sender hits it.
	DefaultPublishRate = ratelimit.Spec{Rate: 20, Burst: 50}
	// DefaultConnectRate is per client IP (IPv6: its /64): enough for a
	// household or an office behind NAT reconnecting at once.
	DefaultConnectRate = ratelimit.Spec{Rate: 10, Burst: 30}
	// DefaultSubscribeRate is per user, over the user's connections on a
	// node, and counts only the subscriptions that make the node commit
	// a route (the first local subscriber of a filter): a reconnecting
	// client in hundreds of groups passes in its burst; a client that
	// loops SUBSCRIBE / UNSUBSCRIBE no longer makes the cluster commit
	// without end.
	DefaultSubscribeRate = ratelimit.Spec{Rate: 20, Burst: 500}
)

// DefaultConnectionsPerUser is how many live MQTT connections (distinct
// client IDs) one user may hold on a node: phones, tablets, computers
// and a browser tab each, with room to spare (the bench's conns mode
// opens 100 per user); one account can no longer open thousands.
const DefaultConnectionsPerUser = 128

// refuseUserConnections answers a CONNECT of a user who already holds
// Config.ConnectionsPerUser live connections on this node (a takeover of
// one of them is not refused: it is the same client ID).
var refuseUserConnections = connRefusal{
	v5:     packets.Code{Code: packets.ErrQuotaExceeded.Code, Reason: "quota exceeded: too many live connections of this user on this node; close one, or reconnect with the client ID of one"},
	v3:     packets.Err3ServerUnavailable.Code,
	metric: "connect_quota",
}

// acceptSpec is the per-IP bucket of TCP and TLS connections at accept,
// before the TLS handshake and the CONNECT: twice the CONNECT bucket, so
// that a client over the connection rate still gets its CONNACK 0x9F,
// while sockets that never send a CONNECT (or never finish TLS) are
// closed at once past it instead of each holding a goroutine, a file and
// a handshake for ConnectTimeout.
func acceptSpec(connect ratelimit.Spec) ratelimit.Spec {
	if connect.IsUnlimited() {
		return connect
	}
	return ratelimit.Spec{Rate: 2 * connect.Rate, Burst: 2 * connect.Burst}
}

// refuseConnectRate answers a CONNECT over the per-IP connection rate. It
// is checked before the token is verified, so a flood of bad tokens costs
// one map lookup each.
var refuseConnectRate = connRefusal{
	v5:     packets.Code{Code: packets.ErrConnectionRateExceeded.Code, Reason: "connection rate exceeded: too many connection attempts from this address"},
	v3:     packets.Err3ServerUnavailable.Code,
	metric: "connect_rate",
}

// limits are the broker's token buckets.
type limits struct {
	publish   *ratelimit.Limiter // key: user ID
	connect   *ratelimit.Limiter // key: ratelimit.RemoteIPKey(remote)
	accept    *ratelimit.Limiter // key: ratelimit.RemoteIPKey(remote); TCP and TLS listeners
	subscribe *ratelimit.Limiter // key: user ID
}

// newLimits applies the defaults (zero Spec) and builds the limiters.
func newLimits(cfg *Config) (*limits, error) {
	if cfg.PublishRate.IsZero() {
		cfg.PublishRate = DefaultPublishRate
	}
	if cfg.ConnectRate.IsZero() {
		cfg.ConnectRate = DefaultConnectRate
	}
	if cfg.AcceptRate.IsZero() {
		cfg.AcceptRate = acceptSpec(cfg.ConnectRate)
	}
	if cfg.SubscribeRate.IsZero() {
		cfg.SubscribeRate = DefaultSubscribeRate
	}
	pub, err := ratelimit.New(ratelimit.Config{Spec: cfg.PublishRate, MaxKeys: cfg.RateLimitKeys, Now: cfg.Now})
	if err != nil {
		return nil, fmt.Errorf("%w: PublishRate: %w", ErrBadConfig, err)
	}
	conn, err := ratelimit.New(ratelimit.Config{Spec: cfg.ConnectRate, MaxKeys: cfg.RateLimitKeys, Now: cfg.Now})
	if err != nil {
		return nil, fmt.Errorf("%w: ConnectRate: %w", ErrBadConfig, err)
	}
	acc, err := ratelimit.New(ratelimit.Config{Spec: cfg.AcceptRate, MaxKeys: cfg.RateLimitKeys, Now: cfg.Now})
	if err != nil {
		return nil, fmt.Errorf("%w: AcceptRate: %w", ErrBadConfig, err)
	}
	sub, err := ratelimit.New(ratelimit.Config{Spec: cfg.SubscribeRate, MaxKeys: cfg.RateLimitKeys, Now: cfg.Now})
	if err != nil {
		return nil, fmt.Errorf("%w: SubscribeRate: %w", ErrBadConfig, err)
	}
	return &limits{publish: pub, connect: conn, accept: acc, subscribe: sub}, nil
}

// allowPublish takes a token from the publishing user's bucket.
// Anonymous clients (dev mode only) are not limited: dev mode is plain
// MQTT for trying things and conformance runs, and an anonymous client
// could dodge a per-client-ID key anyway.
func (b *Broker) allowPublish(p wire.Principal) bool {
	if p.UserID == "" {
		return true
	}
	ok, _ := b.lim.publish.Allow(p.UserID)
	return ok
}

// allowConnect takes a token from the bucket of the client's address.
// Inline clients have none.
func (b *Broker) allowConnect(cl *mqtt.Client) bool {
	if cl.Net.Inline {
		return true
	}
	ok, _ := b.lim.connect.Allow(ratelimit.RemoteIPKey(cl.Net.Remote))
	return ok
}

// allowAccept takes a token from the accept bucket of a TCP or TLS
// connection's address, as it is accepted.
func (b *Broker) allowAccept(c net.Conn) bool {
	ok, _ := b.lim.accept.Allow(ratelimit.RemoteIPKey(c.RemoteAddr().String()))
	if !ok {
		b.m.refused.WithLabelValues("accept_rate").Inc()
	}
	return ok
}

// userConns counts the live connections of each user on this node by
// client ID: a client ID counts once however many connections hold it
// (a takeover's new connection is accepted before the old one ends).
type userConns struct {
	mu sync.Mutex
	m  map[string]map[string]int // user ID -> client ID -> connections
}

// acquire counts a connection of uid with client ID id, unless uid
// already holds limit other client IDs (limit < 0: no limit).
func (u *userConns) acquire(uid, id string, limit int) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	ids := u.m[uid]
	if ids[id] == 0 && limit >= 0 && len(ids) >= limit {
		return false
	}
	if ids == nil {
		if u.m == nil {
			u.m = make(map[string]map[string]int)
		}
		ids = make(map[string]int, 1)
		u.m[uid] = ids
	}
	ids[id]++
	return true
}

// release uncounts a connection acquire counted.
func (u *userConns) release(uid, id string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	ids := u.m[uid]
	if ids == nil {
		return
	}
	if ids[id]--; ids[id] <= 0 {
		delete(ids, id)
		if len(ids) == 0 {
			delete(u.m, uid)
		}
	}
}

// remoteAddr is an address given as a string: the HTTP request's
// RemoteAddr of a WebSocket connection, which the gateway rewrites to the
// client's address behind a trusted proxy.
type remoteAddr string

func (a remoteAddr) Network() string { return "tcp" }
func (a remoteAddr) String() string  { return string(a) }

var _ net.Addr = remoteAddr("")

// subscribeQuotaReason is the SUBACK reason string of a SUBSCRIBE with a
// filter over the subscribe rate.
const subscribeQuotaReason = "quota exceeded: subscribe rate limit (subscriptions that make this node commit a route); try again later"

// limitSubscribe takes a token of the user's subscribe bucket for each
// filter of pk that would make this node commit a route: one no local
// client subscribes to yet (a SUBSCRIBE / UNSUBSCRIBE loop commits a route
// and its withdrawal each time). A filter over the limit is emptied in
// the packet returned, which mochi refuses (0x8F) without subscribing it;
// OnSubscribed answers it 0x97 (quotaRefused). On a node without a
// cluster, for anonymous --dev clients and for region links nothing is
// taken.
func (b *Broker) limitSubscribe(cl *mqtt.Client, ci *connInfo, pk packets.Packet) packets.Packet {
	ci.overQuota = nil
	if b.rk == nil || cl.Net.Inline || ci.p.UserID == "" || ci.p.Link != "" || b.lim.subscribe.Spec().IsUnlimited() {
		return pk
	}
	var over []int
	for i, sub := range pk.Filters {
		if rf := routeFilter(sub.Filter); rf == "" || b.rk.local(rf) {
			continue
		}
		if ok, _ := b.lim.subscribe.Allow(ci.p.UserID); !ok {
			over = append(over, i)
		}
	}
	if over == nil {
		return pk
	}
	filters := slices.Clone(pk.Filters)
	for _, i := range over {
		filters[i].Filter = ""
	}
	pk.Filters = filters
	ci.overQuota = over
	return pk
}

// quotaRefused turns the SUBACK codes of the filters limitSubscribe
// refused into 0x97 quota exceeded (3.1.1 has 0x80 for any failure, which
// mochi set), through the slice mochi builds the SUBACK from (as
// retryUnverified does), and reports how many there were.
func (b *Broker) quotaRefused(cl *mqtt.Client, ci *connInfo, reasonCodes []byte) int {
	over := ci.overQuota
	ci.overQuota = nil
	if cl.Properties.ProtocolVersion == 5 {
		for _, i := range over {
			if i < len(reasonCodes) {
				reasonCodes[i] = packets.ErrQuotaExceeded.Code
			}
		}
	}
	return len(over)
}
