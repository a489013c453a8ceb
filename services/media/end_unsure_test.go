package media

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/edgechat/edgechat/internal/wire"
)

// endLosingProposer lets the first proposal of a job's end commit and
// loses its answer, then fails the next fails ones without committing
// (a leader change that outlasts the retries), then lets them through.
type endLosingProposer struct {
	Proposer
	commitFirst bool
	mu          sync.Mutex
	fails       int
	n           int
}

func (p *endLosingProposer) Propose(ctx context.Context, t byte, payload []byte) (any, error) {
	if t != wire.CmdMediaDone {
		return p.Proposer.Propose(ctx, t, payload)
	}
	p.mu.Lock()
	p.n++
	n := p.n
	p.mu.Unlock()
	if n > 1+p.fails {
		return p.Proposer.Propose(ctx, t, payload)
	}
	if n == 1 && p.commitFirst {
		if _, err := p.Proposer.Propose(ctx, t, payload); err != nil {
			return nil, err
		}
	}
	return nil, fmt.Errorf("%w: leadership lost while committing log (the command may still commit)", wire.ErrUnavailable)
}

// The job's end committed but its answer was lost, and every retry
// failed (the leader change outlasted them): the record is ready, but
// the worker gave up, so the uploader was never told and the raw upload
// stayed in the store for good (no sweep deletes a processed upload's
// raw file). Not committed at all, the job waited out its lease and was
// processed again. The worker's next round settles the end it was
// unsure of.
func TestAJobsEndWhoseRetriesAllFailIsSettledNextRound(t *testing.T) {
	for _, committed := range []bool{true, false} {
		t.Run(fmt.Sprintf("committed=%v", committed), func(t *testing.T) {
			e := newEnv(t, Config{Worker: true})
			p := &endLosingProposer{Proposer: e.prop, commitFirst: committed, fails: commitAttempts}
			if committed {
				p.fails = commitAttempts - 1
			}
			e.svc.prop = p
			rec := e.upload("alice", "notes.txt", "hello")
			e.svc.workOnce(context.Background()) // every proposal of the end fails
			e.svc.workOnce(context.Background()) // the leader is back
			e.requireEndedOnce(t, rec.ID)
		})
	}
}
