package push

import (
	"container/heap"
	"slices"
	"sync"
	"time"
)

// ackWait holds a term's messages whose connected devices wait for their
// acknowledgement (SenderConfig.AckTimeout): one schedule by ack deadline
// woken by one timer, and by Sender.Unacked, rather than a goroutine and
// a timer per message (a goroutine each held every message to a
// connected device from its grace period's end to its ack deadline, 8 s
// by default: 8,000 goroutines at 1,000 messages/s). The decisions are
// made by a few workers. A message is at any time in one place: deciding
// (execute or a worker), or waiting here.
type ackWait struct {
	t    *term
	wake chan struct{}
	work chan ackTurn

	mu    sync.Mutex
	due   ackHeap
	woken []*message // waiting, reported unacknowledged since the loop looked
}

// ackTurn is a message's waiting devices to decide again; final: at the
// deadline (none waits longer).
type ackTurn struct {
	m     *message
	final bool
}

func newAckWait(t *term) *ackWait {
	return &ackWait{t: t, wake: make(chan struct{}, 1), work: make(chan ackTurn)}
}

func (a *ackWait) poke() {
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// add makes m wait for the acknowledgements of its deferred devices, or
// its deadline; a report heard while it was being decided wakes it now.
func (a *ackWait) add(m *message) {
	a.mu.Lock()
	if m.ackAt.IsZero() {
		// Monotonic, from the sender's clock once (as a timer would be):
		// the sender's clock may be a test's.
		m.ackAt = time.Now().Add(max(m.ackDeadline.Sub(a.t.s.now()), 0))
	}
	heap.Push(&a.due, m)
	if m.ackWoken {
		a.woken = append(a.woken, m)
	}
	a.mu.Unlock()
	a.poke()
}

// wakeUp notes that an unacknowledged delivery of m was recorded: m is
// decided again now if it waits, as soon as it waits otherwise.
func (a *ackWait) wakeUp(m *message) {
	a.mu.Lock()
	if m.ackWoken {
		a.mu.Unlock()
		return
	}
	m.ackWoken = true
	if m.ackIdx >= 0 {
		a.woken = append(a.woken, m)
	}
	a.mu.Unlock()
	a.poke()
}

// take removes from the schedule the messages woken and those at their
// deadline; next is how long until the next deadline.
func (a *ackWait) take(now time.Time) (turns []ackTurn, next time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, m := range a.woken {
		if m.ackIdx < 0 {
			continue
		}
		heap.Remove(&a.due, m.ackIdx)
		m.ackWoken = false
		turns = append(turns, ackTurn{m: m, final: !now.Before(m.ackAt)})
	}
	a.woken = a.woken[:0]
	for len(a.due) > 0 && !a.due[0].ackAt.After(now) {
		m := heap.Pop(&a.due).(*message)
		m.ackWoken = false
		turns = append(turns, ackTurn{m: m, final: true})
	}
	if len(a.due) == 0 {
		return turns, time.Hour
	}
	return turns, a.due[0].ackAt.Sub(now)
}

// run hands the messages woken or at their deadline to the workers,
// until the term ends; what still waits then is the next leader's.
func (a *ackWait) run() {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		turns, next := a.take(time.Now())
		for _, turn := range turns {
			select {
			case a.work <- turn:
			case <-a.t.ctx.Done():
				return
			}
		}
		timer.Reset(next)
		select {
		case <-timer.C:
		case <-a.wake:
		case <-a.t.ctx.Done():
			return
		}
	}
}

func (a *ackWait) worker() {
	for {
		select {
		case turn := <-a.work:
			a.decide(turn.m, turn.final)
		case <-a.t.ctx.Done():
			return
		}
	}
}

// decide decides the devices of m that wait for their acknowledgement:
// each reported unacknowledged is pushed, the others wait again until
// the deadline (final), when they are held back as connected. m is done
// with once none waits.
func (a *ackWait) decide(m *message, final bool) {
	t := a.t
	m.mu.Lock()
	waiting := m.deferred
	m.deferred = nil
	m.mu.Unlock()
	if t.ctx.Err() != nil {
		return
	}
	if final {
		waiting = a.holdBackAcknowledged(m, waiting)
	}
	var users []userPlan
	for _, d := range waiting {
		i := slices.IndexFunc(users, func(u userPlan) bool { return u.uid == d.uid })
		if i < 0 {
			users = append(users, userPlan{uid: d.uid, final: final})
			i = len(users) - 1
		}
		users[i].markOnline(len(users[i].devices)) // connected when first decided
		users[i].devices = append(users[i].devices, d.reg)
	}
	for _, u := range users {
		t.s.decideUser(t, m, u)
	}
	if t.waitAcks(m) {
		return
	}
	t.finish(m, "")
}

// holdBackAcknowledged decides, at m's ack deadline, the waiting devices
// not reported unacknowledged: each is held back as connected (recorded
// handled, verdict connected), and only the reported ones are returned,
// to be decided on the user's registrations and state as at the grace.
// A device not reported by the deadline is held back whatever else
// decideUser would read (it passes connected, so Decide can only say
// expired, blocked, read or connected, and a registration gone is
// handled too: never a push), so reading the user's registrations,
// sign-in, mutes, do-not-disturb and read cursor for it again (a third
// time per message: the plan, the grace, the deadline) decided nothing
// but the label of the decisions metric; one read of its report is
// enough. A read error leaves the device to decideUser, which reads the
// report again and fails as before.
func (a *ackWait) holdBackAcknowledged(m *message, waiting []deferredDevice) []deferredDevice {
	t := a.t
	s := t.s
	reported := waiting[:0:0]
	for _, d := range waiting {
		cid := d.uid + "/" + d.reg.Name
		unacked, err := s.deps.Unacked.Unacked(m.id, cid)
		if err != nil || unacked {
			reported = append(reported, d)
			continue
		}
		s.sm.decided(SkipConnected)
		t.prog.addHandled(m.id, cid)
	}
	return reported
}

// waitAcks puts m in the ack schedule if devices of it wait for their
// acknowledgement, and reports whether it did (the schedule then
// finishes m's hold).
func (t *term) waitAcks(m *message) bool {
	m.mu.Lock()
	waiting := len(m.deferred) > 0
	m.mu.Unlock()
	if !waiting || t.ctx.Err() != nil {
		return false
	}
	t.acks.add(m)
	return true
}

// ackHeap orders waiting messages by ack deadline.
type ackHeap []*message

func (h ackHeap) Len() int { return len(h) }
func (h ackHeap) Less(i, j int) bool {
	if !h[i].ackAt.Equal(h[j].ackAt) {
		return h[i].ackAt.Before(h[j].ackAt)
	}
	return h[i].id < h[j].id
}
func (h ackHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].ackIdx, h[j].ackIdx = i, j
}
func (h *ackHeap) Push(x any) {
	m := x.(*message)
	m.ackIdx = len(*h)
	*h = append(*h, m)
}
func (h *ackHeap) Pop() any {
	old := *h
	m := old[len(old)-1]
	old[len(old)-1] = nil
	m.ackIdx = -1
	*h = old[:len(old)-1]
	return m
}
