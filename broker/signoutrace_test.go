package broker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/internal/wire"
)

// racingVerifier is fakeVerifier whose first check of a token of user
// race succeeds, and then, before CONNECT goes on, the user is signed
// out everywhere (or deleted, suspended, their session ended): from then
// on their tokens are refused and onRevoke runs, as the auth service's
// commit callback does (the node's DisconnectUser).
type racingVerifier struct {
	fakeVerifier
	race     string
	onRevoke func(uid string)

	mu      sync.Mutex
	revoked map[string]bool
}

func (v *racingVerifier) VerifyAccessToken(tok string) (wire.Principal, error) {
	p, err := v.fakeVerifier.VerifyAccessToken(tok)
	if err != nil {
		return p, err
	}
	v.mu.Lock()
	revoked := v.revoked[p.UserID]
	first := !revoked && p.UserID == v.race
	if first {
		v.revoked[p.UserID] = true
	}
	onRevoke := v.onRevoke
	v.mu.Unlock()
	if revoked {
		return wire.Principal{}, fmt.Errorf("fake: signed out: %w", wire.ErrBadToken)
	}
	if first {
		onRevoke(p.UserID)
	}
	return p, nil
}

// A sign-out everywhere (or a password change, a suspension, a
// deletion) that commits between a CONNECT's token check and the end of
// its handshake closed the user's connections without that one (not in
// the user index yet), so a connection made with a token refused from
// then on stayed open for good. It is closed (DISCONNECT 0x98) as the
// others were; a connection of another user is left alone.
func TestConnectRacingSignOutEverywhereIsClosed(t *testing.T) {
	v := &racingVerifier{race: "alice", revoked: map[string]bool{}}
	e := startBrokerWith(t, nil, func(d *Deps) { d.Verifier = v })
	v.mu.Lock()
	v.onRevoke = e.b.DisconnectUser
	v.mu.Unlock()
	bob := mustV5(t, e.addr, "bob", "phone")
	alice := mustV5(t, e.addr, "alice", "phone") // the CONNACK says success
	testutil.CheckFor(t, waitFor, 5*time.Millisecond, func() error {
		if code, ok := alice.ServerDisconnect(); !ok || code != 0x98 {
			return errors.New("alice's connection, whose token the sign-out refused, is still open")
		}
		return nil
	})
	if _, ok := bob.ServerDisconnect(); ok {
		t.Fatal("bob's connection was closed")
	}
}

// The connection closed because its token was refused at the end of its
// handshake was reported to presence as connected (and then as
// disconnected), so a user who was signed out everywhere, suspended or
// deleted was shown online to their contacts for the grace period and
// their last seen moved to the refused attempt. Presence hears nothing of
// such a connection, and nothing it publishes meanwhile (a heartbeat)
// counts: it is no user's.
func TestConnectRefusedAtTheEndOfTheHandshakeIsNotShownOnline(t *testing.T) {
	v := &racingVerifier{race: "alice", revoked: map[string]bool{}}
	e := startBrokerWith(t, nil, func(d *Deps) { d.Verifier = v })
	v.mu.Lock()
	v.onRevoke = e.b.DisconnectUser
	v.mu.Unlock()
	bob := mustV5(t, e.addr, "bob", "phone")
	alice := mustV5(t, e.addr, "alice", "phone")
	_, _ = alice.Publish(context.Background(), &paho.Publish{Topic: "presence/alice/heartbeat", QoS: 0})
	testutil.CheckFor(t, waitFor, 5*time.Millisecond, func() error {
		// The server closes it with DISCONNECT 0x98; paho ends the
		// connection on a write that fails as the server closes (its
		// PINGREQ: "writev: connection reset by peer") before it reads
		// the DISCONNECT, so either counts as closed here, and the
		// server's own count below says it closed it.
		if _, ok := alice.ServerDisconnect(); !ok && alice.ConnectionError() == nil {
			return errors.New("alice's connection, whose token the sign-out refused, is still open")
		}
		if n := e.b.nconn.Load(); n != 1 {
			return fmt.Errorf("%d connections counted, want 1 (bob's)", n)
		}
		return nil
	})
	for _, ev := range e.pres.get() {
		if strings.Contains(ev, "alice") {
			t.Errorf("presence was told %q of alice's refused connection; events: %q", ev, e.pres.get())
		}
	}
	_ = bob
}
