package push

import (
	"container/heap"
	"container/list"
	"sync"
	"time"
)

// retryWait holds a term's pushes waiting for their next attempt: one
// timer for all of them rather than a goroutine each, and bounded per
// platform together with the platform's queue (MaxQueue counts both),
// so that a long provider outage cannot pile retries up without limit.
// When a platform is over the bound the retries that have waited
// longest are given up first (overflow): they are the oldest pushes.
type retryWait struct {
	t    *term
	wake chan struct{}

	mu    sync.Mutex
	due   retryHeap
	order map[string]*list.List // per platform, *retryItem in arrival order
}

type retryItem struct {
	j    *job
	at   time.Time // monotonic: the sender's clock may be a test's
	idx  int       // in due
	elem *list.Element
}

func newRetryWait(t *term) *retryWait {
	return &retryWait{t: t, wake: make(chan struct{}, 1), order: map[string]*list.List{}}
}

// add makes j wait d before it is queued again. It is called from the
// send of j, so j is still counted by its queue until the batch is
// acknowledged.
func (r *retryWait) add(j *job, d time.Duration) {
	p := string(j.reg.Device.Platform)
	it := &retryItem{j: j, at: time.Now().Add(d)}
	r.mu.Lock()
	heap.Push(&r.due, it)
	l := r.order[p]
	if l == nil {
		l = list.New()
		r.order[p] = l
	}
	it.elem = l.PushBack(it)
	evicted := r.makeRoomLocked(p, -1) // j itself is queued still
	r.mu.Unlock()
	r.t.overflowed(p, evicted)
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// makeRoom gives up waiting retries of platform p until n more pushes fit
// under the bound with those queued.
func (r *retryWait) makeRoom(p string, n int) {
	r.mu.Lock()
	evicted := r.makeRoomLocked(p, n)
	r.mu.Unlock()
	r.t.overflowed(p, evicted)
}

func (r *retryWait) makeRoomLocked(p string, n int) []*job {
	l := r.order[p]
	if l == nil || l.Len() == 0 {
		return nil
	}
	queued, _ := r.t.queues.Len(p)
	var evicted []*job
	for l.Len() > 0 && queued+l.Len()+n > r.t.s.cfg.MaxQueue {
		it := l.Remove(l.Front()).(*retryItem)
		heap.Remove(&r.due, it.idx)
		evicted = append(evicted, it.j)
	}
	r.t.s.sm.retryWaiting.WithLabelValues(p).Set(float64(l.Len()))
	return evicted
}

// run queues the retries that are due, until the term ends; what still
// waits then is the next leader's to send.
func (r *retryWait) run() {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	defer r.clearGauges()
	for {
		ready, next := r.takeDue(time.Now())
		for _, j := range ready {
			if err := r.t.queues.Push(string(j.reg.Device.Platform), j); err != nil {
				r.t.finish(j.msg, "") // closed: the term is over
			}
		}
		timer.Reset(next)
		select {
		case <-timer.C:
		case <-r.wake:
		case <-r.t.ctx.Done():
			return
		}
	}
}

// takeDue removes the retries due at now; next is how long until the
// next one.
func (r *retryWait) takeDue(now time.Time) (ready []*job, next time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	touched := map[string]bool{}
	for len(r.due) > 0 && !r.due[0].at.After(now) {
		it := heap.Pop(&r.due).(*retryItem)
		p := string(it.j.reg.Device.Platform)
		r.order[p].Remove(it.elem)
		touched[p] = true
		ready = append(ready, it.j)
	}
	for p := range touched {
		r.t.s.sm.retryWaiting.WithLabelValues(p).Set(float64(r.order[p].Len()))
	}
	if len(r.due) == 0 {
		return ready, time.Hour
	}
	return ready, r.due[0].at.Sub(now)
}

// clearGauges: a deposed leader has no retries waiting (the next leader
// redoes them from the outbox).
func (r *retryWait) clearGauges() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for p := range r.order {
		r.t.s.sm.retryWaiting.WithLabelValues(p).Set(0)
	}
}

// retryHeap orders retries by due time.
type retryHeap []*retryItem

func (h retryHeap) Len() int           { return len(h) }
func (h retryHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h retryHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].idx, h[j].idx = i, j
}
func (h *retryHeap) Push(x any) {
	it := x.(*retryItem)
	it.idx = len(*h)
	*h = append(*h, it)
}
func (h *retryHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return it
}
