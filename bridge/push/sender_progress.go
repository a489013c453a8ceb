package push

import (
	"context"
	"sync"
	"time"

	"github.com/edgechat/edgechat/internal/snowflake"
)

// progress collects what the term handled until the next commit of it.
type progress struct {
	mu      sync.Mutex
	handled map[snowflake.ID][]string
	doneIDs []snowflake.ID
	ready   chan struct{} // poked when there is something to commit
	// here is every device the term handled of the messages it has not
	// finished, committed or not: a message planned again skips them.
	here map[snowflake.ID]map[string]bool
}

func newProgress() *progress {
	return &progress{handled: map[snowflake.ID][]string{}, ready: make(chan struct{}, 1),
		here: map[snowflake.ID]map[string]bool{}}
}

func (p *progress) poke() {
	select {
	case p.ready <- struct{}{}:
	default:
	}
}

func (p *progress) addHandled(id snowflake.ID, clientID string) {
	p.mu.Lock()
	p.handled[id] = append(p.handled[id], clientID)
	if p.here[id] == nil {
		p.here[id] = map[string]bool{}
	}
	p.here[id][clientID] = true
	p.mu.Unlock()
	p.poke()
}

// handledHere reports whether the term handled clientID for message id.
func (p *progress) handledHere(id snowflake.ID, clientID string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.here[id][clientID]
}

func (p *progress) done(id snowflake.ID) {
	p.mu.Lock()
	p.doneIDs = append(p.doneIDs, id)
	delete(p.here, id)
	p.mu.Unlock()
	p.poke()
}

// take removes and returns up to max entries (devices and messages); a
// message done drops its device entries (removing the message removes
// them).
func (p *progress) take(max int) (Progress, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out Progress
	n := 0
	for len(p.doneIDs) > 0 && n < max {
		id := p.doneIDs[0]
		p.doneIDs = p.doneIDs[1:]
		delete(p.handled, id)
		out.Done = append(out.Done, id)
		n++
	}
	for id, cids := range p.handled {
		if n >= max {
			break
		}
		k := min(len(cids), max-n)
		if out.Handled == nil {
			out.Handled = map[snowflake.ID][]string{}
		}
		out.Handled[id] = cids[:k:k]
		if k == len(cids) {
			delete(p.handled, id)
		} else {
			p.handled[id] = cids[k:]
		}
		n += k
	}
	return out, n > 0
}

// putBack returns entries whose commit failed, to be tried again.
func (p *progress) putBack(q Progress) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.doneIDs = append(q.Done, p.doneIDs...)
	for id, cids := range q.Handled {
		p.handled[id] = append(cids, p.handled[id]...)
	}
}

// progressLoop commits the term's progress: once there is some, after
// ProgressEvery (so that one command carries many records), and again
// after ProgressEvery while a commit fails. An idle sender does not wake.
func (t *term) progressLoop() {
	timer := time.NewTimer(0)
	<-timer.C
	for {
		select {
		case <-t.prog.ready:
		case <-t.ctx.Done():
			return
		}
		timer.Reset(t.s.cfg.ProgressEvery)
		select {
		case <-timer.C:
		case <-t.ctx.Done():
			return
		}
		if !t.flush(t.ctx) {
			t.prog.poke() // try again
		}
	}
}

// flush commits what was collected, in commands of bounded size. What
// does not commit stays for the next flush (the final one at the end of
// the term is best effort: a record lost there is a push the next leader
// sends again).
func (t *term) flush(ctx context.Context) bool {
	for {
		p, ok := t.prog.take(maxProgressPerCommand)
		if !ok {
			return true
		}
		if err := t.s.deps.Outbox.RecordProgress(ctx, p); err != nil {
			t.prog.putBack(p)
			if ctx.Err() == nil {
				t.s.log.Warn("push: recording progress failed; will retry", "err", err)
			}
			return false
		}
	}
}
