// Package node is edgechat's composition root: it opens the node's
// Badger database, starts the Raft node, builds the broker and the
// services, wires their small interfaces together and runs them.
package node

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"github.com/edgechat/edgechat/broker"
	"github.com/edgechat/edgechat/broker/registry"
	"github.com/edgechat/edgechat/broker/routes"
	"github.com/edgechat/edgechat/cluster"
	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/internal/wire"
	"github.com/edgechat/edgechat/services/admin"
	"github.com/edgechat/edgechat/services/archive"
	"github.com/edgechat/edgechat/services/auth"
	"github.com/edgechat/edgechat/services/clusterapi"
	"github.com/edgechat/edgechat/services/gateway"
	"github.com/edgechat/edgechat/services/presence"
	"github.com/edgechat/edgechat/services/users"
)

// ErrNotReady is returned by readiness checks before the node serves.
var ErrNotReady = errors.New("node not ready")

// Node is one edgechat node: broker, Raft member and services.
type Node struct {
	cfg      Config
	log      *slog.Logger
	registry *prometheus.Registry

	db         *badger.DB
	fsm        *fsm.FSM
	raft       *cluster.Raft
	Auth       *auth.Service
	Users      *users.Service
	Archive    *archive.Service
	Presence   *presence.Service
	Broker     *broker.Broker
	Gateway    *gateway.Gateway
	Admin      *admin.Service
	ClusterAPI *clusterapi.Service

	routes  *routes.Table
	clients *registry.Table
	ids     *lazyIDs
	ready   atomic.Bool
}

// New opens the data directory, binds every listener and builds the
// node. Nothing is served until Run.
func New(cfg Config, log *slog.Logger) (_ *Node, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	log = log.With("node", cfg.NodeID)
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("node: data dir: %w", err)
	}
	var tlsCfg *tls.Config
	if cfg.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("node: loading TLS certificate: %w", err)
		}
		tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	n := &Node{cfg: cfg, log: log, registry: reg, ids: newLazyIDs()}

	// Close what was opened if a later step fails.
	var closers []func()
	defer func() {
		if err != nil {
			for i := len(closers) - 1; i >= 0; i-- {
				closers[i]()
			}
		}
	}()

	n.db, err = openBadger(filepath.Join(cfg.DataDir, "db"), log)
	if err != nil {
		return nil, err
	}
	db := n.db
	closers = append(closers, func() { _ = db.Close() })
	n.fsm = fsm.New(n.db, log.With("component", "fsm"))
	// Raft starts in cluster.New, before the services register their
	// handlers: hold applying until New has wired everything.
	releaseFSM := n.fsm.HoldApply()
	defer releaseFSM()
	// The broker's route table is replicated state: it registers its FSM
	// handlers before Raft starts applying.
	n.routes, err = routes.New(n.db, n.fsm)
	if err != nil {
		return nil, fmt.Errorf("node: routes: %w", err)
	}
	n.clients, err = registry.New(n.db, n.fsm)
	if err != nil {
		return nil, fmt.Errorf("node: client registry: %w", err)
	}

	raftTimeout := cfg.RaftTimeout
	n.raft, err = cluster.New(cluster.Config{
		NodeName:           cfg.NodeID,
		DataDir:            cfg.DataDir,
		BindAddr:           cfg.ClusterAddr,
		AdvertiseAddr:      cfg.AdvertiseCluster,
		Bootstrap:          true, // ignored when Join or BootstrapExpect is set
		Join:               cfg.Join,
		BootstrapExpect:    cfg.BootstrapExpect,
		HeartbeatTimeout:   raftTimeout,
		ElectionTimeout:    raftTimeout,
		LeaderLeaseTimeout: raftTimeout / 2,
		Logger:             log,
		Registerer:         reg,
	}, n.fsm)
	if err != nil {
		return nil, fmt.Errorf("node: raft: %w", err)
	}
	raftStarted := n.raft
	closers = append(closers, func() { shutdownRaft(raftStarted) })

	pub := &lazyPublisher{}
	n.Users, err = users.New(users.Deps{DB: n.db, Proposer: n.raft, FSM: n.fsm, Publisher: pub, Registerer: reg,
		Logger: log})
	if err != nil {
		return nil, err
	}
	authCfg := auth.Config{KeyDir: filepath.Join(cfg.DataDir, "keys"), Issuer: "edgechat", AccessTTL: cfg.AccessTTL}
	if cfg.FastPassword {
		authCfg.Argon2 = auth.Argon2Params{MemoryKiB: 64, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}
	}
	n.Auth, err = auth.New(authCfg, auth.Deps{DB: n.db, Proposer: n.raft, FSM: n.fsm, Profiles: n.Users,
		Logger: log, Registerer: reg})
	if err != nil {
		return nil, err
	}
	n.Archive, err = archive.New(archive.Deps{DB: n.db, Proposer: n.raft, FSM: n.fsm, Publisher: pub, IDs: n.ids,
		Users: n.Auth, Groups: membership{n.Users}, Blocks: n.Users, Logger: log, Registerer: reg})
	if err != nil {
		return nil, err
	}
	n.Presence, err = presence.New(presence.Config{Interval: cfg.Heartbeat, Grace: cfg.PresenceGrace},
		presence.Deps{Publisher: pub, Visibility: visibility{n}, Logger: log.With("component", "presence"), Registerer: reg,
			Cluster: n.raft, Retained: retainedPresence{n}})
	if err != nil {
		return nil, err
	}
	mqttsAddr := ""
	if tlsCfg != nil {
		mqttsAddr = cfg.MQTTSAddr
	}
	publishRate, _ := ParseRate(cfg.MQTTPublishRate) // validated above
	connectRate, _ := ParseRate(cfg.MQTTConnectRate)
	n.Broker, err = broker.New(broker.Config{
		PublishRate:    publishRate,
		ConnectRate:    connectRate,
		MQTTAddr:       cfg.MQTTAddr,
		MQTTSAddr:      mqttsAddr,
		TLS:            tlsCfg,
		Dev:            cfg.Dev,
		AllowedOrigins: cfg.AllowedOrigins,
		Logger:         log,
		Registerer:     reg,
	}, broker.Deps{Verifier: n.Auth, Chat: n.Archive, Receipts: n.Archive, Presence: n.Presence, Visibility: visibility{n},
		Membership: membership{n.Users}, Blocks: n.Users,
		Cluster: n.raft, Proposer: n.raft, Routes: n.routes, Registry: n.clients})
	if err != nil {
		return nil, fmt.Errorf("node: broker: %w", err)
	}
	pub.set(n.Broker)
	// Every node drops a removed member's live group subscriptions once
	// the removal is committed (the delivery-time ACL already stops them).
	n.Users.OnMemberRemoved(n.Broker.DropGroupSubscriptions)
	b := n.Broker
	closers = append(closers, func() {
		done, cancel := context.WithCancel(context.Background())
		cancel()
		_ = b.Run(done) // releases the MQTT listeners
	})
	n.Admin, err = admin.New(admin.Deps{
		Accounts:    n.Auth.CountAccounts,
		Groups:      n.Users.Counts,
		Connections: n.Broker.Connections,
		Messages:    func() uint64 { return counterValue(reg, "edgechat_archive_messages_total", "result", "stored") },
		SetAdmin: func(ctx context.Context, uid string, admin bool) error {
			if err := n.Auth.SetAdmin(ctx, uid, admin); err != nil {
				if errors.Is(err, auth.ErrNoAccount) {
					return fmt.Errorf("%w: %w", wire.ErrNotFound, err)
				}
				return err
			}
			return nil
		},
	})
	if err != nil {
		return nil, err
	}
	perIP, classLimits, _ := cfg.HTTPRateLimits() // validated above
	n.Gateway, err = gateway.New(gateway.Config{Addr: cfg.HTTPAddr, TLS: tlsCfg, CORSOrigins: cfg.AllowedOrigins,
		TrustedProxies: cfg.TrustedProxies, PerIP: perIP, RateLimits: classLimits, NoRateLimits: cfg.NoRateLimits}, gateway.Deps{
		Verifier: n.Auth, Ready: n.readiness, Logger: log.With("component", "gateway"), Registerer: reg, Gatherer: reg,
	})
	if err != nil {
		return nil, fmt.Errorf("node: gateway: %w", err)
	}
	n.Gateway.Mount(n.Auth.Routes()...)
	n.Gateway.Mount(n.Users.Routes()...)
	n.Gateway.Mount(n.Archive.Routes()...)
	n.Gateway.Mount(n.Presence.Routes()...)
	n.Gateway.Mount(n.Admin.Routes()...)
	n.ClusterAPI, err = clusterapi.New(clusterapi.Deps{
		Status:   n.clusterStatus,
		Self:     n.selfInfo,
		PeerInfo: n.peerInfo,
		Leave:    n.leave,
		Remove:   n.remove,
	})
	if err != nil {
		return nil, err
	}
	n.Gateway.Mount(n.ClusterAPI.Routes()...)
	if err := n.raft.RegisterRPC("Edge", &edgeRPC{n}); err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	n.Gateway.Handle("/mqtt", n.Broker.WebSocketHandler())
	return n, nil
}

// readiness: serving, and part of a cluster that has a leader. A node cut
// off in a minority turns unready, so load balancers send new clients to
// nodes that can commit.
func (n *Node) readiness() error {
	if !n.ready.Load() {
		return ErrNotReady
	}
	if n.raft.LeaderID() == "" {
		return fmt.Errorf("%w: no Raft leader reachable", ErrNotReady)
	}
	return nil
}

// Ready reports whether the node has joined its cluster and serves.
func (n *Node) Ready() bool { return n.ready.Load() }

// Registry is the node's Prometheus registry.
func (n *Node) Registry() *prometheus.Registry { return n.registry }

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

// Run serves until ctx is done, then stops every part and closes the
// database. It returns the first error of any part.
func (n *Node) Run(ctx context.Context) error {
	raftCtx, stopRaft := context.WithCancel(context.Background())
	raftDone := make(chan error, 1)
	go func() { raftDone <- n.raft.Run(raftCtx) }()
	defer func() {
		stopRaft()
		<-raftDone
		if err := n.db.Close(); err != nil {
			n.log.Error("closing database", "err", err)
		}
	}()

	if err := n.start(ctx); err != nil {
		// Release the listeners New bound.
		done, cancel := context.WithCancel(context.Background())
		cancel()
		_ = n.Broker.Run(done)
		_ = n.Gateway.Run(done)
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return n.Auth.Run(gctx) }) // publishes this node's token key to the cluster
	g.Go(func() error { return n.Presence.Run(gctx) })
	g.Go(func() error { return n.Broker.Run(gctx) })
	g.Go(func() error { return n.Gateway.Run(gctx) })
	g.Go(func() error { n.gcLoop(gctx); return nil })
	g.Go(func() error {
		select {
		case err := <-raftDone:
			raftDone <- err
			if gctx.Err() == nil {
				return fmt.Errorf("node: raft stopped: %w", err)
			}
		case <-gctx.Done():
		}
		return nil
	})
	n.ready.Store(true)
	n.log.Info("edgechat node serving", "http", n.HTTPURL(), "ws", n.WebSocketURL(), "mqtt", n.MQTTAddr(),
		"mqtts", n.MQTTSAddr(), "cluster", n.ClusterAddr(), "data", n.cfg.DataDir, "dev", n.cfg.Dev)
	err := g.Wait()
	n.ready.Store(false)
	return err
}

// start waits for Raft, gets this node's machine number and makes the ID
// generator safe against a clock that went back across a restart.
func (n *Node) start(ctx context.Context) error {
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := n.raft.WaitReady(wctx); err != nil {
		return fmt.Errorf("node: waiting for raft: %w", err)
	}
	m, err := n.raft.MachineNumber(wctx)
	if err != nil {
		return fmt.Errorf("node: machine number: %w", err)
	}
	gen, err := snowflake.NewGenerator(m)
	if err != nil {
		return err
	}
	hi, err := n.Archive.HighestID()
	if err != nil {
		return fmt.Errorf("node: highest message id: %w", err)
	}
	gen.Observe(hi)
	n.ids.set(gen)
	return nil
}

// gcLoop runs Badger's value-log GC (mochi's store once grew to 5 GB without it).
func (n *Node) gcLoop(ctx context.Context) {
	t := time.NewTicker(5 * time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			for n.db.RunValueLogGC(0.5) == nil {
			}
		}
	}
}

func openBadger(dir string, log *slog.Logger) (*badger.DB, error) {
	opts := badger.DefaultOptions(dir).
		WithLogger(badgerLogger{log.With("component", "badger")}).
		WithMemTableSize(16 << 20).
		WithNumMemtables(2).
		WithBlockCacheSize(32 << 20).
		WithIndexCacheSize(16 << 20).
		WithValueLogFileSize(64 << 20).
		WithNumCompactors(2)
	db, err := badger.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("node: opening database %s: %w", dir, err)
	}
	return db, nil
}

func shutdownRaft(r *cluster.Raft) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_ = r.Run(ctx)
}

type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) Errorf(f string, a ...any)   { b.l.Error(fmt.Sprintf(f, a...)) }
func (b badgerLogger) Warningf(f string, a ...any) { b.l.Warn(fmt.Sprintf(f, a...)) }
func (b badgerLogger) Infof(f string, a ...any)    { b.l.Debug(fmt.Sprintf(f, a...)) }
func (b badgerLogger) Debugf(f string, a ...any)   {}

// lazyIDs hands out snowflake IDs once the machine number is known.
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

// lazyPublisher breaks the construction cycle broker → services → broker.
type lazyPublisher struct {
	mu sync.RWMutex
	b  *broker.Broker
}

func (p *lazyPublisher) set(b *broker.Broker) {
	p.mu.Lock()
	p.b = b
	p.mu.Unlock()
}

func (p *lazyPublisher) Publish(o wire.Outbound) error {
	p.mu.RLock()
	b := p.b
	p.mu.RUnlock()
	if b == nil {
		return fmt.Errorf("node: broker not started: %w", wire.ErrUnavailable)
	}
	return b.Publish(o)
}

// visibility is who may watch whose presence: the user, the users they
// have in their contacts, co-members of their groups and the users they
// have a conversation with — never someone they blocked.
type visibility struct{ n *Node }

func (v visibility) CanSeePresence(viewer, subject string) bool {
	if viewer == subject {
		return true
	}
	if v.n.Users.IsBlocked(subject, viewer) {
		return false
	}
	return v.n.Users.IsContact(subject, viewer) || v.n.Users.SharesGroup(viewer, subject) || v.n.Archive.CanSeePresence(viewer, subject)
}

// counterValue reads one labelled counter from the registry (for
// /admin/stats; not a hot path).
func counterValue(g prometheus.Gatherer, name, label, value string) uint64 {
	mfs, err := g.Gather()
	if err != nil {
		return 0
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					return uint64(m.GetCounter().GetValue())
				}
			}
		}
	}
	return 0
}

// membership adapts the users service to the yes/no membership question
// the broker and the archive ask.
type membership struct{ u *users.Service }

func (m membership) IsMember(gid, uid string) bool {
	_, ok := m.u.Role(gid, uid)
	return ok
}

func (m membership) GroupsOf(uid string) ([]string, error) { return m.u.GroupsOf(uid) }
