package media

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/edgechat/edgechat/internal/wire"
)

// lateCommitProposer fails the first claim without committing it, and
// commits it just before the next claim is proposed: a proposal left in
// the old leader's log that the new leader commits a moment later.
type lateCommitProposer struct {
	Proposer
	mu      sync.Mutex
	claims  int
	pending []byte
}

func (p *lateCommitProposer) Propose(ctx context.Context, t byte, payload []byte) (any, error) {
	if t == wire.CmdMediaClaim {
		p.mu.Lock()
		p.claims++
		n, pending := p.claims, p.pending
		p.pending = nil
		if n == 1 {
			p.pending = payload
		}
		p.mu.Unlock()
		if n == 1 {
			return nil, fmt.Errorf("%w: leadership lost while committing log (the command may still commit)", wire.ErrUnavailable)
		}
		if pending != nil {
			if _, err := p.Proposer.Propose(ctx, t, pending); err != nil {
				return nil, err
			}
		}
	}
	return p.Proposer.Propose(ctx, t, payload)
}

// A claim whose answer was lost and that commits only after the
// worker's next round proposed another claim (refused: held by this very
// node) is still taken up: before, the worker forgot it and the job sat
// in processing, held by nobody working on it, until the lease ended.
func TestAClaimCommittedLateIsTakenUp(t *testing.T) {
	e := newEnv(t, Config{Worker: true})
	e.svc.prop = &lateCommitProposer{Proposer: e.prop}
	rec := e.upload("alice", "notes.txt", "hello")
	for range 3 { // the clock does not move: the lease holds throughout
		e.svc.workOnce(context.Background())
	}
	got, err := e.svc.Get(rec.ID)
	if err != nil || got.Status != StatusReady || e.proc.calls != 1 {
		t.Fatalf("after three rounds: %+v, %v, %d processing runs", got, err, e.proc.calls)
	}
}
