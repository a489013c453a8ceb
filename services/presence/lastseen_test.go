package presence

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/internal/wire"
)

// retainedMap is a RetainedStore of a few retained messages.
type retainedMap map[string][]byte

func (m retainedMap) Retained(topic string) ([]byte, bool) { p, ok := m[topic]; return p, ok }
func (m retainedMap) EachRetained(fn func(topic string, payload []byte)) {
	for t, p := range m {
		fn(t, p)
	}
}

// The home of an offline user answers GET /presence/{uid} (Status) with
// the lastSeen the cluster retains for the user when it knows no later
// one itself. Before, a home that had restarted (its broker took the
// retained copies back from the other nodes, its state machine knew
// nothing) answered a zero lastSeen ("0001-01-01T00:00:00Z") for every
// offline user while presence/{uid} said when they were last seen; and
// a node that became a user's home again after a membership change
// answered the lastSeen it had kept from its earlier turn, older than
// the one the user's home meanwhile published: last seen went back.
func TestStatusOfAnOfflineUserAnswersTheRetainedLastSeen(t *testing.T) {
	clk := newTestClock()
	seen := time.Date(2026, 11, 28, 11, 0, 0, 0, time.UTC)
	payload, _ := json.Marshal(wire.Presence{Status: wire.StatusOffline, LastSeen: seen})
	store := retainedMap{"presence/bob": payload}
	s, err := New(Config{Interval: interval, Grace: grace}, Deps{
		Publisher: &recorder{}, Logger: testutil.QuietLogger(), Clock: clk, Retained: store,
	})
	if err != nil {
		t.Fatal(err)
	}
	if p := s.Status("bob"); p.Status != wire.StatusOffline || !p.LastSeen.Equal(seen) {
		t.Fatalf("Status(bob) on a restarted home = %+v, want offline last seen %v (the retained copy)", p, seen)
	}
	// This node homed bob before: it kept an older lastSeen of its own.
	s.mu.Lock()
	s.gone["bob"] = seen.Add(-time.Hour).Unix()
	s.mu.Unlock()
	if p := s.Status("bob"); !p.LastSeen.Equal(seen) {
		t.Fatalf("Status(bob) with an older lastSeen kept here = %+v, want last seen %v (the later, retained one)", p, seen)
	}
	// A later lastSeen of its own wins over the retained copy.
	later := seen.Add(time.Minute)
	s.mu.Lock()
	s.gone["bob"] = later.Unix()
	s.mu.Unlock()
	if p := s.Status("bob"); !p.LastSeen.Equal(later) {
		t.Fatalf("Status(bob) = %+v, want last seen %v (its own, later)", p, later)
	}
	// Nobody has seen carol: zero.
	if p := s.Status("carol"); p.Status != wire.StatusOffline || !p.LastSeen.IsZero() {
		t.Fatalf("Status(carol) = %+v, want offline with zero lastSeen", p)
	}
}

// A user a new home adopts as inactive (the previous home died or the
// membership changed) and who is gone goes offline last seen when the
// previous home last saw them (the retained inactive status says when:
// any later heartbeat would have made them online), not when the new
// home adopted them, which may be long after (a home restarted after an
// outage). Before, the offline status carried the adoption time.
func TestAdoptedInactiveUserKeepsTheirLastSeen(t *testing.T) {
	h := newHarness(t)
	seen := h.clk.Now().Add(-time.Hour)
	h.s.adopt("bob", wire.Presence{Status: wire.StatusInactive, LastSeen: seen})
	if p := h.s.Status("bob"); p.Status != wire.StatusInactive || !p.LastSeen.Equal(seen) {
		t.Fatalf("adopted bob: %+v, want inactive last seen %v", p, seen)
	}
	h.advance(interval + grace)
	h.expect("bob:offline")
	var p wire.Presence
	if err := json.Unmarshal(h.pub.all()[0].Payload, &p); err != nil {
		t.Fatal(err)
	}
	if !p.LastSeen.Equal(seen) {
		t.Fatalf("offline published last seen %v, want %v (before the adoption, at %v)", p.LastSeen, seen, h.clk.Now().Add(-interval-grace))
	}
	if p := h.s.Status("bob"); !p.LastSeen.Equal(seen) {
		t.Fatalf("Status(bob) = %+v, want last seen %v", p, seen)
	}
	// Seen again: the new time.
	h.s.adopt("carol", wire.Presence{Status: wire.StatusInactive, LastSeen: seen})
	h.s.Heartbeat("carol")
	if p := h.s.Status("carol"); !p.LastSeen.Equal(publicTime(h.clk.Now())) || p.Status != wire.StatusOnline {
		t.Fatalf("carol after a heartbeat: %+v, want online now", p)
	}
}
