package auth

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"time"

	"github.com/edgechat/edgechat/internal/httpapi"
	"github.com/edgechat/edgechat/internal/ratelimit"
	"github.com/edgechat/edgechat/internal/wire"
)

// Changing a password. A user changes theirs by proving the current one
// (or, for an account a provider created, a fresh token of a provider
// linked to it); an admin resets anyone's. Either way the new hash and
// the user's sign-out everywhere commit in one Raft entry (a
// CmdAccountUpdate with SignOut): whoever knew the old password and
// signed in with it loses every session at the moment the new password
// takes effect, on every node, and the caller gets fresh tokens.
//
// The entry is followed by at least one CmdRefreshRevokeAll step (as
// `logout-all` takes), which finishes a user with more families than one
// step revokes, and which makes a node of an earlier version, that
// applies the hash but does not know SignOut, revoke the sessions too.

// ErrPasswordChanged refuses a password change whose account's password
// changed between the check of the current one and the commit (a second
// change at the same time, or through another node).
var ErrPasswordChanged = errors.New("auth: the password was changed meanwhile; sign in again")

// CodePasswordChanged is ErrPasswordChanged's HTTP code.
const CodePasswordChanged = "password_changed"

// PasswordProof is how a user proves themselves to change their
// password: the current password, or (an account without one, created
// by an identity provider) a fresh token of a provider linked to it.
type PasswordProof struct {
	Password     string
	Provider     string
	SubjectToken string
}

// PasswordChange answers a password change: the caller's new tokens (its
// session goes on; every other ended) and how many sessions ended.
type PasswordChange struct {
	Tokens
	Revoked int `json:"revoked"`
}

// ChangePassword sets uid's password to newPassword once proof holds,
// signs the user out everywhere in the same commit, and issues tokens
// for the caller. Wrong proofs are rate limited like logins.
func (s *Service) ChangePassword(ctx context.Context, uid string, proof PasswordProof, newPassword, ip string) (PasswordChange, error) {
	if s.cfg.NoPasswordLogin {
		return PasswordChange{}, ErrPasswordLoginOff
	}
	ipKey := ratelimit.RemoteIPKey(ip)
	if wait := max(s.perIP.Wait(ipKey), s.perProof.Wait(uid)); wait > 0 {
		s.passwordChanges.WithLabelValues("rate_limited").Inc()
		return PasswordChange{}, &RateLimitError{RetryAfter: wait}
	}
	if err := validPassword(newPassword); err != nil {
		s.passwordChanges.WithLabelValues("invalid").Inc()
		return PasswordChange{}, err
	}
	acct, found, err := s.readAccount(uid)
	if err != nil {
		s.passwordChanges.WithLabelValues("error").Inc()
		return PasswordChange{}, err
	}
	if !found || s.gone.has(uid) {
		s.passwordChanges.WithLabelValues("deleted").Inc()
		return PasswordChange{}, ErrAccountDeleted
	}
	acct, ok, err := s.provesCommitted(ctx, acct, proof)
	if err != nil {
		s.passwordChanges.WithLabelValues("error").Inc()
		return PasswordChange{}, err
	}
	if !ok {
		s.proofFailed(uid, ipKey)
		s.passwordChanges.WithLabelValues("wrong_password").Inc()
		return PasswordChange{}, ErrWrongPassword
	}
	hash := s.hasher.hash(newPassword)
	devices, derr := s.signedInDevices(uid)
	revoked, signedOut, err := s.setPassword(ctx, uid, hash, &acct.Hash)
	if err != nil {
		if errors.Is(err, ErrPasswordChanged) {
			s.passwordChanges.WithLabelValues("conflict").Inc()
		} else {
			s.passwordChanges.WithLabelValues("error").Inc()
		}
		return PasswordChange{}, err
	}
	if derr == nil {
		// The devices signed out stop getting pushes; the one changing
		// the password stays signed in (issueAfter names it again).
		delete(devices, clientInfoFrom(ctx).Device)
		s.dropSignedOutDevices(ctx, uid, devices)
	}
	acct.Hash = hash
	t, err := s.issueAfter(ctx, acct, signedOut, true)
	if err != nil {
		s.passwordChanges.WithLabelValues("error").Inc()
		return PasswordChange{}, fmt.Errorf("auth: the password changed, but new tokens were not issued (sign in again): %w", err)
	}
	s.passwordChanges.WithLabelValues("changed").Inc()
	s.log.Info("password changed; signed out everywhere", "uid", uid, "revoked", revoked)
	return PasswordChange{Tokens: t, Revoked: revoked}, nil
}

// ProveUser checks that the caller is uid's user and not just the holder
// of one of its access tokens (which leak more easily and are not asked
// again): proof is the current password or a fresh token of a provider
// already linked to the account, as for a password change. Linking a
// provider asks for it (POST /user/me/identities): with an access token
// alone, a thief could link their own provider account and from then on
// prove themselves with it, to change the password or delete the
// account. Failures are rate limited like logins: ErrWrongPassword, or a
// *RateLimitError; ErrAccountDeleted for an account that is gone.
func (s *Service) ProveUser(ctx context.Context, uid string, proof PasswordProof, r *http.Request) error {
	ipKey := ratelimit.RemoteIPKey(clientIP(r))
	if wait := max(s.perIP.Wait(ipKey), s.perProof.Wait(uid)); wait > 0 {
		return &RateLimitError{RetryAfter: wait}
	}
	acct, found, err := s.readAccount(uid)
	if err != nil {
		return err
	}
	if !found || s.gone.has(uid) {
		return ErrAccountDeleted
	}
	_, ok, err := s.provesCommitted(ctx, acct, proof)
	if err != nil {
		return err
	}
	if !ok {
		s.proofFailed(uid, ipKey)
		return ErrWrongPassword
	}
	return nil
}

// provesCommitted is proves, checked again against the account as
// committed when a password does not match: it may have changed through
// another node a moment ago (as Login does). It answers the account the
// proof was checked against.
func (s *Service) provesCommitted(ctx context.Context, acct account, proof PasswordProof) (account, bool, error) {
	ok, err := s.proves(ctx, acct, proof)
	if err != nil || ok || proof.Password == "" {
		return acct, ok, err
	}
	fresh, found, err := s.readAfterCatchUp(ctx, acct.UID)
	if err != nil || !found || fresh.Hash == acct.Hash {
		return acct, false, err
	}
	ok, err = s.proves(ctx, fresh, proof)
	return fresh, ok, err
}

// proofFailed counts a wrong proof against the user's proof limit and
// the address's login limit. Not against the login limit of the name:
// a thief holding an access token must not lock the user's sign-in, nor
// others' failed logins the user's proofs.
func (s *Service) proofFailed(uid, ipKey string) {
	s.perProof.Allow(uid)
	s.perIP.Allow(ipKey)
}

// ProofHTTPError is the HTTP error of a failed ProveUser.
func ProofHTTPError(err error) error { return passwordHTTPError(err) }

// proves tells whether proof proves that the caller is acct's user.
func (s *Service) proves(ctx context.Context, acct account, proof PasswordProof) (bool, error) {
	if proof.Provider != "" || proof.SubjectToken != "" {
		if s.providerCheck == nil {
			return false, nil
		}
		id, err := s.providerCheck(ctx, proof.Provider, proof.SubjectToken)
		if err != nil {
			s.log.Debug("proof of the user: provider token refused", "uid", acct.UID, "err", err)
			return false, nil
		}
		l, found, err := s.readIdentity(id.Issuer, id.Subject)
		if err == nil && (!found || l.UID != acct.UID) {
			// Linked through another node a moment ago?
			if err = s.catchUp(ctx); err == nil {
				l, found, err = s.readIdentity(id.Issuer, id.Subject)
			}
		}
		if err != nil {
			return false, err
		}
		return found && l.UID == acct.UID, nil
	}
	if acct.Hash == "" || len(proof.Password) > MaxPassword {
		return false, nil // no password to match: the provider proves it
	}
	ok, err := s.hasher.verify(proof.Password, acct.Hash)
	if err != nil {
		s.log.Error("stored password hash unreadable", "uid", acct.UID, "err", err)
		return false, nil
	}
	return ok, nil
}

// ResetPassword sets uid's password (an admin's reset: no proof) and
// signs the user out everywhere in the same commit. It answers how many
// sessions ended; an unknown or deleted uid wraps ErrNoAccount and
// wire.ErrNotFound.
func (s *Service) ResetPassword(ctx context.Context, uid, newPassword string) (int, error) {
	if s.cfg.NoPasswordLogin {
		return 0, ErrPasswordLoginOff
	}
	if err := validPassword(newPassword); err != nil {
		return 0, err
	}
	if s.gone.has(uid) {
		return 0, fmt.Errorf("%w: %w: %s", ErrNoAccount, wire.ErrNotFound, uid)
	}
	devices, derr := s.signedInDevices(uid)
	revoked, _, err := s.setPassword(ctx, uid, s.hasher.hash(newPassword), nil)
	if isErr(err, ErrNoAccount) {
		return 0, fmt.Errorf("%w: %w: %s", ErrNoAccount, wire.ErrNotFound, uid)
	}
	if err != nil {
		return 0, err
	}
	if derr == nil {
		s.dropSignedOutDevices(ctx, uid, devices) // every device is signed out
	}
	s.passwordChanges.WithLabelValues("reset").Inc()
	s.log.Info("password reset by an admin; signed out everywhere", "uid", uid, "revoked", revoked)
	return revoked, nil
}

// setPassword commits hash as uid's password with the first step of
// signing them out everywhere (a compare-and-swap on prev when it is
// not nil), then takes the sign-out's remaining steps. It answers how
// many sessions ended and the time of the last sign-out step.
func (s *Service) setPassword(ctx context.Context, uid, hash string, prev *string) (int, time.Time, error) {
	at := s.now().UTC()
	v, err := s.propose(ctx, wire.CmdAccountUpdate, accountUpdateCmd{
		UID: uid, Hash: &hash, PrevHash: prev, SignOut: true, At: at,
	})
	switch {
	case isErr(err, ErrPasswordChanged):
		return 0, at, ErrPasswordChanged
	case isErr(err, ErrNoAccount):
		return 0, at, ErrNoAccount
	case err != nil:
		return 0, at, fmt.Errorf("auth: set password: %w", err)
	}
	revoked, done := 0, false
	if c, ok := v.(*revokeAllCommitted); ok {
		revoked, done = c.step.Revoked, c.step.Done
	}
	more, last, err := s.logoutAll(ctx, uid, "password")
	if err != nil {
		if !done {
			return revoked + more, last, fmt.Errorf("auth: the password changed, but not every session ended: %w", err)
		}
		// Every session ended with the change; the extra step is for
		// nodes of an earlier version.
		s.log.Warn("password changed; the follow-up sign-out step failed", "uid", uid, "err", err)
	}
	return revoked + more, last, nil
}

// changePasswordRequest is the body of POST /auth/password.
type changePasswordRequest struct {
	CurrentPassword string `json:"currentPassword,omitempty"`
	// Or, for an account created by an identity provider: a fresh token
	// of a provider linked to it.
	Provider     string `json:"provider,omitempty"`
	SubjectToken string `json:"subjectToken,omitempty"`
	NewPassword  string `json:"newPassword"`
	Session      string `json:"session,omitempty"`
}

func decodeChangePassword(body []byte) (changePasswordRequest, error) {
	var req changePasswordRequest
	err := httpapi.DecodeJSONBytes(body, &req)
	return req, err
}

// resetPasswordRequest is the body of PUT /admin/users/{uid}/password.
type resetPasswordRequest struct {
	Password string `json:"password"`
}

func decodeResetPassword(body []byte) (resetPasswordRequest, error) {
	var req resetPasswordRequest
	err := httpapi.DecodeJSONBytes(body, &req)
	return req, err
}

// handleChangePassword answers POST /auth/password: 200 with the
// caller's new tokens and how many sessions ended.
func (s *Service) handleChangePassword(w http.ResponseWriter, r *http.Request) {
	p, ok := httpapi.PrincipalFrom(r.Context())
	if !ok || p.UserID == "" {
		httpapi.WriteError(w, httpapi.Errorf(http.StatusUnauthorized, httpapi.CodeUnauthorized, "sign in first"))
		return
	}
	var req changePasswordRequest
	if err := httpapi.DecodeJSON(r, &req, maxDeleteBody); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	if !validSessionMode(req.Session) {
		httpapi.WriteError(w, errBadSession)
		return
	}
	if req.CurrentPassword != "" && (req.Provider != "" || req.SubjectToken != "") {
		httpapi.WriteError(w, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeValidation,
			"give either currentPassword or provider and subjectToken"))
		return
	}
	proof := PasswordProof{Password: req.CurrentPassword, Provider: req.Provider, SubjectToken: req.SubjectToken}
	// The session goes on under new tokens: it keeps the device its
	// sign-in named (in the session list, and its push registration),
	// or else, named now, the one it registered for push.
	device := s.sessionDevice(p.UserID, p.SessionID)
	if device == "" {
		if regs := slices.Sorted(maps.Keys(s.registeredBy(p.UserID, p.SessionID))); len(regs) > 0 {
			device = regs[0]
		}
	}
	ctx := WithClientInfo(r.Context(), ClientInfoOf(r, device))
	res, err := s.ChangePassword(ctx, p.UserID, proof, req.NewPassword, clientIP(r))
	if err != nil {
		httpapi.WriteError(w, passwordHTTPError(err))
		return
	}
	if req.Session == sessionCookieMode {
		s.setSessionCookie(w, r, &res.Tokens)
	}
	w.Header().Set("Cache-Control", "no-store")
	httpapi.WriteJSON(w, http.StatusOK, res)
}

// handleResetPassword answers PUT /admin/users/{uid}/password:
// {userId, revoked}.
func (s *Service) handleResetPassword(w http.ResponseWriter, r *http.Request) {
	var req resetPasswordRequest
	if err := httpapi.DecodeJSON(r, &req, maxAuthBody); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	uid, err := httpapi.AdminUserID(r)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	n, err := s.ResetPassword(r.Context(), uid, req.Password)
	if err != nil {
		httpapi.WriteError(w, passwordHTTPError(err))
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"userId": uid, "revoked": n})
}

// passwordHTTPError maps the errors of a password change or reset.
func passwordHTTPError(err error) error {
	switch {
	case errors.Is(err, ErrWrongPassword):
		return httpapi.Errorf(http.StatusForbidden, httpapi.CodeForbidden, "wrong current password or provider token")
	case errors.Is(err, ErrAccountDeleted), errors.Is(err, ErrNoAccount):
		return httpapi.Errorf(http.StatusNotFound, httpapi.CodeNotFound, "no such user")
	case errors.Is(err, ErrPasswordChanged):
		return httpapi.Errorf(http.StatusConflict, CodePasswordChanged, "%v", err)
	}
	return httpError(err)
}
