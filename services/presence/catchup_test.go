package presence

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgechat/edgechat/internal/httpapi"
	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/internal/wire"
)

// lagging is a node's view of the social graph that has not yet applied
// what another node committed (alice just put carol in her contacts):
// the read barrier applies it.
type lagging struct {
	mu       sync.Mutex
	pending  map[string]bool // committed, not applied here yet
	applied  pairs
	barriers int
	err      error // the barrier's answer: no leader reachable
}

func (l *lagging) IsContact(owner, contact string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.applied[owner+">"+contact]
}

func (l *lagging) barrier(context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.barriers++
	if l.err != nil {
		return l.err
	}
	for k := range l.pending {
		l.applied[k] = true
	}
	return nil
}

// GET /presence/{uid} answers as the broker does for presence/{uid}: a
// refusal that rests on state another node may have changed a moment ago
// (a contact just made through another node) is made only once this
// node has applied what the cluster committed; a visible answer costs no
// wait.
func TestStatusRefusalCatchesUpFirst(t *testing.T) {
	g := &lagging{pending: map[string]bool{"alice>carol": true}, applied: pairs{"alice>bob": true}}
	s, err := New(Config{Interval: interval, Grace: grace}, Deps{
		Publisher: &recorder{}, Social: Social{Contacts: g}, Logger: testutil.QuietLogger(),
		Registerer: prometheus.NewRegistry(), Clock: newTestClock(), ReadBarrier: g.barrier,
	})
	if err != nil {
		t.Fatal(err)
	}
	if w := serve(t, s, &wire.Principal{UserID: "bob"}, "GET", "/presence/alice"); w.Code != http.StatusOK || g.barriers != 0 {
		t.Fatalf("bob, a contact of alice: %d %s after %d barriers, want 200 and none", w.Code, w.Body, g.barriers)
	}
	if w := serve(t, s, &wire.Principal{UserID: "carol"}, "GET", "/presence/alice"); w.Code != http.StatusOK {
		t.Errorf("carol, made a contact of alice through another node a moment ago: %d %s, want 200", w.Code, w.Body)
	}
	if w := serve(t, s, &wire.Principal{UserID: "eve"}, "GET", "/presence/alice"); w.Code != http.StatusForbidden || errCode(t, w) != httpapi.CodeForbidden {
		t.Errorf("eve, no contact even after catching up: %d %s, want 403", w.Code, w.Body)
	}
	g.err = errors.New("no leader")
	if w := serve(t, s, &wire.Principal{UserID: "eve"}, "GET", "/presence/alice"); w.Code != http.StatusServiceUnavailable || errCode(t, w) != httpapi.CodeUnavailable || w.Header().Get("Retry-After") == "" {
		t.Errorf("eve on a node that cannot catch up: %d %s, want 503 unavailable with Retry-After", w.Code, w.Body)
	}
}
