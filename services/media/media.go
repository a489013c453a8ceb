// Package media is edgechat's media service: uploads, the processing
// pipeline that turns an upload into something safe to serve, downloads
// for the people a media message was sent to, and the tiers media moves
// through (raw → processed → cold).
//
// The bytes live in a store.Store (the local disk by default, or S3);
// everything else is replicated state, applied by this package's FSM
// handlers under "r/media/":
//
//	m/{id}            Record JSON: owner, name, status, what processing found, where it is
//	j/{id}            nil: an upload waiting for (or in) processing, so workers find jobs with one scan
//	q/{uid}/{day}     Quota JSON: uploads and bytes of the user that day (UTC)
//	gu/{id}/{uid}     nil: uid may read the media (a direct conversation it was sent in)
//	gg/{id}/{gid}     nil: the members of gid may read it (a group it was sent to)
//
// An upload's life: POST /media creates the record (counting the quota),
// streams the body to the raw tier and marks it uploaded, which queues a
// job. A worker (a node with the media role) claims the job through Raft
// — the claim carries an attempt number and a lease, so a node that dies
// mid-way is replaced once its lease ends, and only the claim in force
// may finish the job — processes the file (package process), writes the
// results to the processed tier, commits them and deletes the raw
// object, then tells the uploader on user/{uid}/events.
package media

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/internal/wire"
	"github.com/edgechat/edgechat/services/media/store"
)

// Proposer appends a command to the replicated log (*cluster.Raft).
type Proposer interface {
	Propose(ctx context.Context, t byte, payload []byte) (any, error)
}

// Registrar installs FSM handlers (*fsm.FSM).
type Registrar interface {
	Register(t byte, h fsm.Handler)
}

// Publisher publishes into the broker (events to users).
type Publisher interface {
	Publish(o wire.Outbound) error
}

// Groups answers membership (the users service).
type Groups interface {
	IsMember(gid, uid string) bool
}

// Peers finds the HTTP API of another node (where a local store's files
// are).
type Peers interface {
	HTTPURL(ctx context.Context, node string) (string, error)
}

// Tokens mints a short-lived access token for a user (the auth
// service), so that a download proxied to the node holding the file is
// authenticated there as the user who asked.
type Tokens interface {
	MintAccessToken(uid string, admin bool) (string, error)
}

// Processed is what processing made of an upload: the real type, the
// metadata kept, and the files to serve (paths of temporary files the
// caller removes).
type Processed struct {
	Kind        string // image, video, audio, pdf, file
	MIME, Ext   string
	Width       int
	Height      int
	Duration    time.Duration
	Camera      string
	TakenAt     time.Time
	Placeholder string
	Notes       []string
	Output      string // path of the file to serve
	OutputMIME  string
	Preview     string // path, "" when none
	PreviewMIME string
}

// Processor processes the upload at path (package process, adapted by
// the node). A refusal is an error for which Reason gives a stable
// machine reason ("executable", "too_many_pixels", ...).
type Processor interface {
	Process(ctx context.Context, path, claimedName, claimedType string) (Processed, error)
	// Reason is the machine reason of a refusal, "" for an error that is
	// not a refusal (a failure: the job is tried again).
	Reason(err error) string
}

// Config tunes the service; zero fields take the defaults.
type Config struct {
	// Node is this node's name (where local files live).
	Node string
	// Worker: this node processes uploads (the media role).
	Worker bool
	// MaxSize is the largest upload (--media-max-size).
	MaxSize int64
	// QuotaCount and QuotaBytes bound a user's uploads per day (UTC).
	QuotaCount int
	QuotaBytes int64
	// JobLease is how long a claim holds before another worker may take
	// the job over; the worker renews it while it works.
	JobLease time.Duration
	// SharedStore: every node reaches the same objects (S3); with the
	// local store only the node that holds the raw upload processes it.
	SharedStore bool
	// TempDir holds uploads while they are processed ("" = os.TempDir).
	TempDir string
	// ColdAfter: media not read this long moves to the cold tier;
	// ColdStorageClass, when set, has the S3 store's lifecycle rule do it.
	ColdAfter        time.Duration
	ColdStorageClass string
	// SweepEvery is how often the lifecycle sweeper runs; OrphanUpload and
	// OrphanUnsent how old an unfinished upload or an unsent media gets
	// before it is deleted.
	SweepEvery   time.Duration
	OrphanUpload time.Duration
	OrphanUnsent time.Duration
	// EventsSecret authenticates S3 event notifications to
	// POST /media/events ("" turns the route off).
	EventsSecret string
}

// Defaults.
const (
	DefaultMaxSize    = 25 << 20
	DefaultQuotaCount = 500
	DefaultQuotaBytes = 2 << 30
	DefaultJobLease   = 2 * time.Minute
	// idLen is the length of a media ID (base32, 120 random bits).
	idLen = 24
)

func (c Config) withDefaults() Config {
	if c.MaxSize <= 0 {
		c.MaxSize = DefaultMaxSize
	}
	if c.QuotaCount <= 0 {
		c.QuotaCount = DefaultQuotaCount
	}
	if c.QuotaBytes <= 0 {
		c.QuotaBytes = DefaultQuotaBytes
	}
	if c.JobLease <= 0 {
		c.JobLease = DefaultJobLease
	}
	if c.ColdAfter <= 0 {
		c.ColdAfter = DefaultColdAfter
	}
	if c.SweepEvery <= 0 {
		c.SweepEvery = DefaultSweepEvery
	}
	if c.OrphanUpload <= 0 {
		c.OrphanUpload = DefaultOrphanUpload
	}
	if c.OrphanUnsent <= 0 {
		c.OrphanUnsent = DefaultOrphanUnsent
	}
	return c
}

// Deps are the service's collaborators; Groups, Logger and Registerer
// may be nil.
type Deps struct {
	DB        *badger.DB
	Proposer  Proposer
	FSM       Registrar
	Store     store.Store
	Processor Processor
	Publisher Publisher
	Groups    Groups
	// Peers and PeerTransport reach other nodes' HTTP APIs to serve a
	// local store's files held elsewhere; nil Peers: such downloads 404.
	Peers         Peers
	PeerTransport http.RoundTripper
	Tokens        Tokens
	// Leadership: the leader listens for direct uploads and sweeps a
	// shared store; nil: this node does both (tests, one node).
	Leadership Leadership
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	Now        func() time.Time
}

// Sentinel errors of uploads sent again with an Idempotency-Key.
var (
	// ErrKeyReused: an upload's Idempotency-Key sent again with another
	// request (another file name, type or size).
	ErrKeyReused = errors.New("media: idempotency key used for another request")
	// ErrInProgress: the upload an Idempotency-Key made is still waiting
	// for its bytes (the first request is still streaming them).
	ErrInProgress = errors.New("media: the upload of this Idempotency-Key is still in progress")
)

// Sentinel errors; the HTTP handlers map them to codes.
var (
	ErrNotFound      = errors.New("media: not found")
	ErrTooLarge      = errors.New("media: too large")
	ErrEmpty         = errors.New("media: empty upload")
	ErrQuota         = fmt.Errorf("media: daily upload quota reached: %w", wire.ErrQuota)
	ErrNotReady      = errors.New("media: not a ready upload of the sender")
	ErrBadState      = errors.New("media: not in a state that allows this")
	ErrClaimLost     = errors.New("media: the job's claim is held by another attempt")
	errBadCommand    = errors.New("media: malformed command")
	errMissingDepend = errors.New("media: missing dependency")
	// errRawGrew: the raw upload is larger than the size accepted (a
	// direct upload's object replaced after /complete); rejected with
	// reasonTooLarge.
	errRawGrew = fmt.Errorf("media: the upload changed after it was accepted: %w", ErrTooLarge)
)

// reasonTooLarge is the rejection reason of errRawGrew.
const reasonTooLarge = "too_large"

// Service is the media service of one node.
type Service struct {
	cfg  Config
	db   *badger.DB
	prop Proposer
	st   store.Store
	proc Processor
	pub  Publisher
	grp  Groups
	log  *slog.Logger

	peers         Peers
	peerTransport http.RoundTripper
	tokens        Tokens
	lead          Leadership
	now           func() time.Time
	m             *metrics

	jobs chan struct{} // poked when a job is queued or a claim ends
	// claimUnsure holds the jobs whose claim this node proposed without
	// learning the outcome (a leader change while it committed): if it
	// committed the job is this node's, and the worker renews it rather
	// than wait out its own lease. It maps a media ID to the attempt the
	// claim would have made. The worker goroutine's alone.
	claimUnsure map[string]int
	// endUnsure holds the ends of jobs (media ID → the end) this worker
	// proposed without learning whether they committed, every retry
	// failing: the worker's next round proposes them again (settleEnds).
	// The worker goroutine's alone.
	endUnsure map[string]doneCmd

	bg       sync.WaitGroup // background proposals (read times)
	touching sync.Map       // media IDs whose read time is being recorded

	rm remoteState // media of other regions (remote.go)
}

// Wait waits for the background proposals of downloads (call it after
// the HTTP server stopped, before the database closes).
func (s *Service) Wait() { s.rm.cancel(); s.bg.Wait() }

// New checks deps and registers the FSM handlers and metrics.
func New(cfg Config, deps Deps) (*Service, error) {
	switch {
	case deps.DB == nil, deps.Proposer == nil, deps.FSM == nil, deps.Store == nil, deps.Publisher == nil:
		return nil, fmt.Errorf("%w: DB, Proposer, FSM, Store and Publisher are required", errMissingDepend)
	case cfg.Worker && deps.Processor == nil:
		return nil, fmt.Errorf("%w: a worker needs a Processor", errMissingDepend)
	}
	if deps.Logger == nil {
		deps.Logger = slog.Default()
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	s := &Service{cfg: cfg.withDefaults(), db: deps.DB, prop: deps.Proposer, st: deps.Store, proc: deps.Processor,
		pub: deps.Publisher, grp: deps.Groups, peers: deps.Peers, peerTransport: deps.PeerTransport, tokens: deps.Tokens, lead: deps.Leadership, log: deps.Logger.With("component", "media"), now: deps.Now,
		jobs: make(chan struct{}, 1), claimUnsure: map[string]int{}, endUnsure: map[string]doneCmd{}}
	var err error
	if s.m, err = newMetrics(deps.Registerer); err != nil {
		return nil, err
	}
	if err := s.rm.init(deps.Registerer); err != nil {
		return nil, err
	}
	s.register(deps.FSM)
	return s, nil
}

// pokeJobs wakes the worker loop.
func (s *Service) pokeJobs() {
	select {
	case s.jobs <- struct{}{}:
	default:
	}
}

// Run processes jobs on a worker node and runs the lifecycle duties
// until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.runDuties(ctx)
	}()
	pending := make(chan struct{})
	go func() {
		defer close(pending)
		s.runPending(ctx) // remote.go
	}()
	defer func() { <-done; <-pending; s.rm.cancel(); s.bg.Wait() }()
	if !s.cfg.Worker {
		<-ctx.Done()
		return nil
	}
	return s.runWorker(ctx)
}

// ObserveStep records how long a processing step took (the processor
// reports each step).
func (s *Service) ObserveStep(step string, took time.Duration, err error) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	s.m.stepSeconds.WithLabelValues(step, result).Observe(took.Seconds())
}
