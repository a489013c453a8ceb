package media

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/internal/wire"
	"github.com/edgechat/edgechat/services/media/store"
)

// Worker tuning.
const (
	// maxAttempts: a job that fails (not a refusal: an I/O error, a
	// crash) this many times is rejected as "processing_failed".
	maxAttempts = 3
	// workerIdleRescan bounds how long a worker waits when jobs exist that
	// it may not claim now (held by others): their leases may end.
	workerIdleRescan = 30 * time.Second
)

// Event types on user/{uid}/events.
const (
	EventReady    = "mediaReady"
	EventRejected = "mediaRejected"
)

// runWorker claims and processes jobs, one at a time (processing is
// CPU-bound and an edge box has few cores), until ctx ends.
func (s *Service) runWorker(ctx context.Context) error {
	for {
		wait := s.workOnce(ctx)
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case <-s.jobs:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// workOnce claims and processes jobs until none is claimable, and says
// how long to wait before looking again (unless poked).
func (s *Service) workOnce(ctx context.Context) time.Duration {
	// Bounded, so that a job this node keeps failing to claim (another
	// node's view of it differs) cannot spin.
	for range 1000 {
		if ctx.Err() != nil {
			break
		}
		s.settleEnds(ctx)
		rec, wait, ok := s.nextJob()
		if !ok {
			if len(s.endUnsure) > 0 {
				wait = min(wait, time.Second)
			}
			return wait
		}
		cmd := claimCmd{ID: rec.ID, Node: s.cfg.Node, At: s.now().UTC(), Lease: s.cfg.JobLease}
		attempt := 1 // the attempt this claim makes
		switch {
		case s.ownUnsureClaim(rec):
			cmd.Renew = rec.Job.Attempt // the claim did commit: take it up
			attempt = cmd.Renew
		case rec.Job != nil:
			attempt = rec.Job.Attempt + 1
		}
		v, err := s.propose(ctx, wire.CmdMediaClaim, cmd)
		if err != nil {
			if !errors.Is(err, ErrClaimLost) && !errors.Is(err, ErrBadState) {
				// It may still commit, making the job this node's until
				// its lease ends: the next round renews it instead.
				s.claimUnsure[rec.ID] = attempt
				s.log.Warn("claiming a media job", "media", rec.ID, "err", err)
				return time.Second
			}
			if cur, gerr := s.Get(rec.ID); gerr == nil && s.ownUnsureClaim(cur) {
				// Refused as held by this very node: an earlier claim
				// whose answer was lost committed since. Take it up.
				continue
			}
			delete(s.claimUnsure, rec.ID)
			continue // another worker was first
		}
		delete(s.claimUnsure, rec.ID)
		claimed, err := s.resultOf(v, rec.ID)
		if err != nil || claimed.Job == nil || claimed.Job.Node != s.cfg.Node {
			continue
		}
		s.runJob(ctx, claimed)
	}
	return workerIdleRescan
}

// nextJob picks a job this worker may claim now: not held (or its lease
// over) and, with a per-node store, one whose raw upload is here. wait is
// when a held lease ends, when there is none to take.
func (s *Service) nextJob() (rec Record, wait time.Duration, ok bool) {
	now := s.now()
	wait = time.Hour // nothing queued: the commit of a job pokes us
	_ = s.db.View(func(tx *badger.Txn) error {
		it := tx.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixJob)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			id := string(it.Item().Key()[len(prefixJob):])
			r, err := getRecord(tx, id)
			if err != nil || r.Status != StatusProcessing {
				continue
			}
			if !s.cfg.SharedStore && r.Node != s.cfg.Node {
				continue
			}
			if r.Job != nil && now.Before(r.Job.LeaseUntil) && !s.ownUnsureClaim(r) {
				wait = min(wait, r.Job.LeaseUntil.Sub(now)+10*time.Millisecond)
				continue
			}
			rec, ok = r, true
			return nil
		}
		return nil
	})
	return rec, min(wait, workerIdleRescan), ok
}

// ownUnsureClaim reports whether r is held by this node through a claim
// whose answer never came: no job runs here while the worker looks for
// one, so a claim of this node with the attempt that proposal would have
// made is that proposal's, for the worker to renew. An earlier attempt
// of this node (one it released) is not: the claim did not commit.
func (s *Service) ownUnsureClaim(r Record) bool {
	return r.Job != nil && r.Job.Node == s.cfg.Node && s.claimUnsure[r.ID] == r.Job.Attempt
}

// Retrying a job's commits through a leader change: a renewal or the
// job's end that could not commit is proposed again this many times, the
// wait doubling from commitRetryDelay, before the worker gives the job up
// to its lease.
const (
	commitAttempts   = 6
	commitRetryDelay = 250 * time.Millisecond
)

// proposeRetrying proposes cmd until it commits, the FSM refuses it, ctx
// ends, commitAttempts are spent or (unless until is zero) the time is
// until; retried tells whether an earlier proposal of it failed without
// an answer (it may have committed).
func (s *Service) proposeRetrying(ctx context.Context, t byte, cmd any, until time.Time) (v any, retried bool, err error) {
	delay := commitRetryDelay
	for attempt := 1; ; attempt++ {
		v, err = s.propose(ctx, t, cmd)
		if err == nil || attempt == commitAttempts || errors.Is(err, ErrClaimLost) || errors.Is(err, ErrBadState) || errors.Is(err, errBadCommand) {
			return v, attempt > 1, err
		}
		timer := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil, attempt > 1, err
		case <-timer.C:
		}
		if !until.IsZero() && !s.now().Before(until) {
			return nil, attempt > 1, err
		}
		delay *= 2
	}
}

// runJob processes a claimed job, renewing the claim meanwhile.
func (s *Service) runJob(ctx context.Context, rec Record) {
	attempt := rec.Job.Attempt
	// Logged so that an operator sees where a job ran and its takeovers
	// (attempt 2 or more: a worker died, failed or stopped before).
	s.log.Info("media job claimed", "media", rec.ID, "attempt", attempt)
	s.m.jobsRunning.Inc()
	defer s.m.jobsRunning.Dec()
	jctx, cancel := context.WithCancel(ctx)
	defer cancel()
	renewed := make(chan struct{})
	leaseUntil := rec.Job.LeaseUntil // the renewal goroutine's
	go func() {
		defer close(renewed)
		t := time.NewTicker(s.cfg.JobLease / 3)
		defer t.Stop()
		for {
			select {
			case <-jctx.Done():
				return
			case <-t.C:
				// Retried no longer than the lease holds: once it ends,
				// another worker may take the job, and this one stops.
				c := claimCmd{ID: rec.ID, Node: s.cfg.Node, Renew: attempt, At: s.now().UTC(), Lease: s.cfg.JobLease}
				if _, _, err := s.proposeRetrying(jctx, wire.CmdMediaClaim, c, leaseUntil); err != nil && jctx.Err() == nil {
					s.log.Warn("renewing a media job's claim; stopping it", "media", rec.ID, "err", err)
					cancel() // lost: another worker may have it
					return
				}
				leaseUntil = c.At.Add(c.Lease)
			}
		}
	}()
	start := s.now()
	res, procErr := s.processUpload(jctx, rec)
	cancel()
	<-renewed
	if ctx.Err() != nil {
		return // shutting down: the lease ends and another worker takes over
	}
	if procErr != nil {
		reason := s.proc.Reason(procErr)
		if errors.Is(procErr, errRawGrew) {
			reason = reasonTooLarge
		}
		if reason == "" && attempt < maxAttempts {
			s.log.Warn("media processing failed; releasing the job", "media", rec.ID, "attempt", attempt, "err", procErr)
			if _, _, err := s.proposeRetrying(ctx, wire.CmdMediaClaim, claimCmd{ID: rec.ID, Node: s.cfg.Node, Renew: attempt,
				At: s.now().UTC(), Lease: s.cfg.JobLease, Release: true}, time.Time{}); err != nil {
				s.log.Warn("releasing a media job", "media", rec.ID, "err", err)
			}
			return
		}
		if reason == "" {
			reason = "processing_failed"
		}
		s.finish(ctx, rec, attempt, doneCmd{Reason: reason})
		s.m.processed.WithLabelValues("rejected", reason).Inc()
		return
	}
	s.m.processed.WithLabelValues("ready", res.Kind).Inc()
	s.m.jobSeconds.WithLabelValues(res.Kind).Observe(s.now().Sub(start).Seconds())
	s.finish(ctx, rec, attempt, doneCmd{Result: &res})
}

// finish commits the job's end, then deletes the raw upload and tells
// the uploader. A claim lost meanwhile commits nothing: the worker that
// holds it now finishes the job.
func (s *Service) finish(ctx context.Context, rec Record, attempt int, d doneCmd) {
	d.ID, d.Node, d.Attempt, d.At = rec.ID, s.cfg.Node, attempt, s.now().UTC()
	v, retried, err := s.proposeRetrying(ctx, wire.CmdMediaDone, d, time.Time{})
	s.ended(ctx, d, v, retried, err)
}

// settleEnds proposes again the ends of jobs whose every proposal failed
// without an answer (a leader change longer than the retries): one may
// have committed (the record is ready, and its uploader still to be
// told, its raw upload still to be deleted), or none (the job would wait
// out its lease and be processed again).
func (s *Service) settleEnds(ctx context.Context) {
	for _, d := range s.endUnsure {
		if ctx.Err() != nil {
			return
		}
		v, err := s.propose(ctx, wire.CmdMediaDone, d)
		s.ended(ctx, d, v, true, err)
	}
}

// ended concludes the proposal of a job's end d: retried tells whether
// an earlier proposal of it failed without an answer (it may have
// committed).
func (s *Service) ended(ctx context.Context, d doneCmd, v any, retried bool, err error) {
	var done Record
	switch {
	case err == nil:
		delete(s.endUnsure, d.ID)
		if done, err = s.resultOf(v, d.ID); err != nil {
			return
		}
	case retried && errors.Is(err, ErrClaimLost):
		// An earlier proposal whose answer was lost did commit: the job
		// ended, and its uploader is still to be told. Only if that end
		// is this one (its time is d's): another worker that took the
		// job over meanwhile and ended it told the uploader itself.
		delete(s.endUnsure, d.ID)
		if done, err = s.Get(d.ID); err != nil || done.Status == StatusProcessing || !done.UpdatedAt.Equal(d.At) {
			return
		}
	case errors.Is(err, ErrClaimLost), errors.Is(err, ErrBadState), errors.Is(err, ErrNotFound), errors.Is(err, errBadCommand):
		delete(s.endUnsure, d.ID)
		s.log.Warn("committing a media job's end", "media", d.ID, "err", err)
		return
	default:
		// No answer: it may have committed, or still may. The worker's
		// next round proposes it again.
		s.endUnsure[d.ID] = d
		s.log.Warn("committing a media job's end; trying again next round", "media", d.ID, "err", err)
		return
	}
	s.log.Info("media job finished", "media", d.ID, "attempt", d.Attempt, "status", done.Status, "reason", done.Reason)
	if err := s.st.Delete(ctx, store.TierRaw, d.ID); err != nil {
		s.log.Warn("deleting a processed raw upload", "media", d.ID, "err", err)
	}
	s.notify(done)
}

// notify publishes the outcome to the uploader's devices.
func (s *Service) notify(r Record) {
	ev := map[string]any{"type": EventReady, "mediaId": r.ID}
	if r.Status == StatusRejected {
		ev = map[string]any{"type": EventRejected, "mediaId": r.ID, "reason": r.Reason}
	} else {
		ev["media"] = r.Wire()
	}
	b, _ := json.Marshal(ev)
	if err := s.pub.Publish(wire.Outbound{Topic: wire.EventsTopic(r.Owner), Payload: b, QoS: 1}); err != nil {
		s.log.Warn("publishing a media event", "media", r.ID, "err", err)
	}
}

// processUpload fetches the raw upload into a temporary file, processes
// it and stores the results; it returns the record fields to commit.
func (s *Service) processUpload(ctx context.Context, rec Record) (Record, error) {
	body, _, err := s.st.Get(ctx, store.TierRaw, rec.ID, 0, -1)
	if err != nil {
		return Record{}, fmt.Errorf("media: fetch raw upload: %w", err)
	}
	tmp, err := os.CreateTemp(s.cfg.TempDir, "edgechat-media-*")
	if err != nil {
		body.Close()
		return Record{}, fmt.Errorf("media: temp file: %w", err)
	}
	defer os.Remove(tmp.Name())
	// No more than the size accepted (and counted in the quota): a direct
	// upload's presigned URL outlives its /complete, and a second PUT
	// could replace the object with anything S3 takes.
	n, err := io.Copy(tmp, io.LimitReader(body, rec.Size+1))
	body.Close()
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return Record{}, fmt.Errorf("media: fetch raw upload: %w", err)
	}
	if n > rec.Size {
		return Record{}, fmt.Errorf("%w: more than the %d bytes accepted", errRawGrew, rec.Size)
	}
	p, err := s.proc.Process(ctx, tmp.Name(), rec.Name, rec.ClaimedType)
	for _, f := range []string{p.Output, p.Preview} {
		if f != "" && f != tmp.Name() {
			defer os.Remove(f)
		}
	}
	if err != nil {
		return Record{}, err
	}
	out, err := s.putFile(ctx, store.TierProcessed, rec.ID, p.Output, p.OutputMIME)
	if err != nil {
		return Record{}, err
	}
	res := Record{Kind: p.Kind, MIME: p.MIME, Ext: p.Ext, Width: p.Width, Height: p.Height,
		DurationMs: p.Duration.Milliseconds(), Camera: p.Camera, Placeholder: p.Placeholder, Notes: p.Notes,
		OutputSize: out.Size, ETag: out.ETag}
	if !p.TakenAt.IsZero() {
		res.TakenAt = p.TakenAt.Format(time.RFC3339)
	}
	if p.Preview != "" {
		if _, err := s.putFile(ctx, store.TierProcessed, previewKey(rec.ID), p.Preview, p.PreviewMIME); err != nil {
			return Record{}, err
		}
		res.PreviewMIME = p.PreviewMIME
	}
	return res, nil
}

func previewKey(id string) string { return fileKey(id) + ".preview" }

func (s *Service) putFile(ctx context.Context, tier store.Tier, key, path, ctype string) (store.Object, error) {
	f, err := os.Open(path)
	if err != nil {
		return store.Object{}, fmt.Errorf("media: processed file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return store.Object{}, err
	}
	obj, err := s.st.Put(ctx, tier, key, f, fi.Size(), ctype)
	if err != nil {
		return store.Object{}, fmt.Errorf("media: store processed file: %w", err)
	}
	return obj, nil
}
