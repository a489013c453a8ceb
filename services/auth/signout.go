package auth

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Sign out everywhere ends every session of a user at once, not only at
// their next refresh: besides revoking the refresh families, the
// revocation records when it happened (r/auth/signedout/{uid}), every
// node keeps those times in memory (signedOutSet), and an access token
// of the user issued before is refused from then on, by the API and by
// MQTT CONNECT; the user's live MQTT sessions are closed on every node
// (OnSignedOutEverywhere). A later sign-in gets tokens that work.
const prefixSignedOut = "r/auth/signedout/" // + uid → time (JSON)

// signedOutSet is every node's copy of r/auth/signedout/: consulted on
// every token check, so a map lookup.
// The same set keeps the admin role revocations (demote.go), under
// their own prefix.
type signedOutSet struct {
	prefix string // where the database keeps them
	mu     sync.RWMutex
	m      map[string]time.Time
}

// ErrSignedOutSince refuses a credential issued before the user signed
// out everywhere (a provider's token presented at MQTT CONNECT).
var ErrSignedOutSince = errors.New("auth: signed out everywhere since the token was issued")

func newSignedOutSet() *signedOutSet { return newTimeSet(prefixSignedOut) }

// newTimeSet is a set of per-user times kept under prefix.
func newTimeSet(prefix string) *signedOutSet {
	return &signedOutSet{prefix: prefix, m: map[string]time.Time{}}
}

// get is when uid last signed out everywhere.
func (s *signedOutSet) get(uid string) (time.Time, bool) {
	s.mu.RLock()
	at, ok := s.m[uid]
	s.mu.RUnlock()
	return at, ok
}

// put records a sign-out, keeping the latest.
func (s *signedOutSet) put(uid string, at time.Time) {
	s.mu.Lock()
	if at.After(s.m[uid]) {
		s.m[uid] = at
	}
	s.mu.Unlock()
}

// remove forgets uid (its account was erased).
func (s *signedOutSet) remove(uid string) {
	s.mu.Lock()
	delete(s.m, uid)
	s.mu.Unlock()
}

// load replaces the set with what the database holds (at start and
// after a snapshot restore).
func (s *signedOutSet) load(db *badger.DB) error {
	m, err := loadPrefix[time.Time](db, s.prefix)
	if err != nil {
		return fmt.Errorf("auth: loading %s: %w", s.prefix, err)
	}
	s.mu.Lock()
	s.m = m
	s.mu.Unlock()
	return nil
}

// recordSignOut writes uid's sign-out time (the latest of the stored one
// and at) in the FSM transaction.
func recordSignOut(tx *badger.Txn, uid string, at time.Time) error {
	return recordLatest(tx, prefixSignedOut+uid, at)
}

// recordLatest writes at under key unless the key holds a later time.
func recordLatest(tx *badger.Txn, key string, at time.Time) error {
	var was time.Time
	found, err := getJSON(tx, key, &was)
	if err != nil {
		return err
	}
	if found && !at.After(was) {
		return nil
	}
	return setJSON(tx, key, at)
}

// revokeAllCommitted is the value of a revoke-all step: the step, and
// the sign-out the nodes apply to their in-memory set once it commits.
type revokeAllCommitted struct {
	s     *Service
	uid   string
	at    time.Time
	ended []string // the sessions of the families the step revoked
	step  RevokeAllStep
}

// AfterCommit implements fsm.AfterCommitter.
func (r *revokeAllCommitted) AfterCommit() {
	r.s.signedOut.put(r.uid, r.at)
	now := r.s.now()
	for _, sid := range r.ended {
		r.s.ended.put(sid, r.at, now)
	}
	r.s.eraseMu.Lock()
	fns := append([]func(string){}, r.s.onSignedOut...)
	r.s.eraseMu.Unlock()
	for _, fn := range fns {
		fn(r.uid)
	}
}

// OnSignedOutEverywhere registers fn to run on every node once a user's
// sign-out everywhere is committed (the broker closes their sessions).
// It runs on the FSM's goroutine: fn must not block.
func (s *Service) OnSignedOutEverywhere(fn func(uid string)) {
	s.eraseMu.Lock()
	s.onSignedOut = append(s.onSignedOut, fn)
	s.eraseMu.Unlock()
}

// issuedBefore tells whether an access token was issued before at: by
// its millisecond issue time, or for a token without one (minted before
// it existed) by its iat as the end of that second.
func (c *accessClaims) issuedBefore(at time.Time) bool {
	if c.IssuedMs > 0 {
		return time.UnixMilli(c.IssuedMs).Before(at)
	}
	if c.IssuedAt == nil {
		return true
	}
	return secondIssuedBefore(c.IssuedAt.Time, at)
}

// secondIssuedBefore tells whether a credential whose issue time iat is
// in whole seconds (a JWT's iat) was issued before at, counting iat as
// the end of its second; a zero iat (none given) counts as before.
func secondIssuedBefore(iat, at time.Time) bool {
	return iat.IsZero() || iat.Add(time.Second-time.Millisecond).Before(at)
}
