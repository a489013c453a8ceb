package archive

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/wire"
)

// leaderChange fails the first fail message proposals with
// wire.ErrUnavailable, as a leader change does; with commit, the failed
// proposal commits anyway (leadership lost after the entry reached a
// majority: the outcome was only unknown).
type leaderChange struct {
	inner  Proposer
	mu     sync.Mutex
	fail   int
	commit bool
	calls  int
}

func (l *leaderChange) Propose(ctx context.Context, t byte, payload []byte) (any, error) {
	l.mu.Lock()
	l.calls++
	failing := t == wire.CmdMessage && l.fail > 0
	if failing {
		l.fail--
	}
	l.mu.Unlock()
	if !failing {
		return l.inner.Propose(ctx, t, payload)
	}
	if l.commit {
		if _, err := l.inner.Propose(ctx, t, payload); err != nil {
			return nil, err
		}
	}
	return nil, fmt.Errorf("%w: leadership lost while committing log (the command may still commit)", wire.ErrUnavailable)
}

// A publish whose commit a leader change left unknown or refused is
// proposed again until its deadline: stored once, answered as stored
// (not as a duplicate, which would skip its live delivery) whether or
// not the first attempt committed; a real retry of the client is still
// a duplicate.
func TestLeaderChangeIsRetriedOnce(t *testing.T) {
	for _, commit := range []bool{false, true} {
		t.Run(fmt.Sprintf("first attempt committed=%v", commit), func(t *testing.T) {
			lc := &leaderChange{fail: 2, commit: commit}
			e := newEnv(t, func(e *env) { e.wrapProp = func(p Proposer) Proposer { lc.inner = p; return lc } })
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			stored, _, dup, err := e.svc.SendDirect(ctx, "alice", "bob", text("c1", "hello"))
			if err != nil || dup || stored.ID == 0 {
				t.Fatalf("SendDirect: %+v dup=%v %v", stored, dup, err)
			}
			if lc.calls != 3 {
				t.Errorf("%d proposals, want 3 (two failed, one answered)", lc.calls)
			}
			msgs, _, err := e.svc.historyPage(ctx, directConv("alice", "bob"), nil, 10)
			if err != nil || len(msgs) != 1 {
				t.Fatalf("history: %d messages, %v", len(msgs), err)
			}
			again, _, dup, err := e.svc.SendDirect(ctx, "alice", "bob", text("c1", "hello"))
			if err != nil || !dup || again.ID != stored.ID {
				t.Fatalf("the client's retry: %+v dup=%v %v", again, dup, err)
			}
			if got := metric(t, e, resultStored); got != 1 {
				t.Errorf("stored counter %v", got)
			}
		})
	}
	// Until the deadline only: then the publish fails as before.
	lc := &leaderChange{fail: 1 << 30}
	e := newEnv(t, func(e *env) { e.wrapProp = func(p Proposer) Proposer { lc.inner = p; return lc } })
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, _, _, err := e.svc.SendDirect(ctx, "alice", "bob", text("c2", "x")); err == nil {
		t.Fatal("stored with no leader ever")
	}
}
