package broker

import (
	"fmt"
	"net"

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
)

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
	publish *ratelimit.Limiter // key: user ID
	connect *ratelimit.Limiter // key: ratelimit.RemoteIPKey(remote)
}

// newLimits applies the defaults (zero Spec) and builds the limiters.
func newLimits(cfg *Config) (*limits, error) {
	if cfg.PublishRate.IsZero() {
		cfg.PublishRate = DefaultPublishRate
	}
	if cfg.ConnectRate.IsZero() {
		cfg.ConnectRate = DefaultConnectRate
	}
	pub, err := ratelimit.New(ratelimit.Config{Spec: cfg.PublishRate, MaxKeys: cfg.RateLimitKeys, Now: cfg.Now})
	if err != nil {
		return nil, fmt.Errorf("%w: PublishRate: %w", ErrBadConfig, err)
	}
	conn, err := ratelimit.New(ratelimit.Config{Spec: cfg.ConnectRate, MaxKeys: cfg.RateLimitKeys, Now: cfg.Now})
	if err != nil {
		return nil, fmt.Errorf("%w: ConnectRate: %w", ErrBadConfig, err)
	}
	return &limits{publish: pub, connect: conn}, nil
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

// remoteAddr is an address given as a string: the HTTP request's
// RemoteAddr of a WebSocket connection, which the gateway rewrites to the
// client's address behind a trusted proxy.
type remoteAddr string

func (a remoteAddr) Network() string { return "tcp" }
func (a remoteAddr) String() string  { return string(a) }

var _ net.Addr = remoteAddr("")
