package backup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics of backups taken on this node, by kind: "scheduled" (the
// leader's, into the configured store) or "stream" (GET /admin/backup,
// what `edgechat backup` stores).
type Metrics struct {
	duration    *prometheus.HistogramVec
	bytes       *prometheus.GaugeVec
	lastSuccess *prometheus.GaugeVec
	total       *prometheus.CounterVec
}

// NewMetrics registers the backup metrics on reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "edgechat_backup_duration_seconds",
			Help:    "Time to take a backup (state and segments), successful ones.",
			Buckets: prometheus.ExponentialBuckets(0.05, 3, 10)}, []string{"kind"}),
		bytes: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "edgechat_backup_bytes",
			Help: "Size of the last successful backup (state and segments)."}, []string{"kind"}),
		lastSuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "edgechat_backup_last_success_timestamp_seconds",
			Help: "Unix time of the last successful backup taken on this node."}, []string{"kind"}),
		total: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edgechat_backups_total",
			Help: "Backups attempted on this node, by result (ok, error)."}, []string{"kind", "result"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.duration, m.bytes, m.lastSuccess, m.total} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("backup: metrics: %w", err)
			}
		}
	}
	return m, nil
}

func (m *Metrics) observe(kind string, took time.Duration, man *Manifest, err error) {
	if m == nil {
		return
	}
	if err != nil {
		m.total.WithLabelValues(kind, "error").Inc()
		return
	}
	m.total.WithLabelValues(kind, "ok").Inc()
	m.duration.WithLabelValues(kind).Observe(took.Seconds())
	m.bytes.WithLabelValues(kind).Set(float64(man.Bytes()))
	m.lastSuccess.WithLabelValues(kind).Set(float64(man.Created.UnixMilli()) / 1000)
}

// SchedulerConfig configures scheduled backups.
type SchedulerConfig struct {
	Every time.Duration // how often; > 0
	Keep  int           // complete backups kept in the store (older ones are deleted); > 0
	Store Store
	// Region is this cluster's region name, written into each backup's
	// manifest by Source.Info: the schedule reads and prunes only the
	// backups of its region (and those without one) from the store.
	Region string
	// ClusterID answers the cluster's ID, written into each scheduled
	// backup's manifest: within its region the schedule reads and
	// prunes only its cluster's backups (and those without an ID). ""
	// while the cluster has none (below feature level 2); nil: none.
	// On the leader it may set the ID; an error fails the backup (or
	// the reading of the store) at hand.
	ClusterID func(ctx context.Context) (string, error)
	// IsLeader: only the Raft leader takes scheduled backups.
	IsLeader func() bool
	Source   Source
	Metrics  *Metrics
	Log      *slog.Logger
	Now      func() time.Time
	// Poll is how often the scheduler checks whether a backup is due;
	// default min(Every/10, 30s).
	Poll time.Duration
}

// Status is what the scheduler knows of the backups in its store, for
// GET /admin/backup/status, the archive status and /readyz.
type Status struct {
	Store       string        `json:"store"`
	Every       time.Duration `json:"-"`
	EverySec    float64       `json:"everySeconds"`
	Keep        int           `json:"keep"`
	LastID      string        `json:"lastId,omitempty"`
	LastSuccess time.Time     `json:"lastSuccess,omitzero"` // creation time of the newest complete backup
	LastBytes   int64         `json:"lastBytes,omitempty"`
	AgeSec      float64       `json:"ageSeconds,omitempty"`
	LastError   string        `json:"lastError,omitempty"` // of the last attempt on this node, when it failed
	LastAttempt time.Time     `json:"lastAttempt,omitzero"`
	// Overdue: no complete backup for twice the interval (the readiness
	// warning's condition).
	Overdue bool `json:"overdue"`
}

// Scheduler takes a backup every Every while this node is the Raft
// leader and keeps the newest Keep. A new leader reads the newest backup
// in the store first, so a failover neither skips a backup nor takes one
// early.
type Scheduler struct {
	cfg SchedulerConfig
	log *slog.Logger
	// one: one backup at a time (the ticker's and a caller's of
	// BackupNow): two at once in the same millisecond and index got the
	// same ID and wrote the same files.
	one sync.Mutex

	mu          sync.Mutex
	known       bool // the store was read since this node became leader
	lastID      string
	lastSuccess time.Time
	lastBytes   int64
	lastErr     error
	lastAttempt time.Time
	started     time.Time // when Run began
	lastMan     *Manifest // the newest complete backup's, for reusing its segments
	cluster     string    // the cluster's ID once known (it never changes)
	// aheadSeen is when this node first saw aheadOf, a newest backup
	// dated after its clock (the clock was stepped back, or the leader
	// that took it ran ahead): its age is unknown, and it counts as
	// taken then (since).
	aheadOf, aheadSeen time.Time
}

// NewScheduler checks cfg.
func NewScheduler(cfg SchedulerConfig) (*Scheduler, error) {
	if cfg.Every <= 0 || cfg.Keep <= 0 || cfg.Store == nil || cfg.IsLeader == nil || cfg.Source.State == nil {
		return nil, errors.New("backup: scheduler needs Every > 0, Keep > 0, a store, IsLeader and a state source")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Poll <= 0 {
		cfg.Poll = min(cfg.Every/10, 30*time.Second)
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Scheduler{cfg: cfg, log: log}, nil
}

// Run takes the backups until ctx is done.
func (s *Scheduler) Run(ctx context.Context) error {
	s.mu.Lock()
	s.started = s.cfg.Now()
	s.mu.Unlock()
	t := time.NewTicker(s.cfg.Poll)
	defer t.Stop()
	for {
		s.tick(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (s *Scheduler) tick(ctx context.Context) {
	if !s.cfg.IsLeader() {
		// A follower takes no backups, but answers GET
		// /admin/backup/status (a monitor behind a load balancer asks
		// any node): it follows the store, or it would report only what
		// it knew when it last led, and overdue once that is old.
		s.readStore(ctx, true)
		s.mu.Lock()
		s.known = false // read the store again when leading again: another node backed up meanwhile
		s.mu.Unlock()
		return
	}
	s.mu.Lock()
	known := s.known
	s.mu.Unlock()
	if !known {
		s.readStore(ctx, false)
	}
	now := s.cfg.Now()
	s.mu.Lock()
	if s.lastSuccess.After(now) && !s.aheadOf.Equal(s.lastSuccess) {
		s.aheadOf, s.aheadSeen = s.lastSuccess, now
	}
	// An attempt dated after the clock is one made before a step back.
	due := now.Sub(s.since(now)) >= s.cfg.Every &&
		(now.Sub(s.lastAttempt) >= min(s.cfg.Every, time.Minute) || s.lastAttempt.After(now))
	s.mu.Unlock()
	if due {
		_, _ = s.BackupNow(ctx)
	}
}

// readStore learns the newest complete scheduled backup in the store;
// quiet (a follower's reading) logs a failure at debug level only.
func (s *Scheduler) readStore(ctx context.Context, quiet bool) {
	l, err := s.lineage(ctx)
	var m *Manifest
	if err == nil {
		m, err = latestScheduled(ctx, s.cfg.Store, l)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case err == nil:
		s.known = true
		if m.Created.After(s.lastSuccess) {
			s.lastID, s.lastSuccess, s.lastBytes, s.lastMan = m.ID, m.Created, m.Bytes(), m
		}
	case errors.Is(err, ErrNotFound):
		s.known = true
	case quiet:
		s.log.Debug("reading the backup store", "store", s.cfg.Store.String(), "err", err)
	default:
		s.log.Warn("reading the backup store", "store", s.cfg.Store.String(), "err", err)
	}
}

// lineage is whose scheduled backups a schedule counts as its own: its
// region's ("": every region's), and of those its cluster's ("": those
// without a cluster ID only); all: every backup (Prune).
type lineage struct {
	all             bool
	region, cluster string
}

// lineage is this schedule's, the cluster's ID asked until it is known.
func (s *Scheduler) lineage(ctx context.Context) (lineage, error) {
	s.mu.Lock()
	l := lineage{region: s.cfg.Region, cluster: s.cluster}
	s.mu.Unlock()
	if l.cluster != "" || s.cfg.ClusterID == nil {
		return l, nil
	}
	id, err := s.cfg.ClusterID(ctx)
	if err != nil {
		return l, fmt.Errorf("backup: the cluster's ID: %w", err)
	}
	s.mu.Lock()
	s.cluster = id
	s.mu.Unlock()
	l.cluster = id
	return l, nil
}

// latestScheduled is the manifest of the newest complete scheduled
// backup of l in st: one taken by hand (KindStream) is not the
// schedule's (Prune neither counts nor deletes it, and an operator may
// delete it any time), so it does not put off the next scheduled one,
// nor does another region's or cluster's (of). As Latest, a manifest
// that cannot be read now is an error, not a reason to answer an older
// backup; ErrNotFound when there is none.
func latestScheduled(ctx context.Context, st Store, l lineage) (*Manifest, error) {
	ids, err := st.IDs(ctx)
	if err != nil {
		return nil, err
	}
	ids = sortedIDs(ids)
	for i := len(ids) - 1; i >= 0; i-- {
		m, err := readManifest(ctx, st, ids[i])
		switch {
		case err == nil && (m.Kind == KindStream || !m.of(l)):
			continue
		case err == nil:
			return m, nil
		case !errors.Is(err, ErrNotFound):
			return nil, fmt.Errorf("backup: newest backup %s: %w", ids[i], err)
		}
	}
	return nil, fmt.Errorf("%w in %s", ErrNotFound, st)
}

// since is when the newest backup counts as taken, for the schedule and
// the overdue warning: its creation time, or, when that is after now
// (a clock stepped back, or a leader's that ran ahead), when this node
// first saw it (now if it has not yet). Waiting for the clock to catch
// up would stop the backups, and their warning, for as long as the
// clock was ahead. s.mu is held.
func (s *Scheduler) since(now time.Time) time.Time {
	if !s.lastSuccess.After(now) {
		return s.lastSuccess
	}
	if s.aheadOf.Equal(s.lastSuccess) {
		return s.aheadSeen
	}
	return now
}

// BackupNow takes a backup into the store now and prunes old ones. The
// backup is dated by the clock, but never before the newest backup this
// node knows (then 1 ms after it): the IDs order the backups (Latest,
// Prune, a new leader's reading of the store), and this one is the
// newest.
func (s *Scheduler) BackupNow(ctx context.Context) (*Manifest, error) {
	s.one.Lock()
	defer s.one.Unlock()
	start := s.cfg.Now()
	s.mu.Lock()
	s.lastAttempt = start
	s.mu.Unlock()
	l, err := s.lineage(ctx)
	if err != nil {
		s.cfg.Metrics.observe("scheduled", 0, nil, err)
		s.mu.Lock()
		s.lastErr = err
		s.mu.Unlock()
		s.log.Error("scheduled backup failed", "store", s.cfg.Store.String(), "err", err)
		return nil, err
	}
	s.mu.Lock()
	sink := &StoreSink{Store: s.cfg.Store, Prev: s.lastMan}
	src := s.cfg.Source
	if info := src.Info; l.cluster != "" {
		src.Info = func() Manifest {
			var m Manifest
			if info != nil {
				m = info()
			}
			m.Cluster = l.cluster
			return m
		}
	}
	if after := s.lastSuccess; !after.IsZero() {
		clock := src.Now
		if clock == nil {
			clock = time.Now
		}
		src.Now = func() time.Time {
			if t := clock(); !t.Before(after.Add(time.Millisecond)) {
				return t
			}
			return after.Add(time.Millisecond)
		}
	}
	s.mu.Unlock()
	m, err := Write(ctx, src, sink)
	took := s.cfg.Now().Sub(start)
	s.cfg.Metrics.observe("scheduled", took, m, err)
	s.mu.Lock()
	s.lastErr = err
	if err == nil {
		s.lastID, s.lastSuccess, s.lastBytes, s.lastMan = m.ID, m.Created, m.Bytes(), m
	}
	s.mu.Unlock()
	if err != nil {
		s.log.Error("scheduled backup failed", "store", s.cfg.Store.String(), "err", err)
		// What it wrote is of no use (no manifest), and a failing
		// schedule retries every minute: do not keep a copy per attempt.
		if sink.id != "" {
			if derr := s.cfg.Store.Delete(context.WithoutCancel(ctx), sink.id); derr != nil {
				s.log.Warn("deleting a failed backup", "id", sink.id, "store", s.cfg.Store.String(), "err", derr)
			}
		}
		return nil, err
	}
	s.log.Info("backup taken", "id", m.ID, "store", s.cfg.Store.String(), "applied_index", m.AppliedIndex,
		"bytes", m.Bytes(), "segments", m.Segments(), "segments_reused", sink.Reused, "took", took)
	if err := prune(ctx, s.cfg.Store, s.cfg.Keep, s.cfg.Now(), s.log, l); err != nil {
		s.log.Warn("pruning old backups", "store", s.cfg.Store.String(), "err", err)
	}
	return m, nil
}

// Status reports the newest backup known and the last attempt.
func (s *Scheduler) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Status{Store: s.cfg.Store.String(), Every: s.cfg.Every, EverySec: s.cfg.Every.Seconds(), Keep: s.cfg.Keep,
		LastID: s.lastID, LastSuccess: s.lastSuccess, LastBytes: s.lastBytes, LastAttempt: s.lastAttempt}
	if s.lastErr != nil {
		st.LastError = s.lastErr.Error()
	}
	if !s.lastSuccess.IsZero() {
		now := s.cfg.Now()
		st.AgeSec = now.Sub(s.since(now)).Seconds()
	}
	st.Overdue = s.overdue()
	return st
}

// LastBackup is the creation time of the newest complete backup this
// node knows of (its own, or the store's when it last led), and whether
// there is one.
func (s *Scheduler) LastBackup() (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastSuccess, !s.lastSuccess.IsZero()
}

// Overdue reports whether the newest backup is older than twice the
// interval (or there is none after twice the interval since start): the
// condition of the /readyz warning.
func (s *Scheduler) Overdue() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.overdue()
}

func (s *Scheduler) overdue() bool {
	now := s.cfg.Now()
	if s.lastSuccess.IsZero() {
		return !s.started.IsZero() && now.Sub(s.started) > 2*s.cfg.Every
	}
	return now.Sub(s.since(now)) > 2*s.cfg.Every
}

// StaleAfter is how old (by its ID's time) an incomplete backup must be
// before Prune deletes it: a backup without a manifest may be one being
// written (an `edgechat backup` into the same store), and none takes a
// day.
const StaleAfter = 24 * time.Hour

// Prune keeps the newest keep complete backups of st and deletes the
// older ones, and incomplete ones (no manifest) started more than
// StaleAfter before now: what a crash or a failed backup left. A backup
// whose manifest cannot be read for another reason (a timeout, an S3
// 503, a manifest that does not parse) is kept, not counted, and its
// error returned: only a manifest known to be missing makes it incomplete.
func Prune(ctx context.Context, st Store, keep int, now time.Time, log *slog.Logger) error {
	return prune(ctx, st, keep, now, log, lineage{all: true})
}

// prune is Prune counting and deleting only the complete backups of l
// (of): another region's cluster, or another cluster of the same
// region, given the same store, keeps its own.
func prune(ctx context.Context, st Store, keep int, now time.Time, log *slog.Logger, l lineage) error {
	ids, err := st.IDs(ctx)
	if err != nil {
		return err
	}
	ids = sortedIDs(ids)
	complete := 0
	var errs []error
	for i := len(ids) - 1; i >= 0; i-- {
		id := ids[i]
		man, merr := readManifest(ctx, st, id)
		switch {
		case merr == nil && man.Kind == KindStream:
			continue // taken by hand (edgechat backup): not the schedule's to count or delete
		case merr == nil && !man.of(l):
			continue // another region's or another cluster's
		case merr == nil:
			complete++
			if complete <= keep {
				continue
			}
		case !errors.Is(merr, ErrNotFound):
			errs = append(errs, merr)
			continue
		default:
			at, ok := idTime(id)
			if !ok || now.Sub(at) < StaleAfter {
				continue // maybe in progress, or not named by us
			}
		}
		if err := st.Delete(ctx, id); err != nil {
			errs = append(errs, err)
			continue
		}
		log.Info("deleted old backup", "id", id, "store", st.String(), "complete", merr == nil)
	}
	return errors.Join(errs...)
}

// idTime reads the creation time an ID starts with (newID).
func idTime(id string) (time.Time, bool) {
	ts, _, ok := strings.Cut(id, "-")
	if !ok {
		return time.Time{}, false
	}
	t, err := time.Parse("20060102T150405.000Z", ts)
	return t, err == nil
}

// of reports whether the backup counts as l's: of l's region (it names
// it, or none: taken by an earlier version; or l names no region), and
// of l's cluster (it names it, or none: taken by an earlier version or
// below feature level 2, perhaps by this cluster). A cluster without an
// ID yet took no backup that names one.
func (m *Manifest) of(l lineage) bool {
	if l.all {
		return true
	}
	region := l.region == "" || m.Region == "" || m.Region == l.region
	return region && (m.Cluster == "" || m.Cluster == l.cluster)
}
