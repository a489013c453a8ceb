package auth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/cluster/featurelevel"
	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/internal/wire"
)

// Keys under this service's prefix.
const (
	prefixAccount = "r/auth/acct/"  // + uid → account
	prefixRefresh = "r/auth/rtfam/" // + family ID → refreshFamily
	// prefixUserFamily indexes the live families by user (sessions.go):
	// + uid + "/" + family ID → empty.
	prefixUserFamily = "r/auth/rtuser/"
)

var errBadCommand = errors.New("auth: malformed command")

// errFamilyExists: a new family's ID is taken (by the same sign-in sent
// again with its Idempotency-Key, whose family ID derives from the key:
// service.go loginFamily). Its text is what earlier versions answer.
var errFamilyExists = fmt.Errorf("%w: family exists", errBadCommand)

type account struct {
	UID       string    `json:"uid"`
	Hash      string    `json:"hash"` // argon2id PHC string
	Admin     bool      `json:"admin"`
	CreatedAt time.Time `json:"createdAt"`
	UpdatedAt time.Time `json:"updatedAt"`
	// DisplayName is the display name its sign-up asked for (empty for
	// accounts made before it was kept, and for federated ones): a
	// sign-in that makes the profile the sign-up failed to make uses it.
	DisplayName string `json:"displayName,omitempty"`
}

// public is what access tokens say of the account.
func (a account) public() Account { return Account{UserID: a.UID, Admin: a.Admin} }

type refreshFamily struct {
	UID       string    `json:"uid"`
	Hash      string    `json:"hash"` // hex sha256 of the current secret
	Gen       uint32    `json:"gen"`
	ExpiresAt time.Time `json:"expiresAt"`
	Revoked   bool      `json:"revoked,omitempty"`
	UpdatedAt time.Time `json:"updatedAt"`
	// What the sign-in said of its client (sessions.go); empty for
	// families made before they were recorded.
	Device    string    `json:"device,omitempty"`
	Agent     string    `json:"agent,omitempty"`
	CreatedAt time.Time `json:"createdAt,omitzero"`
	// PrevHash is the hash of the secret the last rotation spent,
	// RotatedAt its time and RotationKey the Idempotency-Key of its
	// request: within refreshRetryGrace that token sent again with the
	// same key (the answer was lost) is a retry, not a reuse. Families
	// rotated by nodes of earlier versions have none of them.
	PrevHash    string    `json:"prevHash,omitempty"`
	RotatedAt   time.Time `json:"rotatedAt,omitzero"`
	RotationKey string    `json:"rotationKey,omitempty"`
}

// Command payloads. Everything non-deterministic (time, hashes, random
// IDs) is decided by the proposer and carried here.
type accountCreateCmd struct {
	UID  string    `json:"uid"`
	Hash string    `json:"hash"`
	At   time.Time `json:"at"`
	// Key, optional: the sign-up's Idempotency-Key, kept with the
	// account (prefixRegisterKey) so that the sign-up sent again with it
	// is answered (accountReplay) instead of refused as a taken name.
	// Nodes of earlier versions ignore it.
	Key string `json:"key,omitempty"`
	// DisplayName, optional: the sign-up's display name, kept with the
	// account for the profile a sign-in repairs. Nodes of earlier
	// versions ignore it.
	DisplayName string `json:"displayName,omitempty"`
}

// prefixRegisterKey: + uid → the Idempotency-Key of the sign-up that
// made the account (erased with it).
const prefixRegisterKey = "r/auth/regkey/"

// accountReplay is CmdAccountCreate's value for a sign-up sent again
// with the key that made the account: nothing is written, and the
// proposer checks the password against the account's hash before it
// answers for the account.
type accountReplay struct{ Hash string }

type accountUpdateCmd struct {
	UID   string    `json:"uid"`
	Admin *bool     `json:"admin,omitempty"`
	Hash  *string   `json:"hash,omitempty"`
	At    time.Time `json:"at"`
	// PrevHash, with Hash, makes the change a compare-and-swap: the
	// stored hash must still be this one ("" for an account without a
	// password), else ErrPasswordChanged and nothing is written.
	PrevHash *string `json:"prevHash,omitempty"`
	// SignOut also signs the user out everywhere, in the same
	// transaction, as the first step of refreshRevokeAllCmd does (a
	// password change: passwordchange.go).
	SignOut bool `json:"signOut,omitempty"`
	// Suspended suspends the account or lifts its suspension (suspend.go).
	Suspended *bool `json:"suspended,omitempty"`
}

type refreshIssueCmd struct {
	Family    string    `json:"family"`
	UID       string    `json:"uid"`
	Hash      string    `json:"hash"`
	Prev      string    `json:"prev,omitempty"` // empty: a new family; else the hash being rotated
	ExpiresAt time.Time `json:"expiresAt"`
	At        time.Time `json:"at"`
	// A new family's client (ClientInfo).
	Device string `json:"device,omitempty"`
	Agent  string `json:"agent,omitempty"`
	// PasswordOf, for a new family of a password sign-in: the hex
	// SHA-256 of the account's password hash the sign-in proved; the
	// family is refused (ErrPasswordChanged) when the account's hash
	// is another by the time the log takes it.
	PasswordOf string `json:"passwordOf,omitempty"`
	// Key is a rotation's Idempotency-Key ("" for none). Again: a
	// rotation for a spent token sent again with its key within the grace
	// (Service.refreshAgain): Prev is then the current hash, and the
	// family keeps what it recorded of the rotation that spent it
	// (earlier versions ignore both and rotate as usual).
	Key   string `json:"key,omitempty"`
	Again bool   `json:"again,omitempty"`
}

type refreshRevokeCmd struct {
	Family string    `json:"family"`
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
	// EndSession also refuses the session's access tokens from At on
	// and closes its MQTT connections (DELETE /auth/sessions/{id}).
	EndSession bool `json:"endSession,omitempty"`
}

// refreshRevokeAllCmd revokes every refresh-token family of UID (sign
// out everywhere); At is the revocation time written.
type refreshRevokeAllCmd struct {
	UID    string    `json:"uid"`
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
}

// RevokeAllStep is the value of one step of revoking a user's families:
// how many it revoked, and Done when none is left.
type RevokeAllStep struct {
	Revoked int
	Done    bool
}

// revokeAllStepWrites bounds the families one revoke-all step revokes
// (three writes each: the family, its index entry, its ended session).
const revokeAllStepWrites = 500

func getJSON(tx *badger.Txn, key string, v any) (bool, error) {
	it, err := tx.Get([]byte(key))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return true, it.Value(func(b []byte) error { return json.Unmarshal(b, v) })
}

func setJSON(tx *badger.Txn, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return tx.Set([]byte(key), b)
}

// loadPrefix reads every key under prefix into a map from the key's
// rest to its JSON value (the in-memory copies every node keeps: sign
// outs, deleted accounts, revoked keys, ended sessions).
func loadPrefix[V any](db *badger.DB, prefix string) (map[string]V, error) {
	m := map[string]V{}
	err := db.View(func(tx *badger.Txn) error {
		it := tx.NewIterator(badger.IteratorOptions{Prefix: []byte(prefix), PrefetchValues: true})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			var v V
			if err := it.Item().Value(func(b []byte) error { return json.Unmarshal(b, &v) }); err != nil {
				return err
			}
			m[string(it.Item().Key()[len(prefix):])] = v
		}
		return nil
	})
	return m, err
}

func decodeCmd(payload []byte, v any) error {
	if err := json.Unmarshal(payload, v); err != nil {
		return fmt.Errorf("%w: %v", errBadCommand, err)
	}
	return nil
}

// anyAccount reports whether at least one account exists.
func anyAccount(tx *badger.Txn) bool {
	opts := badger.DefaultIteratorOptions
	opts.PrefetchValues = false
	opts.Prefix = []byte(prefixAccount)
	it := tx.NewIterator(opts)
	defer it.Close()
	it.Rewind()
	return it.Valid()
}

// firstAccount tells whether an account made now in tx is the cluster's
// first, which is made an admin. Counting the accounts that exist was
// not enough: once every account was erased (the operator's first one
// deleted, say, before anyone else signed up), the next sign-up, anyone
// on a server with open registration, got the admin role. From feature
// level FirstAdminOnce a deleted account of this region (its tombstone
// under r/auth/gone/ stays for good) counts too; below it every node
// keeps the earlier rule, as a node of an earlier version applying the
// same entry would.
func firstAccount(tx *badger.Txn) (bool, error) {
	if anyAccount(tx) {
		return false, nil
	}
	once, err := featurelevel.AtLeast(tx, featurelevel.FirstAdminOnce)
	if err != nil {
		return false, err
	}
	if !once {
		return true, nil
	}
	// The tombstones of users of other regions (name@region, CmdRemoteErase)
	// were never accounts here.
	it := tx.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixGone)})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		if !bytes.ContainsRune(it.Item().Key()[len(prefixGone):], '@') {
			return false, nil
		}
	}
	return true, nil
}

// applyAccountCreate creates an account; the first account of the cluster
// becomes an admin (decided here, so every node agrees).
func applyAccountCreate(tx *badger.Txn, _ fsm.Position, payload []byte) (any, error) {
	var c accountCreateCmd
	if err := decodeCmd(payload, &c); err != nil {
		return nil, err
	}
	if wire.ValidUserID(c.UID) != nil || c.Hash == "" {
		return nil, fmt.Errorf("%w: bad account", errBadCommand)
	}
	key := prefixAccount + c.UID
	var existing account
	found, err := getJSON(tx, key, &existing)
	if err != nil {
		return nil, err
	}
	// A deleted account's user ID stays reserved (its tombstone).
	gone := false
	if _, err := tx.Get([]byte(prefixGone + c.UID)); err == nil {
		gone = true
	} else if !errors.Is(err, badger.ErrKeyNotFound) {
		return nil, err
	}
	if found && !gone && c.Key != "" {
		it, err := tx.Get([]byte(prefixRegisterKey + c.UID))
		if err != nil && !errors.Is(err, badger.ErrKeyNotFound) {
			return nil, err
		}
		if err == nil {
			same := false
			if err := it.Value(func(v []byte) error { same = string(v) == c.Key; return nil }); err != nil {
				return nil, err
			}
			if same {
				return accountReplay{Hash: existing.Hash}, nil
			}
		}
	}
	if found || gone {
		return nil, ErrUsernameTaken
	}
	first, err := firstAccount(tx)
	if err != nil {
		return nil, err
	}
	a := account{UID: c.UID, Hash: c.Hash, Admin: first, CreatedAt: c.At, UpdatedAt: c.At, DisplayName: c.DisplayName}
	if err := setJSON(tx, key, a); err != nil {
		return nil, err
	}
	if c.Key != "" {
		if err := tx.Set([]byte(prefixRegisterKey+c.UID), []byte(c.Key)); err != nil {
			return nil, err
		}
	}
	return a.Admin, nil
}

// applyAccountUpdate changes an account's admin flag and/or password
// hash; with SignOut it also takes the first step of signing the user out
// everywhere and answers that step (*revokeAllCommitted).
func (s *Service) applyAccountUpdate(tx *badger.Txn, _ fsm.Position, payload []byte) (any, error) {
	var c accountUpdateCmd
	if err := decodeCmd(payload, &c); err != nil {
		return nil, err
	}
	if c.Hash != nil && *c.Hash == "" {
		return nil, fmt.Errorf("%w: empty hash", errBadCommand)
	}
	if c.PrevHash != nil && c.Hash == nil {
		return nil, fmt.Errorf("%w: prevHash without hash", errBadCommand)
	}
	key := prefixAccount + c.UID
	var a account
	found, err := getJSON(tx, key, &a)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, ErrNoAccount
	}
	// A deleted account is unknown to every change (its data waits for
	// erasure), also one a node proposed before applying the deletion.
	if gone, err := keyExists(tx, prefixGone+c.UID); err != nil {
		return nil, err
	} else if gone {
		return nil, ErrNoAccount
	}
	if c.PrevHash != nil && a.Hash != *c.PrevHash {
		return nil, ErrPasswordChanged
	}
	var demoted *demotionCommitted
	if c.Admin != nil {
		if a.Admin && !*c.Admin {
			// The role ends at once, also in the tokens issued so far
			// (demote.go).
			if err := recordDemotion(tx, c.UID, c.At); err != nil {
				return nil, err
			}
			demoted = &demotionCommitted{s: s, uid: c.UID, at: c.At}
		}
		a.Admin = *c.Admin
	}
	if c.Hash != nil {
		a.Hash = *c.Hash
	}
	a.UpdatedAt = c.At
	if err := setJSON(tx, key, a); err != nil {
		return nil, err
	}
	var step *revokeAllCommitted
	if c.SignOut {
		if step, err = s.signOutStep(tx, c.UID, c.At); err != nil {
			return nil, err
		}
	}
	if c.Suspended != nil {
		if err := applySuspension(tx, c.UID, *c.Suspended, c.At); err != nil {
			return nil, err
		}
		return &suspensionCommitted{s: s, uid: c.UID, on: *c.Suspended, at: c.At, step: step}, nil
	}
	if step == nil {
		if demoted != nil {
			return demoted, nil
		}
		return nil, nil
	}
	// A demotion with a sign-out (no node proposes one) needs no more
	// here: the sign-out refuses every token issued before it; the
	// record counts from the next start.
	return step, nil
}

// applyRefreshIssue creates a refresh-token family, or rotates one with a
// compare-and-swap: the presented (previous) hash must still be current.
func applyRefreshIssue(tx *badger.Txn, _ fsm.Position, payload []byte) (any, error) {
	var c refreshIssueCmd
	if err := decodeCmd(payload, &c); err != nil {
		return nil, err
	}
	if c.Family == "" || c.Hash == "" || wire.ValidUserID(c.UID) != nil {
		return nil, fmt.Errorf("%w: bad refresh issue", errBadCommand)
	}
	key := prefixRefresh + c.Family
	var f refreshFamily
	found, err := getJSON(tx, key, &f)
	if err != nil {
		return nil, err
	}
	if _, err := tx.Get([]byte(prefixGone + c.UID)); err == nil {
		return nil, ErrRefreshInvalid // deleted: no new tokens
	} else if !errors.Is(err, badger.ErrKeyNotFound) {
		return nil, err
	}
	if c.Prev == "" {
		if found {
			return nil, errFamilyExists
		}
		// A node that had not applied the account's suspension yet may
		// have let the sign-in through: the log decides.
		if suspended, err := keyExists(tx, prefixSuspended+c.UID); err != nil {
			return nil, err
		} else if suspended {
			return nil, ErrSuspended
		}
		if c.PasswordOf != "" {
			var a account
			if found, err := getJSON(tx, prefixAccount+c.UID, &a); err != nil {
				return nil, err
			} else if !found || hashSecret(a.Hash) != c.PasswordOf {
				return nil, ErrPasswordChanged
			}
		}
		f = refreshFamily{UID: c.UID, Hash: c.Hash, ExpiresAt: c.ExpiresAt, UpdatedAt: c.At,
			Device: clip(c.Device, maxDeviceLen), Agent: clip(c.Agent, maxAgentLen), CreatedAt: c.At}
		if err := indexFamily(tx, c.UID, c.Family); err != nil {
			return nil, err
		}
		if err := indexAllFamily(tx, c.UID, c.Family); err != nil {
			return nil, err
		}
		return f.Gen, setJSON(tx, key, f)
	}
	switch {
	case !found, f.Revoked, f.UID != c.UID, !c.At.Before(f.ExpiresAt):
		return nil, ErrRefreshInvalid
	case f.Hash != c.Prev:
		return nil, ErrRefreshReused
	}
	if !c.Again {
		f.PrevHash, f.RotatedAt, f.RotationKey = f.Hash, c.At, c.Key
	}
	f.Hash, f.Gen, f.ExpiresAt, f.UpdatedAt = c.Hash, f.Gen+1, c.ExpiresAt, c.At
	// Indexed at every rotation too: a family made before the index
	// existed joins it the first time it is used.
	if err := indexFamily(tx, c.UID, c.Family); err != nil {
		return nil, err
	}
	if err := indexAllFamily(tx, c.UID, c.Family); err != nil {
		return nil, err
	}
	return f.Gen, setJSON(tx, key, f)
}

// applyRefreshRevoke revokes a whole refresh-token family; with
// EndSession it also ends the session's access tokens (sessions.go).
func (s *Service) applyRefreshRevoke(tx *badger.Txn, _ fsm.Position, payload []byte) (any, error) {
	var c refreshRevokeCmd
	if err := decodeCmd(payload, &c); err != nil {
		return nil, err
	}
	key := prefixRefresh + c.Family
	var f refreshFamily
	found, err := getJSON(tx, key, &f)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, ErrRefreshInvalid
	}
	if !f.Revoked {
		f.Revoked, f.UpdatedAt = true, c.At
		if err := setJSON(tx, key, f); err != nil {
			return nil, err
		}
		if err := unindexFamily(tx, f.UID, c.Family); err != nil {
			return nil, err
		}
	}
	if !c.EndSession {
		return nil, nil
	}
	sid := sessionID(c.Family)
	if err := setJSON(tx, prefixSessionEnded+sid, c.At); err != nil {
		return nil, err
	}
	return &sessionEnded{s: s, sid: sid, at: c.At}, nil
}

// applyRefreshRevokeAll records the user's sign-out (access tokens issued
// before are refused from its commit on: signout.go) and revokes their
// live refresh-token families, in key order, as far as one step's budget
// goes (a user with more families
// takes more steps; a sign-in that the log orders between two steps may
// be revoked too). There is no index by user: the scan reads every
// family, which is fine for a rare, user-initiated command.
func (s *Service) applyRefreshRevokeAll(tx *badger.Txn, _ fsm.Position, payload []byte) (any, error) {
	var c refreshRevokeAllCmd
	if err := decodeCmd(payload, &c); err != nil {
		return nil, err
	}
	if wire.ValidUserID(c.UID) != nil {
		return nil, fmt.Errorf("%w: bad refresh revoke-all", errBadCommand)
	}
	return s.signOutValue(tx, c.UID, c.At)
}

// signOutValue is signOutStep as an FSM handler's answer (no typed nil
// on failure).
func (s *Service) signOutValue(tx *badger.Txn, uid string, at time.Time) (any, error) {
	v, err := s.signOutStep(tx, uid, at)
	if err != nil {
		return nil, err
	}
	return v, nil
}

// signOutStep records uid's sign-out at at and revokes their live
// refresh-token families, in key order, as far as one step's budget goes.
func (s *Service) signOutStep(tx *badger.Txn, uid string, at time.Time) (*revokeAllCommitted, error) {
	type hit struct {
		key string
		f   refreshFamily
	}
	var hits []hit
	more := false
	// Each family decoded, in family order (the same order either way, so
	// that nodes that read the index and nodes that scan revoke the same
	// first revokeAllStepWrites).
	consider := func(key []byte, v []byte) bool {
		var f refreshFamily
		if err := json.Unmarshal(v, &f); err != nil {
			return true // not ours to judge; never a user's
		}
		if f.UID != uid || f.Revoked {
			return true
		}
		if len(hits) >= revokeAllStepWrites {
			more = true
			return false
		}
		hits = append(hits, hit{string(key), f})
		return true
	}
	indexed, err := liveFamiliesIndex.Complete(tx)
	if err != nil {
		return nil, err
	}
	if indexed {
		// Every live family is in the user's index: read those only,
		// not every user's (an apply holds the FSM on every node).
		prefix := []byte(prefixUserFamily + uid + "/")
		it := tx.NewIterator(badger.IteratorOptions{Prefix: prefix})
		for it.Rewind(); it.Valid(); it.Next() {
			key := prefixRefresh + string(it.Item().Key()[len(prefix):])
			item, err := tx.Get([]byte(key))
			if errors.Is(err, badger.ErrKeyNotFound) {
				continue
			}
			if err != nil {
				it.Close()
				return nil, err
			}
			v, err := item.ValueCopy(nil)
			if err != nil {
				it.Close()
				return nil, err
			}
			if !consider([]byte(key), v) {
				break
			}
		}
		it.Close()
	} else {
		it := tx.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixRefresh), PrefetchValues: true})
		for it.Rewind(); it.Valid(); it.Next() {
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				it.Close()
				return nil, err
			}
			if !consider(it.Item().KeyCopy(nil), v) {
				break
			}
		}
		it.Close()
	}
	ended := make([]string, 0, len(hits))
	for _, h := range hits {
		h.f.Revoked, h.f.UpdatedAt = true, at
		if err := setJSON(tx, h.key, h.f); err != nil {
			return nil, err
		}
		family := h.key[len(prefixRefresh):]
		if err := unindexFamily(tx, uid, family); err != nil {
			return nil, err
		}
		// The session ends too, not only its refresh token: an access
		// token that a refresh committed just before this step mints
		// after it (its iat later than at) is refused all the same.
		sid := sessionID(family)
		if err := setJSON(tx, prefixSessionEnded+sid, at); err != nil {
			return nil, err
		}
		ended = append(ended, sid)
	}
	if err := recordSignOut(tx, uid, at); err != nil {
		return nil, err
	}
	return &revokeAllCommitted{s: s, uid: uid, at: at, ended: ended, step: RevokeAllStep{Revoked: len(hits), Done: !more}}, nil
}

// readAccount reads an account from the local database.
func (s *Service) readAccount(uid string) (account, bool, error) {
	var a account
	var found bool
	err := s.db.View(func(tx *badger.Txn) error {
		var err error
		found, err = getJSON(tx, prefixAccount+uid, &a)
		return err
	})
	if err != nil {
		return account{}, false, fmt.Errorf("auth: read account: %w", err)
	}
	return a, found, nil
}

// catchUpTimeout bounds a refused credential's wait for this node to
// apply what the cluster committed before it.
const catchUpTimeout = 5 * time.Second

// catchUp waits until this node has applied every write the cluster
// committed before the call (Deps.ReadBarrier; nothing to wait for
// without one). It fails with wire.ErrUnavailable when no leader
// answers: the caller cannot tell a credential it does not know from
// one this node has not heard of yet.
func (s *Service) catchUp(ctx context.Context) error {
	if s.barrier == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, catchUpTimeout)
	defer cancel()
	if err := s.barrier(ctx); err != nil {
		return fmt.Errorf("auth: catching up with the cluster: %w", err)
	}
	return nil
}

// readAfterCatchUp is readAccount after catchUp.
func (s *Service) readAfterCatchUp(ctx context.Context, uid string) (account, bool, error) {
	if err := s.catchUp(ctx); err != nil {
		return account{}, false, err
	}
	return s.readAccount(uid)
}

// readFamilyAfterCatchUp is readFamily after catchUp.
func (s *Service) readFamilyAfterCatchUp(ctx context.Context, id string) (refreshFamily, bool, error) {
	if err := s.catchUp(ctx); err != nil {
		return refreshFamily{}, false, err
	}
	return s.readFamily(id)
}

func (s *Service) readFamily(id string) (refreshFamily, bool, error) {
	var f refreshFamily
	var found bool
	err := s.db.View(func(tx *badger.Txn) error {
		var err error
		found, err = getJSON(tx, prefixRefresh+id, &f)
		return err
	})
	if err != nil {
		return refreshFamily{}, false, fmt.Errorf("auth: read refresh family: %w", err)
	}
	return f, found, nil
}

// CountAccounts returns the number of accounts, deleted ones left out
// as Accounts leaves them out (a key-only scan; for /admin/stats, not a
// hot path).
func (s *Service) CountAccounts() (int, error) {
	n := 0
	err := s.db.View(func(tx *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.PrefetchValues = false
		opts.Prefix = []byte(prefixAccount)
		it := tx.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			if !s.gone.has(string(it.Item().Key()[len(prefixAccount):])) {
				n++
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("auth: count accounts: %w", err)
	}
	return n, nil
}
