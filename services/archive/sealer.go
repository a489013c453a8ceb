package archive

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/internal/wire"
	"github.com/edgechat/edgechat/services/archive/segment"
	"github.com/edgechat/edgechat/services/media/store"
)

// SealConfig says what the sealer moves out of the hot archive.
type SealConfig struct {
	// HotAge: messages older than this are sealed (default 30 days).
	HotAge time.Duration
	// LocalBudget: while Badger's tables take more than this many bytes
	// on disk, the oldest messages are sealed whatever their age; 0: no
	// budget.
	LocalBudget int64
	// Every is the time between sweeps (default 1 minute).
	Every time.Duration
	// OrphanGrace: an object no index entry references is deleted once
	// this node's sweeps have seen it unreferenced for this long, and it
	// is this old (default 1 hour): a segment whose seal is still being
	// committed is never taken for an orphan, and one that retention or an
	// erasure just unreferenced stays for backups and reads in flight.
	OrphanGrace time.Duration
	// MaxMessages and MaxBytes bound one segment (defaults 2048 and
	// 1 MiB of stored envelopes).
	MaxMessages int
	MaxBytes    int
	// Retention says which messages expire; the sweep deletes them
	// before it seals.
	Retention RetentionPolicy
	// Step, when set, is called at each step of a seal with its name
	// (SealStepBeforeUpload, SealStepAfterUpload, SealStepAfterCommit):
	// the crash tests stop a process there.
	Step func(step string)
}

// The steps of a seal that SealConfig.Step hears of.
const (
	SealStepBeforeUpload = "before-upload"
	SealStepAfterUpload  = "after-upload"
	SealStepAfterCommit  = "after-commit"
)

// Defaults of SealConfig.
const (
	DefaultHotAge      = 30 * 24 * time.Hour
	DefaultSealEvery   = time.Minute
	DefaultOrphanGrace = time.Hour
	defaultSealCount   = 2048
	defaultSealBytes   = 1 << 20
)

func (c SealConfig) withDefaults() SealConfig {
	if c.HotAge <= 0 {
		c.HotAge = DefaultHotAge
	}
	if c.Every <= 0 {
		c.Every = DefaultSealEvery
	}
	if c.OrphanGrace <= 0 {
		c.OrphanGrace = DefaultOrphanGrace
	}
	if c.MaxMessages <= 0 || c.MaxMessages > maxSealCount {
		c.MaxMessages = defaultSealCount
	}
	if c.MaxBytes <= 0 {
		c.MaxBytes = defaultSealBytes
	}
	return c
}

// Leader tells whether this node leads the cluster (*cluster.Node).
type Leader interface{ IsLeader() bool }

// SealStats counts what a sweep did.
type SealStats struct {
	Segments, Messages int // sealed
	Stale              int // seals the FSM refused (the range changed meanwhile)
	Orphans            int // unreferenced objects deleted
	Failed             int // conversations skipped this sweep after an error (logged)

	bytes int // stored envelope bytes sealed
}

// RunSealer seals on a schedule until ctx ends: on the leader with a
// shared store, and on every node for its own orphans with a local one
// (each node applies every seal and writes its own copy).
func (s *Service) RunSealer(ctx context.Context, cfg SealConfig, lead Leader) error {
	if s.tier == nil && cfg.Retention.Days <= 0 && cfg.Retention.GroupDays == nil {
		return nil
	}
	cfg = cfg.withDefaults()
	t := time.NewTicker(cfg.Every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if lead != nil && !lead.IsLeader() {
			if s.tier != nil && !s.tier.store.Shared() {
				if _, err := s.collectOrphans(ctx, cfg, time.Now()); err != nil && ctx.Err() == nil {
					s.log.Warn("segment garbage collection", "err", err)
				}
			}
			continue
		}
		if ex, err := s.ExpireOnce(ctx, cfg.Retention, time.Now()); err != nil && ctx.Err() == nil {
			s.log.Warn("retention", "err", err)
		} else if ex.Hot > 0 || ex.Segments > 0 || ex.Dedup > 0 {
			s.log.Info("expired", "messages", ex.Hot, "segments", ex.Segments, "rewritten", ex.Rewritten, "media", ex.Media, "dedupe_keys", ex.Dedup)
		}
		if s.tier == nil {
			continue
		}
		st, err := s.SealOnce(ctx, cfg, time.Now())
		switch {
		case err == nil || ctx.Err() != nil:
		case errors.Is(err, ErrStoreMismatch):
			s.log.Error("sealing stopped until every node keeps sealed segments in the same store", "err", err)
		default:
			s.log.Warn("sealing", "err", err)
		}
		if st.Segments > 0 || st.Orphans > 0 {
			s.log.Info("sealed", "segments", st.Segments, "messages", st.Messages, "stale", st.Stale, "orphans", st.Orphans)
		}
	}
}

// SealOnce runs one sweep as of now: seals what is due, then deletes
// orphaned objects. Only the leader's proposals commit.
func (s *Service) SealOnce(ctx context.Context, cfg SealConfig, now time.Time) (SealStats, error) {
	var st SealStats
	if s.tier == nil {
		return st, ErrNoSegments
	}
	// A member that keeps segments elsewhere could not read what this
	// sweep seals: nothing is sealed (nor collected) until they agree.
	if err := s.checkStores(ctx, true); err != nil {
		return st, err
	}
	cfg = cfg.withDefaults()
	cutoff := snowflake.Make(uint64(max(now.Add(-cfg.HotAge).Sub(snowflake.Epoch).Milliseconds(), 0)), 0, 0)
	convs, err := s.hotConversations()
	if err != nil {
		return st, err
	}
	// One conversation that cannot be sealed must not stop the others
	// (nor the disk budget): it is logged and left for the next sweep.
	var errs []error
	skip := func(c *hotConv, err error) error {
		// A store that cannot be reached would fail the others alike:
		// the sweep ends (the next one, retention first, tries again)
		// rather than wait on it for every conversation. (A key the
		// store refuses is this conversation's alone.)
		if sweepAborted(ctx, err) || storeDown(err) {
			return err
		}
		s.log.Warn("sealing skipped a conversation", "conv", c.conv, "err", err)
		st.Failed++
		if len(errs) < maxSweepErrs {
			errs = append(errs, err)
		}
		c.first = 0
		return nil
	}
	// Age first: every conversation's messages below the cutoff.
	for i := range convs {
		for convs[i].first != 0 && convs[i].first < cutoff {
			n, next, err := s.sealChunk(ctx, cfg, &st, convs[i].conv, convs[i].first, cutoff-1)
			if err != nil {
				if err := skip(&convs[i], err); err != nil {
					return st, err
				}
				break
			}
			if n == 0 {
				break
			}
			convs[i].first = next
		}
	}
	// Then the budget: the oldest messages of all, whatever their age.
	if cfg.LocalBudget > 0 {
		onDisk, raw := s.tableBytes()
		over := onDisk - cfg.LocalBudget
		// What sealing a message frees on disk: its stored bytes as
		// compressed in the tables (freed when compaction drops them; the
		// next sweep measures again).
		ratio := 1.0
		if raw > 0 {
			ratio = float64(onDisk) / float64(raw)
		}
		for over > 0 {
			oldest := -1
			for i, c := range convs {
				if c.first != 0 && (oldest < 0 || c.first < convs[oldest].first) {
					oldest = i
				}
			}
			if oldest < 0 {
				break
			}
			c := &convs[oldest]
			before := st
			n, next, err := s.sealChunk(ctx, cfg, &st, c.conv, c.first, ^snowflake.ID(0))
			if err != nil {
				if err := skip(c, err); err != nil {
					return st, err
				}
				continue
			}
			if n == 0 {
				c.first = 0 // nothing more to seal here
				continue
			}
			c.first = next
			over -= int64(float64(st.bytes-before.bytes) * ratio)
		}
	}
	orphans, err := s.collectOrphans(ctx, cfg, now)
	st.Orphans = orphans
	return st, errors.Join(append(errs, err)...)
}

// maxSweepErrs bounds the per-conversation errors a sweep returns (all
// are logged).
const maxSweepErrs = 8

// sweepAborted tells whether err ends a whole sweep rather than one
// conversation's part of it: the sweep was cancelled, or this node can no
// longer commit (not the leader, no quorum).
func sweepAborted(ctx context.Context, err error) bool {
	return ctx.Err() != nil || errors.Is(err, wire.ErrUnavailable)
}

// hotConv is a conversation with hot messages and its oldest hot ID.
type hotConv struct {
	conv  string
	first snowflake.ID
}

// hotConversations lists every conversation with hot messages: one seek
// per conversation.
func (s *Service) hotConversations() ([]hotConv, error) {
	root := cat([]byte("c/"))
	var out []hotConv
	err := s.db.View(func(tx *badger.Txn) error {
		it := tx.NewIterator(badger.IteratorOptions{Prefix: root})
		defer it.Close()
		for it.Seek(root); it.ValidForPrefix(root); {
			k := it.Item().Key()
			if len(k) < len(root)+10 {
				it.Next()
				continue
			}
			conv := convOfKey(k)
			out = append(out, hotConv{conv: conv, first: snowflake.ID(tail8(k))})
			it.Seek(append(convPrefix(conv), 0xff))
		}
		return nil
	})
	return out, err
}

// sealChunk seals one segment of conv: its hot messages from first up to
// upTo, never its newest message, bounded by cfg. n is how many were
// sealed (0: nothing to seal) and next the conversation's oldest hot ID
// after them.
func (s *Service) sealChunk(ctx context.Context, cfg SealConfig, st *SealStats, conv string, first, upTo snowflake.ID) (n int, next snowflake.ID, err error) {
	var top, sealedTop uint64
	if err := s.db.View(func(tx *badger.Txn) error {
		var err error
		if top, err = lastIndexed(tx, convPrefix(conv)); err != nil {
			return err
		}
		sealedTop, err = lastIndexed(tx, segIndexPrefix(conv))
		return err
	}); err != nil {
		return 0, 0, err
	}
	if top == 0 {
		return 0, 0, nil
	}
	// Segments of a conversation do not overlap: a message committed
	// after its range was sealed (an ID from a node whose clock was
	// behind) stays hot, and history merges it in.
	first = max(first, snowflake.ID(sealedTop)+1)
	upTo = min(upTo, snowflake.ID(top)-1)
	msgs, err := s.sealRange(conv, first, upTo, cfg.MaxMessages)
	if err != nil || len(msgs) == 0 {
		return 0, 0, err
	}
	raw := 0
	for i, m := range msgs {
		raw += len(m.Body) + 12
		if raw > cfg.MaxBytes && i > 0 {
			msgs = msgs[:i]
			break
		}
	}
	ref, err := s.seal(ctx, cfg, conv, msgs)
	switch {
	case errors.Is(err, ErrSealStale):
		st.Stale++
		s.metrics.seals.WithLabelValues(sealStale).Inc()
		return 0, 0, nil // the range changed under us: the next sweep tries again
	case err != nil:
		s.metrics.seals.WithLabelValues(sealFailed).Inc()
		return 0, 0, err
	}
	st.Segments++
	st.Messages += len(msgs)
	st.bytes += raw
	s.metrics.seals.WithLabelValues(sealDone).Inc()
	s.metrics.sealedMessages.Add(float64(len(msgs)))
	return len(msgs), ref.LastID + 1, nil
}

// seal builds the segment of msgs, puts it in a shared store and reads it
// back, then commits it.
func (s *Service) seal(ctx context.Context, cfg SealConfig, conv string, msgs []segment.Message) (SegmentRef, error) {
	step := func(name string) {
		if cfg.Step != nil {
			cfg.Step(name)
		}
	}
	data, meta, err := segment.Write(conv, msgs, 0)
	if err != nil {
		return SegmentRef{}, err
	}
	ref := SegmentRef{Conv: conv, FirstID: snowflake.ID(meta.FirstID), LastID: snowflake.ID(meta.LastID),
		Count: meta.Count, Size: meta.Size, SHA256: meta.SHA256}
	if ref.Key, err = SegmentObjectKey(conv, ref.FirstID, ref.LastID); err != nil {
		return SegmentRef{}, err
	}
	cmd := sealCmd{Ref: ref, MsgHash: hashMessages(msgs)}
	step(SealStepBeforeUpload)
	if s.tier.store.Shared() {
		if err := s.upload(ctx, ref.Key, data); err != nil {
			return SegmentRef{}, err
		}
		if err := s.verifyObject(ctx, ref); err != nil {
			return SegmentRef{}, err
		}
	} else {
		cmd.Inline = data // every node writes its own copy when it applies the seal
	}
	step(SealStepAfterUpload)
	if _, err := s.prop.Propose(ctx, wire.CmdSegmentSealed, cmd.encode()); err != nil {
		return SegmentRef{}, fmt.Errorf("archive: commit seal of %s: %w", ref.Key, err)
	}
	step(SealStepAfterCommit)
	return ref, nil
}

// storeDown tells whether err says the segment store cannot be reached
// (a network error, or no answer in time) or answered that it cannot
// serve now (S3's 5xx, throttling: store.ErrUnavailable), rather than
// that it refused one object.
func storeDown(err error) bool {
	var ne net.Error
	return errors.Is(err, ErrSegmentUnavailable) &&
		(errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) || errors.Is(err, store.ErrUnavailable))
}

// segmentPutTimeout bounds an upload of a segment (at most 1 MiB of
// messages, compressed) and its read back: a store that does not answer
// fails the seal rather than hold the sweep (and retention with it) for
// as long as the S3 client retries.
const segmentPutTimeout = time.Minute

// upload puts a segment into a shared store, marked as this cluster's.
// A failure wraps ErrSegmentUnavailable: the store, not the segment.
func (s *Service) upload(ctx context.Context, key string, data []byte) error {
	ctx, cancel := context.WithTimeout(ctx, segmentPutTimeout)
	defer cancel()
	if err := s.putOwned(ctx, key, data); err != nil {
		return fmt.Errorf("%w: upload %s: %w", ErrSegmentUnavailable, key, err)
	}
	return nil
}

// verifyObject reads an uploaded segment back: its size and SHA-256 must
// be what was written.
func (s *Service) verifyObject(ctx context.Context, ref SegmentRef) error {
	ctx, cancel := context.WithTimeout(ctx, segmentPutTimeout)
	defer cancel()
	size, err := s.tier.store.Size(ctx, ref.Key)
	if err != nil {
		return fmt.Errorf("%w: verify %s: %w", ErrSegmentUnavailable, ref.Key, err)
	}
	rc, err := s.tier.store.Get(ctx, ref.Key, 0, -1)
	if err != nil {
		return fmt.Errorf("%w: verify %s: %w", ErrSegmentUnavailable, ref.Key, err)
	}
	defer rc.Close()
	h := sha256.New()
	n, err := io.Copy(h, rc)
	if err != nil {
		return fmt.Errorf("%w: verify %s: %w", ErrSegmentUnavailable, ref.Key, err)
	}
	if size != ref.Size || n != ref.Size || !bytes.Equal(h.Sum(nil), ref.SHA256[:]) {
		return fmt.Errorf("%w: %s read back as %d bytes with another checksum (wrote %d)", ErrSegmentCorrupt, ref.Key, n, ref.Size)
	}
	return nil
}

// collectOrphans deletes objects no index entry references once they
// have been seen unreferenced for the grace period (and are at least that
// old). The grace counts from when the object stopped being referenced,
// not from its creation: a segment retention rewrote or dropped, or an
// erasure unindexed, was sealed long ago, yet a backup copying the state
// that still references it, and history reads in flight, need it a while.
func (s *Service) collectOrphans(ctx context.Context, cfg SealConfig, now time.Time) (int, error) {
	refs := map[string]bool{}
	if err := s.eachSegment(func(ref SegmentRef) { refs[ref.Key] = true }); err != nil {
		return 0, err
	}
	t := s.tier
	// In a shared store, only this cluster's objects (owner.go).
	var owner, other string
	var marks map[string]time.Time
	if t.store.Shared() {
		var err error
		if owner, err = s.owner(ctx); err != nil {
			return 0, err
		}
		if marks, other, err = s.storeMarks(ctx, owner); err != nil {
			return 0, err
		}
	}
	t.orphanMu.Lock()
	defer t.orphanMu.Unlock()
	if t.unrefSince == nil {
		t.unrefSince = map[string]time.Time{}
	}
	listed := map[string]bool{}
	var orphans []string
	foreign := 0
	for _, prefix := range []string{"d/", "g/"} {
		if err := t.store.List(ctx, prefix, func(key string, _ int64, modified time.Time) bool {
			if _, marked := marks[key]; marked {
				delete(marks, key) // what is left are marks without their object
			} else if other != "" && !refs[key] {
				foreign++ // another cluster's, or this one's from before the marks
				return true
			}
			if refs[key] {
				return true
			}
			listed[key] = true
			since, ok := t.unrefSince[key]
			if !ok || since.After(now) { // first seen, or the clock went back: count from now
				since = now
				t.unrefSince[key] = now
			}
			if now.Sub(since) >= cfg.OrphanGrace && now.Sub(modified) >= cfg.OrphanGrace {
				orphans = append(orphans, key)
			}
			return true
		}); err != nil {
			return 0, err
		}
	}
	// Forget objects referenced again or gone.
	for key := range t.unrefSince {
		if !listed[key] {
			delete(t.unrefSince, key)
		}
	}
	if foreign > 0 {
		s.log.Warn("the archive store holds objects of another cluster: they are left alone (give each cluster a bucket of its own)",
			"other_owner", other, "objects", foreign)
	}
	n := 0
	for _, key := range orphans {
		if err := s.tier.store.Delete(ctx, key); err != nil {
			return n, err
		}
		if owner != "" {
			if err := s.tier.store.Delete(ctx, markKey(owner, key)); err != nil {
				return n, err
			}
		}
		s.tier.forget(key)
		delete(t.unrefSince, key)
		n++
	}
	// Marks whose object is gone (a crash between the two puts, or
	// between the two deletes), once as old as an orphan must be.
	for key, modified := range marks {
		if !refs[key] && now.Sub(modified) >= cfg.OrphanGrace {
			if err := s.tier.store.Delete(ctx, markKey(owner, key)); err != nil {
				return n, err
			}
		}
	}
	s.metrics.orphans.Add(float64(n))
	return n, nil
}

// HotBytes is what the local archive takes on disk: Badger's tables
// (the replicated state, mostly history; memtables are not counted).
func (s *Service) HotBytes() int64 {
	onDisk, _ := s.tableBytes()
	return onDisk
}

// tableBytes sums Badger's tables: on disk, and uncompressed.
func (s *Service) tableBytes() (onDisk, raw int64) {
	for _, t := range s.db.Tables() {
		onDisk += int64(t.OnDiskSize)
		raw += int64(t.UncompressedSize)
	}
	return onDisk, raw
}

// TierStatus describes the archive's tiers on this node.
type TierStatus struct {
	HotBytes       int64  `json:"hotBytes"`       // Badger's tables on disk (see HotBytes)
	SealedSegments int    `json:"sealedSegments"` // index entries
	SealedMessages int64  `json:"sealedMessages"`
	SealedBytes    int64  `json:"sealedBytes"`      // of the segment objects
	Store          string `json:"store"`            // "shared" (S3) or "local"; "" without a segment store
	Backup         any    `json:"backup,omitempty"` // the scheduled backups (see Deps.Backups)
}

// Status reads the segment index (one small entry per segment).
func (s *Service) Status() (TierStatus, error) {
	st := TierStatus{HotBytes: s.HotBytes()}
	if s.backups != nil {
		st.Backup = s.backups()
	}
	if s.tier != nil {
		st.Store = "local"
		if s.tier.store.Shared() {
			st.Store = "shared"
		}
	}
	err := s.eachSegment(func(ref SegmentRef) {
		st.SealedSegments++
		st.SealedMessages += int64(ref.Count)
		st.SealedBytes += ref.Size
	})
	return st, err
}

// eachSegment calls fn with every entry of the segment index.
func (s *Service) eachSegment(fn func(SegmentRef)) error {
	return s.db.View(func(tx *badger.Txn) error {
		root := segIndexRoot()
		it := tx.NewIterator(badger.IteratorOptions{Prefix: root})
		defer it.Close()
		for it.Seek(root); it.ValidForPrefix(root); it.Next() {
			ref, err := segRefOf(it.Item())
			if err != nil {
				return err
			}
			fn(ref)
		}
		return nil
	})
}
