package users

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/internal/httpapi"
	"github.com/edgechat/edgechat/internal/wire"
)

const (
	prefixContact = "r/user/c/" // + owner/uid → added-at
	prefixBlock   = "r/user/b/" // + blocker/uid → blocked-at

	maxRelationBody = 1 << 10
	defaultPage     = 50
	maxPage         = 200
)

// ErrSelf refuses a contact, block or membership change aimed at oneself
// where that makes no sense.
var ErrSelf = errors.New("users: you cannot do that to yourself")

// relationCmd adds or removes one edge of the social graph (CmdContact,
// CmdBlock).
type relationCmd struct {
	Owner string    `json:"owner"`
	UID   string    `json:"uid"`
	Add   bool      `json:"add,omitempty"`
	At    time.Time `json:"at"`
	// Unlinked: UID is of a region that is not linked (any more): the
	// change is not staged for it (relations_remote.go).
	Unlinked bool `json:"unlinked,omitempty"`
}

func (s *Service) applyContact(tx *badger.Txn, _ fsm.Position, payload []byte) (any, error) {
	c, err := s.applyRelation(tx, prefixContact, payload)
	if err != nil {
		return nil, err
	}
	after, err := s.relationChanged(tx, "contact", c) // relations_remote.go
	if err != nil {
		return nil, err
	}
	inv := invalidation{contacts: []string{c.Owner}}
	if c.Add {
		inv.hooks = s.presenceMayShow(c)
	}
	return &applied{s: s, inv: inv, after: after}, nil
}

func (s *Service) applyBlock(tx *badger.Txn, _ fsm.Position, payload []byte) (any, error) {
	c, err := s.applyRelation(tx, prefixBlock, payload)
	if err != nil {
		return nil, err
	}
	after, err := s.relationChanged(tx, "block", c) // relations_remote.go
	if err != nil {
		return nil, err
	}
	inv := invalidation{blocks: []string{c.Owner}}
	if !c.Add {
		inv.hooks = s.presenceMayShow(c)
	}
	return &applied{s: s, inv: inv, after: after}, nil
}

// OnPresenceMayShow registers fn to be called on this node, after the
// change is committed (and the caches invalidated), when viewer may see
// subject's presence again or for the first time: subject lifted their
// block of viewer, or added viewer to their contacts (subject may be a
// user of another region: the relation its link carried). The broker hands
// the current presence/{subject} to viewer's sessions that kept their
// subscription meanwhile (its deliveries were refused). fn runs on the
// FSM's apply path: it must be quick and must not propose.
func (s *Service) OnPresenceMayShow(fn func(subject, viewer string)) {
	s.mu.Lock()
	s.onShown = append(s.onShown, fn)
	s.mu.Unlock()
}

// presenceMayShow is the after-commit hook of c for OnPresenceMayShow
// (none for a viewer, c.UID, of another region).
func (s *Service) presenceMayShow(c relationCmd) []func() {
	if strings.IndexByte(c.UID, '@') >= 0 {
		return nil
	}
	return []func(){func() {
		s.mu.RLock()
		fns := s.onShown
		s.mu.RUnlock()
		for _, fn := range fns {
			fn(c.Owner, c.UID)
		}
	}}
}

func (s *Service) applyRelation(tx *badger.Txn, prefix string, payload []byte) (relationCmd, error) {
	var c relationCmd
	if err := json.Unmarshal(payload, &c); err != nil {
		return c, fmt.Errorf("%w: %v", errBadCommand, err)
	}
	// uid may be a user of another region (name@region, as the
	// proposing node normalized it: relations_remote.go).
	if wire.ValidUserID(c.Owner) != nil || wire.ValidPeerID(c.UID) != nil {
		return c, fmt.Errorf("%w: bad uid", errBadCommand)
	}
	if c.Owner == c.UID {
		return c, ErrSelf
	}
	key := []byte(prefix + c.Owner + "/" + c.UID)
	if !c.Add {
		return c, setEdge(tx, prefix, c.Owner, c.UID, key, nil)
	}
	val := []byte(c.At.Format(time.RFC3339Nano))
	if strings.IndexByte(c.UID, '@') >= 0 {
		// Checked by its region, unless this region erased it (its
		// region erased it and told us: erase.go): as a local user's
		// profile once erased, its tombstone refuses it, also for a
		// node that checked before it applied the erasure.
		if gone, err := exists(tx, prefixGoneProfile+c.UID); err != nil || gone {
			return c, errors.Join(err, fmt.Errorf("%w: user %s (deleted)", wire.ErrNotFound, c.UID))
		}
		return c, setEdge(tx, prefix, c.Owner, c.UID, key, val)
	}
	if ok, err := exists(tx, prefixProfile+c.UID); err != nil || !ok {
		return c, errors.Join(err, fmt.Errorf("%w: user %s", wire.ErrNotFound, c.UID))
	}
	return c, setEdge(tx, prefix, c.Owner, c.UID, key, val)
}

// setEdge writes (val nil: deletes) the edge key of owner→uid under
// prefix, with its reverse index entry (relindex.go).
func setEdge(tx *badger.Txn, prefix, owner, uid string, key, val []byte) error {
	if val == nil {
		if err := tx.Delete(key); err != nil {
			return err
		}
		return indexEdge(tx, prefix, owner, uid, false)
	}
	if err := tx.Set(key, val); err != nil {
		return err
	}
	return indexEdge(tx, prefix, owner, uid, true)
}

func exists(tx *badger.Txn, key string) (bool, error) {
	_, err := tx.Get([]byte(key))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return false, nil
	}
	return err == nil, err
}

// relate proposes a contact or block change. uid may be a user of
// another region (relations_remote.go); remote is then its profile as
// the lookup answered it (nil when it could not).
func (s *Service) relate(ctx context.Context, t byte, owner, uid string, add bool) (target string, remote []byte, err error) {
	if uid, err = s.relationTarget(uid, add); err != nil {
		return "", nil, err
	}
	if wire.ValidPeerID(uid) != nil {
		return "", nil, fmt.Errorf("%w: user %q", wire.ErrNotFound, uid)
	}
	if owner == uid {
		return "", nil, ErrSelf
	}
	switch {
	case add && strings.IndexByte(uid, '@') >= 0:
		if _, erased, err := s.erasedRemote(uid); err != nil {
			return "", nil, err
		} else if erased {
			// Erased here (its region erased it and told us): no one
			// to add or block, as an erased user of this region.
			return "", nil, fmt.Errorf("%w: user %s (deleted)", wire.ErrNotFound, uid)
		}
		if remote, err = s.remoteProfile(ctx, uid, t == wire.CmdContact); err != nil {
			return "", nil, err
		}
		if t == wire.CmdContact && erasedProfileJSON(remote) {
			// As for a local user: the tombstone of an erased account
			// (or the profile of one deleted and not erased yet, marked
			// deleted: ProfileJSON) answers the lookup, and is no one
			// to add.
			return "", nil, fmt.Errorf("%w: user %s (deleted)", wire.ErrNotFound, uid)
		}
	case add:
		// A fast answer; the handler checks again against committed state.
		if _, err := s.Profile(uid); err != nil {
			return "", nil, err
		}
		if t == wire.CmdContact && s.refuseDeleted([]string{uid}) != nil {
			return "", nil, fmt.Errorf("%w: user %s (deleted)", wire.ErrNotFound, uid)
		}
	}
	b, err := json.Marshal(relationCmd{Owner: owner, UID: uid, Add: add, At: s.now().UTC(), Unlinked: !add && !s.linked(uid)})
	if err != nil {
		return "", nil, fmt.Errorf("users: encode command: %w", err)
	}
	_, err = s.proposer.Propose(ctx, t, b)
	return uid, remote, err
}

// AddContact puts uid into owner's contacts (idempotent).
func (s *Service) AddContact(ctx context.Context, owner, uid string) error {
	_, _, err := s.relate(ctx, wire.CmdContact, owner, uid, true)
	return err
}

// RemoveContact takes uid out of owner's contacts (idempotent).
func (s *Service) RemoveContact(ctx context.Context, owner, uid string) error {
	_, _, err := s.relate(ctx, wire.CmdContact, owner, uid, false)
	return err
}

// Block makes blocker block uid (idempotent). A contact entry stays, but
// IsBlocked wins wherever both are consulted.
func (s *Service) Block(ctx context.Context, blocker, uid string) error {
	_, _, err := s.relate(ctx, wire.CmdBlock, blocker, uid, true)
	return err
}

// Unblock lifts blocker's block of uid (idempotent).
func (s *Service) Unblock(ctx context.Context, blocker, uid string) error {
	_, _, err := s.relate(ctx, wire.CmdBlock, blocker, uid, false)
	return err
}

// IsBlocked reports whether blocker has blocked blocked. It is served
// from a cache of each blocker's block list.
func (s *Service) IsBlocked(blocker, blocked string) bool {
	return s.inSet(s.cache.blocks, prefixBlock, blocker, blocked)
}

// IsContact reports whether owner has contact in their contact list.
func (s *Service) IsContact(owner, contact string) bool {
	return s.inSet(s.cache.contacts, prefixContact, owner, contact)
}

func (s *Service) inSet(c *lru[map[string]struct{}], prefix, owner, uid string) bool {
	// Either may be a user of another region (relations_remote.go).
	if wire.ValidPeerID(owner) != nil || wire.ValidPeerID(uid) != nil {
		return false
	}
	set, err := cached(c, owner, func() (map[string]struct{}, error) {
		return s.loadSet(prefix + owner + "/")
	})
	if err != nil {
		s.log.Error("reading the social graph", "owner", owner, "err", err)
		return false
	}
	_, ok := set[uid]
	return ok
}

// loadSet reads the key suffixes under prefix (key-only iteration).
func (s *Service) loadSet(prefix string) (map[string]struct{}, error) {
	set := make(map[string]struct{})
	err := s.db.View(func(tx *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.PrefetchValues = false
		opts.Prefix = []byte(prefix)
		it := tx.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			set[string(it.Item().Key()[len(prefix):])] = struct{}{}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("users: read %s: %w", prefix, err)
	}
	return set, nil
}

// scanKeys returns up to limit key suffixes under prefix that sort after
// the suffix after, and whether more follow.
func (s *Service) scanKeys(prefix, after string, limit int) ([]string, bool, error) {
	var out []string
	more := false
	err := s.db.View(func(tx *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.PrefetchValues = false
		opts.Prefix = []byte(prefix)
		it := tx.NewIterator(opts)
		defer it.Close()
		start := []byte(prefix)
		if after != "" {
			start = []byte(prefix + after + "\x00")
		}
		for it.Seek(start); it.Valid(); it.Next() {
			if len(out) == limit {
				more = true
				return nil
			}
			out = append(out, string(it.Item().Key()[len(prefix):]))
		}
		return nil
	})
	if err != nil {
		return nil, false, fmt.Errorf("users: list %s: %w", prefix, err)
	}
	return out, more, nil
}

// Cursors are opaque to clients: base64url of the last key suffix seen.
func encodeCursor(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// A cursor valid reports false for is refused as one the server did not
// make: read as a key, it would answer an empty page (or another list's
// place) as if the list had ended.
func decodeCursor(c string, valid func(string) bool) (string, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil || len(b) > 512 || !valid(string(b)) {
		return "", httpapi.Errorf(http.StatusBadRequest, httpapi.CodeBadRequest, "invalid cursor: pass the nextCursor of the previous page as it came")
	}
	return string(b), nil
}

// peerCursor and groupCursor tell the cursors of the lists keyed by user
// ID (contacts, blocks, members) and by group ID (my groups).
func peerCursor(c string) bool  { return wire.ValidPeerID(c) == nil }
func groupCursor(c string) bool { return wire.ValidGroupID(c) == nil }

// pageParams reads ?cursor=&limit= with limit 1..maxLimit; valid checks
// the decoded cursor.
func pageParams(r *http.Request, def, maxLimit int, valid func(string) bool) (cursor string, limit int, err error) {
	q := r.URL.Query()
	limit = def
	if v := q.Get("limit"); v != "" {
		n, perr := strconv.Atoi(v)
		if perr != nil || n < 1 || n > maxLimit {
			return "", 0, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeValidation, "limit must be 1 to %d", maxLimit)
		}
		limit = n
	}
	if v := q.Get("cursor"); v != "" {
		if cursor, err = decodeCursor(v, valid); err != nil {
			return "", 0, err
		}
	}
	return cursor, limit, nil
}

// uidRequest is the body of POST /user/me/contacts and /user/me/blocks
// and of POST /user/groups/{gid}/owner.
type uidRequest struct {
	UID string `json:"uid"`
}

// decode reads the body; one that names nobody is a bad request, not
// an unknown user.
func (req *uidRequest) decode(r *http.Request, maxBytes int64) error {
	if err := httpapi.DecodeJSON(r, req, maxBytes); err != nil {
		return err
	}
	if req.UID == "" {
		return httpapi.Errorf(http.StatusBadRequest, httpapi.CodeValidation, "uid is required")
	}
	return nil
}

func (s *Service) relationRoutes() []httpapi.Route {
	return []httpapi.Route{
		{Method: http.MethodPost, Pattern: "/user/me/contacts", Handler: s.handleAddRelation(wire.CmdContact), Class: "write", CatchUp: true, MaxBody: maxRelationBody},
		{Method: http.MethodDelete, Pattern: "/user/me/contacts/{uid}", Handler: s.handleRemoveRelation(wire.CmdContact), Class: "write", CatchUp: true},
		{Method: http.MethodGet, Pattern: "/user/me/contacts", Handler: s.handleListRelation(prefixContact), Class: "read", CatchUp: true},
		{Method: http.MethodPost, Pattern: "/user/me/blocks", Handler: s.handleAddRelation(wire.CmdBlock), Class: "write", CatchUp: true, MaxBody: maxRelationBody},
		{Method: http.MethodDelete, Pattern: "/user/me/blocks/{uid}", Handler: s.handleRemoveRelation(wire.CmdBlock), Class: "write", CatchUp: true},
		{Method: http.MethodGet, Pattern: "/user/me/blocks", Handler: s.handleListRelation(prefixBlock), Class: "read", CatchUp: true},
	}
}

func (s *Service) handleAddRelation(t byte) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, ok := principal(w, r)
		if !ok {
			return
		}
		var req uidRequest
		if err := req.decode(r, maxRelationBody); err != nil {
			httpapi.WriteError(w, err)
			return
		}
		if hint := wire.LowercaseHint(req.UID); hint != "" {
			httpapi.WriteError(w, httpapi.Errorf(http.StatusNotFound, httpapi.CodeNotFound, "no such user%s", hint))
			return
		}
		uid, remote, err := s.relate(r.Context(), t, p.UserID, req.UID, true)
		if err != nil {
			httpapi.WriteError(w, httpError(err))
			return
		}
		if strings.IndexByte(uid, '@') >= 0 {
			if remote == nil {
				remote, _ = json.Marshal(s.publicProfile(uid))
			}
			httpapi.WriteJSON(w, http.StatusCreated, json.RawMessage(remote))
			return
		}
		prof, err := s.Profile(uid)
		if err != nil {
			httpapi.WriteError(w, httpError(err))
			return
		}
		httpapi.WriteJSON(w, http.StatusCreated, prof)
	}
}

func (s *Service) handleRemoveRelation(t byte) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, ok := principal(w, r)
		if !ok {
			return
		}
		uid := r.PathValue("uid")
		if hint := wire.LowercaseHint(uid); hint != "" {
			// "Bob" for bob: a 204 would tell the client the block (or
			// contact) is gone while bob's stays, as adding "Bob" says.
			httpapi.WriteError(w, httpapi.Errorf(http.StatusNotFound, httpapi.CodeNotFound, "no such user%s", hint))
			return
		}
		if wire.ValidPeerID(uid) != nil {
			// Nothing with that name can be in the list: already absent.
			w.WriteHeader(http.StatusNoContent)
			return
		}
		if _, _, err := s.relate(r.Context(), t, p.UserID, uid, false); err != nil {
			httpapi.WriteError(w, httpError(err))
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}
}

func (s *Service) handleListRelation(prefix string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, ok := principal(w, r)
		if !ok {
			return
		}
		cursor, limit, err := pageParams(r, defaultPage, maxPage, peerCursor)
		if err != nil {
			httpapi.WriteError(w, err)
			return
		}
		uids, more, err := s.scanKeys(prefix+p.UserID+"/", cursor, limit)
		if err != nil {
			httpapi.WriteError(w, err)
			return
		}
		profs := make([]Profile, 0, len(uids))
		for _, uid := range uids {
			profs = append(profs, s.publicProfile(uid))
		}
		name := "blocks"
		if prefix == prefixContact {
			name = "contacts"
		}
		out := map[string]any{name: profs}
		if more {
			out["nextCursor"] = encodeCursor(uids[len(uids)-1])
		}
		httpapi.WriteJSON(w, http.StatusOK, out)
	}
}

// publicProfile is uid's profile, or a bare one naming uid when it is
// missing (a federated user who never set one), marked deleted when
// uid's account is deleted and waits for its erasure.
func (s *Service) publicProfile(uid string) Profile {
	if p, err := s.Profile(uid); err == nil {
		return s.markDeleted(p)
	}
	return s.markDeleted(Profile{UserID: uid, DisplayName: uid})
}

// erasedProfileJSON tells whether a profile another region answered is
// the tombstone of an erased account or an account deleted and waiting
// for its erasure (Profile.Deleted).
func erasedProfileJSON(p []byte) bool {
	var v struct {
		Deleted bool `json:"deleted"`
	}
	return p != nil && json.Unmarshal(p, &v) == nil && v.Deleted
}
