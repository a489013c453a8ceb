package auth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/internal/httpapi"
	"github.com/edgechat/edgechat/internal/wire"
)

// Suspending an account: an admin stops an abusive account without
// erasing it, and may lift the suspension. A suspension is an account
// update (0x13) with Suspended and SignOut in one entry: the user is
// signed out everywhere at its commit, and while it lasts no node signs
// the account in (password, refresh, provider) nor accepts a token of it
// (also one an operator mints). Messages to the account are still
// stored; its owner reads them once the suspension is lifted.
const prefixSuspended = "r/auth/suspended/" // + uid → time (JSON)

// ErrSuspended refuses signing in to a suspended account.
var ErrSuspended = errors.New("auth: the account is suspended")

// CodeSuspended is ErrSuspended's HTTP code (403).
const CodeSuspended = "account_suspended"

// suspendedSet is every node's copy of r/auth/suspended/.
type suspendedSet struct {
	mu sync.RWMutex
	m  map[string]time.Time
}

func newSuspendedSet() *suspendedSet { return &suspendedSet{m: map[string]time.Time{}} }

func (s *suspendedSet) has(uid string) bool {
	s.mu.RLock()
	_, ok := s.m[uid]
	s.mu.RUnlock()
	return ok
}

func (s *suspendedSet) set(uid string, at time.Time, on bool) {
	s.mu.Lock()
	if on {
		s.m[uid] = at
	} else {
		delete(s.m, uid)
	}
	s.mu.Unlock()
}

func (s *suspendedSet) load(db *badger.DB) error {
	m, err := loadPrefix[time.Time](db, prefixSuspended)
	if err != nil {
		return fmt.Errorf("auth: loading suspended accounts: %w", err)
	}
	s.mu.Lock()
	s.m = m
	s.mu.Unlock()
	return nil
}

// applySuspension writes or removes uid's suspension record in the
// account update's transaction.
func applySuspension(tx *badger.Txn, uid string, on bool, at time.Time) error {
	if on {
		return setJSON(tx, prefixSuspended+uid, at)
	}
	return tx.Delete([]byte(prefixSuspended + uid))
}

// suspensionCommitted updates every node's copy once an account update
// that suspends or reinstates commits (with a sign-out step when it
// suspends: then it wraps that step's value).
type suspensionCommitted struct {
	s    *Service
	uid  string
	on   bool
	at   time.Time
	step *revokeAllCommitted
}

// AfterCommit implements fsm.AfterCommitter.
func (c *suspensionCommitted) AfterCommit() {
	c.s.suspended.set(c.uid, c.at, c.on)
	if c.step != nil {
		c.step.AfterCommit()
	}
}

// SetSuspended suspends uid's account (signing the user out everywhere
// in the same commit) or lifts its suspension. An unknown or deleted
// uid wraps ErrNoAccount and wire.ErrNotFound.
func (s *Service) SetSuspended(ctx context.Context, uid string, suspended bool) error {
	if s.gone.has(uid) {
		return fmt.Errorf("%w: %w: %s", ErrNoAccount, wire.ErrNotFound, uid)
	}
	var devices map[string]bool
	var derr error
	if suspended {
		devices, derr = s.signedInDevices(uid)
	}
	_, err := s.propose(ctx, wire.CmdAccountUpdate, accountUpdateCmd{UID: uid, Suspended: &suspended, SignOut: suspended, At: s.now().UTC()})
	if isErr(err, ErrNoAccount) {
		return fmt.Errorf("%w: %w: %s", ErrNoAccount, wire.ErrNotFound, uid)
	}
	if err != nil {
		return fmt.Errorf("auth: suspend: %w", err)
	}
	if suspended {
		// Users with more sessions than one step, and nodes of an
		// earlier version (which ignore Suspended and SignOut).
		if _, err := s.LogoutAll(ctx, uid); err != nil {
			return fmt.Errorf("auth: suspended, but not every session ended: %w", err)
		}
		if derr == nil {
			// Its phones stop showing its messages (a hijacked account).
			s.dropSignedOutDevices(ctx, uid, devices)
		}
		s.log.Warn("account suspended by an admin", "uid", uid)
	} else {
		s.log.Info("account suspension lifted", "uid", uid)
	}
	return nil
}

// Suspended reports whether uid's account is suspended.
func (s *Service) Suspended(uid string) bool { return s.suspended.has(uid) }

// suspendedNow tells whether uid's account is suspended as the cluster
// committed it, for a sign-in about to be refused: this node's set says
// so, and the suspension record is still there once the node has applied
// what the cluster committed before the call. A suspension lifted
// through another node a moment ago (the admin's 200 came from the
// leader) was refused 403 account_suspended by a follower that had not
// applied the lift yet, where every other refusal of a sign-in waits for
// the cluster first. Not suspended here: false at once (the log refuses
// a sign-in that a suspension committed meanwhile: applyRefreshIssue).
// An error when the node cannot catch up (503, retry).
func (s *Service) suspendedNow(ctx context.Context, uid string) (bool, error) {
	if !s.suspended.has(uid) {
		return false, nil
	}
	if err := s.catchUp(ctx); err != nil {
		return true, err
	}
	suspended := false
	err := s.db.View(func(tx *badger.Txn) error {
		var err error
		suspended, err = keyExists(tx, prefixSuspended+uid)
		return err
	})
	if err != nil {
		return true, fmt.Errorf("auth: read suspension: %w", err)
	}
	return suspended, nil
}

// handleSetSuspended answers PUT /admin/users/{uid}/suspended
// {"suspended": true|false}: {userId, suspended}.
func (s *Service) handleSetSuspended(w http.ResponseWriter, r *http.Request) {
	uid, err := httpapi.AdminUserID(r)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	var body struct {
		Suspended *bool `json:"suspended"`
	}
	if err := httpapi.DecodeJSON(r, &body, 1<<10); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	if body.Suspended == nil {
		httpapi.WriteError(w, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeValidation, `field "suspended" (true or false) is required`))
		return
	}
	if err := s.SetSuspended(r.Context(), uid, *body.Suspended); err != nil {
		if errors.Is(err, ErrNoAccount) {
			httpapi.WriteError(w, httpapi.Errorf(http.StatusNotFound, httpapi.CodeNotFound, "no such user"))
			return
		}
		httpapi.WriteError(w, httpError(err))
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"userId": uid, "suspended": *body.Suspended})
}
