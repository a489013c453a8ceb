// Package node is edgechat's composition root: it opens the node's
// Badger database, starts the Raft node, builds the broker and the
// services, wires their small interfaces together and runs them.
package node

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	pushbridge "github.com/edgechat/edgechat/bridge/push"
	"github.com/edgechat/edgechat/bridge/region"
	"github.com/edgechat/edgechat/broker"
	"github.com/edgechat/edgechat/broker/registry"
	"github.com/edgechat/edgechat/broker/routes"
	"github.com/edgechat/edgechat/clients/web"
	"github.com/edgechat/edgechat/cluster"
	"github.com/edgechat/edgechat/cluster/featurelevel"
	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/internal/badgeropts"
	"github.com/edgechat/edgechat/internal/certfile"
	"github.com/edgechat/edgechat/internal/httpapi"
	"github.com/edgechat/edgechat/internal/pagecache"
	"github.com/edgechat/edgechat/internal/peerrpc"
	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/internal/wire"
	"github.com/edgechat/edgechat/services/admin"
	"github.com/edgechat/edgechat/services/archive"
	"github.com/edgechat/edgechat/services/auth"
	"github.com/edgechat/edgechat/services/auth/idp"
	"github.com/edgechat/edgechat/services/backup"
	"github.com/edgechat/edgechat/services/clusterapi"
	"github.com/edgechat/edgechat/services/gateway"
	"github.com/edgechat/edgechat/services/media"
	"github.com/edgechat/edgechat/services/media/store"
	"github.com/edgechat/edgechat/services/presence"
	"github.com/edgechat/edgechat/services/push"
	"github.com/edgechat/edgechat/services/users"
)

// Errors of the node's lifecycle.
var (
	ErrNotReady = errors.New("node not ready")                        // readiness checks before the node serves
	ErrRunning  = errors.New("node: Run called twice or after Close") // Run is for one run
)

// Node is one edgechat node: broker, Raft member and services.
//
// Its life has three steps: New builds every part and binds every
// listener (nothing is served yet); Run serves until its context is done
// and releases everything on return; Close releases what New took,
// stopping Run first if it runs (it is safe to call more than once, and
// needed only for a node that is never run).
type Node struct {
	cfg      Config
	log      *slog.Logger
	registry *prometheus.Registry
	tls      *tls.Config // nil: no TLS
	// wroteArchiveStore: this start wrote {data}/archive-store (the
	// directory did not say); a join refused for its store removes it.
	wroteArchiveStore bool

	db         *badger.DB
	fsm        *fsm.FSM
	features   *featurelevel.State // the cluster's feature level (featurelevel.go)
	raft       *cluster.Raft
	Auth       *auth.Service
	IDP        *idp.Service // nil: no OIDC provider configured
	Users      *users.Service
	Archive    *archive.Service
	Presence   *presence.Service
	Push       *push.Service
	PushRouter *pushbridge.Router // the providers of the configured platforms
	PushTester *pushbridge.Tester // POST /admin/push/test/{uid}
	PushSender *pushbridge.Sender // pushes committed messages while this node leads
	// pushUnacked records the deliveries connected devices did not
	// acknowledge (the broker's --push-ack-timeout watch).
	pushUnacked *pushUnacked
	Media       *media.Service
	Region      *region.Bridge // links to other regions (bridge/region)

	// featureChecks counts the leader's checks of the members' feature
	// levels that every member answered (tests).
	featureChecks atomic.Int64

	mediaStore store.Store
	segments   archive.SegmentStore // the archive store (backups read it)

	pushMetrics *pushbridge.Metrics
	Broker      *broker.Broker
	Gateway     *gateway.Gateway
	Admin       *admin.Service
	ClusterAPI  *clusterapi.Service
	origins     *clusterapi.Origins // the members' web origins (pages reconnect through any node)
	members     *memberAddrs        // the members' addresses (their own requests are not rate limited)
	Backup      *backup.Service

	routes  *routes.Table
	clients *registry.Table
	link    *brokerLink
	ids     *lazyIDs
	ready   atomic.Bool

	started     atomic.Bool   // Run began, or Close took its place
	closing     chan struct{} // closed by Close: Run returns
	runDone     chan struct{} // closed when Run has returned, or Close released in its place
	closeOnce   sync.Once
	releaseOnce sync.Once
	releaseErr  error // what releasing returned; read after releaseOnce
}

// New opens the data directory, starts the Raft member, builds the
// services, the broker and the HTTP side, and binds every listener.
// Nothing is served until Run. When a step fails, what the earlier ones
// took is released.
func New(cfg Config, log *slog.Logger) (_ *Node, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	n := &Node{cfg: cfg, log: log.With("node", cfg.NodeID), registry: newRegistry(), link: &brokerLink{},
		ids: newLazyIDs(), members: newMemberAddrs(), closing: make(chan struct{}), runDone: make(chan struct{})}
	for _, v := range cfg.MisspelledEnv {
		n.log.Warn("environment variable ignored: it is no setting", "variable", v)
	}
	// Raft starts in cluster.New and would apply committed entries at
	// once, but the services register their FSM handlers only after it
	// (they need Raft to propose): hold applying until every handler is
	// there, so that no entry is applied with its handler missing.
	// Released before a failed New shuts Raft down.
	releaseFSM := func() {}
	defer func() {
		releaseFSM()
		if err != nil {
			if cerr := n.Close(); cerr != nil {
				n.log.Error("releasing a node that failed to build", "err", cerr)
			}
		}
	}()
	if n.tls, err = loadTLS(cfg, n.log); err != nil {
		return nil, err
	}
	release, err := n.openState()
	if err != nil {
		return nil, err
	}
	releaseFSM = release // not before: a failed openState returns no function, and the deferred call would panic
	for _, step := range []func() error{n.buildServices, n.buildBroker, n.buildBackup, n.buildHTTP} {
		if err := step(); err != nil {
			return nil, err
		}
	}
	if err := n.registerHealthMetrics(); err != nil {
		return nil, err
	}
	return n, nil
}

// registerHealthMetrics exports what /readyz and the Raft state say, for
// alerts from Prometheus alone: edgechat_ready (0 for minutes: a node out
// of service) and edgechat_raft_leader (summed over the nodes, 0: no
// leader, nothing commits).
func (n *Node) registerHealthMetrics() error {
	boolGauge := func(name, help string, f func() bool) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 {
			if f() {
				return 1
			}
			return 0
		})
	}
	for _, c := range []prometheus.Collector{
		boolGauge("edgechat_ready", "1 when this node is ready (GET /readyz answers 200: part of a cluster with a leader, caught up, serving, its Raft log writable), else 0.",
			func() bool { return n.readiness() == nil }),
		boolGauge("edgechat_raft_leader", "1 when this node is the Raft leader, else 0 (summed over the cluster's nodes: 1, or 0 while no leader is elected).",
			n.raft.IsLeader),
	} {
		if err := n.registry.Register(c); err != nil {
			return fmt.Errorf("node: metrics: %w", err)
		}
	}
	return nil
}

func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

func loadTLS(cfg Config, log *slog.Logger) (*tls.Config, error) {
	if cfg.TLSCert == "" {
		return nil, nil
	}
	// A renewal of the files (certbot, cert-manager) is served without a
	// restart (internal/certfile).
	pair, err := certfile.Load(cfg.TLSCert, cfg.TLSKey, cfg.CertReloadEvery, log)
	if err != nil {
		return nil, fmt.Errorf("node: loading TLS certificate: %w", err)
	}
	cfgTLS := &tls.Config{GetCertificate: pair.GetCertificate, MinVersion: tls.VersionTLS12}
	pool, err := cfg.linkCA()
	if err != nil {
		return nil, err
	}
	if pool != nil {
		withLinkAuth(cfgTLS, pool)
	}
	return cfgTLS, nil
}

// withLinkAuth makes the TLS listeners (MQTTS, HTTPS and WSS) ask for a
// client certificate, verified against the link CA, from the clients
// that offer the link's application protocol (region.LinkALPN): other
// regions' links present theirs (bridge/region Authenticate); browsers
// and users' apps are not asked, so no browser shows a certificate
// picker. No protocol is negotiated with a link (the gateway's HTTP
// server would close a connection that negotiated one it does not
// serve): its WebSocket upgrade is plain HTTP/1.1.
func withLinkAuth(base *tls.Config, pool *x509.CertPool) {
	links := base.Clone()
	links.ClientCAs, links.ClientAuth = pool, tls.VerifyClientCertIfGiven
	links.NextProtos = nil
	base.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		if slices.Contains(hello.SupportedProtos, region.LinkALPN) {
			return links, nil
		}
		return nil, nil // the listener's own configuration: no certificate asked
	}
}

// openState opens the database and the FSM over it, registers the
// broker's replicated tables and starts the Raft member with applying
// held; the caller releases the hold once every handler is registered.
func (n *Node) openState() (releaseFSM func(), err error) {
	if err := os.MkdirAll(n.cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("node: data dir: %w", err)
	}
	if _, err := os.Stat(filepath.Join(n.cfg.DataDir, backup.RestoringDB)); err == nil {
		return nil, fmt.Errorf("node: data dir %s holds %s/, left by an `edgechat restore` that did not finish: "+
			"run the restore again (it starts over), or remove it", n.cfg.DataDir, backup.RestoringDB)
	}
	if n.db, err = openBadger(filepath.Join(n.cfg.DataDir, "db"), n.log); err != nil {
		return nil, err
	}
	if err := checkNodeID(n.cfg.DataDir, n.cfg.NodeID); err != nil { // under the database's lock
		return nil, err
	}
	if n.wroteArchiveStore, err = checkArchiveStoreFile(n.cfg.DataDir, n.cfg.archiveStoreID()); err != nil { // under the database's lock
		return nil, err
	}
	n.fsm = fsm.New(n.db, n.log.With("component", "fsm"))
	releaseFSM = n.fsm.HoldApply()
	n.features = featurelevel.Register(n.fsm)
	if n.routes, err = routes.New(n.db, n.fsm); err != nil {
		return releaseFSM, fmt.Errorf("node: routes: %w", err)
	}
	if n.clients, err = registry.New(n.db, n.fsm); err != nil {
		return releaseFSM, fmt.Errorf("node: client registry: %w", err)
	}
	raftTimeout := n.cfg.RaftTimeout
	raftCfg := cluster.Config{
		NodeName:           n.cfg.NodeID,
		DataDir:            n.cfg.DataDir,
		BindAddr:           n.cfg.ClusterAddr,
		AdvertiseAddr:      n.cfg.AdvertiseCluster,
		Bootstrap:          true, // ignored when Join or BootstrapExpect is set
		Join:               n.cfg.Join,
		BootstrapExpect:    n.cfg.BootstrapExpect,
		HeartbeatTimeout:   raftTimeout,
		ElectionTimeout:    raftTimeout,
		LeaderLeaseTimeout: raftTimeout / 2,
		DownAfter:          n.cfg.NodeDownAfter,
		FeatureLevel:       n.supportedFeatureLevel(),
		ArchiveStore:       n.cfg.archiveStoreID(),
		ArchiveStoreOdd:    n.archiveStoreOdd,
		Logger:             n.log,
		Registerer:         n.registry,
	}
	if n.cfg.RaftTuning != nil {
		n.cfg.RaftTuning(&raftCfg)
	}
	n.raft, err = cluster.New(raftCfg, n.fsm)
	if err != nil {
		return releaseFSM, fmt.Errorf("node: raft: %w", err)
	}
	// A snapshot the leader sends from now on waits, like entries, until
	// every owner has loaded its in-memory state and registered OnRestore.
	n.fsm.GateRestores()
	return releaseFSM, nil
}

// buildServices builds users, push, auth, archive and presence. They
// publish through n.link, which buildBroker connects.
func (n *Node) buildServices() (err error) {
	reg, log := n.registry, n.log
	n.Users, err = users.New(users.Deps{DB: n.db, Proposer: n.raft, FSM: n.fsm, Publisher: n.link, Registerer: reg,
		Logger: log})
	if err != nil {
		return err
	}
	if n.Push, err = n.buildPush(); err != nil {
		return err
	}
	if err := n.buildPushBridge(); err != nil {
		return err
	}
	authCfg := auth.Config{KeyDir: filepath.Join(n.cfg.DataDir, "keys"), Issuer: "edgechat", AccessTTL: n.cfg.AccessTTL,
		DeleteGrace: n.cfg.AccountDeleteGrace, NoPasswordLogin: !n.cfg.PasswordLogin}
	if n.cfg.FastPassword {
		authCfg.Argon2 = auth.Argon2Params{MemoryKiB: 64, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}
	}
	n.Auth, err = auth.New(authCfg, auth.Deps{DB: n.db, Proposer: n.raft, FSM: n.fsm, Profiles: n.Users,
		DeviceLogout: n.Push.RemoveDeviceOnLogout, RegisteredDevices: n.Push.DevicesRegisteredBy, Logger: log, Registerer: reg, Leader: n.raft,
		ReadBarrier: n.raft.ReadBarrier, Publisher: n.link})
	if err != nil {
		return err
	}
	n.Users.SetAccounts(n.Auth) // a deleted account is an unknown user to whoever would add it
	if providers := n.cfg.OIDCProviderList(); len(providers) > 0 {
		n.IDP, err = idp.New(idp.Config{Providers: providers, HTTPClient: n.cfg.OIDCHTTPClient},
			idp.Deps{Accounts: n.Auth, Proposer: n.raft, FSM: n.fsm, Logger: log, Registerer: reg})
		if err != nil {
			return fmt.Errorf("node: %w", err)
		}
		n.Auth.SetProviderCheck(n.IDP.CheckToken) // DELETE /user/me of an account without a password
	}
	mctx, cancel := context.WithTimeout(context.Background(), time.Minute) // S3 buckets are created at start
	err = n.buildMedia(mctx)
	cancel()
	if err != nil {
		return err
	}
	segments, err := n.buildArchiveStore()
	if err != nil {
		return err
	}
	n.segments = segments
	if err := n.buildRegion(); err != nil {
		return err
	}
	n.Archive, err = archive.New(archive.Deps{DB: n.db, Proposer: n.raft, FSM: n.fsm, Publisher: n.link, IDs: n.ids,
		Users: n.Auth, Groups: membership{n.Users}, Blocks: n.Users, Outbox: outboxes{pushStaging{n.Push}, n.Region}, Regions: n.Region,
		Media: n.Media, Logger: log, Live: n.link,
		Segments: segments, SegmentCacheBytes: n.cfg.ArchiveCacheBytes, FetchSegment: n.fetchSegment, StoreCheck: n.checkArchiveStores, Backups: n.backupStatus, ReadBarrier: n.raft.ReadBarrier, Registerer: reg})
	if err != nil {
		return err
	}
	if err := n.buildPushSender(); err != nil {
		return err
	}
	n.wireErasure()
	n.Presence, err = presence.New(presence.Config{Interval: n.cfg.Heartbeat, Grace: n.cfg.PresenceGrace, SeenEvery: n.cfg.PresenceSeenEvery, Region: n.cfg.Region},
		presence.Deps{Publisher: n.link, Logger: log.With("component", "presence"), Registerer: reg,
			Social:  presence.Social{Contacts: n.Users, Blocks: n.Users, Groups: n.Users, Conversations: n.Archive},
			Cluster: n.raft, Retained: n.link, ReadBarrier: n.raft.ReadBarrier,
			Store: presence.Store{DB: n.db, FSM: n.fsm, Proposer: n.raft, Deleted: n.Auth.DeletedIn}})
	if err != nil {
		return err
	}
	n.Auth.AddEraser("presence", n.Presence.EraseAccount) // an erased account's last seen goes too
	return nil
}

// buildPush builds the push data service with the platforms whose
// provider is configured, and says once which providers are off.
func (n *Node) buildPush() (*push.Service, error) {
	enabled := n.cfg.PushPlatforms()
	for _, p := range push.Platforms() {
		if !slices.Contains(enabled, p) {
			n.log.Info("push provider off: not configured", "provider", p)
		}
	}
	return push.New(push.Deps{DB: n.db, Proposer: n.raft, FSM: n.fsm, Enabled: enabled,
		SignedIn: authSignedIn{n}, Logger: n.log})
}

// authSignedIn is auth's DeviceSignedIn for the push service, which is
// built before auth (auth takes its registrations with a sign-out).
type authSignedIn struct{ n *Node }

func (a authSignedIn) DeviceSignedIn(uid, device, session string) (bool, error) {
	if a.n.Auth == nil {
		return true, nil
	}
	return a.n.Auth.DeviceSignedIn(uid, device, session)
}

// buildBroker builds the broker over the services, binds the MQTT
// listeners and connects the services' link to it.
func (n *Node) buildBroker() (err error) {
	mqttsAddr := ""
	if n.tls != nil {
		mqttsAddr = n.cfg.MQTTSAddr
	}
	publishRate, _ := ParseRate(n.cfg.MQTTPublishRate) // validated in New
	connectRate, _ := ParseRate(n.cfg.MQTTConnectRate)
	subscribeRate, _ := ParseRate(n.cfg.MQTTSubscribeRate)
	connsPerUser := n.cfg.MQTTConnectionsPerUser
	if connsPerUser == 0 {
		connsPerUser = -1 // no limit
	}
	n.Broker, err = broker.New(broker.Config{
		PublishRate:        publishRate,
		ConnectRate:        connectRate,
		SubscribeRate:      subscribeRate,
		ConnectionsPerUser: connsPerUser,
		MQTTAddr:           n.cfg.MQTTAddr,
		MQTTSAddr:          mqttsAddr,
		TLS:                n.tls,
		Dev:                n.cfg.Dev,
		Region:             n.cfg.Region,
		AllowedOrigins:     n.cfg.AllowedOrigins,
		AckTimeout:         n.cfg.PushAckTimeout,
		Logger:             n.log,
		Registerer:         n.registry,
	}, broker.Deps{Verifier: connectVerifier{n.Auth, n.IDP}, Chat: n.Archive, Receipts: n.Archive, Presence: n.Presence, Visibility: n.Presence,
		Membership: membership{n.Users}, Blocks: brokerBlocks{n.Users, n.Auth.Deleted},
		Cluster: n.raft, Proposer: n.raft, Routes: n.routes, Registry: n.clients, PeerOrigin: n.peerOrigins().Allowed, Links: n.Region,
		Erased: n.Auth.ErasureDue, ReadBarrier: n.raft.ReadBarrier, Unacked: n.pushUnacked})
	if err != nil {
		return fmt.Errorf("node: broker: %w", err)
	}
	n.link.connect(n.Broker)
	// Every node drops a removed member's live group subscriptions once
	// the removal is committed: deliveries to live sessions do not look
	// membership up again. A snapshot restore can remove members without
	// that callback, so it re-checks every live session (registered
	// after the users service's cache purge, so it reads the new state).
	n.Users.OnMemberRemoved(n.Broker.DropGroupSubscriptions)
	n.Users.OnPresenceMayShow(n.Broker.PresenceShown)
	// A user who joins a group may see its members' presence, and they
	// theirs: the subscriptions kept meanwhile get the current status.
	n.Users.OnMembersAdded(n.Broker.PresenceShownInGroup)
	// So does a direct conversation's first message, both ways.
	n.Archive.OnConversationStarted(func(uid, peer string) { n.Broker.PresenceShown(peer, uid) })
	// A deleted account's live sessions go on every node (not on the FSM's
	// goroutine: closing a connection writes to it).
	n.Auth.OnAccountDisabled(func(uid string) { go n.Broker.DisconnectUser(uid) })
	// So do a user's sessions when they sign out everywhere (their tokens
	// are refused from then on: a reconnect fails).
	n.Auth.OnSignedOutEverywhere(func(uid string) { go n.Broker.DisconnectUser(uid) })
	// A revoked admin role leaves the user's live connections on every
	// node without $SYS (they were authorized with the role at CONNECT).
	n.Auth.OnDemoted(n.Broker.RevokeAdmin)
	n.Auth.OnSigningKeyRevoked(func(kid string) { go n.Broker.DisconnectKey(kid) })
	n.Auth.OnSessionEnded(func(sid string) { go n.Broker.DisconnectSession(sid) })
	n.fsm.OnRestore(n.Broker.RecheckSubscriptions)
	// State replaced by the leader's snapshot (this node fell too far
	// behind for the log): nothing it brought was delivered live here, so
	// the clients connected meanwhile reconnect and sync (not on the FSM's
	// goroutine: closing a connection writes to it).
	n.fsm.OnRestore(func() { go n.Broker.ResyncClients() })
	return nil
}

// buildHTTP builds the admin and cluster APIs and the gateway (binding
// the HTTP listener) and mounts every service's routes and MQTT over
// WebSocket on it.
func (n *Node) buildHTTP() (err error) {
	n.Admin, err = admin.New(admin.Deps{
		Accounts:    n.Auth.CountAccounts,
		Groups:      n.Users.Counts,
		Node:        n.cfg.NodeID,
		Connections: n.Broker.Connections,
		Messages:    n.Archive.StoredCount,
		SetAdmin:    n.Auth.SetAdmin,
	})
	if err != nil {
		return err
	}
	n.ClusterAPI, err = clusterapi.New(clusterapi.Deps{
		Status:   n.clusterStatus,
		Self:     n.selfInfo,
		PeerInfo: n.peerInfo,
		Leave:    n.leave,
		Remove:   n.remove,
	})
	if err != nil {
		return err
	}
	perIP, classLimits, _ := n.cfg.HTTPRateLimits() // validated by New
	n.Gateway, err = gateway.New(gateway.Config{Addr: n.cfg.HTTPAddr, TLS: n.tls, CORSOrigins: n.cfg.AllowedOrigins,
		TrustedProxies: n.cfg.TrustedProxies, PerIP: perIP, RateLimits: classLimits, NoRateLimits: n.cfg.NoRateLimits}, gateway.Deps{
		Verifier: n.Auth, Ready: n.readiness, Warnings: n.warnings, Logger: n.log.With("component", "gateway"), Registerer: n.registry,
		Gatherer: n.registry, PeerOrigin: n.peerOrigins().Allowed, ReadBarrier: n.raft.ReadBarrier, Peer: n.members.Has,
	})
	if err != nil {
		return fmt.Errorf("node: gateway: %w", err)
	}
	// Registered once the gateway is: Info reads its URL (a peer asking
	// earlier, while this node starts, raced with the assignment above).
	if err := n.raft.RegisterRPC("Edge", peerrpc.Methods{"Info": peerrpc.Method((&edgeRPC{n}).Info)}); err != nil {
		return fmt.Errorf("node: %w", err)
	}
	n.Gateway.Hold() // only the probes until Run has the cluster (start)
	for _, routes := range [][]httpapi.Route{n.Auth.Routes(), n.Users.Routes(), n.Archive.Routes(),
		n.Presence.Routes(), n.Push.Routes(), n.PushTester.Routes(), n.Media.Routes(), n.Admin.Routes(), n.ClusterAPI.Routes(),
		n.Backup.Routes(), n.Region.Routes()} {
		n.Gateway.Mount(routes...)
	}
	if n.IDP != nil {
		n.Gateway.Mount(n.IDP.Routes()...)
	}
	n.Gateway.Handle("/mqtt", n.Broker.WebSocketHandler())
	if n.cfg.WebClient {
		app, err := web.New(web.Config{Heartbeat: n.cfg.Heartbeat, Peers: n.peerOrigins(), MediaOrigins: n.mediaOrigins()})
		if err != nil {
			return fmt.Errorf("node: %w", err)
		}
		n.Gateway.Handle("GET /{$}", http.HandlerFunc(app.ServeIndex))
		n.Gateway.Handle("GET /assets/", http.HandlerFunc(app.ServeAsset))
		n.Gateway.Handle("GET /sw.js", http.HandlerFunc(app.ServeWorker))
	}
	return nil
}

// peerOrigins is the set of the members' web origins, made on first use
// (the broker and the gateway are built before the cluster API that
// fills it).
func (n *Node) peerOrigins() *clusterapi.Origins {
	if n.origins == nil {
		n.origins = clusterapi.NewOrigins()
	}
	return n.origins
}

// connectVerifier checks MQTT CONNECT passwords: a JWT of an OIDC
// provider that accepts tokens on CONNECT goes to that provider's
// verifier (creating the account on a first sign-in); anything else is
// an edgechat access token. The choice reads the unverified "iss": an
// edgechat token never waits for a provider.
type connectVerifier struct {
	auth *auth.Service
	idp  *idp.Service
}

func (v connectVerifier) VerifyAccessToken(token string) (wire.Principal, error) {
	if v.idp != nil {
		if p, handled, err := v.idp.ConnectPrincipal(token); handled {
			return p, err
		}
	}
	return v.auth.VerifyAccessToken(token)
}

// readiness: serving, part of a cluster that has a leader, and able to
// write its Raft log and apply it. A node cut off in a minority, or whose
// disk is full, turns unready, so load balancers send new clients to nodes that can
// commit (a follower that cannot append answers its clients' publishes
// only from its own apply, which stops).
func (n *Node) readiness() error {
	if !n.ready.Load() {
		switch {
		case n.raft.NotAMember():
			return fmt.Errorf("%w: %s", ErrNotReady, notAMember)
		case n.raft.LeaderID() == "":
			return fmt.Errorf("%w: %s", ErrNotReady, waitingNoLeader)
		}
		return fmt.Errorf("%w: starting (the cluster has a leader: catching up with it, opening MQTT)", ErrNotReady)
	}
	if err := n.raft.LogWriteError(); err != nil {
		return fmt.Errorf("%w: cannot write the Raft log: %w", ErrNotReady, err)
	}
	if err := n.raft.ApplyStalled(); err != nil {
		return fmt.Errorf("%w: %w", ErrNotReady, err)
	}
	if n.raft.NotAMember() {
		return fmt.Errorf("%w: %s", ErrNotReady, notAMember)
	}
	if n.raft.LeaderID() == "" {
		return fmt.Errorf("%w: no Raft leader reachable", ErrNotReady)
	}
	return nil
}

// warnings are what a ready node tells its operators in /readyz: a
// region link's backlog older than --link-backlog-warn, a scheduled
// backup overdue (on the leader, which takes them: followers
// know of the backups only from when they last led).
func (n *Node) warnings() []string {
	links := n.Region.Warnings() // an old backlog of a region link
	if n.Backup == nil {
		return links
	}
	sched := n.Backup.Scheduler()
	if sched == nil || !n.raft.IsLeader() || !sched.Overdue() {
		return links
	}
	st := sched.Status()
	age := "no backup yet"
	if st.AgeSec > 0 {
		age = "the newest backup is " + (time.Duration(st.AgeSec) * time.Second).String() + " old"
	}
	return append(links, fmt.Sprintf("backup overdue: %s, over twice --backup-every (%v)", age, st.Every))
}

// backupStatus is the scheduled backups' status for GET /admin/archive
// (nil when none are configured).
func (n *Node) backupStatus() any {
	if n.Backup == nil {
		return nil
	}
	if sched := n.Backup.Scheduler(); sched != nil {
		return sched.Status()
	}
	return nil
}

// Ready reports whether the node has joined its cluster and serves.
func (n *Node) Ready() bool { return n.ready.Load() }

// ClientConnected reports whether an MQTT client ID is connected
// anywhere in the cluster, as this node's copy of the replicated client
// registry says.
func (n *Node) ClientConnected(clientID string) bool {
	return registryConnections{t: n.clients}.Connected(clientID)
}

// Registry is the node's Prometheus registry.
func (n *Node) Registry() *prometheus.Registry { return n.registry }

// IsLeader tells whether this node leads the cluster now.
func (n *Node) IsLeader() bool { return n.raft.IsLeader() }

// HTTPURL is the base URL of the HTTP API.
func (n *Node) HTTPURL() string { return n.Gateway.URL() }

// MQTTAddr is the bound MQTT TCP address ("" when disabled).
func (n *Node) MQTTAddr() string { return n.Broker.MQTTAddr() }

// MQTTSAddr is the bound MQTT TLS address ("" when disabled).
func (n *Node) MQTTSAddr() string { return n.Broker.MQTTSAddr() }

// ClusterAddr is the Raft transport's address.
func (n *Node) ClusterAddr() string { return n.raft.Addr() }

// WebSocketURL is the MQTT-over-WebSocket URL.
func (n *Node) WebSocketURL() string {
	u := n.Gateway.URL()
	if len(u) > 5 && u[:5] == "https" {
		return "wss" + u[5:] + "/mqtt"
	}
	return "ws" + u[4:] + "/mqtt"
}

// Run serves until ctx is done (or Close is called, or a part fails),
// then stops every part and releases what New took (see Close). It
// returns the first error of any part, joined with errors of releasing.
func (n *Node) Run(ctx context.Context) (err error) {
	if !n.started.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer close(n.runDone)
	defer func() { err = errors.Join(err, n.release()) }()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-n.closing:
			cancel()
		case <-ctx.Done():
		}
	}()

	// A node the cluster refuses for good (its archive store is not the
	// cluster's) stops with the refusal, while it waits for its cluster.
	refused := make(chan error, 1)
	go func() {
		select {
		case err := <-n.raft.JoinRefused():
			if n.wroteArchiveStore {
				// The store this start wrote down was refused: the
				// directory does not keep it (its next start may fix it).
				_ = os.Remove(filepath.Join(n.cfg.DataDir, archiveStoreFile))
			}
			refused <- fmt.Errorf("node: %w", err)
			cancel()
		case <-ctx.Done():
		}
	}()
	defer func() {
		select {
		case e := <-refused:
			err = e
		default:
		}
	}()
	// Raft runs until release closes it, after every other part stopped.
	raftDone := make(chan error, 1)
	go func() { raftDone <- n.raft.Run(context.Background()) }()
	// The gateway serves from now on, held to the probes (/healthz 200,
	// /readyz 503, everything else 503) while the node waits for its
	// cluster; it opens below, with the other parts.
	gwCtx, gwStop := context.WithCancel(ctx)
	defer gwStop()
	gwDone := make(chan error, 1)
	go func() { gwDone <- n.Gateway.Run(gwCtx) }()
	if err := n.start(ctx); err != nil {
		gwStop()
		return errors.Join(err, <-gwDone)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return n.Auth.Run(gctx) })               // publishes this node's token key to the cluster
	g.Go(func() error { return n.Auth.RunErasure(gctx) })        // erases deleted accounts while this node leads
	g.Go(func() error { return n.Users.RunIndex(gctx, n.raft) }) // indexes contacts and blocks made before their reverse index, while this node leads
	g.Go(func() error { return n.runFeatureLevel(gctx) })        // raises the cluster's feature level once every member supports it, while this node leads
	if n.IDP != nil {
		g.Go(func() error { return n.IDP.Run(gctx) }) // discovers the OIDC providers (retrying while they are down)
	}
	g.Go(func() error { return n.Presence.Run(gctx) })
	g.Go(func() error { return n.Push.Run(gctx) }) // the cluster's VAPID key, once
	g.Go(func() error { return n.PushSender.Run(gctx) })
	g.Go(func() error { return n.pushUnacked.run(gctx) })
	g.Go(func() error { return n.Region.Run(gctx) }) // the links to other regions, while this node leads
	g.Go(func() error { return n.Media.Run(gctx) })
	g.Go(func() error { return n.Archive.RunSealer(gctx, n.sealConfig(), n.raft) })
	g.Go(func() error { return n.Broker.Run(gctx) })
	g.Go(func() error { // the members' web origins, for pages that reconnect through another node
		return n.ClusterAPI.RunOrigins(gctx, n.peerOrigins(), n.cfg.OriginsRefresh, n.raft.MembersChanged)
	})
	g.Go(func() error { n.leftWhenRemoved(gctx); return nil })   // removed while it runs: its clients move on
	g.Go(func() error { n.refuseWhileCutOff(gctx); return nil }) // cut off from its cluster: its clients move on
	g.Go(func() error {                                          // the members' addresses, whose own requests the gateway does not rate-limit
		return runMemberAddrs(gctx, n.members, n.raft.Members, n.cfg.OriginsRefresh, n.raft.MembersChanged)
	})
	g.Go(func() error {
		select {
		case err := <-gwDone: // it stopped by itself
			return err
		case <-gctx.Done():
			gwStop()
			return <-gwDone
		}
	})
	n.Gateway.Open()
	if sched := n.Backup.Scheduler(); sched != nil {
		g.Go(func() error { return sched.Run(gctx) })
	}
	g.Go(func() error { return newValueLogGC(n.db, n.log.With("component", "badger")).Run(gctx) })
	g.Go(func() error {
		// Badger's tables into the page cache ahead of the reads, when
		// they fit: a restart's cold history pages then last seconds,
		// not until every part of the store was read once by chance
		// (internal/pagecache; docs/perf/archive.md).
		_, _ = pagecache.Prewarm(gctx, filepath.Join(n.cfg.DataDir, "db"),
			pagecache.Options{Log: n.log.With("component", "badger")})
		return nil
	})
	g.Go(func() error {
		select {
		case err := <-raftDone:
			if gctx.Err() == nil {
				return fmt.Errorf("node: raft stopped: %w", err)
			}
		case <-gctx.Done():
		}
		return nil
	})
	// Ready only once MQTT (the WebSocket handler included) takes
	// connections: a client told "ready" must not get a 503 from /mqtt.
	select {
	case <-n.Broker.Serving():
	case <-gctx.Done():
	}
	n.ready.Store(gctx.Err() == nil)
	n.log.Info("edgechat node serving", "http", n.HTTPURL(), "ws", n.WebSocketURL(), "mqtt", n.MQTTAddr(),
		"mqtts", n.MQTTSAddr(), "cluster", n.ClusterAddr(), "data", n.cfg.DataDir, "dev", n.cfg.Dev)
	err = g.Wait()
	n.ready.Store(false)
	n.handOver()
	return err
}

// handOverTimeout bounds the leadership transfer of a stop (well inside
// the stop timeout of main and of service managers).
const handOverTimeout = 5 * time.Second

// handOver hands the Raft leadership to another voter when this node
// leads (it is stopping: its parts have stopped, Raft still runs), so
// that the cluster goes on committing at once instead of after an
// election timeout, with every follower unready meanwhile.
func (n *Node) handOver() {
	ctx, cancel := context.WithTimeout(context.Background(), handOverTimeout)
	defer cancel()
	switch handed, err := n.raft.HandOver(ctx); {
	case err != nil:
		n.log.Warn("stopping: the Raft leadership could not be handed over; the others elect a leader after their timeout", "err", err)
	case handed:
		n.log.Info("stopping: Raft leadership handed over")
	}
}

// Close releases what New took: the HTTP and MQTT listeners and their
// connections, the Raft member (transport, log, data directory lock) and
// the database. While Run runs, Close makes it stop and waits for it.
// It returns the errors of releasing and may be called more than once.
func (n *Node) Close() error {
	n.closeOnce.Do(func() { close(n.closing) })
	if n.started.CompareAndSwap(false, true) {
		// Never ran, and now never will.
		defer close(n.runDone)
		return n.release()
	}
	<-n.runDone // Run stops and releases
	return n.release()
}

// release closes the parts in the reverse order of New, once: the
// gateway and the broker (no new work), Raft, then the database under it.
// Parts New did not get to are skipped.
func (n *Node) release() error {
	n.releaseOnce.Do(func() {
		var errs []error
		if n.Gateway != nil {
			errs = append(errs, n.Gateway.Close())
		}
		if n.Broker != nil {
			errs = append(errs, n.Broker.Close())
		}
		if n.Media != nil {
			n.Media.Wait() // its last proposals, before Raft and the database go
		}
		if n.mediaStore != nil {
			errs = append(errs, n.mediaStore.Close())
		}
		if n.PushRouter != nil {
			errs = append(errs, n.PushRouter.Close())
		}
		if n.raft != nil {
			errs = append(errs, n.raft.Close())
		}
		if n.db != nil {
			if err := n.db.Close(); err != nil {
				errs = append(errs, fmt.Errorf("node: closing database: %w", err))
			}
		}
		n.releaseErr = errors.Join(errs...)
	})
	return n.releaseErr
}

// start waits for Raft, gets this node's machine number and makes the ID
// generator safe against a clock that went back across a restart.
func (n *Node) start(ctx context.Context) error {
	if err := n.waitForCluster(ctx); err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	// The highest stored ID is read below: on a follower, wait until the
	// FSM itself (not only Raft's queue to it) holds what was committed.
	if err := n.raft.ReadBarrier(wctx); err != nil {
		return fmt.Errorf("node: waiting for raft: %w", err)
	}
	m, err := n.raft.MachineNumber(wctx)
	if err != nil {
		return fmt.Errorf("node: machine number: %w", err)
	}
	if m, err = n.cfg.machineNumber(m); err != nil {
		return fmt.Errorf("node: %w", err)
	}
	gen, err := snowflake.NewGenerator(m)
	if err != nil {
		return err
	}
	hi, err := n.Archive.HighestID()
	if err != nil {
		return fmt.Errorf("node: highest message id: %w", err)
	}
	if n.cfg.IDClock != nil {
		gen.SetClock(n.cfg.IDClock)
	}
	gen.Observe(hi)
	n.ids.set(gen)
	return nil
}

// notAMember is what a node that left its cluster, or was removed, says
// in its log and /readyz: no majority is missing, it must ask to join.
const notAMember = "this node is not a member of its cluster (it left or was removed): no leader will take it back; " +
	"start it with --join of a member to return, or remove its data directory to join as a new node"

// waitingNoLeader is what a node waiting for its cluster with no leader
// in sight says in its log and /readyz.
const waitingNoLeader = "waiting for the cluster: no leader yet (a majority of the members must be up and reach each other)"

// waitForCluster waits until the cluster has a leader and this node
// caught up with it, for as long as the node runs: a node that comes up
// before a majority of its members (a whole cluster restarting, pods or
// machines started minutes apart) waits for them rather than exit, and
// says so in its log; its /readyz answers 503 meanwhile (the gateway
// holds every other request).
func (n *Node) waitForCluster(ctx context.Context) error {
	every := n.cfg.StartWaitLogEvery
	if every <= 0 {
		every = 15 * time.Second
	}
	start := time.Now()
	for {
		wctx, cancel := context.WithTimeout(ctx, every)
		err := n.raft.WaitReady(wctx)
		cancel()
		switch {
		case err == nil:
			return nil
		case ctx.Err() != nil:
			// The run was stopped: say so, even when the wait's own
			// timer had run out a moment before (its error then says
			// "deadline exceeded", and Run's callers test for the
			// cancellation).
			return fmt.Errorf("node: waiting for raft: %w", ctx.Err())
		case !errors.Is(err, context.DeadlineExceeded):
			return fmt.Errorf("node: waiting for raft: %w", err)
		}
		if n.raft.NotAMember() {
			n.log.Warn("waiting for the cluster: "+notAMember, "waited", time.Since(start).Round(time.Second))
			continue
		}
		n.log.Warn(waitingNoLeader, "waited", time.Since(start).Round(time.Second))
	}
}

// nodeIDFile holds the node ID a data directory belongs to.
const nodeIDFile = "node-id"

// checkNodeID refuses a data directory written by a node of another ID
// (its Raft state names the old one: under a new ID the node would wait
// for ever as "not a member"); a directory without the file (new, or from
// before the file existed) takes id.
func checkNodeID(dir, id string) error {
	path := filepath.Join(dir, nodeIDFile)
	b, err := os.ReadFile(path)
	switch {
	case err == nil && strings.TrimSpace(string(b)) != "":
		if had := strings.TrimSpace(string(b)); had != id {
			return fmt.Errorf("%w: the data directory %s belongs to node %q (%s), not %q: a node keeps its ID; start it with --node-id %s, "+
				"or give node %q a data directory of its own", ErrConfig, dir, had, path, id, had, id)
		}
		return nil
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("node: reading %s: %w", path, err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(id+"\n"), 0o600); err != nil {
		return fmt.Errorf("node: writing %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("node: writing %s: %w", path, err)
	}
	return nil
}

// openBadger opens the node's database with the node's options
// (internal/badgeropts): memtables without a write-ahead file, the Raft
// log being the copy a crash is recovered from.
func openBadger(dir string, log *slog.Logger) (*badger.DB, error) {
	db, err := badger.Open(badgeropts.Node(dir).WithLogger(badgerLogger{log.With("component", "badger")}))
	if err != nil {
		return nil, fmt.Errorf("node: opening database %s: %w", dir, err)
	}
	return db, nil
}

type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) Errorf(f string, a ...any)   { b.l.Error(fmt.Sprintf(f, a...)) }
func (b badgerLogger) Warningf(f string, a ...any) { b.l.Warn(fmt.Sprintf(f, a...)) }
func (b badgerLogger) Infof(f string, a ...any)    { b.l.Debug(fmt.Sprintf(f, a...)) }
func (b badgerLogger) Debugf(f string, a ...any)   {}

// The archive is the broker's chat store with its optional abilities.
var (
	_ broker.PipelinedChatStore = (*archive.Service)(nil)
	_ broker.RetryLookup        = (*archive.Service)(nil)
)

// lazyIDs hands out snowflake IDs once the machine number is known. It
// is truly late: the machine number is assigned through Raft, so it is
// known only when Run has a leader (start), long after the archive that
// stamps messages was built.
type lazyIDs struct {
	once  sync.Once
	ready chan struct{}
	gen   *snowflake.Generator
}

func newLazyIDs() *lazyIDs { return &lazyIDs{ready: make(chan struct{})} }

func (l *lazyIDs) set(g *snowflake.Generator) {
	l.once.Do(func() { l.gen = g; close(l.ready) })
}

// Next blocks until the generator exists; the broker and gateway only
// serve after that, so in practice it never waits.
func (l *lazyIDs) Next() snowflake.ID {
	<-l.ready
	return l.gen.Next()
}

// brokerLink is the services' way into the broker: publishing and this
// node's retained messages. The broker and the services need each other
// — the broker calls the services on every packet (tokens, chat,
// presence), the services publish through the broker — so the services
// are built first with this link, and buildBroker connects it right
// after broker.New, before anything is served. Unconnected, a publish
// fails as unavailable and there are no retained messages.
type brokerLink struct{ b atomic.Pointer[broker.Broker] }

func (l *brokerLink) connect(b *broker.Broker) { l.b.Store(b) }

func (l *brokerLink) Publish(o wire.Outbound) error {
	b := l.b.Load()
	if b == nil {
		return fmt.Errorf("node: broker not built: %w", wire.ErrUnavailable)
	}
	return b.Publish(o)
}

// DeliverCommitted hands a committed message to this node's subscribers
// (archive.LiveDelivery). Before the broker is built nobody is
// subscribed: there is nothing to deliver.
func (l *brokerLink) DeliverCommitted(o wire.Outbound) {
	if b := l.b.Load(); b != nil {
		b.DeliverCommitted(o)
	}
}

func (l *brokerLink) Retained(topic string) ([]byte, bool) {
	if b := l.b.Load(); b != nil {
		return b.Retained(topic)
	}
	return nil, false
}

func (l *brokerLink) RestoreRetained(topic string, payload []byte) error {
	b := l.b.Load()
	if b == nil {
		return fmt.Errorf("node: broker not built: %w", wire.ErrUnavailable)
	}
	return b.RestoreRetained(topic, payload)
}

func (l *brokerLink) DropRetained(topic string) {
	if b := l.b.Load(); b != nil {
		b.DropRetained(topic)
	}
}

func (l *brokerLink) EachRetained(fn func(topic string, payload []byte)) {
	if b := l.b.Load(); b != nil {
		b.EachRetained(fn)
	}
}

// brokerBlocks are the broker's blocks: those of a user who deleted
// their account (disabled at once, erased after the grace period) do not
// count. Such a user is no such user (0x90, as the archive answers and
// HTTP's 404), where the broker's own check of the block, made first,
// refused a direct message to them with 0x87 "bob does not accept your
// messages" for the whole grace period, telling the sender of a block
// protocol.md says a deleted account does not show.
type brokerBlocks struct {
	u       *users.Service
	deleted func(uid string) bool // auth.Service.Deleted
}

func (b brokerBlocks) IsBlocked(blocker, blocked string) bool {
	return b.u.IsBlocked(blocker, blocked) && !b.deleted(blocker)
}

// membership adapts the users service to the yes/no membership question
// the broker and the archive ask.
type membership struct{ u *users.Service }

func (m membership) IsMember(gid, uid string) bool {
	_, ok := m.u.Role(gid, uid)
	return ok
}

func (m membership) GroupsOf(uid string) ([]string, error) { return m.u.GroupsOf(uid) }
