package media

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/wire"
)

// hookProposer fails the next proposal of a command type without
// committing it (a leader change before it committed), running hook
// first: what the rest of the cluster did meanwhile.
type hookProposer struct {
	Proposer
	mu   sync.Mutex
	hook map[byte]func()
}

func (p *hookProposer) Propose(ctx context.Context, t byte, payload []byte) (any, error) {
	p.mu.Lock()
	hook, ok := p.hook[t]
	delete(p.hook, t)
	p.mu.Unlock()
	if !ok {
		return p.Proposer.Propose(ctx, t, payload)
	}
	hook()
	return nil, fmt.Errorf("%w: leadership lost while committing log (the command may still commit)", wire.ErrUnavailable)
}

// n1's end of a job fails without committing; meanwhile its lease ended,
// n2 took the job over and finished it (and told the uploader). n1's
// retry is refused (claim lost): n1 must not take n2's end for its own
// and tell the uploader a second time.
func TestAJobsEndRetriedAfterATakeoverDoesNotNotifyAgain(t *testing.T) {
	e := newEnv(t, Config{Worker: true, SharedStore: true})
	p := &hookProposer{Proposer: e.prop, hook: map[byte]func(){}}
	e.svc.prop = p
	rec := e.upload("alice", "notes.txt", "hello")
	p.hook[wire.CmdMediaDone] = func() {
		ctx := context.Background()
		at := e.clock.Now().Add(e.svc.cfg.JobLease + time.Second)
		if _, err := e.svc.propose(ctx, wire.CmdMediaClaim, claimCmd{ID: rec.ID, Node: "n2", At: at, Lease: time.Minute}); err != nil {
			t.Errorf("n2's takeover: %v", err)
		}
		res := &Record{Kind: "file", MIME: "text/plain", Ext: "txt", OutputSize: 5}
		if _, err := e.svc.propose(ctx, wire.CmdMediaDone, doneCmd{ID: rec.ID, Node: "n2", Attempt: 2, At: at, Result: res}); err != nil {
			t.Errorf("n2's end: %v", err)
		}
	}
	e.svc.workOnce(context.Background())
	got, err := e.svc.Get(rec.ID)
	if err != nil || got.Status != StatusReady || got.Node != "n2" {
		t.Fatalf("after n2's takeover: %+v, %v", got, err)
	}
	if evs := e.pub.events(); len(evs) != 0 {
		t.Fatalf("n1 told the uploader of n2's end: events %q", evs)
	}
}

// nthLosingProposer fails the nth proposal of a command type (counting
// from 1) without committing it.
type nthLosingProposer struct {
	Proposer
	mu    sync.Mutex
	t     byte
	n     int
	count int
}

func (p *nthLosingProposer) Propose(ctx context.Context, t byte, payload []byte) (any, error) {
	p.mu.Lock()
	if t == p.t {
		p.count++
	}
	lose := t == p.t && p.count == p.n
	p.mu.Unlock()
	if lose {
		return nil, fmt.Errorf("%w: leadership lost while committing log (the command may still commit)", wire.ErrUnavailable)
	}
	return p.Proposer.Propose(ctx, t, payload)
}

// n1's first attempt fails and it releases the job; its claim of the
// second attempt is lost before it committed. The record still names n1
// (its released first attempt): the worker must not take that up as the
// claim it proposed, running attempt 1 again, so that a job that keeps
// failing is still rejected after maxAttempts runs, not more.
func TestALostClaimDoesNotTakeUpAReleasedAttempt(t *testing.T) {
	e := newEnv(t, Config{Worker: true})
	// Claims and releases share the command type: claim 1, release 1,
	// then the claim of attempt 2 is lost.
	e.svc.prop = &nthLosingProposer{Proposer: e.prop, t: wire.CmdMediaClaim, n: 3}
	rec := e.upload("alice", "x", "FAIL")
	for range 10 {
		if got, _ := e.svc.Get(rec.ID); got.Status != StatusProcessing {
			break
		}
		e.svc.workOnce(context.Background())
	}
	got, err := e.svc.Get(rec.ID)
	if err != nil || got.Status != StatusRejected || got.Reason != "processing_failed" {
		t.Fatalf("after the rounds: %+v, %v", got, err)
	}
	if e.proc.calls != maxAttempts {
		t.Fatalf("processed %d times, want %d (maxAttempts)", e.proc.calls, maxAttempts)
	}
}
