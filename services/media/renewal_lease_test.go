package media

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/internal/wire"
)

// renewalFailingProposer fails every renewal (a leader change that does
// not end), noting the worker's time of each, and notes releases.
type renewalFailingProposer struct {
	Proposer
	now      func() time.Time
	mu       sync.Mutex
	renewals map[int][]time.Time // attempt → the times its renewals were proposed
	released bool
}

func (p *renewalFailingProposer) Propose(ctx context.Context, t byte, payload []byte) (any, error) {
	if t == wire.CmdMediaClaim {
		var c claimCmd
		if err := json.Unmarshal(payload, &c); err == nil && c.Renew != 0 {
			p.mu.Lock()
			defer p.mu.Unlock()
			if c.Release {
				p.released = true
			} else {
				p.renewals[c.Renew] = append(p.renewals[c.Renew], p.now())
				return nil, fmt.Errorf("%w: no leader", wire.ErrUnavailable)
			}
		}
	}
	return p.Proposer.Propose(ctx, t, payload)
}

// A worker whose renewals cannot commit stops processing when its lease
// ends at the latest: from then another node may claim the job, and two
// workers would process it (and both store a result). Retrying the
// renewal (about 8 s of tries) must not outlast the lease (a short
// --media-job-lease).
func TestRenewalRetriesStopAtTheLeasesEnd(t *testing.T) {
	const lease = 3 * time.Second // renewals every second
	e := newEnv(t, Config{Worker: true, JobLease: lease})
	p := &renewalFailingProposer{Proposer: e.prop, now: e.clock.Now, renewals: map[int][]time.Time{}}
	e.svc.prop = p
	e.proc.block = make(chan struct{}) // processing runs until canceled
	rec := e.upload("alice", "notes.txt", "hello")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); e.svc.workOnce(ctx) }()
	defer func() { cancel(); <-done }()
	testutil.CheckFor(t, 20*time.Second, 5*time.Millisecond, func() error {
		p.mu.Lock()
		defer p.mu.Unlock()
		if len(p.renewals[1]) == 0 {
			return errors.New("no renewal yet")
		}
		return nil
	})
	got, _ := e.svc.Get(rec.ID)
	if got.Job == nil || got.Job.Attempt != 1 {
		t.Fatalf("job %+v", got.Job)
	}
	end := got.Job.LeaseUntil
	e.clock.Set(end.Add(time.Millisecond)) // the lease is over: n2 may claim the job now
	testutil.CheckFor(t, 20*time.Second, 5*time.Millisecond, func() error {
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, at := range p.renewals[1] {
			if !at.Before(end) {
				return nil
			}
		}
		if !p.released {
			return errors.New("still processing")
		}
		return nil
	})
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, at := range p.renewals[1] {
		if !at.Before(end) {
			t.Fatalf("attempt 1 still processing, and renewing, at %v after its lease ended at %v (renewals at %v)", at, end, p.renewals[1])
		}
	}
}
