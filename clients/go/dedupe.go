package edgechat

import "sync"

// idSet remembers the last cap IDs it was given (FIFO eviction). Live
// delivery and catch-up sync overlap by design, so every message passes
// through it before OnMessage (LESSONS.md #9). Not safe for concurrent
// use: only the dispatcher goroutine touches it.
type idSet struct {
	cap  int
	ring []string
	next int
	m    map[string]struct{}
}

func newIDSet(capacity int) *idSet {
	if capacity < 1 {
		capacity = 1
	}
	return &idSet{cap: capacity, ring: make([]string, 0, capacity), m: make(map[string]struct{}, capacity)}
}

// Add records id and reports whether it was new.
func (s *idSet) Add(id string) bool {
	if _, ok := s.m[id]; ok {
		return false
	}
	if len(s.ring) < s.cap {
		s.ring = append(s.ring, id)
	} else {
		delete(s.m, s.ring[s.next])
		s.ring[s.next] = id
		s.next = (s.next + 1) % s.cap
	}
	s.m[id] = struct{}{}
	return true
}

// Has reports whether id is remembered.
func (s *idSet) Has(id string) bool { _, ok := s.m[id]; return ok }

// Len is the number of remembered IDs.
func (s *idSet) Len() int { return len(s.m) }

// eventQueue is an unbounded FIFO between the MQTT router (which must
// never block) and the dispatcher goroutine that runs the callbacks.
type eventQueue struct {
	mu     sync.Mutex
	items  []event
	notify chan struct{} // capacity 1: "there is something"
}

func newEventQueue() *eventQueue { return &eventQueue{notify: make(chan struct{}, 1)} }

func (q *eventQueue) push(e event) {
	q.mu.Lock()
	q.items = append(q.items, e)
	q.mu.Unlock()
	select {
	case q.notify <- struct{}{}:
	default:
	}
}

// drain takes everything queued so far.
func (q *eventQueue) drain() []event {
	q.mu.Lock()
	items := q.items
	q.items = nil
	q.mu.Unlock()
	return items
}

type eventKind int

const (
	evMessage eventKind = iota
	evTyping
	evRead // my read cursor moved (conversation.read)
	evReceipt
	evPresence
	evEvent
	evConn
	evSignedOut
	evTakenOver // another client took this client ID (OnTakenOver)
	evSyncEnd   // a catch-up sync (epoch) has queued everything it found
	evBarrier   // closes done once everything before it was dispatched; for tests and Sync
)

type event struct {
	kind      eventKind
	msg       Message
	fromSync  bool
	typing    TypingNotice
	read      ReadState
	receipt   Receipt
	uid       string
	presence  Presence
	raw       []byte
	connected bool
	err       error
	done      chan struct{}
	// epoch: a live message's count of catch-up syncs started when it
	// was queued; evSyncEnd's, the number of the sync that ended.
	epoch uint64
}
