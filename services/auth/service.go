package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/internal/ratelimit"
	"github.com/edgechat/edgechat/internal/wire"
)

// Limits of account fields.
const (
	MinPassword    = 8
	MaxPassword    = 128                 // bytes
	MaxDisplayName = wire.MaxDisplayName // characters
)

// NormalizeUsername lowercases an ASCII username and checks it is a valid
// user ID (3-32 of a-z0-9_.- starting with a letter). Non-ASCII input is
// refused rather than case-folded, so that no two spellings map to one ID.
func NormalizeUsername(username string) (string, error) {
	for i := 0; i < len(username); i++ {
		if username[i] >= utf8.RuneSelf {
			return "", fmt.Errorf("%w: only a-z, 0-9, '_', '.', '-'", ErrInvalidUsername)
		}
	}
	uid := strings.ToLower(username)
	if err := wire.ValidUserID(uid); err != nil {
		return "", fmt.Errorf("%w: 3-32 characters of a-z, 0-9, '_', '.', '-', starting with a letter", ErrInvalidUsername)
	}
	if reservedUsernames[uid] {
		return "", fmt.Errorf("%w: %q is reserved", ErrInvalidUsername, uid)
	}
	return uid, nil
}

// reservedUsernames collide with HTTP routes (/user/search, /user/groups)
// or name the server's own identities (operator tokens of `edgechat user grant`).
var reservedUsernames = map[string]bool{"search": true, "groups": true, "operator": true, "system": true, "edgechat": true}

func validPassword(pw string) error {
	if len(pw) < MinPassword || len(pw) > MaxPassword {
		return fmt.Errorf("%w: %d to %d bytes", ErrInvalidPassword, MinPassword, MaxPassword)
	}
	return nil
}

func (s *Service) propose(ctx context.Context, t byte, cmd any) (any, error) {
	b, err := json.Marshal(cmd)
	if err != nil {
		return nil, fmt.Errorf("auth: encode command: %w", err)
	}
	return s.proposer.Propose(ctx, t, b)
}

// CreateAccount registers a user and creates their profile. The user ID is
// the lowercased username. The first account ever created is an admin.
func (s *Service) CreateAccount(ctx context.Context, username, password, displayName string) (string, error) {
	uid, _, err := s.CreateAccountKeyed(ctx, username, password, displayName, "")
	return uid, err
}

// CreateAccountKeyed is CreateAccount with the sign-up's Idempotency-Key
// (none: ""). The sign-up sent again with the key that made the account
// and its password answers the account (replay true; its profile made
// if the first attempt failed before it) instead of ErrUsernameTaken;
// the key with another password is ErrKeyReused. The Raft log decides,
// so nodes answering retries at once agree.
func (s *Service) CreateAccountKeyed(ctx context.Context, username, password, displayName, key string) (uid string, replay bool, err error) {
	return s.createAccountKeyedFrom(ctx, username, password, displayName, key, "")
}

// createAccountKeyedFrom is CreateAccountKeyed for a client at ip ("":
// unknown). A replay checks the password: wrong ones count as failed
// logins of the name and of the address, and a throttled name or
// address is refused (*RateLimitError) before any hash, as a login is,
// so that the replay is no faster way to guess the account's password.
func (s *Service) createAccountKeyedFrom(ctx context.Context, username, password, displayName, key, ip string) (uid string, replay bool, err error) {
	uid, err = s.createAccount(ctx, username, password, displayName, key)
	var r *accountReplayError
	if !errors.As(err, &r) {
		return uid, false, err
	}
	ipKey := ratelimit.RemoteIPKey(ip)
	if wait := max(s.perIP.Wait(ipKey), s.perUser.Wait(uid)); wait > 0 {
		s.registrations.WithLabelValues("rate_limited").Inc()
		return "", false, &RateLimitError{RetryAfter: wait}
	}
	ok, verr := s.hasher.verify(password, r.hash)
	switch {
	case verr != nil:
		return "", false, fmt.Errorf("auth: create account: %w", verr)
	case !ok:
		s.perUser.Allow(uid)
		s.perIP.Allow(ipKey)
		s.registrations.WithLabelValues("key_reused").Inc()
		return "", false, ErrKeyReused
	}
	s.registrations.WithLabelValues("retried").Inc()
	if s.profiles != nil {
		if err := s.profiles.CreateProfile(ctx, uid, r.displayName); err != nil {
			return uid, true, fmt.Errorf("auth: account %s created but its profile was not: %w", uid, err)
		}
	}
	return uid, true, nil
}

// madeWithKey reports whether this node applied uid's account as made
// by a sign-up with the Idempotency-Key key (never for key "").
func (s *Service) madeWithKey(uid, key string) bool {
	if key == "" {
		return false
	}
	same := false
	_ = s.db.View(func(tx *badger.Txn) error {
		it, err := tx.Get([]byte(prefixRegisterKey + uid))
		if err != nil {
			return nil
		}
		return it.Value(func(v []byte) error { same = string(v) == key; return nil })
	})
	return same
}

// accountReplayError carries a replayed sign-up out of createAccount.
type accountReplayError struct{ hash, displayName string }

func (e *accountReplayError) Error() string { return "auth: sign-up sent again" }

func (s *Service) createAccount(ctx context.Context, username, password, displayName, key string) (string, error) {
	uid, err := NormalizeUsername(username)
	if err != nil {
		s.registrations.WithLabelValues("invalid").Inc()
		return "", err
	}
	if err := validPassword(password); err != nil {
		s.registrations.WithLabelValues("invalid").Inc()
		return "", err
	}
	if displayName == "" {
		displayName = uid
	}
	if displayName, err = wire.NormalizeDisplayNameJoiners(displayName, s.joiners()); err != nil {
		s.registrations.WithLabelValues("invalid").Inc()
		return "", err
	}
	// Cheap early refusal; the FSM handler makes the authoritative check
	// (and answers a sign-up sent again with its key: an account made
	// with this key goes on to it).
	if _, found, err := s.readAccount(uid); err == nil && ((found && !s.madeWithKey(uid, key)) || s.gone.has(uid)) {
		s.registrations.WithLabelValues("taken").Inc()
		return "", ErrUsernameTaken
	}
	hash := s.hasher.hash(password)
	v, err := s.propose(ctx, wire.CmdAccountCreate, accountCreateCmd{UID: uid, Hash: hash, At: s.now().UTC(), Key: key, DisplayName: displayName})
	if r, ok := v.(accountReplay); ok && err == nil {
		return uid, &accountReplayError{hash: r.Hash, displayName: displayName}
	}
	switch {
	case isErr(err, ErrUsernameTaken):
		s.registrations.WithLabelValues("taken").Inc()
		return "", ErrUsernameTaken
	case err != nil:
		s.registrations.WithLabelValues("error").Inc()
		return "", fmt.Errorf("auth: create account: %w", err)
	}
	s.registrations.WithLabelValues("success").Inc()
	s.log.Info("account created", "uid", uid)
	if s.profiles != nil {
		if err := s.profiles.CreateProfile(ctx, uid, displayName); err != nil {
			// The account exists; its first sign-in (or PATCH /user/me)
			// makes the missing profile.
			s.log.Error("account created without profile", "uid", uid, "err", err)
			return uid, fmt.Errorf("auth: account %s created but its profile was not: %w", uid, err)
		}
	}
	return uid, nil
}

// SetAdmin grants or withdraws the admin role of an account. An unknown
// uid is an error wrapping ErrNoAccount and wire.ErrNotFound.
func (s *Service) SetAdmin(ctx context.Context, uid string, admin bool) error {
	_, err := s.propose(ctx, wire.CmdAccountUpdate, accountUpdateCmd{UID: uid, Admin: &admin, At: s.now().UTC()})
	if isErr(err, ErrNoAccount) {
		return fmt.Errorf("%w: %w: %s", ErrNoAccount, wire.ErrNotFound, uid)
	}
	if err != nil {
		return fmt.Errorf("auth: set admin: %w", err)
	}
	return nil
}

// Login checks a username and password and issues tokens. Failures are
// rate limited per username and per client IP; an unknown user costs the
// same hash as a known one.
func (s *Service) Login(ctx context.Context, username, password, ip string) (Tokens, error) {
	return s.LoginWithKey(ctx, username, password, ip, "")
}

// LoginWithKey is Login for a request with an Idempotency-Key ("" for
// none): the sign-in sent again with its key (its answer lost) answers
// tokens of the session the first one made, while that session lives,
// instead of making another (loginAgain).
func (s *Service) LoginWithKey(ctx context.Context, username, password, ip, key string) (Tokens, error) {
	userKey, err := NormalizeUsername(username)
	if err != nil {
		userKey = "" // still spend a hash below: no shortcut for odd names
	}
	ipKey := ratelimit.RemoteIPKey(ip)
	wait := s.perIP.Wait(ipKey)
	if userKey != "" {
		wait = max(wait, s.perUser.Wait(userKey))
	}
	if wait > 0 {
		s.logins.WithLabelValues("rate_limited").Inc()
		return Tokens{}, &RateLimitError{RetryAfter: wait}
	}
	var acct account
	found := false
	if userKey != "" && len(password) <= MaxPassword {
		if acct, found, err = s.readAccount(userKey); err != nil {
			s.logins.WithLabelValues("error").Inc()
			return Tokens{}, err
		}
	}
	if found && s.gone.has(acct.UID) {
		found = false // deleted: refused like an unknown user (the same hash is spent)
	}
	ok := s.checkPassword(password, acct, found)
	var catchUpErr error
	if (!found || !ok) && userKey != "" && len(password) <= MaxPassword {
		// This node may not have applied yet an account created through
		// another node a moment ago (or a later change of its hash,
		// should one ever come: it is checked as committed). Every
		// refusal waits the same way, so the wait tells nothing about
		// whether the username exists.
		var fresh account
		var freshFound bool
		if fresh, freshFound, catchUpErr = s.readAfterCatchUp(ctx, userKey); freshFound && !s.gone.has(fresh.UID) &&
			(!found || fresh.Hash != acct.Hash) {
			acct, found = fresh, true
			ok = s.checkPassword(password, acct, true)
		}
	}
	if !found || !ok {
		// A failure takes a token (when there is one left); a sign-in
		// this node answered 503 after taking them (below), sent again
		// with its key and password, takes none: the client was told
		// to retry, and the Go SDK's Login does, so one typo during an
		// outage counted three times.
		now := s.now()
		if !s.charged.retry(userKey, key, password, now) {
			if userKey != "" {
				s.perUser.Allow(userKey)
			}
			s.perIP.Allow(ipKey)
		}
		if catchUpErr != nil {
			s.charged.unanswered(userKey, key, password, now)
			s.logins.WithLabelValues("error").Inc()
			return Tokens{}, catchUpErr
		}
		s.logins.WithLabelValues("invalid_credentials").Inc()
		return Tokens{}, ErrInvalidCredentials
	}
	var t Tokens
	again := false
	if key != "" {
		t, again, err = s.issueKeyed(ctx, acct, key)
	} else {
		t, err = s.issueAfter(ctx, acct, time.Time{}, true)
	}
	if errors.Is(err, ErrKeyReused) {
		s.logins.WithLabelValues("key_reused").Inc()
		return Tokens{}, err
	}
	if isErr(err, ErrPasswordChanged) || isErr(err, ErrRefreshInvalid) {
		// The password changed, or the account was deleted (through
		// another node, or while the hash was being checked), before
		// the sign-in's entry: the password it proved no longer signs
		// anyone in.
		s.logins.WithLabelValues("invalid_credentials").Inc()
		return Tokens{}, ErrInvalidCredentials
	}
	if err != nil {
		s.logins.WithLabelValues("error").Inc()
		return Tokens{}, err
	}
	name := acct.DisplayName
	if name == "" {
		name = acct.UID
	}
	s.repairProfile(ctx, acct.UID, name, "")
	if again {
		s.logins.WithLabelValues("retried").Inc()
		return t, nil
	}
	s.logins.WithLabelValues("success").Inc()
	return t, nil
}

// profileChecker tells whether a user has a profile on this node
// (implemented by *users.Service).
type profileChecker interface {
	HasProfile(uid string) bool
}

// repairProfile makes the profile of an account that has none: its
// sign-up committed the account, then failed to commit the profile (a
// leader change between the two), and a client that sent the sign-up
// again without an Idempotency-Key was told the name is taken. Without
// a profile the user cannot be found, added or messaged. name is the
// display name the sign-up asked for (kept with the account), or the
// user ID for an account made before it was kept. avatar (a
// federated sign-in's picture, "" for none) is the avatar the sign-up
// would have set. Best effort: the sign-in goes on either way, and the
// next one tries again.
func (s *Service) repairProfile(ctx context.Context, uid, name, avatar string) {
	pc, ok := s.profiles.(profileChecker)
	if !ok || pc.HasProfile(uid) {
		return
	}
	create := s.profiles.CreateProfile
	if ap, ok := s.profiles.(avatarProfiles); ok && avatar != "" {
		create = func(ctx context.Context, uid, name string) error {
			return ap.CreateProfileWithAvatar(ctx, uid, name, avatar)
		}
	}
	if err := create(ctx, uid, name); err != nil {
		s.log.Warn("signed in without a profile; making it failed", "uid", uid, "err", err)
		return
	}
	s.log.Info("made the missing profile of a signed-in account", "uid", uid)
}

// loginFamily is the refresh-token family of uid's sign-in with the
// Idempotency-Key key: derived from both, so that every retry of the
// sign-in proposes the same family and the log lets one make it (a
// node of an earlier version refuses the others too: the family exists).
func loginFamily(uid, key string) string {
	sum := sha256.Sum256([]byte("edgechat-login:" + uid + "\x00" + key))
	return base64.RawURLEncoding.EncodeToString(sum[:familyBytes])
}

// loginAgainAttempts bounds the rotations a sign-in sent again tries
// when each loses a race to another rotation of its session.
const loginAgainAttempts = 3

// issueKeyed issues the tokens of a password sign-in with the
// Idempotency-Key key. The first attempt makes the key's family; an
// attempt that finds it made (the sign-in sent again after its answer
// was lost, through any node) rotates it instead, as a refresh would, and
// answers its tokens (again true): one session however often the sign-in
// is sent. The key with another device is ErrKeyReused. Once the key's
// session has ended (signed out, revoked, expired) the key makes a new
// session with a random family, as a sign-in without a key does.
func (s *Service) issueKeyed(ctx context.Context, acct account, key string) (t Tokens, again bool, err error) {
	family := loginFamily(acct.UID, key)
	_, found, err := s.readFamily(family)
	if err != nil {
		return Tokens{}, false, err
	}
	if !found {
		t, err := s.issueFamily(ctx, acct, family, time.Time{}, true)
		if !isErr(err, errFamilyExists) {
			return t, false, err
		}
	}
	device := clip(clientInfoFrom(ctx).Device, maxDeviceLen)
	for range loginAgainAttempts {
		f, found, err := s.readFamilyAfterCatchUp(ctx, family)
		if err != nil {
			return Tokens{}, false, err
		}
		now := s.now().UTC()
		if !found || f.UID != acct.UID || f.Revoked || !now.Before(f.ExpiresAt) || s.signedOutSince(f) {
			// Its session is over: a sign-in as without a key.
			t, err := s.issueAfter(ctx, acct, time.Time{}, true)
			return t, false, err
		}
		if s.suspended.has(acct.UID) {
			return Tokens{}, false, ErrSuspended
		}
		if f.Device != device {
			return Tokens{}, false, ErrKeyReused
		}
		secret := randomB64(secretBytes)
		_, err = s.propose(ctx, wire.CmdRefreshIssue, refreshIssueCmd{
			Family: family, UID: acct.UID, Hash: hashSecret(secret), Prev: f.Hash,
			ExpiresAt: now.Add(s.cfg.RefreshTTL), At: now,
		})
		if isErr(err, ErrRefreshReused) || isErr(err, ErrRefreshInvalid) {
			continue // rotated or ended meanwhile: look again
		}
		if err != nil {
			return Tokens{}, false, fmt.Errorf("auth: sign-in sent again: %w", err)
		}
		access, err := s.accessToken(acct, sessionID(family))
		if err != nil {
			return Tokens{}, false, err
		}
		// Told again: the first answer may have been lost before its
		// event went out (the same session ID: nothing new to a client
		// that saw it).
		created := f.CreatedAt
		if created.IsZero() {
			created = now
		}
		s.publishSignIn(acct.UID, sessionID(family), ClientInfo{Device: f.Device, Agent: f.Agent}, created)
		return s.tokens(acct.UID, access, family+"."+secret), true, nil
	}
	return Tokens{}, false, fmt.Errorf("auth: sign-in sent again: its session kept changing; retry")
}

// checkPassword tells whether password is acct's (found: acct exists).
// It spends one hash in every case: an unknown user, and an account
// without a password (a provider made it), are checked against the
// dummy hash, so that the time of a refusal does not tell which names
// exist or which accounts sign in only through a provider.
func (s *Service) checkPassword(password string, acct account, found bool) bool {
	phc := s.hasher.dummy
	if found && acct.Hash != "" {
		phc = acct.Hash
	}
	ok, err := s.hasher.verify(password, phc)
	if err != nil {
		s.log.Error("stored password hash unreadable", "uid", acct.UID, "err", err)
	}
	return ok && phc != s.hasher.dummy
}

// Refresh token format: "<family>.<secret>", both unpadded base64url.
const (
	familyBytes = 16
	secretBytes = 32
)

func randomB64(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("auth: random: %v", err))
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

func hashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

func parseRefresh(tok string) (family, secret string, ok bool) {
	family, secret, ok = strings.Cut(tok, ".")
	if !ok {
		return "", "", false
	}
	f, err1 := base64.RawURLEncoding.DecodeString(family)
	s, err2 := base64.RawURLEncoding.DecodeString(secret)
	if err1 != nil || err2 != nil || len(f) != familyBytes || len(s) != secretBytes {
		return "", "", false
	}
	return family, secret, true
}

// accessToken mints the access token of a stored account: the claims of
// login, refresh and (through LookupAccount) `edgechat token`.
func (s *Service) accessToken(acct account, sid string) (string, error) {
	return s.accessTokenAfter(acct, time.Time{}, sid)
}

// accessTokenAfter is accessToken issued after signedOut, a sign-out
// everywhere of the user that this node recorded a moment ago: at least
// in the millisecond after it, which the sign-out does not refuse
// (tokens carry their issue time in milliseconds).
func (s *Service) accessTokenAfter(acct account, signedOut time.Time, sid string) (string, error) {
	now := s.now()
	if first := time.UnixMilli(signedOut.UnixMilli() + 1); !signedOut.IsZero() && now.Before(first) {
		now = first
	}
	return mint(s.keys().signer, s.cfg.Issuer, acct.public(), now, s.cfg.AccessTTL, sid)
}

// LookupAccount is what an access token of uid would say (GET
// /admin/users/{uid}): `edgechat token` mints from it. ErrNoAccount when
// there is no such account.
func (s *Service) LookupAccount(uid string) (Account, error) {
	norm, err := NormalizeUsername(uid)
	if err != nil {
		return Account{}, fmt.Errorf("%w: %s", ErrNoAccount, uid)
	}
	acct, found, err := s.readAccount(norm)
	if err != nil {
		return Account{}, err
	}
	if !found || s.gone.has(norm) {
		return Account{}, fmt.Errorf("%w: %s", ErrNoAccount, uid)
	}
	return acct.public(), nil
}

// issue mints an access token and starts a new refresh-token family.
func (s *Service) issue(ctx context.Context, acct account) (Tokens, error) {
	return s.issueAfter(ctx, acct, time.Time{}, false)
}

// issueAfter is issue with an access token that a sign-out everywhere
// at signedOut does not refuse (accessTokenAfter). byPassword: the
// sign-in proved acct.Hash's password, and the log refuses it
// (ErrPasswordChanged) when the password changed before its entry.
func (s *Service) issueAfter(ctx context.Context, acct account, signedOut time.Time, byPassword bool) (Tokens, error) {
	return s.issueFamily(ctx, acct, randomB64(familyBytes), signedOut, byPassword)
}

// issueFamily is issueAfter making the family given (errFamilyExists
// when the log has it already).
func (s *Service) issueFamily(ctx context.Context, acct account, family string, signedOut time.Time, byPassword bool) (Tokens, error) {
	uid := acct.UID
	if suspended, err := s.suspendedNow(ctx, uid); err != nil {
		return Tokens{}, err
	} else if suspended {
		return Tokens{}, ErrSuspended
	}
	secret := randomB64(secretBytes)
	access, err := s.accessTokenAfter(acct, signedOut, sessionID(family))
	if err != nil {
		return Tokens{}, err
	}
	now := s.now().UTC()
	client := clientInfoFrom(ctx)
	cmd := refreshIssueCmd{
		Family: family, UID: uid, Hash: hashSecret(secret),
		ExpiresAt: now.Add(s.cfg.RefreshTTL), At: now,
		Device: clip(client.Device, maxDeviceLen), Agent: clip(client.Agent, maxAgentLen),
	}
	if byPassword {
		cmd.PasswordOf = hashSecret(acct.Hash)
	}
	_, err = s.propose(ctx, wire.CmdRefreshIssue, cmd)
	if isErr(err, ErrSuspended) {
		return Tokens{}, ErrSuspended // suspended by the time the log took it
	}
	if isErr(err, ErrPasswordChanged) {
		return Tokens{}, ErrPasswordChanged
	}
	if err != nil {
		return Tokens{}, fmt.Errorf("auth: issue refresh token: %w", err)
	}
	s.publishSignIn(uid, sessionID(family), client, now)
	return s.tokens(uid, access, family+"."+secret), nil
}

func (s *Service) tokens(uid, access, refresh string) Tokens {
	return Tokens{AccessToken: access, RefreshToken: refresh, ExpiresIn: int(s.cfg.AccessTTL.Seconds()), UserID: uid}
}

// Refresh exchanges the current refresh token of a family for new tokens.
// Presenting an older token of the family revokes the whole family
// (ErrRefreshReused): someone else holds a copy.
func (s *Service) Refresh(ctx context.Context, token string) (Tokens, error) {
	return s.RefreshWithKey(ctx, token, "")
}

// RefreshWithKey is Refresh for a request with an Idempotency-Key (""
// for none): the same token sent again with the same key within
// refreshRetryGrace, its answer lost, is answered with fresh tokens
// rather than taken for a reuse.
func (s *Service) RefreshWithKey(ctx context.Context, token, key string) (Tokens, error) {
	family, secret, ok := parseRefresh(token)
	if !ok {
		s.refreshes.WithLabelValues("invalid").Inc()
		return Tokens{}, ErrRefreshInvalid
	}
	// Only an unknown family is refused locally; whether the token is
	// current is decided by the FSM handler, in log order, so that a node
	// that lags a rotation cannot mistake the newest token for a reuse.
	f, found, err := s.readFamily(family)
	if err == nil && !found {
		// Issued through another node a moment ago?
		f, found, err = s.readFamilyAfterCatchUp(ctx, family)
	}
	if err != nil {
		s.refreshes.WithLabelValues("error").Inc()
		return Tokens{}, err
	}
	if !found || f.Revoked || s.gone.has(f.UID) || s.suspended.has(f.UID) || s.signedOutSince(f) {
		s.refreshes.WithLabelValues("invalid").Inc()
		return Tokens{}, ErrRefreshInvalid
	}
	acct, found, err := s.readAccount(f.UID)
	if err != nil {
		s.refreshes.WithLabelValues("error").Inc()
		return Tokens{}, err
	}
	if !found {
		s.refreshes.WithLabelValues("invalid").Inc()
		return Tokens{}, ErrRefreshInvalid
	}
	now := s.now().UTC()
	newSecret := randomB64(secretBytes)
	_, err = s.propose(ctx, wire.CmdRefreshIssue, refreshIssueCmd{
		Family: family, UID: f.UID, Hash: hashSecret(newSecret), Prev: hashSecret(secret),
		ExpiresAt: now.Add(s.cfg.RefreshTTL), At: now, Key: key,
	})
	if isErr(err, ErrRefreshReused) && key != "" {
		if t, retried, rerr := s.refreshAgain(ctx, family, secret, key, acct); retried {
			return t, rerr
		}
	}
	switch {
	case isErr(err, ErrRefreshReused):
		s.refreshes.WithLabelValues("reused").Inc()
		s.log.Warn("refresh token reused; revoking its family", "uid", f.UID, "family", family)
		// Two parties hold the session: it ends as a whole (its access
		// tokens refused, its MQTT connections closed, the push
		// registrations of the devices it named or registered dropped,
		// as DELETE /auth/sessions/{id} drops them), not only its
		// refresh token.
		devices := s.registeredBy(f.UID, sessionID(family))
		if f.Device != "" {
			devices[f.Device] = true
		}
		if rerr := s.revokeSession(ctx, family, "reuse", true); rerr != nil {
			return Tokens{}, fmt.Errorf("%w (revocation failed: %v)", ErrRefreshReused, rerr)
		}
		s.dropSignedOutDevices(ctx, f.UID, devices)
		return Tokens{}, ErrRefreshReused
	case isErr(err, ErrRefreshInvalid):
		s.refreshes.WithLabelValues("invalid").Inc()
		return Tokens{}, ErrRefreshInvalid
	case err != nil:
		s.refreshes.WithLabelValues("error").Inc()
		return Tokens{}, fmt.Errorf("auth: rotate refresh token: %w", err)
	}
	access, err := s.accessToken(acct, sessionID(family))
	if err != nil {
		return Tokens{}, err
	}
	s.refreshes.WithLabelValues("success").Inc()
	return s.tokens(acct.UID, access, family+"."+newSecret), nil
}

// refreshRetryGrace is how long after a rotation the token it spent may
// be sent again, with the Idempotency-Key of the request that spent it,
// as a retry: a client whose refresh answer was lost (a phone on a bad
// network) sends the same request again, and a reuse would end its
// session and sign the user out. The key is what tells the owner's
// retry from a thief's use of the same token: a thief who rotated first
// did not send the owner's key, so the owner's next refresh is a reuse
// and ends the session, as it always did.
const refreshRetryGrace = time.Minute

// refreshAgain answers a spent refresh token sent again with the key of
// the rotation that spent it, within refreshRetryGrace: the family
// rotates again from its current token (an ordinary rotation to nodes of
// earlier versions), which the lost answer carried. retried is false when
// it is not such a retry (a reuse). A rotation that lost a race to
// another (the retry sent twice at once) answers ErrRefreshInvalid and
// ends nothing.
func (s *Service) refreshAgain(ctx context.Context, family, secret, key string, acct account) (t Tokens, retried bool, err error) {
	f, found, err := s.readFamilyAfterCatchUp(ctx, family)
	now := s.now().UTC()
	if err != nil || !found || f.Revoked || f.UID != acct.UID || f.PrevHash == "" ||
		f.PrevHash != hashSecret(secret) || f.RotationKey != key || now.Sub(f.RotatedAt) > refreshRetryGrace {
		return Tokens{}, false, nil
	}
	newSecret := randomB64(secretBytes)
	_, err = s.propose(ctx, wire.CmdRefreshIssue, refreshIssueCmd{
		Family: family, UID: f.UID, Hash: hashSecret(newSecret), Prev: f.Hash,
		ExpiresAt: now.Add(s.cfg.RefreshTTL), At: now, Key: key, Again: true,
	})
	switch {
	case isErr(err, ErrRefreshReused), isErr(err, ErrRefreshInvalid):
		s.refreshes.WithLabelValues("invalid").Inc()
		return Tokens{}, true, ErrRefreshInvalid
	case err != nil:
		s.refreshes.WithLabelValues("error").Inc()
		return Tokens{}, true, fmt.Errorf("auth: rotate refresh token: %w", err)
	}
	access, err := s.accessToken(acct, sessionID(family))
	if err != nil {
		return Tokens{}, true, err
	}
	s.refreshes.WithLabelValues("retried").Inc()
	return s.tokens(acct.UID, access, family+"."+newSecret), true, nil
}

// Logout revokes the family of a refresh token: the current token of the
// family, or the one its last rotation spent (a sign-out that crossed a
// refresh of the same session: the browser sent the cookie the refresh
// was spending). Older tokens are refused. Taking the spent one gives a
// stale copy nothing new: sent to Refresh, it ends the session as a
// reuse.
func (s *Service) Logout(ctx context.Context, token string) error {
	return s.LogoutDevice(ctx, token, "")
}

// LogoutDevice is Logout by a known device (the {deviceID} half of its
// MQTT client ID; "" for none): once the family is revoked, the device's
// push registration is dropped through Deps.DeviceLogout, and so are
// those of the devices the session named or registered (not those
// another live session names or registered too). A failure there is
// logged, not returned: the logout itself is done.
func (s *Service) LogoutDevice(ctx context.Context, token, device string) error {
	if err := validKnownDevice(device); err != nil {
		return err
	}
	family, secret, ok := parseRefresh(token)
	if !ok {
		return ErrRefreshInvalid
	}
	f, found, err := s.readFamily(family)
	if err == nil && (!found || (!f.Revoked && f.Hash != hashSecret(secret))) {
		// Issued or rotated through another node a moment ago?
		f, found, err = s.readFamilyAfterCatchUp(ctx, family)
	}
	if err != nil {
		return err
	}
	if !found || f.Revoked || (f.Hash != hashSecret(secret) && (f.PrevHash == "" || f.PrevHash != hashSecret(secret))) {
		return ErrRefreshInvalid
	}
	if err := s.revoke(ctx, family, "logout"); err != nil {
		return err
	}
	if device != "" && s.onLogout != nil {
		if err := s.onLogout(ctx, f.UID, device); err != nil {
			s.log.Warn("logout: the device's push registration was not removed", "uid", f.UID, "device", device, "err", err)
		}
	}
	// The devices the session named or registered for push, unless
	// another live session names or registered them too.
	others := s.registeredBy(f.UID, sessionID(family))
	if f.Device != "" {
		others[f.Device] = true
	}
	delete(others, device)
	s.dropSignedOutDevices(ctx, f.UID, others)
	return nil
}

// ValidDevice checks a device ID a client names anew ("" is none), at a
// sign-in: the {deviceID} half of an MQTT client ID, with the rule of
// new device IDs (wire.ValidNewDeviceID: no invisible characters).
func ValidDevice(device string) error {
	if device == "" {
		return nil
	}
	if wire.ValidNewDeviceID(device) != nil {
		return fmt.Errorf("%w: %q: %s", ErrInvalidDevice, device, wire.NewDeviceIDRule)
	}
	return nil
}

// validKnownDevice checks a device ID that may have been named before
// the rule of new device IDs (a sign-out naming its device, whose push
// registration it removes): wire.ParseClientID's rule.
func validKnownDevice(device string) error {
	if device == "" {
		return nil
	}
	if _, _, err := wire.ParseClientID("aaa/" + device); err != nil {
		return fmt.Errorf("%w: %q", ErrInvalidDevice, device)
	}
	return nil
}

func (s *Service) revoke(ctx context.Context, family, reason string) error {
	return s.revokeSession(ctx, family, reason, false)
}

// revokeSession is revoke that, with end, also ends the session (as
// DELETE /auth/sessions/{id} does).
func (s *Service) revokeSession(ctx context.Context, family, reason string, end bool) error {
	_, err := s.propose(ctx, wire.CmdRefreshRevoke, refreshRevokeCmd{Family: family, Reason: reason, At: s.now().UTC(), EndSession: end})
	if err != nil && !isErr(err, ErrRefreshInvalid) {
		return fmt.Errorf("auth: revoke refresh family: %w", err)
	}
	return nil
}

// maxRevokeAllSteps bounds the steps of one LogoutAll (a bug must not
// spin forever): 500 families a step.
const maxRevokeAllSteps = 1000

// LogoutAll signs uid out everywhere: the access tokens issued so far
// are refused from the first step's commit on, the user's MQTT sessions
// close (OnSignedOutEverywhere), and every refresh-token family is
// revoked. It returns how many families it revoked.
func (s *Service) LogoutAll(ctx context.Context, uid string) (int, error) {
	devices, derr := s.signedInDevices(uid)
	n, _, err := s.logoutAll(ctx, uid, "logout-all")
	if err == nil && derr == nil {
		// The devices signed out stop getting pushes (a lost phone).
		s.dropSignedOutDevices(ctx, uid, devices)
	}
	return n, err
}

// signedOutSince says whether f's user signed out everywhere since f
// began (or f began before families recorded when: it is older than any
// sign-out). A sign-out everywhere revokes the families in steps of
// revokeAllStepWrites, and one cut short (its node died between steps)
// leaves some live: their refresh would mint access tokens issued after
// the sign-out, which it does not refuse. The FSM does not judge this
// (nodes of earlier versions would rotate where this one refuses): the
// node that answers the refresh does, before it proposes.
func (s *Service) signedOutSince(f refreshFamily) bool {
	at, ok := s.signedOut.get(f.UID)
	return ok && f.CreatedAt.Before(at)
}

// finishTimeout bounds how long a sign-out goes on once its request has
// gone away (finishing).
const finishTimeout = time.Minute

// finishing detaches a sign-out from its request: a client that goes
// away (or a proxy that times out) once it began must not leave it half
// done, some sessions or push registrations still live.
func finishing(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), finishTimeout)
}

// logoutAll is LogoutAll, which also answers the sign-out time of its
// last step.
func (s *Service) logoutAll(ctx context.Context, uid, reason string) (int, time.Time, error) {
	ctx, cancel := finishing(ctx)
	defer cancel()
	total := 0
	var at time.Time
	for range maxRevokeAllSteps {
		at = s.now().UTC()
		v, err := s.propose(ctx, wire.CmdRefreshRevokeAll, refreshRevokeAllCmd{UID: uid, Reason: reason, At: at})
		if err != nil {
			return total, at, fmt.Errorf("auth: revoke every refresh family: %w", err)
		}
		c, ok := v.(*revokeAllCommitted)
		if !ok {
			return total, at, fmt.Errorf("auth: revoke every refresh family: the step answered %T", v)
		}
		step := c.step
		total += step.Revoked
		if step.Done {
			return total, at, nil
		}
	}
	return total, at, fmt.Errorf("auth: revoke every refresh family: not done after %d steps", maxRevokeAllSteps)
}
