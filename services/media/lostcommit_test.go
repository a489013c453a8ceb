package media

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/edgechat/edgechat/internal/wire"
	"github.com/edgechat/edgechat/services/media/store"
)

// answerLosingProposer is a Proposer whose next proposal of a command
// type fails as a leader change makes it fail: with commit, after the
// command committed (the answer is lost), without, before it did.
type answerLosingProposer struct {
	Proposer
	mu   sync.Mutex
	lose map[byte]bool // type → commit before failing
}

func (p *answerLosingProposer) loseNext(t byte, commit bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lose[t] = commit
}

func (p *answerLosingProposer) Propose(ctx context.Context, t byte, payload []byte) (any, error) {
	p.mu.Lock()
	commit, lose := p.lose[t]
	delete(p.lose, t)
	p.mu.Unlock()
	if !lose {
		return p.Proposer.Propose(ctx, t, payload)
	}
	if commit {
		if _, err := p.Proposer.Propose(ctx, t, payload); err != nil {
			return nil, err
		}
	}
	return nil, fmt.Errorf("%w: leadership lost while committing log (the command may still commit)", wire.ErrUnavailable)
}

func newAnswerLosingEnv(t *testing.T) (*env, *answerLosingProposer) {
	e := newEnv(t, Config{Worker: true})
	p := &answerLosingProposer{Proposer: e.prop, lose: map[byte]bool{}}
	e.svc.prop = p
	return e, p
}

// A claim that committed while its proposer lost the answer (a leader
// change) left the job held by this very node for the whole lease (two
// minutes by default) with nobody processing it: the upload stayed
// "processing". The worker now takes up its own claim at its next round.
func TestAClaimWhoseAnswerWasLostIsTakenUp(t *testing.T) {
	e, p := newAnswerLosingEnv(t)
	rec := e.upload("alice", "notes.txt", "hello")
	p.loseNext(wire.CmdMediaClaim, true)
	e.svc.workOnce(context.Background())
	if got, _ := e.svc.Get(rec.ID); got.Status != StatusProcessing || got.Job == nil || got.Job.Node != "n1" {
		t.Fatalf("after the lost claim: %+v", got)
	}
	e.svc.workOnce(context.Background()) // the clock has not moved: the lease holds
	got, err := e.svc.Get(rec.ID)
	if err != nil || got.Status != StatusReady || e.proc.calls != 1 {
		t.Fatalf("the next round: %+v, %v, %d processing runs", got, err, e.proc.calls)
	}
	if evs := e.pub.events(); len(evs) != 1 || !strings.Contains(evs[0], `"type":"mediaReady"`) {
		t.Fatalf("events %q", evs)
	}
}

// The job's end through a leader change: lost before it committed, it is
// proposed again (before, the job waited out its lease and was processed
// again); lost after, the uploader is still told and the raw upload
// deleted (before, the file was ready and nobody was told).
func TestAJobsEndThroughALeaderChange(t *testing.T) {
	for _, committed := range []bool{false, true} {
		t.Run(fmt.Sprintf("committed=%v", committed), func(t *testing.T) {
			e, p := newAnswerLosingEnv(t)
			rec := e.upload("alice", "notes.txt", "hello")
			p.loseNext(wire.CmdMediaDone, committed)
			e.svc.workOnce(context.Background())
			e.requireEndedOnce(t, rec.ID)
		})
	}
}

// requireEndedOnce: the upload id was processed once and is ready, its
// raw upload deleted and its uploader told once.
func (e *env) requireEndedOnce(t *testing.T, id string) {
	t.Helper()
	got, err := e.svc.Get(id)
	if err != nil || got.Status != StatusReady || e.proc.calls != 1 {
		t.Fatalf("after processing: %+v, %v, %d processing runs", got, err, e.proc.calls)
	}
	if e.st.has(store.TierRaw, id) {
		t.Fatal("the raw upload is still there")
	}
	if evs := e.pub.events(); len(evs) != 1 || !strings.Contains(evs[0], `"type":"mediaReady"`) {
		t.Fatalf("the uploader heard %q, want one mediaReady", evs)
	}
}
