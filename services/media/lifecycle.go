package media

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/internal/wire"
	"github.com/edgechat/edgechat/services/media/store"
)

// The lifecycle of stored media: media nobody read for ColdAfter moves
// to the cold tier (a bucket lifecycle rule does it on S3 when a storage
// class is configured; otherwise the sweeper copies it to the cold
// bucket or directory and deletes the hot copy), and orphans go: uploads
// never completed after OrphanUpload, media never sent after
// OrphanUnsent, rejected records (with any file a failed job stored)
// after OrphanUnsent.

// Lifecycle defaults.
const (
	DefaultColdAfter    = 90 * 24 * time.Hour
	DefaultSweepEvery   = time.Hour
	DefaultOrphanUpload = 24 * time.Hour
	DefaultOrphanUnsent = 7 * 24 * time.Hour
)

// Leadership says whether this node is the Raft leader (the one node
// that sweeps a shared store and listens for its notifications).
type Leadership interface {
	IsLeader() bool
	MembersChanged() <-chan struct{}
}

// runDuties runs the sweeper (on every node for its own files with a
// local store; on the leader for a shared one) and, while this node
// leads, the store's upload notifications and lifecycle rule.
func (s *Service) runDuties(ctx context.Context) {
	if lc, ok := s.st.(store.Lifecycle); ok && s.cfg.ColdStorageClass != "" {
		// Idempotent: every node may set it; it is the same rule.
		days := max(int(s.cfg.ColdAfter/(24*time.Hour)), 1)
		if err := lc.EnsureColdTransition(ctx, days, s.cfg.ColdStorageClass); err != nil {
			s.log.Warn("setting the cold-tier lifecycle rule; media stays in the processed tier", "err", err)
		}
	}
	var l listener
	defer l.stop()
	timer := time.NewTimer(0)
	defer timer.Stop()
	var walked time.Time // the last index walk this node proposed
	swept := false       // not at the first sweep: no walk while a node starts
	for {
		var changed <-chan struct{}
		if s.lead != nil {
			changed = s.lead.MembersChanged()
		}
		if n, ok := s.st.(store.Notifier); ok {
			if s.lead == nil || s.lead.IsLeader() {
				l.start(ctx, func(lctx context.Context) { s.listenUploads(lctx, n) })
			} else {
				l.stop()
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-timer.C:
			s.Sweep(ctx)
			if swept && (s.lead == nil || s.lead.IsLeader()) {
				walked = s.maybeIndexWalk(ctx, walked)
			}
			swept = true
			timer.Reset(s.cfg.SweepEvery)
		}
	}
}

// sweeps reports whether this node sweeps rec.
func (s *Service) sweeps(r Record) bool {
	if s.cfg.SharedStore || r.Source != "" && !r.Fetched { // (another region's media not fetched: no node holds it)
		return s.lead == nil || s.lead.IsLeader()
	}
	return r.Node == s.cfg.Node
}

// strayRawPossible: r is a direct upload processed (or refused) whose
// presigned PUT URL had time to be used again after its raw object was
// deleted, and whose window for that has closed: the sweeps of the day
// after the URL expired delete what such a PUT left (no record would
// ever account for it otherwise, nor the quota).
func strayRawPossible(r Record, now time.Time, window time.Duration) bool {
	if !r.Direct || r.Status == StatusUploading || r.Status == StatusProcessing || r.Erased {
		return false
	}
	age := now.Sub(r.CreatedAt)
	return age > directTTL && age <= directTTL+window
}

// Sweep moves cold media and removes orphans once, and updates the
// per-tier gauges.
func (s *Service) Sweep(ctx context.Context) {
	now := s.now().UTC()
	var recs []Record
	jobs := 0
	bytes := map[string]float64{TierProcessed: 0, TierCold: 0}
	_ = s.db.View(func(tx *badger.Txn) error {
		it := tx.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixRecord), PrefetchValues: true})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			var r Record
			if err := it.Item().Value(func(v []byte) error { return jsonUnmarshal(v, &r) }); err != nil {
				continue
			}
			if r.Status == StatusProcessing {
				jobs++
			}
			if r.Status == StatusReady {
				bytes[r.Tier] += float64(r.OutputSize)
			}
			if s.sweeps(r) {
				recs = append(recs, r)
			}
		}
		return nil
	})
	s.m.jobsPending.Set(float64(jobs))
	for tier, b := range bytes {
		s.m.tierBytes.WithLabelValues(tier).Set(b)
	}
	var gone, unsent []string
	for _, r := range recs {
		if ctx.Err() != nil {
			return
		}
		switch {
		case r.Erased: // its uploader's account was erased: every tier
			if s.deleteFiles(ctx, r, store.TierRaw) && s.deleteFiles(ctx, r, store.TierProcessed) &&
				s.deleteFiles(ctx, r, store.TierCold) {
				gone = append(gone, r.ID)
			}
		case r.Status == StatusUploading && now.Sub(r.CreatedAt) > s.cfg.OrphanUpload:
			if ps, ok := s.st.(store.Presigner); ok && r.UploadID != "" {
				_ = ps.AbortMultipart(ctx, store.TierRaw, r.ID, r.UploadID)
			}
			if s.deleteFiles(ctx, r, store.TierRaw) {
				gone = append(gone, r.ID)
			}
		case r.Status == StatusRejected && now.Sub(r.UpdatedAt) > s.cfg.OrphanUnsent:
			// A job may have stored its processed file (and preview)
			// before it failed for good: they go with the record.
			if s.deleteFiles(ctx, r, store.TierProcessed) {
				gone = append(gone, r.ID)
			}
		case r.Status == StatusReady && !r.Sent && now.Sub(r.UpdatedAt) > s.cfg.OrphanUnsent:
			// Its owner may send it while this sweep runs: its record
			// goes first, only if it is still unsent, and its files
			// after (below).
			unsent = append(unsent, r.ID)
		case r.Status == StatusReady && r.Sent && r.Tier == TierProcessed && s.cfg.ColdStorageClass == "" &&
			now.Sub(lastRead(r)) > s.cfg.ColdAfter && (r.Source == "" || r.Fetched):
			s.moveCold(ctx, r)
		}
		if strayRawPossible(r, now, s.cfg.OrphanUpload) {
			s.deleteFiles(ctx, r, store.TierRaw)
		}
	}
	if len(unsent) > 0 {
		if _, err := s.propose(ctx, wire.CmdMediaDropUnsent, dropUnsentCmd{IDs: unsent}); err != nil {
			s.log.Warn("removing unsent media records", "n", len(unsent), "err", err)
		}
	}
	// The files of the records dropped, by this sweep or by one whose
	// deletes failed; their tombstones go once the files are gone.
	for id, tier := range s.tombstones() {
		if ctx.Err() != nil {
			return
		}
		if s.deleteFiles(ctx, Record{ID: id}, store.Tier(tier)) {
			gone = append(gone, id)
		}
	}
	if len(gone) > 0 {
		if _, err := s.propose(ctx, wire.CmdMediaDelete, deleteCmd{IDs: gone}); err != nil {
			s.log.Warn("removing orphaned media records", "n", len(gone), "err", err)
		}
	}
}

// tombstones lists the records dropped before their files
// (applyDropUnsent): media ID → the tier the files are in.
func (s *Service) tombstones() map[string]string {
	out := map[string]string{}
	err := s.db.View(func(tx *badger.Txn) error {
		it := tx.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixTombstone), PrefetchValues: true})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			var t tombstone
			if err := it.Item().Value(func(v []byte) error { return json.Unmarshal(v, &t) }); err != nil || t.Tier == "" {
				continue // unreadable: left for a version that can read it
			}
			out[string(it.Item().Key()[len(prefixTombstone):])] = t.Tier
		}
		return nil
	})
	if err != nil {
		s.log.Warn("listing dropped media", "err", err)
	}
	return out
}

func lastRead(r Record) time.Time {
	if r.LastReadAt != nil {
		return *r.LastReadAt
	}
	return r.UpdatedAt
}

func tierOf(r Record) store.Tier {
	if r.Tier == TierCold {
		return store.TierCold
	}
	return store.TierProcessed
}

// deleteFiles removes a record's file and preview from tier; false when
// something could not be deleted (the record stays for the next sweep).
func (s *Service) deleteFiles(ctx context.Context, r Record, tier store.Tier) bool {
	ok := true
	for _, key := range []string{fileKey(r.ID), previewKey(r.ID)} {
		if err := s.st.Delete(ctx, tier, key); err != nil && !errors.Is(err, store.ErrNotFound) {
			s.log.Warn("deleting orphaned media", "media", r.ID, "err", err)
			ok = false
		}
	}
	return ok
}

// moveCold moves a record's files to the cold tier, then records it; a
// crash between the two leaves the files in cold and the record in
// processed, which the next sweep repairs (Move of a missing object is
// ErrNotFound, and serving falls back below).
func (s *Service) moveCold(ctx context.Context, r Record) {
	keys := []string{fileKey(r.ID)}
	if r.PreviewMIME != "" {
		keys = append(keys, previewKey(r.ID))
	}
	for _, key := range keys {
		if err := s.st.Move(ctx, store.TierProcessed, store.TierCold, key); err != nil && !errors.Is(err, store.ErrNotFound) {
			s.log.Warn("moving media to the cold tier", "media", r.ID, "err", err)
			return
		}
	}
	if _, err := s.propose(ctx, wire.CmdMediaTouch, touchCmd{ID: r.ID, Tier: TierCold}); err != nil {
		s.log.Warn("recording a move to the cold tier", "media", r.ID, "err", err)
		return
	}
	s.m.movedCold.Inc()
}

// listener runs one goroutine that start starts and stop cancels.
type listener struct{ cancel context.CancelFunc }

func (l *listener) start(ctx context.Context, run func(context.Context)) {
	if l.cancel != nil {
		return
	}
	lctx, cancel := context.WithCancel(ctx)
	l.cancel = cancel
	go run(lctx)
}

func (l *listener) stop() {
	if l.cancel != nil {
		l.cancel()
		l.cancel = nil
	}
}
