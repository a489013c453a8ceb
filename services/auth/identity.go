package auth

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/internal/wire"
)

// Federated accounts: a user who signs in through an OpenID Connect
// provider is linked to (issuer, subject), never to a username, so that
// two providers cannot collide. The first sign-in creates the account
// (CmdIdentitySignIn, decided by the FSM so that two nodes racing create
// one account); its user ID comes from the provider's username claim,
// with a numeric suffix when taken. Such an account has no password.

// Keys of identity links.
const (
	prefixIdent     = "r/auth/ident/"  // + identKey(iss, sub) → identityLink
	prefixUserIdent = "r/auth/uident/" // + uid + "/" + identKey(iss, sub) → identityLink (a user's links)
)

// Limits of identity fields.
const (
	maxIssuerLen   = 512
	maxSubjectLen  = 255
	maxPictureLen  = 2048
	maxEmailLen    = 320
	maxUsernameTry = 1000 // suffixes tried on a username clash
)

// Errors of federated identities.
var (
	// ErrBadIdentity: a federated identity without a usable issuer or subject.
	ErrBadIdentity = errors.New("auth: bad federated identity")
	// ErrIdentityTaken: the provider's subject is linked to another account.
	ErrIdentityTaken = errors.New("auth: this provider account is linked to another user")
	// ErrNoIdentity: the account has no link to that provider.
	ErrNoIdentity = errors.New("auth: no link to that provider")
	// ErrLastSignIn: unlinking would leave the account no way to sign in.
	ErrLastSignIn = errors.New("auth: the last way to sign in cannot be removed")
)

// FederatedIdentity is a user as an identity provider vouched for them
// (see services/auth/idp).
type FederatedIdentity struct {
	Provider    string // the configured name of the provider
	Issuer      string
	Subject     string
	Username    string // the provider's username claim: the wished-for user ID
	DisplayName string
	Picture     string // avatar URL
	Email       string
	// IssuedAt is the provider token's iat (zero without one). A token
	// presented at MQTT CONNECT is the session's credential itself: one
	// issued before the user signed out everywhere is refused there.
	IssuedAt time.Time
}

// IdentityLink is one link of an account to a provider's subject.
type IdentityLink struct {
	UID      string    `json:"uid"`
	Provider string    `json:"provider"`
	Issuer   string    `json:"issuer"`
	Subject  string    `json:"subject"`
	Email    string    `json:"email,omitempty"`
	Picture  string    `json:"picture,omitempty"`
	LinkedAt time.Time `json:"linkedAt"`
}

type identitySignInCmd struct {
	// Op: "" signs in (creating the account when new); "link" links the
	// identity to the existing account LinkTo; "unlink" removes LinkTo's
	// link (unless it is the account's last way to sign in).
	Op       string    `json:"op,omitempty"`
	LinkTo   string    `json:"linkTo,omitempty"`
	Issuer   string    `json:"iss"`
	Subject  string    `json:"sub"`
	Provider string    `json:"provider"`
	Base     string    `json:"base"` // the wished-for user ID (valid); the FSM adds a suffix when taken
	Email    string    `json:"email,omitempty"`
	Picture  string    `json:"picture,omitempty"`
	At       time.Time `json:"at"`
	// NoPassword, on an unlink: the account's password does not count
	// as a way in (password login is turned off on the proposing node).
	NoPassword bool `json:"noPassword,omitempty"`
}

// identitySignInResult is what the FSM decided.
type identitySignInResult struct {
	Account account
	Created bool
}

func identKey(iss, sub string) string {
	b := base64.RawURLEncoding
	return b.EncodeToString([]byte(iss)) + "." + b.EncodeToString([]byte(sub))
}

// UsernameCandidate turns a provider's username claim into a valid user
// ID to ask for: lowercased, characters outside a-z0-9_.- replaced by
// '_', a letter first, 3-32 characters. fallback (the subject) is used
// when the claim is empty.
func UsernameCandidate(claim, fallback string) string {
	if strings.TrimSpace(claim) == "" {
		claim = fallback
	}
	var b strings.Builder
	for _, r := range strings.ToLower(claim) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '_', r == '.', r == '-':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
		if b.Len() >= 64 {
			break
		}
	}
	s := strings.Trim(b.String(), "_.-")
	if s == "" {
		s = "user"
	}
	if s[0] < 'a' || s[0] > 'z' {
		s = "u" + s
	}
	for len(s) < 3 {
		s += "_"
	}
	if len(s) > 32 {
		s = strings.TrimRight(s[:32], "_.-")
		for len(s) < 3 {
			s += "_"
		}
	}
	return s
}

// withSuffix is the i-th user ID tried for base: base itself, then base2,
// base3, ... (base shortened to keep 32 characters).
func withSuffix(base string, i int) string {
	if i <= 1 {
		return base
	}
	n := strconv.Itoa(i)
	if len(base)+len(n) > 32 {
		base = base[:32-len(n)]
	}
	return base + n
}

func validIdentity(iss, sub string) error {
	if iss == "" || len(iss) > maxIssuerLen || sub == "" || len(sub) > maxSubjectLen {
		return fmt.Errorf("%w: issuer and subject are required (at most %d and %d bytes)", ErrBadIdentity, maxIssuerLen, maxSubjectLen)
	}
	return nil
}

// applyIdentitySignIn returns the account linked to (issuer, subject),
// creating account and link on the first sign-in. A link to a deleted
// account is replaced by a new account (the old user ID stays reserved).
func applyIdentitySignIn(tx *badger.Txn, _ fsm.Position, payload []byte) (any, error) {
	var c identitySignInCmd
	if err := decodeCmd(payload, &c); err != nil {
		return nil, err
	}
	switch c.Op {
	case "link", "unlink":
		if validIdentity(c.Issuer, c.Subject) != nil || wire.ValidUserID(c.LinkTo) != nil {
			return nil, fmt.Errorf("%w: bad identity %s", errBadCommand, c.Op)
		}
		if c.Op == "link" {
			return applyIdentityLink(tx, c)
		}
		return applyIdentityUnlink(tx, c)
	case "":
	default:
		return nil, fmt.Errorf("%w: identity op %q", errBadCommand, c.Op)
	}
	if validIdentity(c.Issuer, c.Subject) != nil || wire.ValidUserID(c.Base) != nil ||
		len(c.Picture) > maxPictureLen || len(c.Email) > maxEmailLen {
		return nil, fmt.Errorf("%w: bad identity sign-in", errBadCommand)
	}
	ik := identKey(c.Issuer, c.Subject)
	var link IdentityLink
	found, err := getJSON(tx, prefixIdent+ik, &link)
	if err != nil {
		return nil, err
	}
	if found {
		gone, err := keyExists(tx, prefixGone+link.UID)
		if err != nil {
			return nil, err
		}
		var a account
		ok, err := getJSON(tx, prefixAccount+link.UID, &a)
		if err != nil {
			return nil, err
		}
		if ok && !gone {
			return identitySignInResult{Account: a}, nil
		}
		if err := tx.Delete([]byte(prefixUserIdent + link.UID + "/" + ik)); err != nil {
			return nil, err
		}
	}
	uid := ""
	for i := 1; i <= maxUsernameTry && uid == ""; i++ {
		cand := withSuffix(c.Base, i)
		if reservedUsernames[cand] || wire.ValidUserID(cand) != nil {
			continue
		}
		taken, err := keyExists(tx, prefixAccount+cand)
		if err != nil {
			return nil, err
		}
		gone, err := keyExists(tx, prefixGone+cand)
		if err != nil {
			return nil, err
		}
		if !taken && !gone {
			uid = cand
		}
	}
	if uid == "" {
		return nil, fmt.Errorf("%w: %s and %d variants", ErrUsernameTaken, c.Base, maxUsernameTry)
	}
	first, err := firstAccount(tx)
	if err != nil {
		return nil, err
	}
	a := account{UID: uid, Admin: first, CreatedAt: c.At, UpdatedAt: c.At}
	if err := setJSON(tx, prefixAccount+uid, a); err != nil {
		return nil, err
	}
	link = IdentityLink{UID: uid, Provider: c.Provider, Issuer: c.Issuer, Subject: c.Subject, Email: c.Email,
		Picture: c.Picture, LinkedAt: c.At}
	if err := setJSON(tx, prefixIdent+ik, link); err != nil {
		return nil, err
	}
	if err := setJSON(tx, prefixUserIdent+uid+"/"+ik, link); err != nil {
		return nil, err
	}
	return identitySignInResult{Account: a, Created: true}, nil
}

// liveAccount reads uid's account unless it is missing or deleted.
func liveAccount(tx *badger.Txn, uid string) (account, bool, error) {
	var a account
	ok, err := getJSON(tx, prefixAccount+uid, &a)
	if err != nil || !ok {
		return account{}, false, err
	}
	gone, err := keyExists(tx, prefixGone+uid)
	return a, !gone, err
}

// linkTarget reads what a link or unlink of c works on: the live account
// LinkTo (ErrNoAccount when there is none), the identity's key, and the
// link that (issuer, subject) has now, if any.
func linkTarget(tx *badger.Txn, c identitySignInCmd) (a account, ik string, l IdentityLink, found bool, err error) {
	a, ok, err := liveAccount(tx, c.LinkTo)
	if err != nil {
		return a, "", l, false, err
	}
	if !ok {
		return a, "", l, false, ErrNoAccount
	}
	ik = identKey(c.Issuer, c.Subject)
	found, err = getJSON(tx, prefixIdent+ik, &l)
	return a, ik, l, found, err
}

// applyIdentityLink links (issuer, subject) to the existing account
// LinkTo; a link to another live account is refused.
func applyIdentityLink(tx *badger.Txn, c identitySignInCmd) (any, error) {
	a, ik, l, found, err := linkTarget(tx, c)
	if err != nil {
		return nil, err
	}
	if found && l.UID == c.LinkTo {
		return identitySignInResult{Account: a}, nil
	}
	if found {
		if _, live, err := liveAccount(tx, l.UID); err != nil {
			return nil, err
		} else if live {
			return nil, ErrIdentityTaken
		}
		if err := tx.Delete([]byte(prefixUserIdent + l.UID + "/" + ik)); err != nil {
			return nil, err
		}
	}
	l = IdentityLink{UID: c.LinkTo, Provider: c.Provider, Issuer: c.Issuer, Subject: c.Subject, Email: c.Email,
		Picture: c.Picture, LinkedAt: c.At}
	if err := setJSON(tx, prefixIdent+ik, l); err != nil {
		return nil, err
	}
	return identitySignInResult{Account: a}, setJSON(tx, prefixUserIdent+c.LinkTo+"/"+ik, l)
}

// applyIdentityUnlink removes LinkTo's link to (issuer, subject), unless
// the account would be left without a password and without links.
func applyIdentityUnlink(tx *badger.Txn, c identitySignInCmd) (any, error) {
	a, ik, l, found, err := linkTarget(tx, c)
	if err != nil {
		return nil, err
	}
	if !found || l.UID != c.LinkTo {
		return nil, ErrNoIdentity
	}
	if a.Hash == "" || c.NoPassword {
		n := 0
		it := tx.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixUserIdent + c.LinkTo + "/")})
		for it.Rewind(); it.Valid() && n < 2; it.Next() {
			n++
		}
		it.Close()
		if n < 2 {
			return nil, ErrLastSignIn
		}
	}
	if err := tx.Delete([]byte(prefixIdent + ik)); err != nil {
		return nil, err
	}
	return nil, tx.Delete([]byte(prefixUserIdent + c.LinkTo + "/" + ik))
}

// LinkIdentity links a provider's subject to the signed-in account uid
// (POST /user/me/identities). Linking it again is harmless;
// ErrIdentityTaken when another account holds it.
func (s *Service) LinkIdentity(ctx context.Context, uid string, id FederatedIdentity) error {
	if err := validIdentity(id.Issuer, id.Subject); err != nil {
		return err
	}
	if wire.ValidUserID(uid) != nil || s.gone.has(uid) {
		return fmt.Errorf("%w: %s", ErrNoAccount, uid)
	}
	picture, email := federatedPicture(id.Picture), id.Email
	if len(email) > maxEmailLen {
		email = ""
	}
	_, err := s.propose(ctx, wire.CmdIdentitySignIn, identitySignInCmd{Op: "link", LinkTo: uid, Issuer: id.Issuer,
		Subject: id.Subject, Provider: id.Provider, Email: email, Picture: picture, At: s.now().UTC()})
	switch {
	case isErr(err, ErrIdentityTaken):
		return ErrIdentityTaken
	case isErr(err, ErrNoAccount):
		return fmt.Errorf("%w: %s", ErrNoAccount, uid)
	case err != nil:
		return fmt.Errorf("auth: link identity: %w", err)
	}
	s.log.Info("identity linked", "uid", uid, "provider", id.Provider)
	return nil
}

// UnlinkIdentity removes uid's link to the provider named provider
// (DELETE /user/me/identities/{provider}): ErrNoIdentity when there is
// none, ErrLastSignIn when it is the account's only way in.
func (s *Service) UnlinkIdentity(ctx context.Context, uid, provider string) error {
	links, err := s.Identities(uid)
	if err != nil {
		return err
	}
	for _, l := range links {
		if l.Provider != provider {
			continue
		}
		// With password login off a password signs nobody in: the last
		// link is the last way in, password or not.
		_, err := s.propose(ctx, wire.CmdIdentitySignIn, identitySignInCmd{Op: "unlink", LinkTo: uid, Issuer: l.Issuer,
			Subject: l.Subject, Provider: l.Provider, At: s.now().UTC(), NoPassword: s.cfg.NoPasswordLogin})
		switch {
		case isErr(err, ErrLastSignIn):
			return ErrLastSignIn
		case isErr(err, ErrNoIdentity):
			return ErrNoIdentity
		case err != nil:
			return fmt.Errorf("auth: unlink identity: %w", err)
		}
		s.log.Info("identity unlinked", "uid", uid, "provider", provider)
		return nil
	}
	return fmt.Errorf("%w: %q", ErrNoIdentity, provider)
}

// HasPassword reports whether uid can sign in with a password (never
// while password login is turned off).
func (s *Service) HasPassword(uid string) (bool, error) {
	if s.cfg.NoPasswordLogin {
		return false, nil
	}
	a, found, err := s.readAccount(uid)
	if err != nil {
		return false, err
	}
	return found && a.Hash != "", nil
}

// deleteIdentityLinks removes an erased account's links to providers
// (a handful: one per provider at most), the link of (issuer, subject)
// only while it still names uid.
func deleteIdentityLinks(tx *badger.Txn, uid string) error {
	prefix := []byte(prefixUserIdent + uid + "/")
	var keys [][]byte
	it := tx.NewIterator(badger.IteratorOptions{Prefix: prefix})
	for it.Rewind(); it.Valid(); it.Next() {
		keys = append(keys, it.Item().KeyCopy(nil))
	}
	it.Close()
	for _, k := range keys {
		ik := string(k[len(prefix):])
		var l IdentityLink
		found, err := getJSON(tx, prefixIdent+ik, &l)
		if err != nil {
			return err
		}
		if found && l.UID == uid {
			if err := tx.Delete([]byte(prefixIdent + ik)); err != nil {
				return err
			}
		}
		if err := tx.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

func keyExists(tx *badger.Txn, key string) (bool, error) {
	_, err := tx.Get([]byte(key))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return false, nil
	}
	return err == nil, err
}

// readIdentity reads the link of (issuer, subject) from the local database.
func (s *Service) readIdentity(iss, sub string) (IdentityLink, bool, error) {
	var l IdentityLink
	var found bool
	err := s.db.View(func(tx *badger.Txn) error {
		var err error
		found, err = getJSON(tx, prefixIdent+identKey(iss, sub), &l)
		return err
	})
	if err != nil {
		return IdentityLink{}, false, fmt.Errorf("auth: read identity: %w", err)
	}
	return l, found, nil
}

// Identities lists the provider links of an account.
func (s *Service) Identities(uid string) ([]IdentityLink, error) {
	var out []IdentityLink
	err := s.db.View(func(tx *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = []byte(prefixUserIdent + uid + "/")
		it := tx.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			var l IdentityLink
			if err := it.Item().Value(func(b []byte) error { return decodeCmd(b, &l) }); err != nil {
				return err
			}
			out = append(out, l)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("auth: list identities: %w", err)
	}
	return out, nil
}

// avatarProfiles is a ProfileCreator that also takes an avatar URL
// (implemented by *users.Service).
type avatarProfiles interface {
	CreateProfileWithAvatar(ctx context.Context, uid, displayName, avatar string) error
}

// federatedAccount returns the account linked to id, creating it (and
// its profile) on the first sign-in.
func (s *Service) federatedAccount(ctx context.Context, id FederatedIdentity) (account, error) {
	if err := validIdentity(id.Issuer, id.Subject); err != nil {
		return account{}, err
	}
	if l, found, err := s.readIdentity(id.Issuer, id.Subject); err != nil {
		return account{}, err
	} else if found && !s.gone.has(l.UID) {
		if a, ok, err := s.readAccount(l.UID); err != nil {
			return account{}, err
		} else if ok {
			return a, nil
		}
	}
	picture, email := federatedPicture(id.Picture), id.Email
	if len(email) > maxEmailLen {
		email = ""
	}
	v, err := s.propose(ctx, wire.CmdIdentitySignIn, identitySignInCmd{
		Issuer: id.Issuer, Subject: id.Subject, Provider: id.Provider, Base: UsernameCandidate(id.Username, id.Subject),
		Email: email, Picture: picture, At: s.now().UTC(),
	})
	if err != nil {
		s.registrations.WithLabelValues("error").Inc()
		return account{}, fmt.Errorf("auth: federated sign-in: %w", err)
	}
	res, ok := v.(identitySignInResult)
	if !ok {
		return account{}, fmt.Errorf("auth: federated sign-in: unexpected result %T", v)
	}
	if res.Created {
		s.registrations.WithLabelValues("federated").Inc()
		s.log.Info("account created on first federated sign-in", "uid", res.Account.UID, "provider", id.Provider)
		if s.profiles != nil {
			name, err := wire.NormalizeDisplayNameJoiners(id.DisplayName, s.joiners())
			if err != nil || name == "" {
				name = res.Account.UID
			}
			create := s.profiles.CreateProfile
			if ap, ok := s.profiles.(avatarProfiles); ok && picture != "" {
				create = func(ctx context.Context, uid, name string) error {
					return ap.CreateProfileWithAvatar(ctx, uid, name, picture)
				}
			}
			if err := create(ctx, res.Account.UID, name); err != nil {
				// The account exists; the next sign-in (or PATCH /user/me)
				// makes the missing profile.
				s.log.Error("federated account created without profile", "uid", res.Account.UID, "err", err)
			}
		}
	}
	return res.Account, nil
}

// federatedPicture is the provider's picture a profile takes as its
// avatar: an https URL of bounded length, else none.
func federatedPicture(picture string) string {
	if len(picture) > maxPictureLen || !strings.HasPrefix(picture, "https://") {
		return ""
	}
	return picture
}

// SignInFederated issues edgechat tokens to the user a provider vouched
// for, creating the account on the first sign-in: the answer of
// POST /auth/login.
func (s *Service) SignInFederated(ctx context.Context, id FederatedIdentity) (Tokens, error) {
	a, err := s.federatedAccount(ctx, id)
	if err != nil {
		s.logins.WithLabelValues("federated_error").Inc()
		return Tokens{}, err
	}
	t, err := s.issue(ctx, a)
	if isErr(err, ErrRefreshInvalid) && s.gone.has(a.UID) {
		// The account was deleted (through another node) after it was
		// read: this node has applied that by now, and a sign-in of a
		// deleted account's subject makes a new account.
		if a, err = s.federatedAccount(ctx, id); err == nil {
			t, err = s.issue(ctx, a)
		}
	}
	if err != nil {
		s.logins.WithLabelValues("error").Inc()
		return Tokens{}, err
	}
	name, nerr := wire.NormalizeDisplayNameJoiners(id.DisplayName, s.joiners())
	if nerr != nil || name == "" {
		name = a.UID
	}
	s.repairProfile(ctx, a.UID, name, federatedPicture(id.Picture))
	s.logins.WithLabelValues("federated").Inc()
	return t, nil
}

// FederatedPrincipal is the principal of the user a provider vouched for
// (MQTT CONNECT with a provider's JWT), creating the account on the first
// sign-in.
func (s *Service) FederatedPrincipal(ctx context.Context, id FederatedIdentity) (wire.Principal, error) {
	// The subject's account was deleted after the provider issued this
	// token: an app that still holds it (a phone reconnecting after its
	// user deleted the account elsewhere) is refused, and makes no new
	// account, which would store the provider's name, email and picture
	// again though the user just left. A token issued after the deletion
	// is a new sign-in (federatedAccount makes the new account), as is
	// the token exchange.
	if l, found, err := s.readIdentity(id.Issuer, id.Subject); err != nil {
		return wire.Principal{}, err
	} else if r, gone := s.gone.get(l.UID); found && gone && secondIssuedBefore(id.IssuedAt, r.RequestedAt) {
		return wire.Principal{}, fmt.Errorf("%w: %w", wire.ErrBadToken, ErrAccountDeleted)
	}
	a, err := s.federatedAccount(ctx, id)
	if err != nil {
		return wire.Principal{}, err
	}
	if suspended, err := s.suspendedNow(ctx, a.UID); err != nil {
		return wire.Principal{}, fmt.Errorf("%w: %w", wire.ErrUnavailable, err)
	} else if suspended {
		return wire.Principal{}, fmt.Errorf("%w: %w", wire.ErrBadToken, ErrSuspended)
	}
	// Signed out everywhere (or a password change, which does it) after
	// the provider issued this token: the token is refused, as edgechat's
	// own access tokens of before are, until the app gets a new one from
	// its provider.
	if at, ok := s.signedOut.get(a.UID); ok && secondIssuedBefore(id.IssuedAt, at) {
		return wire.Principal{}, fmt.Errorf("%w: %w", wire.ErrBadToken, ErrSignedOutSince)
	}
	return wire.Principal{UserID: a.UID, Admin: a.Admin}, nil
}
