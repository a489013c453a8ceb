// Package users owns edgechat's user profiles, the social graph
// (contacts, blocks) and groups with owner/admin/member roles. All of it
// is replicated state: changes go through the Raft log (Proposer) and are
// applied by this package's FSM handlers under the key prefix "r/user/";
// reads come from the local Badger database through small in-process
// caches that the handlers invalidate after their entry is committed.
//
// Keys under r/user/:
//
//	p/{uid}                 profile JSON
//	n/{lower(name)}\x00{uid} display-name search index (empty value)
//	c/{owner}/{uid}         owner has uid in their contacts (value: added-at)
//	b/{blocker}/{uid}       blocker blocked uid (value: blocked-at)
//	g/{gid}                 group JSON (name, avatar, owner, member count)
//	gm/{gid}/{uid}          uid's role in gid
//	ug/{uid}/{gid}          the same role, indexed by user
//	gone/{uid}              an erased account's tombstone (empty value; see erase.go)
package users

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/dgraph-io/badger/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgechat/edgechat/cluster/featurelevel"
	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/internal/wire"
)

// Proposer appends a command to the replicated log and returns the value
// or error of its FSM handler (implemented by *cluster.Raft).
type Proposer interface {
	Propose(ctx context.Context, t byte, payload []byte) (any, error)
}

// Registrar installs FSM handlers (implemented by *fsm.FSM).
type Registrar interface {
	Register(t byte, h fsm.Handler)
}

// auth creates profiles through this method set.
var _ interface {
	CreateProfile(ctx context.Context, uid, displayName string) error
} = (*Service)(nil)

// Limits of profile fields, in characters.
const (
	MaxDisplayName = wire.MaxDisplayName
	MaxAbout       = 280
)

// Sentinel errors.
var (
	ErrInvalidDisplayName = wire.ErrInvalidDisplayName
	ErrInvalidAbout       = errors.New("users: invalid about text")
	ErrInvalidUserID      = errors.New("users: invalid user ID")
	errBadCommand         = errors.New("users: malformed command")
)

const (
	prefixProfile = "r/user/p/" // + uid → Profile
	prefixName    = "r/user/n/" // + lower(displayName) + "\x00" + uid → ""
)

func nameKey(displayName, uid string) []byte {
	return []byte(prefixName + strings.ToLower(displayName) + "\x00" + uid)
}

// Profile is a user's public profile.
type Profile struct {
	UserID      string `json:"userId"`
	DisplayName string `json:"displayName"`
	About       string `json:"about,omitempty"`
	// Avatar is an image URL (http or https): set by the user, or from an
	// identity provider's "picture" claim on the first sign-in.
	Avatar    string    `json:"avatar,omitempty"`
	CreatedAt time.Time `json:"createdAt"`
	UpdatedAt time.Time `json:"updatedAt"`
	// Deleted marks the tombstone of an erased account (see erase.go),
	// and in GET /user/{uid} and the profile another region is given
	// (ProfileJSON) also an account deleted and not erased yet.
	Deleted bool `json:"deleted,omitempty"`
}

// Publisher publishes server messages into the broker (implemented by
// *broker.Broker); the service uses it for user/{uid}/events.
type Publisher interface {
	Publish(o wire.Outbound) error
}

// Defaults of the configurable limits.
const (
	DefaultMaxGroupMembers = 10000
	DefaultCacheEntries    = 10000
)

// Deps are what the service needs from the node.
type Deps struct {
	DB       *badger.DB
	Proposer Proposer
	FSM      Registrar
	// Publisher receives group events for user/{uid}/events; nil: no events.
	Publisher Publisher
	// Registerer gets edgechat_cache_requests_total; nil: not registered.
	Registerer prometheus.Registerer
	Logger     *slog.Logger     // nil: slog.Default()
	Now        func() time.Time // nil: time.Now
	// MaxGroupMembers caps a group's size; 0: DefaultMaxGroupMembers.
	MaxGroupMembers int
	// CacheEntries sizes each in-process cache; 0: DefaultCacheEntries.
	CacheEntries int
}

// Service is the users service of one node.
type Service struct {
	remote     RemoteProfiles // nil: no other regions
	db         *badger.DB
	proposer   Proposer
	pub        Publisher
	log        *slog.Logger
	now        func() time.Time
	maxMembers int
	cache      *caches
	events     *eventQueue

	mu        sync.RWMutex
	onRemoved []func(gid, uid string)
	onAdded   []func(gid string, uids []string) // groups_read.go OnMembersAdded
	onShown   []func(subject, viewer string)    // contacts.go OnPresenceMayShow
	groupHook GroupHook                         // groups_remote.go
	regions   Regions                           // groups_remote.go

	relHook  RelationHook // relations_remote.go
	accounts Accounts     // nil: every account with a profile counts
}

// Accounts tells the users service which accounts are deleted (the auth
// service): disabled at once, their data erased after the grace period.
type Accounts interface {
	Deleted(uid string) bool
}

// refuseDeleted is an UnknownUsersError naming the users of uids whose
// account is deleted, nil when there is none: a deleted account is an
// unknown user to whoever would add it (messages to it are refused so).
func (s *Service) refuseDeleted(uids []string) error {
	s.mu.RLock()
	a := s.accounts
	s.mu.RUnlock()
	if a == nil {
		return nil
	}
	var gone []string
	for _, uid := range uids {
		// A user of another region is deleted here once its region
		// erased it and told us (auth EraseRemote).
		if a.Deleted(uid) {
			gone = append(gone, uid)
		}
	}
	if len(gone) > 0 {
		return &UnknownUsersError{UIDs: gone}
	}
	return nil
}

// SetAccounts installs the auth service's view of deleted accounts
// (auth is built after this service). Call it before serving.
func (s *Service) SetAccounts(a Accounts) {
	s.mu.Lock()
	s.accounts = a
	s.mu.Unlock()
}

// restorer is implemented by *fsm.FSM: caches must be dropped when a
// snapshot replaces the state under them.
type restorer interface{ OnRestore(fn func()) }

// New registers the FSM handlers.
func New(deps Deps) (*Service, error) {
	if deps.DB == nil || deps.Proposer == nil || deps.FSM == nil {
		return nil, errors.New("users: Deps.DB, Deps.Proposer and Deps.FSM are required")
	}
	if deps.Logger == nil {
		deps.Logger = slog.Default()
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	if deps.MaxGroupMembers <= 0 {
		deps.MaxGroupMembers = DefaultMaxGroupMembers
	}
	if deps.CacheEntries <= 0 {
		deps.CacheEntries = DefaultCacheEntries
	}
	s := &Service{
		db: deps.DB, proposer: deps.Proposer, pub: deps.Publisher,
		log: deps.Logger.With("service", "users"), now: deps.Now,
		maxMembers: deps.MaxGroupMembers,
		cache:      newCaches(deps.CacheEntries, cacheCounter(deps.Registerer)),
	}
	s.events = newEventQueue(s.pub, s.log)
	deps.FSM.Register(wire.CmdProfilePut, s.applyProfilePut)
	deps.FSM.Register(wire.CmdContact, s.applyContact)
	deps.FSM.Register(wire.CmdBlock, s.applyBlock)
	deps.FSM.Register(wire.CmdRemoteRelation, s.applyRemoteRelation) // relations_remote.go
	deps.FSM.Register(wire.CmdGroupCreate, s.applyGroupCreate)
	deps.FSM.Register(wire.CmdGroupUpdate, s.applyGroupUpdate)
	deps.FSM.Register(wire.CmdGroupMember, s.applyGroupMember)
	deps.FSM.Register(wire.CmdGroupOwner, s.applyGroupOwner)
	deps.FSM.Register(wire.CmdGroupMirror, s.applyGroupMirror)
	deps.FSM.Register(wire.CmdGroupLeave, s.applyGroupLeave)
	deps.FSM.Register(wire.CmdUserIndex, s.applyRelIndex) // relindex.go
	if r, ok := deps.FSM.(restorer); ok {
		r.OnRestore(s.cache.purge)
	}
	return s, nil
}

// profilePutCmd creates or updates a profile. Create keeps an existing
// profile untouched (so a retried registration is harmless); an update
// of a missing profile creates it only when Upsert is set.
type profilePutCmd struct {
	UID         string    `json:"uid"`
	Create      bool      `json:"create,omitempty"`
	Upsert      bool      `json:"upsert,omitempty"`
	DisplayName *string   `json:"displayName,omitempty"`
	About       *string   `json:"about,omitempty"`
	Avatar      *string   `json:"avatar,omitempty"`
	At          time.Time `json:"at"`
}

func (s *Service) applyProfilePut(tx *badger.Txn, _ fsm.Position, payload []byte) (any, error) {
	var c profilePutCmd
	if err := json.Unmarshal(payload, &c); err != nil {
		return nil, fmt.Errorf("%w: %v", errBadCommand, err)
	}
	if wire.ValidUserID(c.UID) != nil {
		return nil, fmt.Errorf("%w: bad uid", errBadCommand)
	}
	// Handlers re-validate: a command is applied on every node, and bad
	// state must not enter the log's effects even from a buggy proposer.
	// A name with joiners only from the feature level that takes them,
	// as committed before this entry: every node decides alike.
	joiners, err := featurelevel.JoinersIn(tx)
	if err != nil {
		return nil, err
	}
	if c.DisplayName != nil {
		if _, err := wire.NormalizeDisplayNameJoiners(*c.DisplayName, joiners); err != nil {
			return nil, err
		}
	}
	if c.About != nil {
		if err := validAbout(*c.About); err != nil {
			return nil, err
		}
	}
	if c.Avatar != nil {
		if err := validAvatar(*c.Avatar); err != nil {
			return nil, err
		}
	}
	key := []byte(prefixProfile + c.UID)
	var p Profile
	found := false
	it, err := tx.Get(key)
	switch {
	case errors.Is(err, badger.ErrKeyNotFound):
	case err != nil:
		return nil, err
	default:
		found = true
		if err := it.Value(func(b []byte) error { return json.Unmarshal(b, &p) }); err != nil {
			return nil, err
		}
	}
	if !found {
		// An erased account keeps its tombstone for good: a change
		// proposed before the erase and committed after it (a node that
		// had not applied the deletion yet) must not make it a profile
		// again, which search would list and groups would take.
		if _, erased, err := erasedProfile(tx, c.UID); err != nil || erased {
			return nil, errors.Join(err, fmt.Errorf("%w: profile %s (erased)", wire.ErrNotFound, c.UID))
		}
	}
	switch {
	case found && c.Create:
		return p, nil
	case !found && !c.Create && !c.Upsert:
		return nil, fmt.Errorf("%w: profile %s", wire.ErrNotFound, c.UID)
	case !found:
		p = Profile{UserID: c.UID, DisplayName: c.UID, CreatedAt: c.At}
	}
	oldName := p.DisplayName
	if c.DisplayName != nil {
		p.DisplayName, _ = wire.NormalizeDisplayNameJoiners(*c.DisplayName, joiners)
	}
	// The search index follows the display name in the same transaction.
	if found && oldName != p.DisplayName {
		if err := tx.Delete(nameKey(oldName, c.UID)); err != nil {
			return nil, err
		}
	}
	if err := tx.Set(nameKey(p.DisplayName, c.UID), nil); err != nil {
		return nil, err
	}
	if c.About != nil {
		p.About = *c.About
	}
	if c.Avatar != nil {
		p.Avatar = *c.Avatar
	}
	p.UpdatedAt = c.At
	b, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	if err := tx.Set(key, b); err != nil {
		return nil, err
	}
	return &applied{s: s, value: p, inv: invalidation{profiles: []string{c.UID}}}, nil
}

// joiners tells whether names may hold joiners (wire.ZWJ), by the
// feature level committed on this node: the check before proposing (the
// handler checks again at the level of its entry).
func (s *Service) joiners() bool { return featurelevel.Of(s.db) >= featurelevel.Joiners }

// validAbout allows up to 280 characters of printable text and line breaks.
func validAbout(about string) error {
	if !utf8.ValidString(about) || utf8.RuneCountInString(about) > MaxAbout {
		return fmt.Errorf("%w: at most %d characters", ErrInvalidAbout, MaxAbout)
	}
	for _, r := range about {
		if r != '\n' && !unicode.IsPrint(r) {
			return fmt.Errorf("%w: printable characters and line breaks only", ErrInvalidAbout)
		}
	}
	return nil
}

func (s *Service) put(ctx context.Context, c profilePutCmd) (Profile, error) {
	c.At = s.now().UTC()
	b, err := json.Marshal(c)
	if err != nil {
		return Profile{}, fmt.Errorf("users: encode command: %w", err)
	}
	v, err := s.proposer.Propose(ctx, wire.CmdProfilePut, b)
	if err != nil {
		return Profile{}, err
	}
	if p, ok := unwrap(v).(Profile); ok {
		return p, nil
	}
	// The value did not survive the trip (a forwarded proposal): read back.
	return s.Profile(c.UID)
}

// CreateProfile creates the profile of a new user. An existing profile is
// kept as it is, so that a retry is harmless.
func (s *Service) CreateProfile(ctx context.Context, uid, displayName string) error {
	return s.CreateProfileWithAvatar(ctx, uid, displayName, "")
}

// CreateProfileWithAvatar is CreateProfile with an avatar URL (a
// federated user's "picture"); an invalid one is left out.
func (s *Service) CreateProfileWithAvatar(ctx context.Context, uid, displayName, avatar string) error {
	if wire.ValidUserID(uid) != nil {
		return fmt.Errorf("%w: %q", ErrInvalidUserID, uid)
	}
	if displayName == "" {
		displayName = uid
	}
	name, err := wire.NormalizeDisplayNameJoiners(displayName, s.joiners())
	if err != nil {
		return err
	}
	c := profilePutCmd{UID: uid, Create: true, DisplayName: &name}
	if avatar != "" && validAvatar(avatar) == nil {
		c.Avatar = &avatar
	}
	if _, err := s.put(ctx, c); err != nil {
		return fmt.Errorf("users: create profile: %w", err)
	}
	return nil
}

// Update changes the given fields of uid's profile, creating the profile
// when it is missing (a federated user has no registration step).
func (s *Service) Update(ctx context.Context, uid string, displayName, about *string) (Profile, error) {
	return s.update(ctx, uid, displayName, about, nil)
}

// update is Update with the avatar URL too ("" removes it).
func (s *Service) update(ctx context.Context, uid string, displayName, about, avatar *string) (Profile, error) {
	if wire.ValidUserID(uid) != nil {
		return Profile{}, fmt.Errorf("%w: %q", ErrInvalidUserID, uid)
	}
	if displayName != nil {
		name, err := wire.NormalizeDisplayNameJoiners(*displayName, s.joiners())
		if err != nil {
			return Profile{}, err
		}
		displayName = &name
	}
	if about != nil {
		if err := validAbout(*about); err != nil {
			return Profile{}, err
		}
	}
	if avatar != nil {
		if err := validAvatar(*avatar); err != nil {
			return Profile{}, err
		}
	}
	p, err := s.put(ctx, profilePutCmd{UID: uid, Upsert: true, DisplayName: displayName, About: about, Avatar: avatar})
	if err != nil {
		return Profile{}, fmt.Errorf("users: update profile: %w", err)
	}
	return p, nil
}

// HasProfile tells whether uid has a profile on this node (an erased
// user's tombstone counts).
func (s *Service) HasProfile(uid string) bool {
	_, err := s.Profile(uid)
	return err == nil
}

// Profile reads uid's profile (through the cache); a missing one is
// wire.ErrNotFound.
func (s *Service) Profile(uid string) (Profile, error) {
	if wire.ValidUserID(uid) != nil {
		return Profile{}, fmt.Errorf("%w: %q", wire.ErrNotFound, uid)
	}
	return cached(s.cache.profiles, uid, func() (Profile, error) { return s.readProfile(uid) })
}

func (s *Service) readProfile(uid string) (Profile, error) {
	var p Profile
	err := s.db.View(func(tx *badger.Txn) error {
		it, err := tx.Get([]byte(prefixProfile + uid))
		if errors.Is(err, badger.ErrKeyNotFound) {
			// An erased user answers with its tombstone.
			tp, ok, terr := erasedProfile(tx, uid)
			if terr != nil || !ok {
				return errors.Join(terr, err)
			}
			p = tp
			return nil
		}
		if err != nil {
			return err
		}
		return it.Value(func(b []byte) error { return json.Unmarshal(b, &p) })
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return Profile{}, fmt.Errorf("%w: profile %s", wire.ErrNotFound, uid)
	}
	if err != nil {
		return Profile{}, fmt.Errorf("users: read profile: %w", err)
	}
	return p, nil
}
