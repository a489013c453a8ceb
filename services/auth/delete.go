package auth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/cluster/featurelevel"
	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/internal/address"
	"github.com/edgechat/edgechat/internal/httpapi"
	"github.com/edgechat/edgechat/internal/ratelimit"
	"github.com/edgechat/edgechat/internal/wire"
)

// Account deletion (DELETE /user/me) in two replicated steps:
//
//  1. CmdAccountDelete, proposed by the node that checked the password:
//     the account is disabled at once on every node (no login, refresh,
//     token or MQTT CONNECT; live sessions are kicked through
//     OnAccountDisabled) and r/auth/gone/{uid} records when it is due.
//  2. CmdAccountErase, proposed by the Raft leader's sweeper (RunErasure)
//     once the grace period is over, as many times as it takes: each
//     step runs the registered erasers (users, push, media, archive),
//     each deleting its own keys of the user, within one write budget
//     (a transaction has a size limit and a user's history has none).
//     When every eraser is done the account and its refresh families
//     go, and the gone/ record stays as a tombstone: the user ID is
//     never handed out again.
//
// Deletion is final: there is no restore during the grace period (the
// user cannot sign in to ask for one); an operator could only restore a
// backup.

const prefixGone = "r/auth/gone/" // + uid → goneRecord

// eraseStepWrites bounds the keys one erase step deletes, far below
// what a Badger transaction of this node's memtable size takes.
const eraseStepWrites = 2000

// ErrAccountDeleted: the account is deleted (being erased, or a tombstone).
var ErrAccountDeleted = errors.New("auth: account deleted")

// ErrWrongPassword refuses an account deletion whose password is wrong.
var ErrWrongPassword = errors.New("auth: wrong password")

// ErrNotDue refuses an erase step proposed before the grace period ended.
var ErrNotDue = errors.New("auth: account erasure not due yet")

// goneRecord is the value of r/auth/gone/{uid}.
type goneRecord struct {
	UID         string     `json:"uid"`
	RequestedAt time.Time  `json:"requestedAt"`
	DeleteAt    time.Time  `json:"deleteAt"`
	ErasedAt    *time.Time `json:"erasedAt,omitempty"`
	// Done names the erasers that finished, so that later steps skip
	// them (their reads are not paid again in every step).
	Done []string `json:"done,omitempty"`
}

// accountDeleteCmd disables an account and schedules its erasure.
type accountDeleteCmd struct {
	V        int       `json:"v"`
	UID      string    `json:"uid"`
	At       time.Time `json:"at"`
	DeleteAt time.Time `json:"deleteAt"`
}

// accountEraseCmd is one step of erasing a deleted account.
type accountEraseCmd struct {
	V   int       `json:"v"`
	UID string    `json:"uid"`
	At  time.Time `json:"at"`
}

// commandVersion is the only payload version of both commands; a newer
// one is refused (nothing written) rather than half understood.
const commandVersion = 1

// Eraser deletes one service's data of an erased account inside the FSM
// transaction, spending b for every key it deletes or writes. done
// reports that nothing of the user is left for it; after, if not nil,
// runs once the entry is committed (cache invalidations). It must be
// deterministic (same state, same writes, on every node) and must write
// nothing outside its own service's keys.
type Eraser func(tx *badger.Txn, uid string, b *fsm.Budget) (done bool, after func(), err error)

// Kept is one thing that stays after an account is erased.
type Kept struct {
	What   string `json:"what"`
	Detail string `json:"detail"`
}

// KeptAfterDeletion is what the answer of DELETE /user/me lists.
var KeptAfterDeletion = []Kept{
	{What: "group_messages", Detail: "your messages in groups stay with the group; members see their sender as \"deleted user\""},
	{What: "group_media", Detail: "files you sent to a group stay readable by its members"},
	{What: "user_id", Detail: "your user ID stays reserved: nobody can register it again"},
	{What: "others_uploads", Detail: "files others sent you in direct messages stay theirs (you lose access)"},
	{What: "delivered_copies", Detail: "messages and notifications already delivered to other people's devices"},
	{What: "backups", Detail: "backups taken before the erasure keep the data until they are rotated out"},
}

// DeleteResult is the answer of DELETE /user/me.
type DeleteResult struct {
	UserID   string    `json:"userId"`
	DeleteAt time.Time `json:"deleteAt"`
	Kept     []Kept    `json:"kept"`
}

// goneSet is every node's in-memory copy of r/auth/gone/: consulted on
// every token check, so it must be a map lookup.
type goneSet struct {
	mu sync.RWMutex
	m  map[string]goneRecord
}

func newGoneSet() *goneSet { return &goneSet{m: map[string]goneRecord{}} }

func (g *goneSet) get(uid string) (goneRecord, bool) {
	g.mu.RLock()
	r, ok := g.m[uid]
	g.mu.RUnlock()
	return r, ok
}

func (g *goneSet) has(uid string) bool { _, ok := g.get(uid); return ok }

func (g *goneSet) put(r goneRecord) {
	g.mu.Lock()
	g.m[r.UID] = r
	g.mu.Unlock()
}

// pending lists the deletions not yet erased, by due time.
func (g *goneSet) pending() []goneRecord {
	g.mu.RLock()
	var out []goneRecord
	for _, r := range g.m {
		if r.ErasedAt == nil {
			out = append(out, r)
		}
	}
	g.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool {
		if !out[i].DeleteAt.Equal(out[j].DeleteAt) {
			return out[i].DeleteAt.Before(out[j].DeleteAt)
		}
		return out[i].UID < out[j].UID
	})
	return out
}

// load replaces the set with what the database holds (at start and
// after a snapshot restore).
func (g *goneSet) load(db *badger.DB) error {
	m, err := loadPrefix[goneRecord](db, prefixGone)
	if err != nil {
		return fmt.Errorf("auth: loading deleted accounts: %w", err)
	}
	g.mu.Lock()
	g.m = m
	g.mu.Unlock()
	return nil
}

// AddEraser appends a service's eraser; erase steps run them in the
// order added. Call it before Raft applies entries (the node holds
// applying until every handler is registered).
func (s *Service) AddEraser(name string, e Eraser) {
	s.eraseMu.Lock()
	s.erasers = append(s.erasers, namedEraser{name: name, fn: e})
	s.eraseMu.Unlock()
}

type namedEraser struct {
	name string
	fn   Eraser
}

// OnAccountDisabled registers fn to run on every node once an account's
// deletion is committed (the broker kicks the user's live sessions).
func (s *Service) OnAccountDisabled(fn func(uid string)) {
	s.eraseMu.Lock()
	s.onDisabled = append(s.onDisabled, fn)
	s.eraseMu.Unlock()
}

// Deleted reports whether uid's account is deleted (disabled, being
// erased or erased).
func (s *Service) Deleted(uid string) bool { return s.gone.has(uid) }

// ErasureDue reports whether uid's account is deleted and its grace
// period is over: its data is erased, or being erased (the leader's
// sweeper proposes the steps from then on). What was queued for delivery
// of its direct conversations is not delivered any more (the broker's
// sessions left offline).
func (s *Service) ErasureDue(uid string) bool {
	r, ok := s.gone.get(uid)
	return ok && (r.ErasedAt != nil || !s.now().Before(r.DeleteAt))
}

// DeletedIn is Deleted as the replicated state of tx says, for another
// service's FSM handler that must not write about a deleted account
// (deterministic on every node, unlike the in-memory set, which changes
// only once the entry is committed).
func (s *Service) DeletedIn(tx *badger.Txn, uid string) (bool, error) {
	return keyExists(tx, prefixGone+uid)
}

// DeleteAccount checks uid's password and, when it is right, disables
// the account and schedules its erasure after the grace period. Wrong
// passwords are rate limited like logins.
func (s *Service) DeleteAccount(ctx context.Context, uid, password, ip string) (DeleteResult, error) {
	ipKey := ratelimit.RemoteIPKey(ip)
	if wait := max(s.perIP.Wait(ipKey), s.perProof.Wait(uid)); wait > 0 {
		s.deletions.WithLabelValues("rate_limited").Inc()
		return DeleteResult{}, &RateLimitError{RetryAfter: wait}
	}
	acct, found, err := s.readAccount(uid)
	if err != nil {
		s.deletions.WithLabelValues("error").Inc()
		return DeleteResult{}, err
	}
	if !found || s.gone.has(uid) {
		s.deletions.WithLabelValues("deleted").Inc()
		return DeleteResult{}, ErrAccountDeleted
	}
	// Checked as a password change checks it: against the account as
	// committed when this node's copy refuses it (the password may have
	// changed through another node a moment ago). A federated account
	// has no password: DeleteAccountByProvider.
	_, ok, err := s.provesCommitted(ctx, acct, PasswordProof{Password: password})
	if err != nil {
		s.deletions.WithLabelValues("error").Inc()
		return DeleteResult{}, err
	}
	if !ok {
		s.perProof.Allow(uid)
		s.perIP.Allow(ipKey)
		s.deletions.WithLabelValues("wrong_password").Inc()
		return DeleteResult{}, ErrWrongPassword
	}
	return s.deleteNow(ctx, uid)
}

// ProviderCheck verifies a token of a configured identity provider
// (implemented by the idp service); see SetProviderCheck.
type ProviderCheck func(ctx context.Context, provider, token string) (FederatedIdentity, error)

// SetProviderCheck lets DELETE /user/me prove the user with a token of
// a provider linked to the account instead of a password (accounts
// created by a provider have none). Call before serving.
func (s *Service) SetProviderCheck(fn ProviderCheck) { s.providerCheck = fn }

// DeleteAccountByProvider is DeleteAccount for a user who proves
// themselves with a fresh token of a provider linked to uid. Failures
// are rate limited like wrong passwords.
func (s *Service) DeleteAccountByProvider(ctx context.Context, uid, provider, token, ip string) (DeleteResult, error) {
	ipKey := ratelimit.RemoteIPKey(ip)
	if wait := max(s.perIP.Wait(ipKey), s.perProof.Wait(uid)); wait > 0 {
		s.deletions.WithLabelValues("rate_limited").Inc()
		return DeleteResult{}, &RateLimitError{RetryAfter: wait}
	}
	if _, found, err := s.readAccount(uid); err != nil {
		s.deletions.WithLabelValues("error").Inc()
		return DeleteResult{}, err
	} else if !found || s.gone.has(uid) {
		s.deletions.WithLabelValues("deleted").Inc()
		return DeleteResult{}, ErrAccountDeleted
	}
	// proves reads the link as committed when this node does not have
	// it (linked through another node a moment ago).
	ok, err := s.proves(ctx, account{UID: uid}, PasswordProof{Provider: provider, SubjectToken: token})
	if err != nil {
		s.deletions.WithLabelValues("error").Inc()
		return DeleteResult{}, err
	}
	if !ok {
		s.perProof.Allow(uid)
		s.perIP.Allow(ipKey)
		s.deletions.WithLabelValues("wrong_password").Inc()
		return DeleteResult{}, ErrWrongPassword
	}
	return s.deleteNow(ctx, uid)
}

// DeleteAccountByAdmin deletes uid's account without its proof (an
// admin removing an abusive or abandoned account): disabled at once,
// erased after the grace period, as DELETE /user/me. An unknown or
// already deleted account is ErrAccountDeleted.
func (s *Service) DeleteAccountByAdmin(ctx context.Context, uid string) (DeleteResult, error) {
	if _, found, err := s.readAfterCatchUp(ctx, uid); err != nil {
		return DeleteResult{}, err
	} else if !found || s.gone.has(uid) {
		return DeleteResult{}, ErrAccountDeleted
	}
	res, err := s.deleteNow(ctx, uid)
	if err == nil {
		s.log.Warn("account deleted by an admin", "uid", uid)
	}
	return res, err
}

// handleAdminDelete answers DELETE /admin/users/{uid}: 202 as DELETE
// /user/me answers.
func (s *Service) handleAdminDelete(w http.ResponseWriter, r *http.Request) {
	uid, err := httpapi.AdminUserID(r)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	res, err := s.DeleteAccountByAdmin(r.Context(), uid)
	if errors.Is(err, ErrAccountDeleted) {
		httpapi.WriteError(w, httpapi.Errorf(http.StatusNotFound, httpapi.CodeNotFound, "no such user"))
		return
	}
	if err != nil {
		httpapi.WriteError(w, httpError(err))
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	httpapi.WriteJSON(w, http.StatusAccepted, res)
}

// deleteNow disables uid and schedules its erasure.
func (s *Service) deleteNow(ctx context.Context, uid string) (DeleteResult, error) {
	now := s.now().UTC()
	c := accountDeleteCmd{V: commandVersion, UID: uid, At: now, DeleteAt: now.Add(s.cfg.DeleteGrace)}
	if _, err := s.propose(ctx, wire.CmdAccountDelete, c); err != nil {
		if isErr(err, ErrAccountDeleted) {
			s.deletions.WithLabelValues("deleted").Inc()
			return DeleteResult{}, ErrAccountDeleted
		}
		s.deletions.WithLabelValues("error").Inc()
		return DeleteResult{}, fmt.Errorf("auth: delete account: %w", err)
	}
	s.deletions.WithLabelValues("accepted").Inc()
	s.log.Info("account deleted; erasure scheduled", "uid", uid, "deleteAt", c.DeleteAt)
	s.wakeEraser()
	return DeleteResult{UserID: uid, DeleteAt: c.DeleteAt, Kept: KeptAfterDeletion}, nil
}

// applyAccountDelete disables an account and records when it is erased.
func (s *Service) applyAccountDelete(tx *badger.Txn, _ fsm.Position, payload []byte) (any, error) {
	var c accountDeleteCmd
	if err := decodeCmd(payload, &c); err != nil {
		return nil, err
	}
	if c.V != commandVersion {
		return nil, fmt.Errorf("%w: account delete version %d", errBadCommand, c.V)
	}
	if wire.ValidUserID(c.UID) != nil || c.DeleteAt.Before(c.At) {
		return nil, fmt.Errorf("%w: bad account delete", errBadCommand)
	}
	var r goneRecord
	found, err := getJSON(tx, prefixGone+c.UID, &r)
	if err != nil {
		return nil, err
	}
	if found {
		return nil, ErrAccountDeleted
	}
	var a account
	if found, err = getJSON(tx, prefixAccount+c.UID, &a); err != nil {
		return nil, err
	}
	if !found {
		return nil, ErrNoAccount
	}
	r = goneRecord{UID: c.UID, RequestedAt: c.At, DeleteAt: c.DeleteAt}
	if err := setJSON(tx, prefixGone+c.UID, r); err != nil {
		return nil, err
	}
	return &goneCommitted{s: s, r: r, disabled: true}, nil
}

// goneCommitted updates the in-memory set once the entry is committed.
type goneCommitted struct {
	s        *Service
	r        goneRecord
	disabled bool // a new deletion (not an erase step)
	wake     bool // a new erasure of a user of another region (CmdRemoteErase)
	done     bool // the erase is complete
	forget   bool // the step deleted the user's sign-out, suspension and demotion records
	after    []func()
	err      error // an eraser failed: the step ended there (applyAccountErase)
}

// AfterCommit implements fsm.AfterCommitter.
func (g *goneCommitted) AfterCommit() {
	g.s.gone.put(g.r)
	g.s.exists.remove(g.r.UID)
	if g.forget {
		// After gone.put: the user's tokens stay refused as a deleted
		// account's.
		g.s.signedOut.remove(g.r.UID)
		g.s.demoted.remove(g.r.UID)
		g.s.suspended.set(g.r.UID, time.Time{}, false)
	}
	for _, fn := range g.after {
		fn()
	}
	if g.disabled {
		g.s.eraseMu.Lock()
		fns := g.s.onDisabled
		g.s.eraseMu.Unlock()
		for _, fn := range fns {
			fn(g.r.UID)
		}
		g.s.wakeEraser()
	}
	if g.wake {
		g.s.wakeEraser()
	}
}

// EraseStep is the value of an erase step: Done when nothing of the
// user is left.
type EraseStep struct{ Done bool }

// applyAccountErase runs one bounded step of erasing a deleted account.
// Erasing an erased account writes nothing and says done, so a replayed
// or repeated step is harmless.
func (s *Service) applyAccountErase(tx *badger.Txn, _ fsm.Position, payload []byte) (any, error) {
	var c accountEraseCmd
	if err := decodeCmd(payload, &c); err != nil {
		return nil, err
	}
	if c.V != commandVersion {
		return nil, fmt.Errorf("%w: account erase version %d", errBadCommand, c.V)
	}
	remote := remoteUID(c.UID)
	if wire.ValidUserID(c.UID) != nil && !remote {
		return nil, fmt.Errorf("%w: bad account erase", errBadCommand)
	}
	var r goneRecord
	found, err := getJSON(tx, prefixGone+c.UID, &r)
	if err != nil {
		return nil, err
	}
	switch {
	case !found:
		return nil, ErrNoAccount
	case r.ErasedAt != nil:
		return EraseStep{Done: true}, nil
	case c.At.Before(r.DeleteAt):
		return nil, ErrNotDue
	}
	s.eraseMu.Lock()
	erasers := s.erasers
	s.eraseMu.Unlock()
	b := fsm.NewBudget(eraseStepWrites)
	res := &goneCommitted{s: s, r: r}
	finished := len(r.Done)
	for _, e := range erasers {
		if slices.Contains(r.Done, e.name) {
			continue
		}
		done, after, err := e.fn(tx, c.UID, b)
		if errors.Is(err, badger.ErrTxnTooBig) {
			return nil, err // the FSM throws the transaction away and redoes the step
		}
		if after != nil {
			res.after = append(res.after, after)
		}
		if err != nil {
			// What the erasers before it (and it, up to its error) wrote
			// stays: the FSM commits a handler's writes whatever it
			// returns, so the step is not refused (its after-commit
			// functions would not run) but ends here with the error in
			// its value (Err); the next step goes on from this eraser.
			res.err = fmt.Errorf("auth: erasing %s of %s: %w", e.name, c.UID, err)
			done = false
		}
		if !done {
			if len(r.Done) > finished {
				if err := setJSON(tx, prefixGone+c.UID, r); err != nil {
					return nil, err
				}
				res.r = r
			}
			return res, nil
		}
		r.Done = append(r.Done, e.name)
	}
	// The account's own keys last: until they go, the step is repeated.
	// (A user of another region has no account here: EraseRemote.)
	if !remote {
		done, err := fsm.DeleteMatching(tx, []byte(prefixUserFamily+c.UID+"/"), b, nil)
		if err != nil || !done {
			return res, err
		}
		if done, err = eraseFamilies(tx, c.UID, b); err != nil || !done {
			return res, err
		}
		if err := deleteIdentityLinks(tx, c.UID); err != nil {
			return nil, err
		}
		if err := tx.Delete([]byte(prefixAccount + c.UID)); err != nil {
			return nil, err
		}
		if err := tx.Delete([]byte(prefixRegisterKey + c.UID)); err != nil {
			return nil, err
		}
		// What was recorded of the account's life: its last sign-out
		// everywhere, its suspension, its last loss of the admin role.
		// Nothing needs them once the account is gone (its tokens are
		// refused as a deleted account's), and they name the user. Below
		// ErasedAuthRecords they stay, as on a node of an earlier version.
		forget, err := featurelevel.AtLeast(tx, featurelevel.ErasedAuthRecords)
		if err != nil {
			return nil, err
		}
		if forget {
			for _, p := range []string{prefixSignedOut, prefixSuspended, prefixDemoted} {
				if err := tx.Delete([]byte(p + c.UID)); err != nil {
					return nil, err
				}
			}
			res.forget = true
		}
	}
	at := c.At
	r.ErasedAt = &at
	if err := setJSON(tx, prefixGone+c.UID, r); err != nil {
		return nil, err
	}
	res.r, res.done = r, true
	return res, nil
}

// Erasing a user of another region (bridge/region erasure.go): bob@us
// was erased in us, and us's link tells this region, which holds copies
// of what bob had with its users. CmdRemoteErase records bob@us under
// r/auth/gone/ as an account whose deletion is due at once (the grace
// period ran in us): the leader's sweeper then erases it in bounded
// steps like a local account (each service's Eraser is given the
// qualified ID and erases what it holds of a user of another region),
// resuming after a leader change or a restart, and the record stays as
// a tombstone: Deleted("bob@us") refuses later messages to and from him.

// remoteEraseCmd is CmdRemoteErase's payload.
type remoteEraseCmd struct {
	V   int       `json:"v"`
	UID string    `json:"uid"` // name@region
	At  time.Time `json:"at"`
}

// remoteUID tells whether uid names a user of another region (name@region).
func remoteUID(uid string) bool {
	a, err := address.Parse(uid)
	return err == nil && a.Region != "" && address.ValidRegion(a.Region) == nil && wire.ValidUserID(a.Name) == nil
}

// EraseRemote commits the erasure of uid, a user of another region
// (name@region) whose region erased the account: erased here at once by
// the erasure sweeper. Nil once decided (now or before).
func (s *Service) EraseRemote(ctx context.Context, uid string) error {
	if !remoteUID(uid) {
		return fmt.Errorf("auth: erasure of %q: not a user of another region: %w", uid, wire.ErrInvalid)
	}
	if s.gone.has(uid) {
		return nil
	}
	if _, err := s.propose(ctx, wire.CmdRemoteErase, remoteEraseCmd{V: commandVersion, UID: uid, At: s.now().UTC()}); err != nil {
		return fmt.Errorf("auth: erasure of %s: %v: %w", uid, err, wire.ErrUnavailable)
	}
	s.log.Info("account of another region erased there; erasing it here", "uid", uid)
	return nil
}

// applyRemoteErase records the erasure of a user of another region, due
// at once; a second one changes nothing.
func (s *Service) applyRemoteErase(tx *badger.Txn, _ fsm.Position, payload []byte) (any, error) {
	var c remoteEraseCmd
	if err := decodeCmd(payload, &c); err != nil {
		return nil, err
	}
	if c.V != commandVersion {
		return nil, fmt.Errorf("%w: remote erase version %d", errBadCommand, c.V)
	}
	if !remoteUID(c.UID) {
		return nil, fmt.Errorf("%w: bad remote erase", errBadCommand)
	}
	if found, err := keyExists(tx, prefixGone+c.UID); err != nil || found {
		return nil, err
	}
	r := goneRecord{UID: c.UID, RequestedAt: c.At, DeleteAt: c.At}
	if err := setJSON(tx, prefixGone+c.UID, r); err != nil {
		return nil, err
	}
	return &goneCommitted{s: s, r: r, wake: true}, nil
}

// Value of a step as the proposer sees it (goneCommitted travels through
// Propose on the leader).
func stepDone(v any) (done, known bool) {
	switch x := v.(type) {
	case EraseStep:
		return x.Done, true
	case *goneCommitted:
		return x.done, true
	}
	return false, false
}

// Leadership says whether this node is the Raft leader (the one node
// that proposes erase steps).
type Leadership interface {
	IsLeader() bool
	MembersChanged() <-chan struct{}
}

// eraseRetry is how long the sweeper waits after a failed step, and the
// longest it sleeps without a reason to wake.
const (
	eraseRetry    = 10 * time.Second
	eraseMaxSleep = time.Minute
	// maxEraseSteps bounds one account's steps in one pass (a bug must
	// not spin the leader forever); the next pass goes on.
	maxEraseSteps = 10000
)

func (s *Service) wakeEraser() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// RunErasure erases deleted accounts whose grace period is over, while
// this node leads, until ctx is done.
func (s *Service) RunErasure(ctx context.Context) error {
	timer := time.NewTimer(0)
	defer timer.Stop()
	var lastPrune time.Time
	var changed <-chan struct{}
	if s.lead != nil {
		changed = s.lead.MembersChanged()
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		case <-s.wake:
		case <-changed:
		}
		// Watch for the next change before the pass, not after: a
		// leadership this node gains while the pass runs (after it read
		// IsLeader) must wake it again, not wait out eraseMaxSleep.
		if s.lead != nil {
			changed = s.lead.MembersChanged()
		}
		next := min(s.EraseDue(ctx), s.pruneDue(ctx, &lastPrune))
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(next)
	}
}

// pruneDue walks the refresh-token families (Prune) if this node leads
// and the last walk is pruneEvery old, and says when to look again.
func (s *Service) pruneDue(ctx context.Context, last *time.Time) time.Duration {
	if s.lead != nil && !s.lead.IsLeader() {
		return pruneEvery
	}
	now := s.now()
	if wait := last.Add(pruneEvery).Sub(now); wait > 0 {
		return wait
	}
	n, err := s.Prune(ctx)
	if err != nil {
		s.log.Warn("pruning refresh tokens; retrying", "err", err)
		return eraseRetry
	}
	*last = now
	if n > 0 {
		s.log.Info("pruned expired and revoked refresh tokens", "removed", n)
	}
	return pruneEvery
}

// EraseDue erases every account that is due, if this node leads, and
// says how long until the next one is due (capped).
func (s *Service) EraseDue(ctx context.Context) time.Duration {
	sleep := eraseMaxSleep
	if s.lead != nil && !s.lead.IsLeader() {
		return sleep
	}
	for _, r := range s.gone.pending() {
		if ctx.Err() != nil {
			return sleep
		}
		now := s.now().UTC()
		if wait := r.DeleteAt.Sub(now); wait > 0 {
			return min(sleep, wait)
		}
		if err := s.erase(ctx, r.UID); err != nil {
			s.log.Warn("erasing a deleted account; retrying", "uid", r.UID, "err", err)
			sleep = min(sleep, eraseRetry)
		}
	}
	return sleep
}

// erase proposes erase steps for uid until it is erased.
func (s *Service) erase(ctx context.Context, uid string) error {
	for i := 0; i < maxEraseSteps; i++ {
		if r, ok := s.gone.get(uid); !ok || r.ErasedAt != nil {
			return nil
		}
		v, err := s.propose(ctx, wire.CmdAccountErase, accountEraseCmd{V: commandVersion, UID: uid, At: s.now().UTC()})
		if err != nil {
			return err
		}
		s.eraseSteps.Inc()
		if g, ok := v.(*goneCommitted); ok && g.err != nil {
			return g.err
		}
		if done, known := stepDone(v); known && done {
			s.erased.Inc()
			s.log.Info("account erased", "uid", uid, "steps", i+1)
			return nil
		}
	}
	return fmt.Errorf("auth: erasing %s: still not done after %d steps", uid, maxEraseSteps)
}

// deleteRequest is the body of DELETE /user/me.
type deleteRequest struct {
	Password string `json:"password,omitempty"`
	// Or, for an account that signs in through a provider: a fresh token
	// of a provider linked to it.
	Provider     string `json:"provider,omitempty"`
	SubjectToken string `json:"subjectToken,omitempty"`
}

func decodeDelete(body []byte) (deleteRequest, error) {
	var req deleteRequest
	err := httpapi.DecodeJSONBytes(body, &req)
	return req, err
}

// handleDelete answers DELETE /user/me {"password"}: 202 with when the
// data goes and what stays.
func (s *Service) handleDelete(w http.ResponseWriter, r *http.Request) {
	p, ok := httpapi.PrincipalFrom(r.Context())
	if !ok || p.UserID == "" {
		httpapi.WriteError(w, httpapi.Errorf(http.StatusUnauthorized, httpapi.CodeUnauthorized, "sign in first"))
		return
	}
	var req deleteRequest
	if err := httpapi.DecodeJSON(r, &req, maxDeleteBody); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	var res DeleteResult
	var err error
	if req.SubjectToken != "" || req.Provider != "" {
		res, err = s.DeleteAccountByProvider(r.Context(), p.UserID, req.Provider, req.SubjectToken, clientIP(r))
	} else {
		res, err = s.DeleteAccount(r.Context(), p.UserID, req.Password, clientIP(r))
	}
	switch {
	case errors.Is(err, ErrWrongPassword):
		httpapi.WriteError(w, httpapi.Errorf(http.StatusForbidden, httpapi.CodeForbidden, "wrong password or provider token"))
		return
	case errors.Is(err, ErrAccountDeleted):
		httpapi.WriteError(w, httpapi.Errorf(http.StatusNotFound, httpapi.CodeNotFound, "no such account"))
		return
	case err != nil:
		httpapi.WriteError(w, httpError(err))
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	httpapi.WriteJSON(w, http.StatusAccepted, res)
}

// eraseFamilies deletes uid's refresh-token families, revoked ones too,
// as far as b goes: from uid's entries of the index of every family
// (r/auth/rtall/) once this node's is complete (allfamilies.go), else
// from every user's families; the same ones in the same order either
// way (fsm.DeleteKeys), with their index entries (which cost no budget).
func eraseFamilies(tx *badger.Txn, uid string, b *fsm.Budget) (bool, error) {
	indexed, err := allFamiliesIndex.Complete(tx)
	if err != nil {
		return false, err
	}
	var deleted [][]byte
	done := false
	if indexed {
		var keys, stale [][]byte
		prefix := []byte(prefixAllFamilies + uid + "/")
		it := tx.NewIterator(badger.IteratorOptions{Prefix: prefix})
		for it.Rewind(); it.Valid(); it.Next() {
			k := []byte(prefixRefresh + string(it.Item().Key()[len(prefix):]))
			var f refreshFamily
			found, err := getJSON(tx, string(k), &f)
			switch {
			case err != nil && found:
				continue // not ours to judge, as the scan does
			case err != nil:
				it.Close()
				return false, err
			case !found:
				stale = append(stale, it.Item().KeyCopy(nil))
			case f.UID == uid:
				keys = append(keys, k)
			}
		}
		it.Close()
		for _, k := range stale {
			if err := tx.Delete(k); err != nil {
				return false, err
			}
		}
		if deleted, done, err = fsm.DeleteKeys(tx, []byte(prefixRefresh), keys, b); err != nil {
			return false, err
		}
	} else {
		done, err = fsm.DeleteMatching(tx, []byte(prefixRefresh), b, func(k, v []byte) (bool, error) {
			var f refreshFamily
			if err := json.Unmarshal(v, &f); err != nil || f.UID != uid {
				return false, nil // not ours to judge; never a user's
			}
			deleted = append(deleted, bytes.Clone(k))
			return true, nil
		})
		if err != nil {
			return false, err
		}
	}
	for _, k := range deleted {
		if err := unindexAllFamily(tx, uid, string(k[len(prefixRefresh):])); err != nil {
			return false, err
		}
	}
	return done, nil
}
