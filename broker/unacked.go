package broker

import (
	"context"
	"maps"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/internal/wire"
)

// Unacknowledged deliveries. A device counts as connected from its
// CONNECT until its connection ends, and a connection can be open on the
// server and dead on the phone: the phone lost its network without
// closing it (a lift, a tunnel), and the server keeps it until the
// keepalive runs out (1.5 x keepalive: 90 s for 60 s). A chat message
// delivered then goes into its socket and never reaches the app, and the
// push bridge, which pushes only devices that are not connected, did not
// push it either: the user was never notified. The node that holds the
// connection is the one that can tell: the device does not acknowledge
// the QoS 1 (or 2) delivery. So for each committed chat message it
// delivers at QoS >= 1 to a connected device that may be pushed, it waits
// Config.AckTimeout for the device's PUBACK (PUBCOMP at QoS 2) and tells
// Deps.Unacked of the deliveries not acknowledged by then, or when the
// connection ends first; the push bridge pushes those devices as if they
// were offline (services/push unacked.go). A QoS 0 subscriber cannot
// acknowledge and is not watched.

// UnackedDeliveries hears of chat messages delivered to a connected
// device that the device did not acknowledge (services/push, through the
// node).
type UnackedDeliveries interface {
	// Watch reports whether deliveries to uid's devices are worth
	// watching (uid may have a push device); O(1), it never blocks.
	Watch(uid string) bool
	// Unacked is told of the messages (IDs) delivered to clientID and
	// not acknowledged; it must not block.
	Unacked(clientID string, ids []snowflake.ID)
}

// maxAckWatched bounds the deliveries watched at once on a node (past it
// new ones are not watched: their devices are held back as connected, as
// before there was a watch; counted in edgechat_push_ack_unwatched_total
// and logged at most once per fullWarnEvery).
const maxAckWatched = 1 << 20

const fullWarnEvery = time.Minute

// ackWatch is the node's watch of unacknowledged deliveries.
type ackWatch struct {
	b       *Broker
	to      UnackedDeliveries
	timeout time.Duration
	limit   int // maxAckWatched (a test's smaller one)

	lastFullWarn time.Time // under mu

	mu    sync.Mutex
	conns map[*mqtt.Client]map[uint16]snowflake.ID // pending by packet ID
	moved map[*mqtt.Client]movedSession            // ended connections whose session a live one took over (movedTo)
	fifo  []ackDue                                 // in due order (the timeout is constant)
	head  int
}

type ackDue struct {
	cl  *mqtt.Client
	pid uint16
	id  snowflake.ID
	due time.Time
}

// movedSession is the connection that took an ended one's session over,
// and when the ended one's last delivery was due at the latest.
type movedSession struct {
	next  *mqtt.Client
	until time.Time
}

func newAckWatch(b *Broker, to UnackedDeliveries, timeout time.Duration) *ackWatch {
	if to == nil || timeout <= 0 {
		return nil
	}
	return &ackWatch{b: b, to: to, timeout: timeout, limit: maxAckWatched, conns: map[*mqtt.Client]map[uint16]snowflake.ID{}}
}

// delivered notes a QoS >= 1 delivery (OnQosPublish: stored among the
// session's inflight messages, sent or held back by Receive Maximum).
func (w *ackWatch) delivered(cl *mqtt.Client, pk packets.Packet) {
	id, ok := w.watchable(cl, pk)
	if !ok {
		return
	}
	due := time.Now().Add(w.timeout)
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.fifo)-w.head >= w.limit {
		w.b.m.ackUnwatched.Inc()
		if now := time.Now(); now.Sub(w.lastFullWarn) >= fullWarnEvery {
			w.lastFullWarn = now
			w.b.log.Warn("push: the watch of unacknowledged deliveries is full; deliveries are not watched until it drains (a half-open device is not pushed for them)",
				"watched", w.limit, "unwatched_total", "edgechat_push_ack_unwatched_total")
		}
		return
	}
	m := w.conns[cl]
	if m == nil {
		m = map[uint16]snowflake.ID{}
		w.conns[cl] = m
	}
	m[pk.PacketID] = id
	w.fifo = append(w.fifo, ackDue{cl: cl, pid: pk.PacketID, id: id, due: due})
}

// watchable returns the ID of the committed chat message pk delivers to
// cl, a live connection of a user who may be pushed for it.
func (w *ackWatch) watchable(cl *mqtt.Client, pk packets.Packet) (snowflake.ID, bool) {
	if pk.FixedHeader.Type != packets.Publish || cl.Net.Inline || cl.Net.Conn == nil || cl.Closed() {
		return 0, false
	}
	var idProp, from string
	for _, p := range pk.Properties.User {
		switch p.Key {
		case "id":
			idProp = p.Val
		case "from":
			from = p.Val
		}
	}
	if idProp == "" || from == "" {
		return 0, false // not a committed chat message
	}
	id, err := snowflake.Parse(idProp)
	if err != nil {
		return 0, false
	}
	ci := w.b.connOf(cl)
	if ci == nil || ci.p.UserID == "" || ci.p.Link != "" || ci.p.UserID == from || !w.to.Watch(ci.p.UserID) {
		return 0, false // a copy of the user's own message is never pushed
	}
	if pk.TopicName != "" && !wire.ParseTopic(pk.TopicName).Kind.Archived() {
		return 0, false // (an outbound topic alias may hide the name)
	}
	if !w.watchGroup(ci.p.UserID, pk, id) {
		return 0, false // a member of a large group the message can never push (unackedgroup.go)
	}
	return id, true
}

// dropped tells at once of a delivery to a live connection dropped
// because its session's store of unacknowledged deliveries is full
// (mochi's MaximumInflight; OnPublishDropped): never stored, it was
// never watched, and a device that takes its deliveries without
// acknowledging them (its app suspended, its network gone under the
// open connection) got neither the message nor a push. The node closes
// such a connection so that its client syncs (missedStored); the push
// is what tells the user meanwhile. A delivery dropped for another
// reason was stored, and is watched already.
func (w *ackWatch) dropped(cl *mqtt.Client, pk packets.Packet) {
	if cl.State.Inflight.Len() < int(w.b.srv.Options.Capabilities.MaximumInflight) {
		return
	}
	if id, ok := w.watchable(cl, pk); ok {
		w.to.Unacked(cl.ID, []snowflake.ID{id})
	}
}

// completed notes the end of an exchange with packet ID pid
// (OnQosComplete). mochi tells so of the client's PUBACK (PUBCOMP) of a
// delivery, once the delivery has left the session's inflight messages,
// and also of the server's own acknowledgement of the client's publish,
// whose packet ID the client chose and may equal a delivery's: a
// delivery still inflight under pid is not the one that completed.
func (w *ackWatch) completed(cl *mqtt.Client, pid uint16) {
	w.mu.Lock()
	id, ok := w.conns[cl][pid]
	w.mu.Unlock()
	if !ok {
		return // nothing watched: no look-up
	}
	if _, inflight := cl.State.Inflight.Get(pid); inflight {
		return
	}
	w.mu.Lock()
	if m := w.conns[cl]; m != nil && m[pid] == id {
		delete(m, pid)
		if len(m) == 0 {
			delete(w.conns, cl)
		}
	}
	w.mu.Unlock()
}

// ended tells of what a connection that ended never acknowledged,
// unless a new connection of the client ID took its session over and
// inherited those deliveries (a phone that reconnected, clean start 0,
// before the server saw its old connection die): mochi resends them on
// the new connection, so they are watched there, due when they were
// (movedTo). A clean start discards the session, and what it held is
// told at once.
func (w *ackWatch) ended(cl *mqtt.Client) {
	w.mu.Lock()
	m := w.conns[cl]
	delete(w.conns, cl)
	w.mu.Unlock()
	if len(m) == 0 {
		return
	}
	// The takeover that ended cl may still be under way: Successor waits
	// for it. A successor that ended too (it took the session, then lost
	// its connection) hands it on, or is not connected: told at once.
	next := cl.Successor()
	for next != nil && next.Closed() {
		next = next.Successor()
	}
	if next != nil {
		w.movedTo(cl, next, m)
		return
	}
	ids := make([]snowflake.ID, 0, len(m))
	for _, id := range m {
		ids = append(ids, id)
	}
	w.to.Unacked(cl.ID, ids)
}

// movedTo watches on next, which took cl's session over, the deliveries
// pending on cl (by packet ID) that next still holds unacknowledged (it
// keeps the session's packet IDs); one it acknowledged already (mochi
// resent it before cl's end was heard of) is done. Each stays due when
// it was: the push bridge waits for a device's report only so long after
// the commit. cl's entries in the due order lead to next (holder) until
// the last of them is due.
func (w *ackWatch) movedTo(cl, next *mqtt.Client, pending map[uint16]snowflake.ID) {
	for pid, id := range pending {
		if !holds(next, pid, id) {
			delete(pending, pid)
		}
	}
	if len(pending) == 0 {
		return
	}
	until := time.Now().Add(w.timeout)
	w.mu.Lock()
	defer w.mu.Unlock()
	m := w.conns[next]
	if m == nil {
		m = map[uint16]snowflake.ID{}
		w.conns[next] = m
	}
	maps.Copy(m, pending)
	if w.moved == nil {
		w.moved = map[*mqtt.Client]movedSession{}
	}
	w.moved[cl] = movedSession{next: next, until: until}
}

// holds reports whether cl holds the delivery of message id under
// packet ID pid, not yet acknowledged.
func holds(cl *mqtt.Client, pid uint16, id snowflake.ID) bool {
	pk, ok := cl.State.Inflight.Get(pid)
	if !ok || pk.FixedHeader.Type != packets.Publish {
		return ok // at QoS 2, once received (PUBREC): its PUBREL until the PUBCOMP
	}
	for _, p := range pk.Properties.User {
		if p.Key == "id" {
			return p.Val == id.String()
		}
	}
	return false
}

// holder is the connection whose pending deliveries hold d, still
// unacknowledged: d's own, or the one its session moved on to; cl nil
// when none does. Under mu.
func (w *ackWatch) holder(d ackDue) (cl *mqtt.Client, m map[uint16]snowflake.ID) {
	for cl = d.cl; cl != nil; cl = w.moved[cl].next {
		if m = w.conns[cl]; m != nil {
			if id, ok := m[d.pid]; ok && id == d.id {
				return cl, m
			}
		}
	}
	return nil, nil
}

// expire tells of the deliveries due by now that are still pending.
func (w *ackWatch) expire(now time.Time) {
	var out map[string][]snowflake.ID
	w.mu.Lock()
	for w.head < len(w.fifo) && !w.fifo[w.head].due.After(now) {
		d := w.fifo[w.head]
		w.fifo[w.head] = ackDue{}
		w.head++
		cl, m := w.holder(d)
		if cl == nil {
			continue // acknowledged (and maybe the ID used again since)
		}
		delete(m, d.pid)
		if len(m) == 0 {
			delete(w.conns, cl)
		}
		if out == nil {
			out = map[string][]snowflake.ID{}
		}
		out[cl.ID] = append(out[cl.ID], d.id)
	}
	for cl, mv := range w.moved {
		if mv.until.Before(now) {
			delete(w.moved, cl) // its entries were all due by then
		}
	}
	if w.head > 1024 && w.head > len(w.fifo)/2 {
		w.fifo = append(w.fifo[:0], w.fifo[w.head:]...)
		w.head = 0
	}
	w.mu.Unlock()
	for cid, ids := range out {
		w.to.Unacked(cid, ids)
	}
}

// run expires deliveries until ctx ends, checking a few times per
// timeout (at least every second).
func (w *ackWatch) run(ctx context.Context) {
	every := min(max(w.timeout/5, 10*time.Millisecond), time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			w.expire(now)
		}
	}
}
