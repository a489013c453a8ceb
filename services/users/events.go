package users

import (
	"encoding/json"
	"log/slog"
	"sync"

	"github.com/edgechat/edgechat/internal/wire"
)

// Event types published on user/{uid}/events.
const (
	EventGroupCreated       = "group.created"
	EventGroupUpdated       = "group.updated"
	EventGroupMemberAdded   = "group.member_added"
	EventGroupMemberRemoved = "group.member_removed"
	EventGroupRoleChanged   = "group.role_changed"
	EventGroupOwnerChanged  = "group.owner_changed"
)

// GroupEvent is the data of a group event. UID names the member a change
// is about; UIDs replaces it when one request added several members.
type GroupEvent struct {
	GID  string   `json:"gid"`
	UID  string   `json:"uid,omitempty"`
	UIDs []string `json:"uids,omitempty"`
	Role Role     `json:"role,omitempty"`
	By   string   `json:"by"`
	Name string   `json:"name,omitempty"`
}

const (
	// Up to this many recipients are published to on the request path;
	// bigger fan-outs go to the background worker.
	inlineRecipients = 64
	eventQueueLen    = 256
)

type eventJob struct {
	to      []string
	payload []byte
}

// eventQueue publishes events to many users off the request path. The
// queue is bounded; its single worker starts when work arrives and ends
// when the queue is empty, so the service needs no Run. When the queue is
// full the request publishes itself (back-pressure on the writers).
type eventQueue struct {
	pub Publisher
	log *slog.Logger
	q   chan eventJob

	mu      sync.Mutex
	running bool
	idle    *sync.Cond // signalled when the worker stops
}

func newEventQueue(pub Publisher, log *slog.Logger) *eventQueue {
	e := &eventQueue{pub: pub, log: log, q: make(chan eventJob, eventQueueLen)}
	e.idle = sync.NewCond(&e.mu)
	return e
}

// publish sends ev to the events topic of every user in to.
func (e *eventQueue) publish(to []string, typ string, data GroupEvent) {
	if e.pub == nil || len(to) == 0 {
		return
	}
	payload, err := json.Marshal(wire.Event{Type: typ, Data: data})
	if err != nil {
		e.log.Error("encoding event", "type", typ, "err", err)
		return
	}
	job := eventJob{to: to, payload: payload}
	if len(to) <= inlineRecipients {
		e.run(job)
		return
	}
	select {
	case e.q <- job:
	default:
		e.run(job)
		return
	}
	e.mu.Lock()
	if !e.running {
		e.running = true
		go e.worker()
	}
	e.mu.Unlock()
}

func (e *eventQueue) worker() {
	for {
		select {
		case job := <-e.q:
			e.run(job)
			continue
		default:
		}
		e.mu.Lock()
		if len(e.q) == 0 { // a job queued after the check above would be lost otherwise
			e.running = false
			e.idle.Broadcast()
			e.mu.Unlock()
			return
		}
		e.mu.Unlock()
	}
}

func (e *eventQueue) run(job eventJob) {
	failed := 0
	for _, uid := range job.to {
		if err := e.pub.Publish(wire.Outbound{Topic: wire.EventsTopic(uid), Payload: job.payload, QoS: 1}); err != nil {
			failed++
		}
	}
	if failed > 0 {
		e.log.Warn("publishing group events", "failed", failed, "recipients", len(job.to))
	}
}

// wait blocks until the background worker has drained the queue.
func (e *eventQueue) wait() {
	e.mu.Lock()
	for e.running {
		e.idle.Wait()
	}
	e.mu.Unlock()
}
