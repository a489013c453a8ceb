package broker

import (
	"sync"

	mqtt "github.com/mochi-mqtt/server/v2"
)

// DefaultOfflineSessionsPerUser is how many persistent sessions a user
// keeps offline on a node: a phone, a tablet, a few computers and
// browsers.
const DefaultOfflineSessionsPerUser = 8

// Persistent sessions left offline, by user.
//
// A session left offline queues every QoS 1 delivery for its client, up
// to mochi's MaximumInflight (1,024) copies of up to a chat envelope
// each, for SessionExpiry (a day). One per client ID, and a user picks
// the device part of theirs: a user who connected from a thousand device
// IDs held a thousand queues, every message they sent or received copied
// into each (gigabytes from one account). Past OfflineSessionsPerUser
// the session offline longest ends, as one whose queue overflowed does
// (lostOfflineSession): its client comes back to session present 0,
// subscribes again and syncs, missing nothing.
type offlineSessions struct {
	mu     sync.Mutex
	byUser map[string][]*mqtt.Client // in the order they went offline
}

// sessionLeftOffline records that cl, a connection of uid whose session
// is kept, ended, and ends uid's sessions offline longest past the cap.
func (b *Broker) sessionLeftOffline(uid string, cl *mqtt.Client) {
	if cl.Net.Inline || isLinkID(cl.ID) {
		return
	}
	o := &b.offline
	o.mu.Lock()
	if o.byUser == nil {
		o.byUser = make(map[string][]*mqtt.Client)
	}
	// Only sessions still offline count: a client that came back (a
	// newer connection of the same ID took the session over) or whose
	// session ended since is dropped from the list here.
	list := o.byUser[uid]
	kept := make([]*mqtt.Client, 0, len(list)+1)
	for _, c := range list {
		if c != cl && b.stillOffline(c) {
			kept = append(kept, c)
		}
	}
	if cur, ok := b.srv.Clients.Get(cl.ID); ok && cur == cl && !cl.IsTakenOver() {
		kept = append(kept, cl) // not a takeover: the session waits offline
	}
	var over []*mqtt.Client
	if n := len(kept) - b.cfg.OfflineSessionsPerUser; n > 0 {
		over = kept[:n:n]
		kept = kept[n:]
	}
	if len(kept) == 0 {
		delete(o.byUser, uid)
	} else {
		o.byUser[uid] = kept
	}
	o.mu.Unlock()
	for _, c := range over {
		if !c.LoseSession() {
			continue
		}
		b.m.refused.WithLabelValues("session_cap").Inc()
		b.log.Info("a user kept more persistent sessions offline than allowed: the oldest ended, so that its client syncs when it comes back",
			"user", uid, "client", c.ID, "cap", b.cfg.OfflineSessionsPerUser)
		b.srv.EndSession(c)
	}
}

// stillOffline tells whether c's session is the client ID's current one
// and offline.
func (b *Broker) stillOffline(c *mqtt.Client) bool {
	cur, ok := b.srv.Clients.Get(c.ID)
	return ok && cur == c && c.Closed()
}

// offlineSessions are uid's sessions waiting offline on this node.
func (b *Broker) offlineSessions(uid string) []*mqtt.Client {
	o := &b.offline
	o.mu.Lock()
	list := append([]*mqtt.Client(nil), o.byUser[uid]...)
	o.mu.Unlock()
	out := list[:0]
	for _, c := range list {
		if b.stillOffline(c) {
			out = append(out, c)
		}
	}
	return out
}

// pruneOffline drops from uid's list the sessions no longer offline (a
// client came back, a session ended or expired), so that the list holds
// no client after its session.
func (b *Broker) pruneOffline(uid string) {
	o := &b.offline
	o.mu.Lock()
	defer o.mu.Unlock()
	list, ok := o.byUser[uid]
	if !ok {
		return
	}
	kept := list[:0]
	for _, c := range list {
		if b.stillOffline(c) {
			kept = append(kept, c)
		}
	}
	clear(list[len(kept):])
	if len(kept) == 0 {
		delete(o.byUser, uid)
	} else {
		o.byUser[uid] = kept
	}
}
