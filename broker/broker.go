// Package broker is the MQTT node of edgechat: a mochi-mqtt server with
// TCP, TLS and WebSocket listeners and the hooks that make it a chat
// broker. The hooks authenticate CONNECT with access tokens, enforce the
// topic table of docs/protocol.md (ACL), validate and stamp chat messages
// and commit them through a ChatStore before the PUBACK, rewrite typing
// notifications and receipts, feed heartbeats and connections to the
// presence tracker, and export Prometheus metrics.
//
// mochi is extended, never forked: hooks, an own inline client for
// server-side publishes with user properties, and listeners added with
// Server.AddListener.
package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgechat/edgechat/broker/registry"
	"github.com/edgechat/edgechat/broker/routes"
	"github.com/edgechat/edgechat/internal/peerrpc"
	"github.com/edgechat/edgechat/internal/ratelimit"
	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/internal/wire"
	"github.com/edgechat/edgechat/internal/workpool"
)

// TopicAliasMaximum is the highest topic alias an MQTT 5 client may use
// (told in the CONNACK; a higher one closes the connection with 0x94).
// Each alias holds a topic name for the connection's life, and mochi's
// default, 65,535, let one client hold megabytes; a chat client
// publishes to a few conversations at a time.
const TopicAliasMaximum = 32

// Defaults of Config.
const (
	DefaultMaxWritesPending = 128
	DefaultReadBufferSize   = 1024
	DefaultWriteBufferSize  = 2048
	DefaultCommitTimeout    = 10 * time.Second
	DefaultConnectTimeout   = 10 * time.Second
	DefaultMaxPacketSize    = 64 << 10
	DefaultSessionExpiry    = 24 * time.Hour

	DefaultForwardBatch    = 64
	DefaultForwardQueue    = 100_000
	DefaultForwardTimeout  = 5 * time.Second
	DefaultForwardRetryMax = 2 * time.Second
	DefaultRouteResync     = 30 * time.Second
)

// Listener IDs inside mochi.
const (
	listenerTCP = "tcp"
	listenerTLS = "tls"
	listenerWS  = "ws"
)

// Errors returned by the broker.
var (
	ErrClosed       = errors.New("broker: closed")
	ErrBadConfig    = errors.New("broker: invalid config")
	ErrInvalidTopic = errors.New("broker: invalid topic name")
	ErrRunning      = errors.New("broker: Run called twice")
)

// Config configures the broker.
type Config struct {
	MQTTAddr  string      // TCP listener, e.g. ":1883" or "127.0.0.1:0"; "" disables
	MQTTSAddr string      // TLS listener; needs TLS; "" disables
	TLS       *tls.Config // certificate for MQTTSAddr

	// Region is this cluster's region name (internal/address): a direct
	// message to name@Region is a message to the local user name.
	Region string

	// Dev accepts anonymous clients and leaves non-chat topics open; chat
	// topics keep their rules. Never the default.
	Dev bool

	// AllowedOrigins is the WebSocket Origin allow-list (exact
	// scheme://host[:port]), besides the request's own host, which is
	// always allowed (a page this node served). Requests without an
	// Origin header (non-browsers) are allowed.
	AllowedOrigins []string

	MaxWritesPending int // mochi MaximumClientWritesPending (outbound queue per client); default 128
	ReadBufferSize   int // per-connection read buffer; default 1024
	WriteBufferSize  int // per-connection write buffer; default 2048

	// CommitTimeout bounds how long OnPublish waits for a durable commit
	// of a chat message before refusing it; default 10s.
	CommitTimeout time.Duration
	// ConnectTimeout bounds how long a new connection may take to send
	// its CONNECT (and finish TLS); default 10s.
	ConnectTimeout time.Duration
	// MaxPacketSize refuses larger inbound MQTT packets; default 64 KiB
	// (a chat envelope is at most 16 KiB).
	MaxPacketSize int
	// SessionExpiry caps how long a disconnected persistent session is
	// kept; default 24h.
	SessionExpiry time.Duration
	// OfflineSessionsPerUser caps the persistent sessions a user keeps
	// offline on this node (one per device ID); the oldest ends when
	// another goes offline over it. Default DefaultOfflineSessionsPerUser.
	OfflineSessionsPerUser int

	// PublishRate limits PUBLISH packets per user, over all topics
	// (heartbeats included) and all the user's connections on this node;
	// default DefaultPublishRate, ratelimit.Unlimited disables. Over it:
	// v5 QoS >= 1 gets reason 0x97 quota exceeded, the rest is dropped.
	PublishRate ratelimit.Spec
	// ConnectRate limits CONNECT attempts per client IP (IPv6: its /64),
	// checked before the token; default DefaultConnectRate,
	// ratelimit.Unlimited disables. Over it: CONNACK 0x9F (3.1.1: 3).
	ConnectRate ratelimit.Spec
	// AcceptRate limits TCP and TLS connections per client IP as they
	// are accepted, before the TLS handshake and the CONNECT: past it a
	// connection is closed at once. Default twice ConnectRate
	// (acceptSpec), ratelimit.Unlimited disables.
	AcceptRate ratelimit.Spec
	// SubscribeRate limits, per user over the user's connections on this
	// node, the SUBSCRIBE filters that make the node commit a route (the
	// first local subscriber of a filter; an UNSUBSCRIBE of the last one
	// withdraws it); default DefaultSubscribeRate, ratelimit.Unlimited
	// disables. Over it: v5 SUBACK 0x97 quota exceeded for the filter
	// (3.1.1: 0x80). Anonymous --dev clients are not limited.
	SubscribeRate ratelimit.Spec
	// ConnectionsPerUser caps the live connections (distinct client IDs)
	// of one user on this node: a CONNECT over it is refused with
	// CONNACK 0x97 quota exceeded (3.1.1: 3). Default
	// DefaultConnectionsPerUser; negative: no limit.
	ConnectionsPerUser int
	// RateLimitKeys bounds the buckets each limiter keeps; default
	// ratelimit.DefaultMaxKeys.
	RateLimitKeys int
	// Now is the rate limiters' clock; nil means time.Now. Tests inject one.
	Now func() time.Time

	// AckTimeout is how long a connected device has to acknowledge a chat
	// message delivered at QoS >= 1 before Deps.Unacked hears of it
	// (unacked.go); 0 (or no Deps.Unacked) watches nothing.
	AckTimeout time.Duration

	// Cluster forwarding (used only with Deps.Cluster).
	ForwardBatch    int           // packets per forward RPC at most; default 64
	ForwardQueue    int           // packets queued per destination node at most (more are dropped, counted); default 100,000
	ForwardTimeout  time.Duration // one forward RPC; default 5s
	ForwardRetryMax time.Duration // the longest backoff between retries of a batch; default 2s
	RouteResync     time.Duration // how often local routes are fully reconciled with the table; default 30s

	Logger     *slog.Logger
	Registerer prometheus.Registerer

	// queuedWrites turns mochi's direct writes off (tests and benchmarks
	// compare with the queued write path).
	queuedWrites bool
	// blockingReads turns the read waiter off: every client is read by
	// a goroutine of its own (tests run both ways).
	blockingReads bool
}

// Verifier checks access tokens (implemented by the auth service).
type Verifier interface {
	VerifyAccessToken(token string) (wire.Principal, error)
}

// ChatStore validates and durably commits a direct or group message. It
// stamps id, from and to (or group), and returns the stored envelope with
// its encoded payload; dup reports a retry of an already committed
// message (same sender and cid). SendGroup decides whether the sender
// may write to the group: the broker's access check lets a signed-in
// user's group message through to it (see OnACLCheck). Errors wrap
// wire.ErrForbidden (e.g. the recipient blocked the sender, the sender
// is not a member),
// ErrNotFound (no such user or group), ErrQuota, ErrInvalid or
// ErrUnavailable.
type ChatStore interface {
	SendDirect(ctx context.Context, from, to string, env wire.Envelope) (stored wire.Envelope, payload []byte, dup bool, err error)
	SendGroup(ctx context.Context, from, gid string, env wire.Envelope) (stored wire.Envelope, payload []byte, dup bool, err error)
}

// PipelinedChatStore is a ChatStore that can also take a message in
// two steps (archive.Service): Start checks it, stamps it and hands it
// to the Raft log before it returns, so that messages started one after
// another commit in that order; the function it returns waits for the
// commit and answers as SendDirect/SendGroup do. With it, a connection
// has many durable publishes committing at once (pipeline.go).
type PipelinedChatStore interface {
	StartDirect(ctx context.Context, from, to string, env wire.Envelope) (func(context.Context) (wire.Envelope, []byte, bool, error), error)
	StartGroup(ctx context.Context, from, gid string, env wire.Envelope) (func(context.Context) (wire.Envelope, []byte, bool, error), error)
}

// RetryLookup is a ChatStore that tells whether a sender's message with
// a cid is stored (archive.Service). A direct message the broker refuses
// at once for a block is, when it is the retry of a stored message (its
// PUBACK was lost, then the recipient blocked the sender), handed to the
// ChatStore instead, which answers the original: the sender is not told
// "refused" of a message that was stored and delivered.
type RetryLookup interface {
	SentBefore(from, cid string) bool
}

// Membership answers group membership. It is called on every group
// publish, subscribe and delivery, so it must be O(1) and never block
// (the users service serves it from a cache).
type Membership interface {
	IsMember(gid, uid string) bool
}

// Blocks answers whether blocker has blocked blocked (O(1), cached).
type Blocks interface {
	IsBlocked(blocker, blocked string) bool
}

// ReceiptStore moves read cursors.
type ReceiptStore interface {
	MarkRead(ctx context.Context, reader, peer string, upTo snowflake.ID) error
}

// ReceiptClamper is a ReceiptStore that answers what a read receipt may
// say: at most the conversation's newest message ID, where the cursor
// stops (0: nothing to tell). The receipt is delivered with it.
type ReceiptClamper interface {
	MarkReadUpTo(ctx context.Context, reader, peer string, upTo snowflake.ID) (snowflake.ID, error)
}

// DeliveredClamper is a ReceiptStore that answers what a delivered
// receipt may say: at most the conversation's newest message ID (0: the
// conversation has no message, nothing to tell). The receipt is
// delivered with it.
type DeliveredClamper interface {
	DeliveredUpTo(ctx context.Context, reader, peer string, upTo snowflake.ID) (snowflake.ID, error)
}

// PresenceTracker learns about connections and heartbeats. connID is
// unique per connection, so that a session takeover (same client ID)
// never confuses it. The calls must not block for long: they run on the
// connection's goroutine.
type PresenceTracker interface {
	Connected(uid, connID string)
	Disconnected(uid, connID string)
	Heartbeat(uid string)
}

// PresenceVisibility says whether viewer may see subject's presence.
type PresenceVisibility interface {
	CanSeePresence(viewer, subject string) bool
}

// Deps are the broker's collaborators. Verifier is required unless Dev;
// a nil Chat or Receipts refuses those publishes as unavailable; a nil
// Presence ignores presence; a nil Visibility lets users see only their
// own presence; a nil Membership refuses every group topic; a nil Blocks
// blocks nobody.
type Deps struct {
	Verifier   Verifier
	Chat       ChatStore
	Receipts   ReceiptStore
	Presence   PresenceTracker
	Visibility PresenceVisibility
	Membership Membership
	Blocks     Blocks

	// Cluster makes this broker one node of a cluster: it keeps this
	// node's routes in Routes through Proposer and forwards publishes to
	// the other nodes that want them. Nil: a single node. With Cluster,
	// Proposer and Routes are required (routes.New registers the route
	// commands on the FSM; build it before Raft starts applying).
	Cluster  Cluster
	Proposer Proposer
	Routes   *routes.Table
	// Registry, with Cluster, registers every session in the replicated
	// client registry and takes over (disconnects) a local connection
	// whose client ID connected to another node later (registry.New
	// registers its commands on the FSM). Nil: no takeover across nodes.
	Registry *registry.Table
	// PeerOrigin tells whether a WebSocket Origin is one of the cluster's
	// own nodes (a page another member served, reconnecting here when its
	// node went away): accepted besides AllowedOrigins. Nil: none.
	PeerOrigin func(origin string) bool
	// Links receives the links of other regions (bridge/region); nil:
	// no links, every $link/ client is refused.
	Links Links
	// Erased tells whether a user's account is erased or being erased
	// (auth.Service.ErasureDue): the copies of its direct messages, and
	// of its receipts, that a session left offline queued are dropped
	// when that session resumes (erased.go). Nil: none is.
	Erased func(uid string) bool
	// ReadBarrier waits until this node has applied every write the
	// cluster committed before the call (cluster.Raft.ReadBarrier). A
	// publish or subscription refused on a group or presence topic is
	// checked again after it: the client may have been added to the
	// group, or made a contact, through another node a moment ago. A
	// SUBSCRIBE that names a group's topics is checked only after it,
	// granted or not: the client may have been removed and added back
	// (acl.go catchUpToSubscribe). Nil: the local state is trusted (a
	// single node).
	ReadBarrier func(ctx context.Context) error
	// Unacked hears of chat messages delivered to connected devices that
	// did not acknowledge them within Config.AckTimeout, or before their
	// connection ended (unacked.go); nil: nobody does.
	Unacked UnackedDeliveries
}

// Broker is one MQTT node.
type Broker struct {
	cfg  Config
	deps Deps
	log  *slog.Logger
	srv  *mqtt.Server
	m    *metrics
	lim  *limits

	inline *mqtt.Client // our own inline client: server publishes with user properties
	// committed delivers committed chat messages to this node's
	// subscribers (committed.go).
	committed *committedQueue
	rk        *routeKeeper  // nil on a single node
	ck        *clientKeeper // nil without a cluster registry
	fwd       *forwarder    // nil on a single node
	tcp       *tcpListener
	rw        *epollWaiter // waits for idle clients' next packets; nil if unavailable
	acks      *ackWatch    // unacknowledged deliveries; nil: not watched
	tls       *tcpListener
	ws        *wsListener
	// servingCh is closed by Run once the listeners take connections.
	servingCh chan struct{}

	// retainMu orders the server's and the forwarded retained publishes
	// with RestoreRetained, which must never put an older copy over them.
	retainMu sync.Mutex
	// restore: the retained messages a starting --dev node of a cluster
	// takes from another (retainedrestore.go).
	restore retainedRestore

	conns sync.Map  // *mqtt.Client -> *connInfo, live connections
	users userIndex // uid -> live sessions, for DropGroupSubscriptions
	// userConns: uid -> client IDs of live connections, for
	// Config.ConnectionsPerUser (counted from OnConnect to OnDisconnect).
	userConns userConns
	// offline: uid -> persistent sessions left offline (sessioncap.go)
	offline offlineSessions
	owed    owedPresence // statuses to hand offline sessions when they resume
	nconn   atomic.Int64 // established connections
	// left: this node left its cluster (LeftCluster): it refuses
	// connections, since it no longer gets the log.
	left atomic.Bool
	// cutOff: this node counts itself cut off from its cluster
	// (SetCutOff): it refuses signed-in users' connections meanwhile.
	cutOff atomic.Bool
	// connSeq numbers connections (the registry's gen, presence's
	// connID). It starts at the process's start time so that a number is
	// not reused across restarts: the registry keeps a crashed run's
	// entries, and a reused gen would look "already registered".
	connSeq atomic.Uint64

	baseCtx context.Context // parent of commit contexts; cancelled at shutdown
	cancel  context.CancelFunc
	// answerers run the connections' pipeline answerers (pipeline.go)
	// on goroutines that keep their grown stacks between runs.
	answerers *workpool.Pool
	started   atomic.Bool
	closed    atomic.Bool

	life     sync.Mutex     // orders Run's start against Close
	bg       sync.WaitGroup // Run's background work (route and client keepers, member refresh)
	closeErr error          // what Close returned; guarded by life
}

// connInfo is what the broker keeps per live connection.
type connInfo struct {
	p      wire.Principal
	connID string
	gen    uint64 // this connection's number on this node (registry generation)
	pipe   *pipeline
	// linkFailed: a publish of this link connection failed to commit;
	// its later publishes are refused (links.go).
	linkFailed atomic.Bool
	// established is set once OnSessionEstablished has put the
	// connection in the user index (where DropGroupSubscriptions finds
	// it) and re-checked the subscriptions a resumed session brought:
	// from then on its group subscriptions stay those of a member (see
	// groupDeliveryChecked).
	established atomic.Bool
	// counted is set when OnSessionEstablished counts the connection
	// (nconn); a connection lost before its CONNACK never is.
	counted atomic.Bool
	// toldToSync is set once a stored message to this connection was
	// dropped and it was closed so that its client syncs (slowsubscriber.go).
	toldToSync atomic.Bool
	// missedEarly is set when such a message was dropped before the
	// connection was established (a resumed session's handshake): it is
	// closed so once established.
	missedEarly atomic.Bool
	// subscribing counts the SUBSCRIBEs being processed (OnSubscribe to
	// OnSubscribed): their ACL checks of exact group topic names look
	// like deliveries to the hook and must never skip the membership
	// look-up.
	subscribing atomic.Int32
	// subscribingTo holds the filters of the SUBSCRIBE being processed
	// (the client's read loop processes one at a time): only their ACL
	// checks may wait for the node to catch up (acl.go mayBeLagging),
	// never a delivery another client's publish makes meanwhile.
	subscribingTo atomic.Pointer[packets.Subscriptions]
	// unverified holds the filters of that SUBSCRIBE refused only because
	// the node could not catch up with the cluster to check them (see
	// OnSubscribed: they are answered "retry", not "not authorized").
	// Only the client's read loop touches it.
	unverified []string
	// subCatchUp is what that SUBSCRIBE found when it caught up with the
	// cluster before its filters were checked, as one that names a
	// group's topics does (acl.go catchUpToSubscribe): notLagging when
	// it did not. withheld holds its group filters when it could not
	// catch up: they are refused and answered "retry". Written by the
	// client's read loop; read by the access checks.
	subCatchUp atomic.Int32
	withheld   atomic.Pointer[[]string]
	// overQuota holds the indexes of that SUBSCRIBE's filters refused for
	// the subscribe rate (OnSubscribe, subscribe.go). Only the client's
	// read loop touches it.
	overQuota []int
	// userSlot: the connection is counted in Broker.userConns (released
	// in OnDisconnect).
	userSlot bool
	// subackReasons holds the reason string of a SUBACK that OnSubscribed
	// decided and OnPacketEncode writes, by packet ID (acl.go
	// ownPresenceReason): mochi gives a SUBACK no reason of a hook's.
	subackMu      sync.Mutex
	subackReasons map[uint16]string
	// adminRevoked is set once the user's admin role was revoked after
	// CONNECT checked the token (RevokeAdmin): the connection is a user's
	// from then on (principalOf), without $SYS.
	adminRevoked atomic.Bool
	// refused is set when the token was refused by the check again at
	// the end of the handshake (OnSessionEstablished): the connection is
	// being closed, is no user's from then on (principalOf), and
	// presence hears nothing of it (neither connected nor disconnected).
	refused atomic.Bool
}

// New validates cfg, creates the mochi server and binds the TCP and TLS
// listeners (port 0 works; see MQTTAddr).
func New(cfg Config, deps Deps) (*Broker, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxWritesPending <= 0 {
		cfg.MaxWritesPending = DefaultMaxWritesPending
	}
	if cfg.ReadBufferSize <= 0 {
		cfg.ReadBufferSize = DefaultReadBufferSize
	}
	if cfg.WriteBufferSize <= 0 {
		cfg.WriteBufferSize = DefaultWriteBufferSize
	}
	if cfg.CommitTimeout <= 0 {
		cfg.CommitTimeout = DefaultCommitTimeout
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	if cfg.MaxPacketSize <= 0 {
		cfg.MaxPacketSize = DefaultMaxPacketSize
	}
	if cfg.SessionExpiry <= 0 {
		cfg.SessionExpiry = DefaultSessionExpiry
	}
	setDefault(&cfg.OfflineSessionsPerUser, DefaultOfflineSessionsPerUser)
	if cfg.ConnectionsPerUser == 0 {
		cfg.ConnectionsPerUser = DefaultConnectionsPerUser
	}
	setDefault(&cfg.ForwardBatch, DefaultForwardBatch)
	setDefault(&cfg.ForwardQueue, DefaultForwardQueue)
	setDefault(&cfg.ForwardTimeout, DefaultForwardTimeout)
	setDefault(&cfg.ForwardRetryMax, DefaultForwardRetryMax)
	setDefault(&cfg.RouteResync, DefaultRouteResync)
	if deps.Cluster != nil && (deps.Proposer == nil || deps.Routes == nil) {
		return nil, fmt.Errorf("%w: a Cluster needs a Proposer and Routes", ErrBadConfig)
	}
	if deps.Cluster != nil {
		if err := routes.ValidNode(deps.Cluster.Self()); err != nil {
			return nil, fmt.Errorf("%w: node name: %w", ErrBadConfig, err)
		}
	}
	if cfg.MQTTSAddr != "" && cfg.TLS == nil {
		return nil, fmt.Errorf("%w: MQTTSAddr %q needs a TLS config", ErrBadConfig, cfg.MQTTSAddr)
	}
	if !cfg.Dev && deps.Verifier == nil {
		return nil, fmt.Errorf("%w: a Verifier is required unless Dev", ErrBadConfig)
	}
	for _, o := range cfg.AllowedOrigins {
		if _, err := normalizeOrigin(o); err != nil {
			return nil, fmt.Errorf("%w: allowed origin %q: %v", ErrBadConfig, o, err)
		}
	}
	lim, err := newLimits(&cfg)
	if err != nil {
		return nil, err
	}
	log := cfg.Logger.With("component", "broker")
	if cfg.Dev {
		log.Warn("DEV MODE: anonymous MQTT clients are accepted and non-chat topics are open; never use this in production")
	}

	b := &Broker{cfg: cfg, deps: deps, log: log, lim: lim, servingCh: make(chan struct{})}
	b.connSeq.Store(uint64(time.Now().UnixNano()))
	b.baseCtx, b.cancel = context.WithCancel(context.Background())
	b.answerers = workpool.New(b.baseCtx, answererIdle)

	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumClientWritesPending = int32(cfg.MaxWritesPending)
	// 0 disables mochi's forced expiry of retained messages (24 h by
	// default even without a message expiry), which would silently drop
	// the retained presence/{uid} of users who stay online for a day.
	caps.MaximumMessageExpiryInterval = 0
	caps.MaximumPacketSize = uint32(cfg.MaxPacketSize)
	caps.TopicAliasMaximum = TopicAliasMaximum
	caps.MaximumSessionExpiryInterval = uint32(cfg.SessionExpiry / time.Second)
	caps.MaximumInflight = 1024
	b.srv = mqtt.New(&mqtt.Options{
		Capabilities:             caps,
		ClientNetReadBufferSize:  cfg.ReadBufferSize,
		ClientNetWriteBufferSize: cfg.WriteBufferSize,
		Logger:                   slog.New(quietRefusals{cfg.Logger.Handler()}).With("component", "mochi"),
		// $SYS is rebuilt with runtime.ReadMemStats (stop-the-world) on
		// each tick; once a second is more than admins need.
		SysTopicResendInterval: 10,
		InlineClient:           true,
		// A delivery to a subscriber with nothing queued is written by
		// the publishing goroutine (never blocking; the rest goes to the
		// subscriber's write loop): no goroutine wake-up per delivery
		// (docs/perf/fanout.md).
		ClientDirectWrites: !cfg.queuedWrites,
		// Plain sockets are read (and written directly) with raw system
		// calls: a node that goes idle between messages otherwise wakes
		// the Go runtime's monitor thread for nearly every message
		// (docs/perf/fanout.md, 1:1 QoS 0).
		ClientRawSyscalls: true,
	})
	b.inline = b.srv.NewClient(nil, mqtt.LocalListener, "edgechat-server", true)
	b.inline.Properties.ProtocolVersion = 5
	b.committed = newCommittedQueue(b.srv)
	b.acks = newAckWatch(b, deps.Unacked, cfg.AckTimeout)

	if b.m, err = newMetrics(cfg.Registerer, b.nconn.Load); err != nil {
		b.cancel()
		return nil, err
	}
	if err := b.srv.AddHook(&hook{b: b}, nil); err != nil {
		return nil, fmt.Errorf("broker: add hook: %w", err)
	}
	if deps.Cluster != nil {
		self := deps.Cluster.Self()
		b.rk = newRouteKeeper(b, self, deps.Proposer, deps.Routes)
		b.fwd = newForwarder(b, deps.Cluster, deps.Routes)
		if deps.Registry != nil {
			b.ck = newClientKeeper(b, self, deps.Proposer, deps.Registry)
		}
		if err := deps.Cluster.RegisterRPC(RPCService, peerrpc.Methods{
			"Deliver":  peerrpc.Method((&forwardRPC{f: b.fwd}).Deliver),
			"Retained": peerrpc.Method((&forwardRPC{f: b.fwd}).Retained),
		}); err != nil {
			b.cancel()
			return nil, fmt.Errorf("broker: %w", err)
		}
	}

	fail := func(err error) (*Broker, error) {
		if b.tcp != nil {
			_ = b.tcp.ln.Close()
		}
		if b.tls != nil {
			_ = b.tls.ln.Close()
		}
		b.cancel()
		return nil, err
	}
	if cfg.MQTTAddr != "" {
		ln, err := net.Listen("tcp", cfg.MQTTAddr)
		if err != nil {
			return fail(fmt.Errorf("broker: listen %s: %w", cfg.MQTTAddr, err))
		}
		b.tcp = newTCPListener(listenerTCP, ln, nil, cfg.ConnectTimeout, b.disconnectListener)
		b.tcp.admit = b.allowAccept
		if err := b.srv.AddListener(b.tcp); err != nil {
			return fail(fmt.Errorf("broker: add tcp listener: %w", err))
		}
	}
	if cfg.MQTTSAddr != "" {
		ln, err := net.Listen("tcp", cfg.MQTTSAddr)
		if err != nil {
			return fail(fmt.Errorf("broker: listen %s: %w", cfg.MQTTSAddr, err))
		}
		b.tls = newTCPListener(listenerTLS, ln, cfg.TLS, cfg.ConnectTimeout, b.disconnectListener)
		b.tls.admit = b.allowAccept
		if err := b.srv.AddListener(b.tls); err != nil {
			return fail(fmt.Errorf("broker: add tls listener: %w", err))
		}
	}
	b.ws = newWSListener(listenerWS, b)
	if err := b.srv.AddListener(b.ws); err != nil {
		return fail(fmt.Errorf("broker: add websocket listener: %w", err))
	}
	return b, nil
}

// Run serves until ctx is done or Close is called, then closes the
// broker (see Close) and returns.
func (b *Broker) Run(ctx context.Context) error {
	if !b.started.CompareAndSwap(false, true) {
		return ErrRunning
	}
	b.life.Lock()
	if b.closed.Load() {
		b.life.Unlock()
		return ErrClosed
	}
	if !b.cfg.blockingReads {
		// Idle TCP clients then hold no goroutine, only their state
		// (docs/perf/connections.md); without it (not Linux) every client
		// keeps a goroutine blocked in Read.
		if rw, err := newReadWaiter(b.log); err != nil {
			b.log.Debug("no read waiter: one goroutine per MQTT connection", "error", err)
		} else {
			b.rw = rw
			b.srv.Options.ReadWaiter = rw
		}
	}
	if err := b.srv.Serve(); err != nil {
		b.life.Unlock()
		_ = b.Close()
		return fmt.Errorf("broker: serve: %w", err)
	}
	// mochi hands each listener its connection handler on a goroutine:
	// until the WebSocket one has it, /mqtt answers 503. Serving reports
	// the moment every listener takes connections.
	for !b.ws.serving() {
		time.Sleep(time.Millisecond)
	}
	close(b.servingCh)
	b.log.Info("mqtt serving", "tcp", b.MQTTAddr(), "tls", b.MQTTSAddr(), "dev", b.cfg.Dev)
	b.bg.Go(func() { b.runCommitted(b.baseCtx) })
	if b.acks != nil {
		b.bg.Go(func() { b.acks.run(b.baseCtx) })
	}
	if b.rk != nil {
		b.bg.Go(func() { b.rk.run(b.baseCtx, b.cfg.RouteResync) })
		b.bg.Go(func() { b.fwd.runMembers(b.baseCtx) })
		if b.cfg.Dev {
			b.bg.Go(func() { b.fwd.restoreRetained(b.baseCtx) }) // retainedrestore.go
		}
	}
	if b.ck != nil {
		b.bg.Go(func() { b.ck.run(b.baseCtx, b.cfg.RouteResync) })
	}
	b.life.Unlock()
	select {
	case <-ctx.Done():
	case <-b.baseCtx.Done(): // Close
	}
	return b.Close()
}

// Close disconnects every client, closes the listeners New bound and
// stops the background work and the forwarding; commits in flight give
// up and their clients get no PUBACK. It releases what New took whether
// or not Run ran, and may be called more than once.
func (b *Broker) Close() error {
	b.life.Lock()
	defer b.life.Unlock()
	if b.closed.Swap(true) {
		return b.closeErr
	}
	b.cancel() // pending commits give up; forwarding stops; Run returns
	b.ws.shutdown()
	err := b.srv.Close()
	if b.rw != nil {
		b.rw.Close() // after mochi's Close: no client is waiting any more
	}
	b.bg.Wait()
	if b.fwd != nil {
		b.fwd.wait()
	}
	if err != nil {
		b.closeErr = fmt.Errorf("broker: close: %w", err)
	}
	return b.closeErr
}

// MQTTAddr is the bound host:port of the TCP listener, "" if disabled.
func (b *Broker) MQTTAddr() string {
	if b.tcp == nil {
		return ""
	}
	return b.tcp.Address()
}

// MQTTSAddr is the bound host:port of the TLS listener, "" if disabled.
func (b *Broker) MQTTSAddr() string {
	if b.tls == nil {
		return ""
	}
	return b.tls.Address()
}

// WebSocketHandler serves MQTT over WebSocket (subprotocol "mqtt"); the
// gateway mounts it at /mqtt on the HTTP port.
func (b *Broker) WebSocketHandler() http.Handler { return b.ws }

// Serving is closed once Run has every listener taking connections
// (TCP, TLS and the WebSocket handler).
func (b *Broker) Serving() <-chan struct{} { return b.servingCh }

// Connections is the number of established MQTT connections.
func (b *Broker) Connections() int { return int(b.nconn.Load()) }

// UserConnections is the number of uid's established connections on this
// node (those of region links and dev-mode clients without a user are
// not anyone's).
func (b *Broker) UserConnections(uid string) int { return len(b.users.sessions(uid)) }

// Server is the underlying mochi server, for tests and admin tools only.
func (b *Broker) Server() *mqtt.Server { return b.srv }

// Retained is the payload of the message retained on topic on this node
// (every retained publish is copied to every node of a cluster).
func (b *Broker) Retained(topic string) (payload []byte, ok bool) {
	pk, ok := b.srv.Topics.Retained.Get(topic)
	if !ok {
		return nil, false
	}
	return pk.Payload, true
}

// EachRetained calls fn for every message retained on this node. It reads
// mochi's retained store directly (a copy of it): mochi's wildcard scan
// (Topics.Messages with +) reads the topic tree unlocked.
func (b *Broker) EachRetained(fn func(topic string, payload []byte)) {
	for topic, pk := range b.srv.Topics.Retained.GetAll() {
		fn(topic, pk.Payload)
	}
}

// RestoreRetained retains payload on the presence topic on this node
// only (and delivers it to its subscribers here), unless a message is
// retained there already. A node that restarted gets back the retained
// presence it lost from the other nodes' copies (services/presence,
// Hello); anything published or forwarded meanwhile is newer and stays.
func (b *Broker) RestoreRetained(topic string, payload []byte) error {
	if b.closed.Load() {
		return ErrClosed
	}
	if wire.ParseTopic(topic).Kind != wire.KindPresence || len(payload) == 0 || len(payload) > b.cfg.MaxPacketSize {
		return fmt.Errorf("%w: %q, %d bytes: only presence is restored", ErrInvalidTopic, topic, len(payload))
	}
	b.retainMu.Lock()
	defer b.retainMu.Unlock()
	if _, ok := b.srv.Topics.Retained.Get(topic); ok {
		return nil
	}
	// The committed messages' inline client: its publishes are never
	// forwarded (hook.OnPublished).
	return b.injectLocked(b.committed.in, topic, payload, true, 1, nil)
}

// DropRetained forgets, on this node only and without delivering
// anything, the message retained on a presence topic (every node does it
// for an erased account: services/presence EraseAccount).
func (b *Broker) DropRetained(topic string) {
	if wire.ParseTopic(topic).Kind != wire.KindPresence {
		return
	}
	b.retainMu.Lock()
	defer b.retainMu.Unlock()
	b.srv.Topics.RetainMessage(packets.Packet{TopicName: topic})
}

// Publish publishes a server-side message (presence, events, messages
// sent over HTTP) with MQTT v5 user properties. It bypasses the ACL: the
// caller is the server. Subscribers get at most o.QoS.
func (b *Broker) Publish(o wire.Outbound) error {
	if b.closed.Load() {
		return ErrClosed
	}
	if o.Topic == "" || strings.ContainsAny(o.Topic, "+#") || o.QoS > 2 {
		return fmt.Errorf("%w: %q qos %d", ErrInvalidTopic, o.Topic, o.QoS)
	}
	switch o.Scope {
	case wire.ScopeLocal:
		b.injectCommitted(&o) // this node's subscribers only (never forwarded)
		return nil
	case wire.ScopeOlderPeers:
		if b.fwd != nil {
			b.fwd.forwardOlder(o.Topic, o.Payload, o.QoS, userProps(o.UserProps))
		}
		return nil
	}
	return b.inject(o.Topic, o.Payload, o.Retain, o.QoS, userProps(o.UserProps))
}

// inject publishes through our inline client: no ACL, no OnPublish
// processing, user properties kept.
func (b *Broker) inject(topic string, payload []byte, retain bool, qos byte, props []packets.UserProperty) error {
	return b.injectAs(b.inline, topic, payload, retain, qos, props)
}

// injectAs publishes through one of our inline clients (the server's,
// the committed messages', the forwarded publishes'): the hooks tell them
// apart by the client.
func (b *Broker) injectAs(cl *mqtt.Client, topic string, payload []byte, retain bool, qos byte, props []packets.UserProperty) error {
	if retain {
		b.retainMu.Lock()
		defer b.retainMu.Unlock()
	}
	return b.injectLocked(cl, topic, payload, retain, qos, props)
}

// injectLocked is injectAs with retainMu held for a retained publish.
func (b *Broker) injectLocked(cl *mqtt.Client, topic string, payload []byte, retain bool, qos byte, props []packets.UserProperty) error {
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos, Retain: retain},
		TopicName:   topic,
		Payload:     payload,
		Properties:  packets.Properties{User: props},
	}
	if qos > 0 {
		pk.PacketID = uint16(qos) // mochi needs an ID for validation; inline publishes never use it
	}
	if err := b.srv.InjectPacket(cl, pk); err != nil {
		return fmt.Errorf("broker: publish %s: %w", topic, err)
	}
	return nil
}

// disconnectListener sends DISCONNECT (server shutting down) to the
// clients of one listener and closes them.
func (b *Broker) disconnectListener(id string) {
	for _, cl := range b.srv.Clients.GetAll() {
		if cl.Net.Listener == id && !cl.Net.Inline && !cl.Closed() {
			_ = b.srv.DisconnectClient(cl, packets.ErrServerShuttingDown)
		}
	}
}

// principal is the identity of a client: the verified one of a live
// connection, or, for a disconnected persistent session still receiving
// QoS>0 messages, the user named by its client ID (only a verified user
// may use the {user}/{device} form, see onConnect).
func (b *Broker) principal(cl *mqtt.Client) wire.Principal {
	return principalOf(b.connOf(cl), cl)
}

// connOf is the client's connection state; nil before OnConnect stored it,
// after OnDisconnect, and for inline clients. It is kept on the client
// (mochi's Client.HookData) as well as in b.conns: this runs for every
// publish and every delivery, and a sync.Map look-up among thousands of
// connections (hashing, a walk of its trie, cache misses) was ~4 % of a
// big group's fan-out. b.conns stays for Range.
func (b *Broker) connOf(cl *mqtt.Client) *connInfo {
	ci, _ := cl.HookData.Load().(*connInfo)
	return ci
}

// principalOf is principal with the connection state looked up already.
func principalOf(ci *connInfo, cl *mqtt.Client) wire.Principal {
	if ci != nil {
		if ci.refused.Load() {
			return wire.Principal{} // being closed: nothing it sends counts
		}
		if ci.p.Admin && ci.adminRevoked.Load() {
			p := ci.p
			p.Admin = false
			return p
		}
		return ci.p
	}
	if uid, _, err := wire.ParseClientID(cl.ID); err == nil {
		return wire.Principal{UserID: uid}
	}
	return wire.Principal{}
}

// setDefault sets *v to def when it is not positive.
func setDefault[T int | time.Duration](v *T, def T) {
	if *v <= 0 {
		*v = def
	}
}
