// Package cluster runs an edgechat node's hashicorp/raft instance: the
// raft-wal log and stable store, file snapshots, the TCP transport, and
// the batching Propose through which every replicated state change goes.
//
// A node starts as a one-voter cluster (Bootstrap), forms a cluster with
// its peers (BootstrapExpect) or joins a running one (Join), and grows to
// three or five voters. The cluster port carries both Raft and the nodes'
// own RPC (transport.go, rpc.go); proposals made on a follower are
// forwarded to the leader (forward.go). Proposals
// from many goroutines are packed into one Raft entry per round trip
// (see propose.go), which is what lets a fsync-bound log commit chat
// messages at high rates.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/internal/peerrpc"
	"github.com/edgechat/edgechat/internal/wire"
	"github.com/edgechat/edgechat/internal/workpool"
)

// Defaults of Config.
const (
	DefaultBindAddr           = ":7946"
	DefaultHeartbeatTimeout   = 500 * time.Millisecond
	DefaultElectionTimeout    = 500 * time.Millisecond
	DefaultLeaderLeaseTimeout = 250 * time.Millisecond
	DefaultCommitTimeout      = time.Second
	// A snapshot only refers to the FSM's Badger (cluster/fsm
	// snapshot_ref.go): a 16-byte file, not a copy of the state, after
	// its barrier wrote Badger's memtables out as level-0 tables. Raft
	// checks every 5-10 s and snapshots once this many entries were
	// applied since the last one; boundLog lowers the count so that the
	// log between snapshots is about Config.LogBytes (8 MB). The count is
	// high so that the bytes decide: at 1024 entries (before memtables
	// lost their files) a node at 1,000 msg/s snapshotted every 5 s, and
	// each barrier's flush of a few MB of memtable put three nodes on one
	// core at 15–27 ms of PUBACK p99 instead of 7–10 (docs/perf/compaction.md).
	DefaultSnapshotThreshold = 16384
	DefaultSnapshotInterval  = 5 * time.Second
	DefaultTrailingLogs      = 16384 // not below DefaultSnapshotThreshold: see snapshotsRetained
	DefaultMaxBatch          = 256
	// DefaultMaxEntriesInFlight: one entry at a time, the next one
	// gathering every proposal that arrives while it commits. With
	// entries pipelined (up to 64 before), three nodes on one core at
	// 1,000 msg/s carried 1.2 commands per entry and every entry paid its
	// own log write and fsync on each node, Badger transaction and
	// replication round; one at a time gave 1.5-2.3 commands per entry
	// and a PUBACK p99 30-50% lower, with the same saturated rate on one
	// and three nodes (docs/perf/cluster.md, 2026-12-04).
	DefaultMaxEntriesInFlight = 1

	// MaxCommandSize is the largest payload of one proposed command.
	MaxCommandSize = 1 << 20
	// maxEntryBytes caps the payload bytes packed into one entry so that a
	// burst of large commands does not make one huge append.
	maxEntryBytes = 4 << 20
	// maxEntriesInFlight is the most MaxEntriesInFlight can be: the
	// waiter's queue of entries handed to Raft holds that many.
	maxEntriesInFlight = 64
	// callIdle is how long a worker of Raft.calls waits for the next call.
	callIdle = 5 * time.Second
	// applyTimeout bounds how long the batcher waits for Raft to accept an
	// entry (raft.ErrEnqueueTimeout after it).
	applyTimeout = 5 * time.Second
	// drainTimeout bounds how long Run waits for in-flight entries to
	// commit before shutting Raft down.
	drainTimeout = 2 * time.Second
)

// Sentinel errors. All failures to commit wrap wire.ErrUnavailable, bad
// input wraps wire.ErrInvalid.
var (
	ErrStopped   = fmt.Errorf("cluster: node stopped: %w", wire.ErrUnavailable)
	ErrNotLeader = fmt.Errorf("cluster: not the leader: %w", wire.ErrUnavailable)
	ErrNoLeader  = fmt.Errorf("cluster: no leader: %w", wire.ErrUnavailable)
	ErrTooLarge  = fmt.Errorf("cluster: command payload too large: %w", wire.ErrInvalid)
	// ErrStateWithoutLog: the database holds replicated state but there
	// is no Raft state, and the node was told to join or form a cluster.
	ErrStateWithoutLog = errors.New("cluster: the database holds state but there is no raft log")
	// ErrMachineNumbers means all 1023 snowflake machine numbers are taken.
	ErrMachineNumbers = errors.New("cluster: no free machine number")
)

// Config configures a Raft. Zero durations and sizes take the defaults.
type Config struct {
	NodeName      string // stable node ID (the Raft ServerID), e.g. "n1"
	DataDir       string // Raft state lives in DataDir/raft
	BindAddr      string // TCP bind address of the Raft transport; default ":7946"
	AdvertiseAddr string // address peers dial; default: the bound address, 127.0.0.1:port when bound to all interfaces
	// Bootstrap makes a node without Raft state bootstrap a one-voter
	// cluster that others can join later. Ignored when Join or
	// BootstrapExpect is set.
	Bootstrap bool
	// Join lists cluster addresses of members (any of them; a follower
	// forwards the request to the leader). A node without Raft state asks
	// them to add it as a voter (a non-voter first, while it catches
	// up), retrying until it is one. A node with
	// Raft state just starts, and also sends one (idempotent) join
	// request in the background, so that a node that left or was removed
	// comes back when restarted with Join.
	Join []string
	// BootstrapExpect > 0 forms a new cluster: a node without Raft state
	// asks the Join addresses (and the peers they know) who they are, and
	// once it knows exactly BootstrapExpect servers, itself included, it
	// bootstraps them all as voters; every one of them does the same with
	// the same sorted list. Give every founding node the same number, and
	// start no more than that many with it. If a peer turns out to be in
	// a cluster already, the node joins it instead.
	BootstrapExpect int

	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	// CommitTimeout is how long the leader waits without new entries
	// before sending followers the commit index anyway. The leader
	// announces its own commits at once (announce.go), so this is only a
	// fallback (for entries Raft appends by itself, like configuration
	// changes); short values cost an idle cluster CPU. Raft's default is
	// 50 ms.
	CommitTimeout time.Duration
	// DownAfter is how long a member may not answer the leader before it
	// is marked down (down.go), and how long this node may not hear from
	// a leader before it counts itself down. Default: DefaultDownAfter,
	// at least 4 HeartbeatTimeouts; negative: never.
	DownAfter time.Duration

	SnapshotThreshold uint64        // entries since the last snapshot that trigger a new one (at most: see LogBytes)
	SnapshotInterval  time.Duration // how often to check SnapshotThreshold
	TrailingLogs      uint64        // entries kept in the log after a snapshot (at most: see LogBytes)
	LogSegmentSize    int           // bytes per raft-wal segment file; default DefaultLogSegmentSize
	// LogBytes bounds TrailingLogs and SnapshotThreshold in bytes: when
	// entries are large (many commands each) the counts are lowered so
	// that each keeps about this many bytes of log (storage.go boundLog).
	LogBytes int

	MaxBatch int // commands per Raft entry
	// MaxEntriesInFlight bounds the entries this node's batcher has
	// handed to Raft and not yet seen applied; proposals arriving
	// meanwhile gather into the next entry. Default
	// DefaultMaxEntriesInFlight (one); at most maxEntriesInFlight.
	MaxEntriesInFlight int

	// FeatureLevel is the highest cluster feature level this node
	// supports (cluster/featurelevel), sent with its join requests: a
	// leader refuses a joiner below the cluster's level.
	FeatureLevel uint32

	// ArchiveStore names where this node keeps sealed message segments
	// (node: "local", "s3 bucket NAME"), sent with its join requests: a
	// leader whose own differs refuses the joiner, which would read
	// segments from where they are not (services/archive). "": not
	// checked (a version before the check, tests of this package).
	ArchiveStore string
	// ArchiveStoreOdd, when set, is asked before a joiner whose archive
	// store differs from this leader's is refused: true when the other
	// members that say agree with the joiner, so that the leader's own
	// store is the odd one (it is not refused then; the leader's sealing
	// says so). nil: the joiner is refused.
	ArchiveStoreOdd func(ctx context.Context, joiner, store string) bool

	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

func (c *Config) setDefaults() error {
	if c.NodeName == "" {
		return errors.New("cluster: NodeName is required")
	}
	if len(c.NodeName) > maxNodeName {
		return fmt.Errorf("cluster: NodeName longer than %d bytes", maxNodeName)
	}
	if c.DataDir == "" {
		return errors.New("cluster: DataDir is required")
	}
	if c.BootstrapExpect < 0 || c.BootstrapExpect > 9 {
		return errors.New("cluster: BootstrapExpect must be 0..9")
	}
	for _, a := range c.Join {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return fmt.Errorf("cluster: Join address %q: %w", a, err)
		}
	}
	if len(c.Join) > 0 || c.BootstrapExpect > 0 {
		c.Bootstrap = false
	}
	if c.BindAddr == "" {
		c.BindAddr = DefaultBindAddr
	}
	if c.HeartbeatTimeout <= 0 {
		c.HeartbeatTimeout = DefaultHeartbeatTimeout
	}
	if c.ElectionTimeout <= 0 {
		c.ElectionTimeout = DefaultElectionTimeout
	}
	if c.LeaderLeaseTimeout <= 0 {
		c.LeaderLeaseTimeout = min(DefaultLeaderLeaseTimeout, c.HeartbeatTimeout)
	}
	if c.CommitTimeout <= 0 {
		c.CommitTimeout = DefaultCommitTimeout
	}
	if c.DownAfter == 0 {
		c.DownAfter = max(DefaultDownAfter, 4*c.HeartbeatTimeout)
	}
	if c.SnapshotThreshold == 0 {
		c.SnapshotThreshold = DefaultSnapshotThreshold
	}
	if c.SnapshotInterval <= 0 {
		c.SnapshotInterval = DefaultSnapshotInterval
	}
	if c.TrailingLogs == 0 {
		c.TrailingLogs = DefaultTrailingLogs
	}
	if c.LogSegmentSize <= 0 {
		c.LogSegmentSize = DefaultLogSegmentSize
	}
	if c.LogBytes <= 0 {
		c.LogBytes = DefaultLogBytes
	}
	if c.MaxBatch <= 0 {
		c.MaxBatch = DefaultMaxBatch
	}
	if c.MaxBatch > 1<<16 {
		return errors.New("cluster: MaxBatch above 65536")
	}
	if c.MaxEntriesInFlight <= 0 {
		c.MaxEntriesInFlight = DefaultMaxEntriesInFlight
	}
	if c.MaxEntriesInFlight > maxEntriesInFlight {
		return fmt.Errorf("cluster: MaxEntriesInFlight above %d", maxEntriesInFlight)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// Raft is this node's member of the Raft cluster: the hashicorp/raft
// instance, its log and snapshot stores, the batching proposer and the
// node-to-node RPC that shares its port.
type Raft struct {
	cfg    Config
	log    *slog.Logger
	fsm    *fsm.FSM
	raft   *raft.Raft
	trans  *raft.NetworkTransport
	mux    *mux
	rpcSrv *peerrpc.Server
	peers  *peerPool
	fresh  bool       // no Raft state when New opened the stores
	votes  *voteGuard // on while a node that started without its state catches up (voteguard.go); nil if off
	wal    *wal.WAL
	logs   *logStore // the log as Raft sees it: w with a cache (logstore.go)
	meta   *metadb.BoltMetaDB
	unlock func() error
	m      *metrics

	reqs     chan *request  // proposals waiting for the batcher
	pending  chan *inflight // entries handed to Raft, in log order
	slots    chan struct{}  // one token per entry handed to Raft and not yet applied (MaxEntriesInFlight)
	stopping chan struct{}  // closed when Run starts shutting down
	stopped  chan struct{}  // closed when Run has returned (or Close shut down a Raft that never ran)
	running  atomic.Bool    // Run started, or Close took its place
	quit     chan struct{}  // closed by Close: Run stops
	quitOnce sync.Once
	closeErr error           // what the shutdown returned; read after stopped is closed
	stopCtx  context.Context // done when Run starts shutting down
	// calls run transport calls that must not hold their caller (commit
	// notices) on goroutines that keep their stacks between calls: the
	// msgpack encoding grew a fresh goroutine's stack every time.
	calls    *workpool.Pool
	stopCtxC context.CancelFunc

	fwd      chan *request // follower proposals waiting for the forwarder
	fwdSeq   *forwardSeq   // numbers this node's forwarded batches
	fwdOrder forwardOrder  // as leader: forwarded batches to the batcher in order
	disc     discovery
	joinMu   sync.Mutex // joins against raises of the feature level (HoldJoins)
	statMu   sync.Mutex
	// promoting names the non-voters the leader makes voters once they
	// have caught up, in the background (membership.go); under statMu.
	promoting map[string]bool
	peerStat  map[string]peerStatus // leader's last poll of each member

	memberWatch memberWatch  // announces member list changes (MembersChanged)
	lastLed     atomic.Int64 // when this node last led, Unix ns, by watchSelfDown's tick (down.go)
	selfDown    atomic.Bool  // this node counts itself down (cutOff), as last announced (down.go)
	cutAway     atomic.Bool  // this node is cut off from a quorum that may commit without it (CutOff), as last announced (down.go)
	// removedAway: the leader answered this node's request to confirm
	// its membership (rejoin, moved) that it is no member: it was
	// removed while it was away, and its own configuration does not say
	// so (NotAMember).
	removedAway atomic.Bool
	notMember   atomic.Bool     // NotAMember as last announced (down.go, watchSelfDown)
	askedAt     atomic.Int64    // when this node, cut off, last asked whether it is a member, Unix ns (confirmMember)
	asking      atomic.Bool     // a confirmMember runs
	announcer   commitAnnouncer // tells followers of commits at once (announce.go)
	reads       readRounds      // the leader's shared read barriers (readbarrier.go)
	notices     commitNotices   // ... without a log entry (notice.go)
	catchUp     catchUp         // feeds followers that are behind while idle (catchup.go)
	helpers     helpers         // the announcer's and catch-up's goroutines
	quick       quickElection   // a lone voter elects itself at once (quickstart.go)
	// joinRefused carries the leader's refusal of this node's join when
	// its archive store differs from the cluster's (JoinRefused);
	// buffered, sent once.
	joinRefused chan error
}

// New opens the Raft stores under cfg.DataDir, binds the transport and
// starts Raft, applying committed entries into f. It registers the
// cluster's own command handlers (CmdNodeRegister) on f, so f must be
// fresh for each New. Run serves proposals; Close (or the end of Run)
// releases what New opened.
func New(cfg Config, f *fsm.FSM) (_ *Raft, err error) {
	if f == nil {
		return nil, errors.New("cluster: nil FSM")
	}
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	log := cfg.Logger // the caller names the node (node.New does)
	hl := newHclog(log, "raft", hclog.Warn)

	var closers []func() error
	defer func() {
		if err != nil {
			for i := len(closers) - 1; i >= 0; i-- {
				_ = closers[i]()
			}
		}
	}()

	dir := filepath.Join(cfg.DataDir, "raft")
	walDir := filepath.Join(dir, "wal")
	if err := os.MkdirAll(walDir, 0o750); err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	// One process per data dir: a second one gets a clear error instead
	// of two Rafts writing one log.
	unlock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	closers = append(closers, unlock)
	// raft-wal v0.4.1's Open returns its errors after loading the metadata
	// DB (bbolt) without closing it (its Close does close it), and a
	// reopen in the same process would then wait forever on the file
	// lock; so we own the meta store and close it ourselves (a second
	// Close is a no-op).
	meta := &metadb.BoltMetaDB{}
	closers = append(closers, meta.Close)
	w, err := wal.Open(walDir, wal.WithLogger(hl.Named("wal")), wal.WithMetaStore(meta),
		wal.WithSegmentSize(cfg.LogSegmentSize))
	if err != nil {
		return nil, fmt.Errorf("cluster: open raft log %s: %w", walDir, err)
	}
	closers = append(closers, w.Close)
	files, err := raft.NewFileSnapshotStoreWithLogger(dir, snapshotsRetained, hl.Named("snapshot"))
	if err != nil {
		return nil, fmt.Errorf("cluster: open snapshots: %w", err)
	}
	snaps := &compressedSnapshots{SnapshotStore: files, state: f.OpenState}
	if err := snaps.checkLatest(f); err != nil {
		return nil, err
	}
	mx, err := newMux(cfg.BindAddr, cfg.AdvertiseAddr, log)
	if err != nil {
		return nil, err
	}
	closers = append(closers, mx.Close)
	trans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  newRaftLayer(mx),
		MaxPool: 3,
		Timeout: 10 * time.Second,
		Logger:  hl.Named("net"),
	})
	closers = append(closers, trans.Close)

	conf := raft.DefaultConfig()
	conf.LocalID = raft.ServerID(cfg.NodeName)
	conf.HeartbeatTimeout = cfg.HeartbeatTimeout
	conf.ElectionTimeout = cfg.ElectionTimeout
	conf.LeaderLeaseTimeout = cfg.LeaderLeaseTimeout
	conf.CommitTimeout = cfg.CommitTimeout
	conf.MaxAppendEntries = maxAppendEntries
	conf.SnapshotThreshold = cfg.SnapshotThreshold
	conf.SnapshotInterval = cfg.SnapshotInterval
	conf.TrailingLogs = cfg.TrailingLogs
	conf.Logger = hl
	// BatchApplyCh stays off: with it, an entry still queued in Raft's
	// apply channel at shutdown never gets an answer. Our own batcher
	// already packs commands, and Raft still groups the entries waiting
	// when the leader loop comes round into one log write.
	conf.BatchApplyCh = false
	if err := raft.ValidateConfig(conf); err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}

	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}

	logs := newLogStore(w, walDir, m.compactionsSkipped, m.logWriteFailures)
	existing, err := raft.HasExistingState(logs, w, snaps)
	if err != nil {
		return nil, fmt.Errorf("cluster: inspect raft state: %w", err)
	}
	if !existing && !cfg.Bootstrap {
		// Joining or forming with a database that already holds state:
		// the entries the cluster sends would be skipped up to its
		// applied index, so the node would diverge (restored.go).
		if applied, err := f.AppliedIndex(); err != nil {
			return nil, fmt.Errorf("cluster: %w", err)
		} else if applied > 0 {
			return nil, fmt.Errorf("cluster: %w (at index %d): start a restored node alone, without --join or "+
				"--bootstrap-expect, or empty the data directory to join a cluster", ErrStateWithoutLog, applied)
		}
	}
	if cfg.Bootstrap {
		if !existing {
			self := raft.Server{Suffrage: raft.Voter, ID: conf.LocalID, Address: trans.LocalAddr()}
			applied, err := f.AppliedIndex()
			if err != nil {
				return nil, fmt.Errorf("cluster: bootstrap: %w", err)
			}
			if applied > 0 {
				// A restored state (restored.go): the log starts after it.
				if err := bootstrapAtState(f, applied, w, snaps, trans, self); err != nil {
					return nil, err
				}
				log.Info("bootstrapped a new one-voter raft cluster on the database's state", "addr", trans.LocalAddr(),
					"applied_index", applied)
			} else {
				boot := raft.Configuration{Servers: []raft.Server{self}}
				if err := raft.BootstrapCluster(conf, logs, w, snaps, trans, boot); err != nil {
					return nil, fmt.Errorf("cluster: bootstrap: %w", err)
				}
				log.Info("bootstrapped a new one-voter raft cluster", "addr", trans.LocalAddr())
			}
		}
	}

	// A node that gets its state from the cluster (it joins, or forms one
	// with BootstrapExpect) votes only once it holds what was committed.
	votes, err := openVoteGuard(dir, !existing && !cfg.Bootstrap, log, m.votesRefused)
	if err != nil {
		return nil, err
	}
	if votes != nil {
		votes.header = raft.RPCHeader{ProtocolVersion: conf.ProtocolVersion, ID: []byte(conf.LocalID),
			Addr: trans.EncodePeer(conf.LocalID, trans.LocalAddr())}
		closers = append(closers, func() error { votes.stop(); return nil })
	}

	stopCtx, stopCtxC := context.WithCancel(context.Background())
	closers = append(closers, func() error { stopCtxC(); return nil })
	n := &Raft{
		cfg:      cfg,
		log:      log,
		fsm:      f,
		trans:    trans,
		mux:      mx,
		rpcSrv:   newRPCServer(),
		peers:    newPeerPool(),
		fresh:    !existing,
		votes:    votes,
		wal:      w,
		logs:     logs,
		meta:     meta,
		unlock:   unlock,
		m:        m,
		reqs:     make(chan *request, 4*cfg.MaxBatch),
		pending:  make(chan *inflight, maxEntriesInFlight),
		slots:    make(chan struct{}, cfg.MaxEntriesInFlight),
		stopping: make(chan struct{}),
		stopped:  make(chan struct{}),
		quit:     make(chan struct{}),
		stopCtx:  stopCtx,
		calls:    workpool.New(stopCtx, callIdle),
		stopCtxC: stopCtxC,
		fwd:      make(chan *request, 4*cfg.MaxBatch),
		fwdSeq:   newForwardSeq(),
		peerStat: make(map[string]peerStatus),
	}
	n.joinRefused = make(chan error, 1)
	if votes != nil {
		votes.census = n.candidateHoldsAll
		go votes.relay(trans.Consumer())
	}
	if err := n.rpcSrv.Register(clusterService, (&clusterRPC{n: n}).methods()); err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	closers = append(closers, func() error { n.peers.close(); return nil })

	if existing {
		// The node's Badger keeps no copy of its memtables on disk
		// (internal/badgeropts): after a crash its state is that of an
		// earlier entry, and the log's entries after it are applied
		// again. Said once, so that a slower start after a crash is
		// explained.
		applied, aerr := f.AppliedIndex()
		last, lerr := logs.LastIndex()
		if aerr == nil && lerr == nil && last > applied {
			log.Info("database behind the raft log: its entries after the applied index are applied again",
				"applied_index", applied, "last_log_index", last, "entries", last-applied)
		}
	}
	f.Register(wire.CmdNodeRegister, applyNodeRegister)
	f.Register(wire.CmdNodeDown, n.applyNodeDown)
	if cfg.Registerer != nil {
		if _, err := register(cfg.Registerer, n.downGauge()); err != nil {
			return nil, err
		}
	}
	snaps.starting.Store(true)                                                   // NewRaft restores the latest snapshot: a reference stays one
	acks := &ackTransport{NetworkTransport: trans, ack: n.noteAck, guard: votes} // notice.go, voteguard.go
	n.raft, err = raft.NewRaft(conf, watchedFSM{FSM: f, changed: n.memberWatch.notify}, logs, w, snaps, acks)
	snaps.starting.Store(false)
	if err != nil {
		return nil, fmt.Errorf("cluster: start raft: %w", err)
	}
	// What Members reports of this node until watchSelfDown runs: it
	// announces every change from this value on.
	n.selfDown.Store(n.cutOff(n.downMarks()))
	n.cutAway.Store(n.cutOff(nil))
	// Serve the cluster port only now that the node is complete: Raft
	// needs peers' connections from here on (it is running).
	mx.serveRPC = func(c net.Conn) { n.rpcSrv.ServeConn(c) }
	mx.start()
	return n, nil
}

// Run serves proposals until ctx is done or Close is called, then waits
// briefly for entries in flight, shuts Raft down and closes the transport
// and the stores.
func (n *Raft) Run(ctx context.Context) (err error) {
	if !n.running.CompareAndSwap(false, true) {
		return errors.New("cluster: Run called twice or after Close")
	}
	defer func() {
		n.closeErr = err
		close(n.stopped)
	}()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-n.quit:
			cancel()
		case <-ctx.Done():
		}
	}()

	waiterDone := make(chan struct{})
	go func() {
		defer close(waiterDone)
		n.waiter()
	}()
	obs := make(chan raft.Observation, 16)
	observer := raft.NewObserver(obs, false, func(o *raft.Observation) bool {
		switch o.Data.(type) {
		case raft.LeaderObservation, raft.ResumedHeartbeatObservation, raft.PeerObservation:
			return true
		}
		return false
	})
	n.raft.RegisterObserver(observer)
	obsDone := make(chan struct{})
	go func() {
		defer close(obsDone)
		n.observe(obs)
	}()
	n.quick.start(n.raft, raft.ServerID(n.cfg.NodeName), n.cfg.LeaderLeaseTimeout, n.log) // after the observer: it sees the leadership

	// Helpers that live as long as Run: forwarding follower proposals,
	// forming or joining the cluster, the leader's status poll.
	var aux, sends sync.WaitGroup
	aux.Go(func() { n.forwarder(ctx, &sends) })
	aux.Go(func() { n.boundLog(ctx) })
	aux.Go(func() { n.watchDown(ctx) })
	if n.votes.guarded() {
		aux.Go(func() { n.liftVoteGuard(ctx) })
	}
	switch {
	case n.fresh && (len(n.cfg.Join) > 0 || n.cfg.BootstrapExpect > 0):
		aux.Go(func() { n.formCluster(ctx) })
	case !n.fresh && len(n.cfg.Join) > 0:
		aux.Go(func() { n.rejoin(ctx, false) })
	case !n.fresh:
		// A member started without Join asks the members its
		// configuration names to confirm it (JoinArgs.Moved): one at
		// another address has it updated (the others would go on
		// dialling the address its configuration names, and it would
		// never hear from a leader), and one removed while it was away,
		// whose configuration does not say so, learns it (NotAMember)
		// instead of waiting for a leader for ever.
		was, moved, others := n.movedFrom()
		if moved {
			n.log.Warn("this node's cluster address changed since it last ran; asking the other members to update it",
				"was", was, "now", n.Addr())
		}
		if others {
			aux.Go(func() { n.rejoin(ctx, true) })
		}
	}

	n.batcher(ctx)

	close(n.stopping)
	n.stopCtxC()
	close(n.pending) // only the batcher sends on it, and it has returned
	n.failQueued()
	aux.Wait()
	sends.Wait() // released by stopCtx
	n.failForwards()

	wait := func(d time.Duration) bool {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-waiterDone:
			return true
		case <-t.C:
			return false
		}
	}
	wait(drainTimeout)
	var errs []error
	if err := n.raft.Shutdown().Error(); err != nil {
		errs = append(errs, fmt.Errorf("cluster: raft shutdown: %w", err))
	}
	if !wait(drainTimeout) {
		// Callers are released by n.stopped; the waiter is left behind on
		// a future Raft never answered.
		n.log.Warn("raft left an entry unanswered at shutdown")
	}
	n.raft.DeregisterObserver(observer)
	close(obs)
	<-obsDone
	n.helpers.closeAndWait() // their barriers failed with Raft shut down
	errs = append(errs, n.release()...)
	return errors.Join(errs...)
}

// Close stops Run and waits until it has returned; a Raft that never ran
// is shut down here. Either way Raft is shut down and the transport, the
// stores and the data directory's lock are released. It returns what the
// shutdown returned, and may be called more than once.
func (n *Raft) Close() error {
	n.quitOnce.Do(func() { close(n.quit) })
	if n.running.CompareAndSwap(false, true) {
		// Run never started, and now it never will.
		close(n.stopping)
		n.stopCtxC()
		n.failQueued()
		n.failForwards()
		var errs []error
		if err := n.raft.Shutdown().Error(); err != nil {
			errs = append(errs, fmt.Errorf("cluster: raft shutdown: %w", err))
		}
		n.closeErr = errors.Join(append(errs, n.release()...)...)
		close(n.stopped)
	}
	<-n.stopped
	return n.closeErr
}

// release closes the transport, the stores and the data directory's lock
// (after Raft has shut down).
func (n *Raft) release() []error {
	var errs []error
	if err := n.trans.Close(); err != nil {
		errs = append(errs, fmt.Errorf("cluster: close transport: %w", err))
	}
	n.votes.stop()
	n.peers.close()
	if err := n.mux.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		errs = append(errs, fmt.Errorf("cluster: close listener: %w", err))
	}
	// A heartbeat being handled on the transport's goroutine writes the
	// term to the log store after Raft's Shutdown returned; closing the
	// store under it makes Raft panic ("failed to save current term").
	if !n.mux.quiesce(time.Second) {
		n.log.Warn("a raft connection handler was still busy when the raft log closed")
	}
	if err := n.wal.Close(); err != nil {
		errs = append(errs, fmt.Errorf("cluster: close raft log: %w", err))
	}
	if err := n.meta.Close(); err != nil {
		errs = append(errs, fmt.Errorf("cluster: close raft log metadata: %w", err))
	}
	if err := n.unlock(); err != nil {
		errs = append(errs, fmt.Errorf("cluster: unlock data dir: %w", err))
	}
	return errs
}

// observe handles Raft's observations: a new leader changes the member
// list (Member.Leader) and is logged, and goes on promoting the joiners
// its predecessor left non-voters; a new leader, a follower whose
// heartbeats resumed and a peer added are moments when a follower may be
// behind (catchup.go).
func (n *Raft) observe(obs <-chan raft.Observation) {
	for o := range obs {
		switch d := o.Data.(type) {
		case raft.LeaderObservation:
			if d.LeaderID == raft.ServerID(n.cfg.NodeName) {
				n.quick.led(n.raft, n.log)
				n.promoteNonvoters()
			}
			n.memberWatch.notify()
			n.log.Info("raft leader changed", "leader", d.LeaderID, "addr", d.LeaderAddr, "self", n.IsLeader())
			n.kickCatchUp()
		case raft.ResumedHeartbeatObservation, raft.PeerObservation:
			n.kickCatchUp()
		}
	}
}

// Addr is the transport's advertised address (what peers dial).
func (n *Raft) Addr() string { return string(n.trans.LocalAddr()) }

// ID is the node's Raft server ID (Config.NodeName).
func (n *Raft) ID() string { return n.cfg.NodeName }

// Self is this node's name (the same as ID; the name the broker's and
// presence's cluster interfaces use).
func (n *Raft) Self() string { return n.cfg.NodeName }

// Barrier waits until every entry committed before it is applied on this
// node, which must be the leader: a new leader knows which of the entries
// it holds were committed only once an entry of its own term commits, so
// whatever reads replicated state to act as the leader (the push sender
// reading its outbox) waits for this first. ctx's deadline bounds the
// wait (applyTimeout without one).
func (n *Raft) Barrier(ctx context.Context) error {
	timeout := applyTimeout
	if d, ok := ctx.Deadline(); ok {
		timeout = max(time.Until(d), time.Millisecond)
	}
	if err := n.awaitFuture(ctx, n.raft.Barrier(timeout)); err != nil {
		return fmt.Errorf("cluster: barrier: %w", err)
	}
	return nil
}

// IsLeader reports whether this node is the Raft leader now.
func (n *Raft) IsLeader() bool { return n.raft.State() == raft.Leader }

// Stats is a point-in-time view of the node's Raft state.
type Stats struct {
	State        string // Follower, Candidate, Leader, Shutdown
	LeaderID     string
	LeaderAddr   string
	Term         uint64
	LastIndex    uint64
	CommitIndex  uint64
	AppliedIndex uint64
	Members      []Member // the latest Raft configuration, sorted by name
}

// LeaderID is the name of the leader this node knows, "" when none (a
// cheap check for readiness; Stats also reads the configuration).
func (n *Raft) LeaderID() string {
	_, id := n.raft.LeaderWithID()
	return string(id)
}

// LogWriteError is the error of this node's last append to its Raft log
// if it failed (a full or failing disk): such a node cannot commit or
// keep up. nil once an append succeeded again.
func (n *Raft) LogWriteError() error { return n.logs.WriteError() }

// ErrApplyStalled means the FSM has been applying one entry for longer
// than ApplyStallAfter: the node's database cannot write, so it neither
// answers its clients' proposals nor serves fresh reads.
var ErrApplyStalled = errors.New("cluster: applying a Raft entry is stalled")

// ApplyStallAfter is how long one entry's apply may take before
// ApplyStalled reports it (an apply takes milliseconds).
const ApplyStallAfter = 10 * time.Second

// ApplyStalled returns ErrApplyStalled, wrapped with how long, while the
// entry being applied has taken over ApplyStallAfter.
func (n *Raft) ApplyStalled() error {
	if d := n.fsm.ApplyingFor(); d > ApplyStallAfter {
		return fmt.Errorf("%w: one entry for %v (the database cannot write?)", ErrApplyStalled, d.Round(time.Second))
	}
	return nil
}

// Stats returns the node's Raft state.
func (n *Raft) Stats() Stats {
	n.pollPeers(n.stopCtx)
	addr, id := n.raft.LeaderWithID()
	return Stats{
		State:        n.raft.State().String(),
		LeaderID:     string(id),
		LeaderAddr:   string(addr),
		Term:         n.raft.CurrentTerm(),
		LastIndex:    n.raft.LastIndex(),
		CommitIndex:  n.raft.CommitIndex(),
		AppliedIndex: n.raft.AppliedIndex(),
		Members:      n.members(),
	}
}

// WaitReady returns when a leader exists and this node's FSM has applied
// every entry committed before the call: on the leader through a Raft
// barrier, on a follower once a fresh heartbeat shows its applied index
// caught up with the leader's commit index (Raft's applied index, which
// counts entries handed to the FSM's queue: what must see every applied
// write waits with ReadBarrier too), and, on a node that joins, once the
// leader has made it a voter.
func (n *Raft) WaitReady(ctx context.Context) error {
	start := time.Now()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-n.stopping:
			return ErrStopped
		default:
		}
		switch n.raft.State() {
		case raft.Leader:
			timeout := applyTimeout
			if d, ok := ctx.Deadline(); ok {
				timeout = max(time.Until(d), time.Millisecond)
			}
			err := n.awaitFuture(ctx, n.raft.Barrier(timeout))
			// Raft answers the barrier from its FSM goroutine and moves
			// AppliedIndex a moment later; wait for that too, so that
			// Stats agrees with what WaitReady promised.
			if err == nil && n.raft.AppliedIndex() >= n.raft.CommitIndex() {
				return nil
			}
			if errors.Is(err, raft.ErrRaftShutdown) {
				return ErrStopped
			}
		case raft.Follower:
			// A node that joins is a non-voter until it has caught up,
			// then the leader makes it a voter (membership.go join): it
			// is ready as a member, a voter.
			addr, _ := n.raft.LeaderWithID()
			if addr != "" && n.raft.LastContact().After(start) && n.raft.AppliedIndex() >= n.raft.CommitIndex() &&
				!n.isNonvoter() {
				return nil
			}
		case raft.Shutdown:
			return ErrStopped
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: waiting for a leader: %w", wire.ErrUnavailable, ctx.Err())
		case <-n.stopping:
			return ErrStopped
		case <-tick.C:
		}
	}
}
