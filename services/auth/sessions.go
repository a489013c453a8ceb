package auth

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/internal/httpapi"
	"github.com/edgechat/edgechat/internal/wire"
)

// Sessions: every sign-in is a refresh-token family, and a user may list
// theirs (GET /auth/sessions: which device and browser, since when, last
// used) and end one (DELETE /auth/sessions/{id}: a lost phone). A
// session's public ID is derived from its family (the family ID is half
// of a refresh token, so it is never shown); access tokens carry it
// (the "sid" claim), so that ending a session refuses its access tokens
// at once on every node and closes its MQTT connections, not only its
// next refresh.
//
// The families of a user are indexed (r/auth/rtuser/{uid}/{family}) when
// they are made and at each rotation, so a family made before the index
// existed is listed once it has been used; revoking a family removes
// its entry.

// prefixSessionEnded records ended sessions: + session ID → time (JSON).
const prefixSessionEnded = "r/auth/sessionended/"

// Bounds of what a sign-in says of its client.
const (
	maxDeviceLen = 64
	maxAgentLen  = 200
)

// ErrNoSession: no live session of the caller has that ID.
var ErrNoSession = errors.New("auth: no such session")

// sessionID is the public ID of a family's session.
func sessionID(family string) string {
	sum := sha256.Sum256([]byte("edgechat-session:" + family))
	return base64.RawURLEncoding.EncodeToString(sum[:12])
}

func indexFamily(tx *badger.Txn, uid, family string) error {
	return tx.Set([]byte(prefixUserFamily+uid+"/"+family), nil)
}

func unindexFamily(tx *badger.Txn, uid, family string) error {
	return tx.Delete([]byte(prefixUserFamily + uid + "/" + family))
}

// clip keeps the first n bytes of s's printable characters (whole runes).
func clip(s string, n int) string {
	var b strings.Builder
	for _, r := range s {
		if !unicode.IsPrint(r) {
			continue
		}
		if b.Len()+len(string(r)) > n {
			break
		}
		b.WriteRune(r)
	}
	return b.String()
}

// ClientInfo is what a sign-in says of its client, recorded with its
// session: the device ID of its MQTT client ID (optional) and its
// User-Agent.
type ClientInfo struct {
	Device string
	Agent  string
}

type clientInfoKey struct{}

// WithClientInfo carries c to the sign-in that ctx is for (login, and the
// sign-ins of identity providers).
func WithClientInfo(ctx context.Context, c ClientInfo) context.Context {
	return context.WithValue(ctx, clientInfoKey{}, c)
}

func clientInfoFrom(ctx context.Context) ClientInfo {
	c, _ := ctx.Value(clientInfoKey{}).(ClientInfo)
	return c
}

// ClientInfoOf is the ClientInfo of a sign-in request: its User-Agent
// and the device it names (already checked by the caller, "" for none).
func ClientInfoOf(r *http.Request, device string) ClientInfo {
	return ClientInfo{Device: device, Agent: r.UserAgent()}
}

// endedSessions is every node's copy of the sessions ended lately:
// consulted on every token check. An entry matters only while access
// tokens issued before it may still be valid, so old ones are dropped.
type endedSessions struct {
	mu   sync.RWMutex
	m    map[string]time.Time
	keep time.Duration
	// sweepAt is the size at which put next drops old entries: twice what
	// the last sweep kept (at least endedSweepMin), so that a put costs
	// O(1) amortized, not a walk of every entry each time the map holds
	// more than endedSweepMin recent ones.
	sweepAt int
}

// endedSweepMin is the smallest map put sweeps.
const endedSweepMin = 1024

func newEndedSessions(keep time.Duration) *endedSessions {
	return &endedSessions{m: map[string]time.Time{}, keep: keep}
}

func (e *endedSessions) get(sid string) (time.Time, bool) {
	e.mu.RLock()
	at, ok := e.m[sid]
	e.mu.RUnlock()
	return at, ok
}

// put records an ended session, dropping entries older than keep at now
// once the map has grown.
func (e *endedSessions) put(sid string, at, now time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if was, ok := e.m[sid]; !ok || at.Before(was) {
		e.m[sid] = at
	}
	if len(e.m) > max(endedSweepMin, e.sweepAt) {
		for k, t := range e.m {
			if now.Sub(t) > e.keep {
				delete(e.m, k)
			}
		}
		e.sweepAt = 2 * len(e.m)
	}
}

// load reads the sessions ended within keep of now.
func (e *endedSessions) load(db *badger.DB, now time.Time) error {
	m, err := loadPrefix[time.Time](db, prefixSessionEnded)
	if err != nil {
		return fmt.Errorf("auth: loading ended sessions: %w", err)
	}
	maps.DeleteFunc(m, func(_ string, at time.Time) bool { return now.Sub(at) > e.keep })
	e.mu.Lock()
	e.m, e.sweepAt = m, 2*len(m)
	e.mu.Unlock()
	return nil
}

// sessionEnded is the value of a committed session end.
type sessionEnded struct {
	s   *Service
	sid string
	at  time.Time
}

// AfterCommit implements fsm.AfterCommitter: the session's access tokens
// are refused on this node, its connections closed.
func (e *sessionEnded) AfterCommit() {
	s := e.s
	s.ended.put(e.sid, e.at, s.now())
	s.eraseMu.Lock()
	fns := append([]func(string){}, s.onSessionEnded...)
	s.eraseMu.Unlock()
	for _, fn := range fns {
		fn(e.sid)
	}
}

// OnSessionEnded registers fn to run on every node once a session is
// ended (the broker closes its connections). It runs on the FSM's
// goroutine: fn must not block.
func (s *Service) OnSessionEnded(fn func(sid string)) {
	s.eraseMu.Lock()
	s.onSessionEnded = append(s.onSessionEnded, fn)
	s.eraseMu.Unlock()
}

// EventSessionCreated is published on user/{uid}/events when the user
// signs in (a new session), so that their other devices can say so: an
// unexpected one is a reason to end it and change the password.
const EventSessionCreated = "session.created"

// publishSignIn tells the user's connected devices of a new session.
// Best effort: a live notice, not stored (the session list has it).
func (s *Service) publishSignIn(uid, sid string, c ClientInfo, at time.Time) {
	if s.pub == nil {
		return
	}
	b, err := json.Marshal(map[string]any{"type": EventSessionCreated, "data": map[string]any{
		"id": sid, "device": clip(c.Device, maxDeviceLen), "agent": clip(c.Agent, maxAgentLen), "at": at,
	}})
	if err == nil {
		err = s.pub.Publish(wire.Outbound{Topic: wire.EventsTopic(uid), Payload: b, QoS: 1})
	}
	if err != nil {
		s.log.Warn("publishing a sign-in event", "uid", uid, "err", err)
	}
}

// Session is one sign-in of a user, as GET /auth/sessions lists it.
type Session struct {
	ID         string     `json:"id"`
	Device     string     `json:"device,omitempty"`
	Agent      string     `json:"agent,omitempty"`
	CreatedAt  *time.Time `json:"createdAt,omitempty"` // unknown for sessions older than this list
	LastUsedAt time.Time  `json:"lastUsedAt"`          // signed in or refreshed
	ExpiresAt  time.Time  `json:"expiresAt"`
	Current    bool       `json:"current"` // the session of the request's access token
}

// maxListedSessions bounds GET /auth/sessions (a user has a few).
const maxListedSessions = 500

// Sessions lists uid's live sessions, most recently used first, at
// most maxListedSessions; current is the caller's session ID (marked
// Current).
func (s *Service) Sessions(uid, current string) ([]Session, error) {
	out, err := s.allSessions(uid, current)
	if len(out) > maxListedSessions {
		out = out[:maxListedSessions]
	}
	return out, err
}

// allSessions is Sessions without the bound: the most recently used are
// known only once every one is read.
func (s *Service) allSessions(uid, current string) ([]Session, error) {
	now := s.now()
	var out []Session
	err := s.db.View(func(tx *badger.Txn) error {
		prefix := []byte(prefixUserFamily + uid + "/")
		it := tx.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			family := string(it.Item().Key()[len(prefix):])
			var f refreshFamily
			found, err := getJSON(tx, prefixRefresh+family, &f)
			if err != nil {
				return err
			}
			if !found || f.Revoked || f.UID != uid || !now.Before(f.ExpiresAt) {
				continue
			}
			sess := Session{ID: sessionID(family), Device: f.Device, Agent: f.Agent, LastUsedAt: f.UpdatedAt, ExpiresAt: f.ExpiresAt}
			if !f.CreatedAt.IsZero() {
				at := f.CreatedAt
				sess.CreatedAt = &at
			}
			sess.Current = current != "" && sess.ID == current
			out = append(out, sess)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("auth: list sessions: %w", err)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].LastUsedAt.Equal(out[j].LastUsedAt) {
			return out[i].LastUsedAt.After(out[j].LastUsedAt)
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}

// EndSession ends uid's session sid: its refresh token is revoked, and
// from the commit on its access tokens are refused on every node and its
// MQTT connections closed. ErrNoSession when uid has no live session
// with that ID.
func (s *Service) EndSession(ctx context.Context, uid, sid string) error {
	family, err := s.familyOf(uid, sid)
	if errors.Is(err, ErrNoSession) {
		// Made through another node a moment ago?
		if err = s.catchUp(ctx); err == nil {
			family, err = s.familyOf(uid, sid)
		}
	}
	if err != nil {
		return err
	}
	devices := s.registeredBy(uid, sid)
	if f, found, err := s.readFamily(family); err == nil && found && f.UID == uid && f.Device != "" {
		devices[f.Device] = true
	}
	_, err = s.propose(ctx, wire.CmdRefreshRevoke, refreshRevokeCmd{Family: family, Reason: "session ended", At: s.now().UTC(), EndSession: true})
	if err != nil && !isErr(err, ErrRefreshInvalid) {
		return fmt.Errorf("auth: end session: %w", err)
	}
	s.log.Info("session ended", "uid", uid, "session", sid)
	s.dropSignedOutDevices(ctx, uid, devices)
	return nil
}

// registeredBy are the devices of uid whose push registration one of
// sids made (Deps.RegisteredDevices), as a set (empty, not nil, for
// none). A failure is logged: the caller goes on with the devices the
// sessions named.
func (s *Service) registeredBy(uid string, sids ...string) map[string]bool {
	out := map[string]bool{}
	if s.regsOf == nil || len(sids) == 0 {
		return out
	}
	set := make(map[string]bool, len(sids))
	for _, sid := range sids {
		set[sid] = true
	}
	devices, err := s.regsOf(uid, set)
	if err != nil {
		s.log.Warn("the push registrations of the sessions were not read", "uid", uid, "err", err)
	}
	for _, d := range devices {
		out[d] = true
	}
	return out
}

// sessionDevice is the device uid's live session sid named when it
// signed in; "" when it named none or is not found.
func (s *Service) sessionDevice(uid, sid string) string {
	if sid == "" {
		return ""
	}
	family, err := s.familyOf(uid, sid)
	if err != nil {
		return ""
	}
	f, found, err := s.readFamily(family)
	if err != nil || !found || f.UID != uid || f.Revoked {
		return ""
	}
	return f.Device
}

// signedInDevices are the devices that uid's live sessions named when they
// signed in, or registered for push notifications.
func (s *Service) signedInDevices(uid string) (map[string]bool, error) {
	sessions, err := s.allSessions(uid, "")
	if err != nil {
		return nil, err
	}
	sids := make([]string, 0, len(sessions))
	for _, sess := range sessions {
		sids = append(sids, sess.ID)
	}
	out := s.registeredBy(uid, sids...)
	for _, sess := range sessions {
		if sess.Device != "" {
			out[sess.Device] = true
		}
	}
	return out, nil
}

// dropSignedOutDevices removes, through Deps.DeviceLogout, the push
// registration of each device of candidates that no live session of uid
// names or registered any more: a phone signed out from elsewhere (its
// session ended, or every session) must stop showing the user's
// messages, as it does when it signs out itself. A device still signed in through another
// session (it signed in again) keeps its registration. Failures are
// logged: the sign-out itself is done.
func (s *Service) dropSignedOutDevices(ctx context.Context, uid string, candidates map[string]bool) {
	if s.onLogout == nil || len(candidates) == 0 {
		return
	}
	ctx, cancel := finishing(ctx)
	defer cancel()
	live, err := s.signedInDevices(uid)
	if err != nil {
		s.log.Warn("sign-out: the devices' push registrations were not removed", "uid", uid, "err", err)
		return
	}
	for device := range candidates {
		if live[device] {
			continue
		}
		if err := s.onLogout(ctx, uid, device); err != nil {
			s.log.Warn("sign-out: the device's push registration was not removed", "uid", uid, "device", device, "err", err)
		}
	}
}

// familyOf finds the family of uid's live session sid.
func (s *Service) familyOf(uid, sid string) (string, error) {
	var family string
	err := s.db.View(func(tx *badger.Txn) error {
		prefix := []byte(prefixUserFamily + uid + "/")
		it := tx.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			if f := string(it.Item().Key()[len(prefix):]); sessionID(f) == sid {
				family = f
				return nil
			}
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("auth: find session: %w", err)
	}
	if family == "" {
		return "", ErrNoSession
	}
	return family, nil
}

func (s *Service) handleListSessions(w http.ResponseWriter, r *http.Request) {
	p, ok := httpapi.PrincipalFrom(r.Context())
	if !ok || p.UserID == "" {
		httpapi.WriteError(w, httpapi.Errorf(http.StatusUnauthorized, httpapi.CodeUnauthorized, "sign in first"))
		return
	}
	sessions, err := s.Sessions(p.UserID, p.SessionID)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	if sessions == nil {
		sessions = []Session{}
	}
	w.Header().Set("Cache-Control", "no-store")
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"sessions": sessions})
}

func (s *Service) handleEndSession(w http.ResponseWriter, r *http.Request) {
	p, ok := httpapi.PrincipalFrom(r.Context())
	if !ok || p.UserID == "" {
		httpapi.WriteError(w, httpapi.Errorf(http.StatusUnauthorized, httpapi.CodeUnauthorized, "sign in first"))
		return
	}
	err := s.EndSession(r.Context(), p.UserID, r.PathValue("id"))
	if errors.Is(err, ErrNoSession) {
		httpapi.WriteError(w, httpapi.Errorf(http.StatusNotFound, httpapi.CodeNotFound, "no such session"))
		return
	}
	if err != nil {
		httpapi.WriteError(w, httpError(err))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
