package users

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/cluster/featurelevel"
	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/internal/address"
	"github.com/edgechat/edgechat/internal/wire"
)

// Role is a member's role in a group: owner > admin > member.
type Role string

// Roles.
const (
	RoleOwner  Role = "owner"
	RoleAdmin  Role = "admin"
	RoleMember Role = "member"
)

func (r Role) rank() int {
	switch r {
	case RoleOwner:
		return 3
	case RoleAdmin:
		return 2
	case RoleMember:
		return 1
	}
	return 0
}

// Group limits.
const (
	MaxGroupName        = 64
	MaxGroupDescription = 500
	MaxAvatarURL        = 512
	MaxInitialMembers   = 1000 // members listed in POST /user/groups
	MaxMemberBatch      = 1000 // uids in one POST .../members
	groupIDLen          = 16
)

const (
	prefixGroup      = "r/user/g/"  // + gid → Group
	prefixMember     = "r/user/gm/" // + gid/uid → Role
	prefixUserGroups = "r/user/ug/" // + uid/gid → Role
	// prefixGroupKey: + owner/key → groupKeyRecord, the Idempotency-Key
	// a group was created with (erased with the owner's account).
	prefixGroupKey = "r/user/gk/"
)

// Sentinel errors of groups.
var (
	ErrInvalidGroupName   = errors.New("users: invalid group name")
	ErrInvalidDescription = errors.New("users: invalid group description")
	ErrInvalidRetention   = errors.New("users: invalid retention")
	ErrInvalidAvatar      = errors.New("users: invalid avatar URL")
	ErrInvalidRole        = errors.New("users: invalid role")
	// ErrNoGroup: the group does not exist or the caller is not a member
	// (the same answer, so that group IDs do not leak).
	ErrNoGroup = fmt.Errorf("users: no such group: %w", wire.ErrNotFound)
	// ErrNotMember: the user the request names is not a member.
	ErrNotMember         = errors.New("users: not a member of the group")
	ErrOwnerMustTransfer = errors.New("users: the owner must transfer ownership before leaving")
	ErrGroupFull         = errors.New("users: the group is full")
	ErrGroupExists       = errors.New("users: group ID already taken")
	ErrUnknownUsers      = errors.New("users: unknown users")
	// ErrKeyReused: an Idempotency-Key sent again with another request.
	ErrKeyReused = errors.New("users: idempotency key used for another request")
)

// UnknownUsersError lists the users a request named who do not exist.
type UnknownUsersError struct{ UIDs []string }

func (e *UnknownUsersError) Error() string {
	return "unknown users: " + strings.Join(e.UIDs, ", ")
}

func (e *UnknownUsersError) Unwrap() error { return ErrUnknownUsers }

// RuleError is a refusal by a role rule; Rule says which, for the user.
// It matches wire.ErrForbidden.
type RuleError struct{ Rule string }

func (e *RuleError) Error() string { return e.Rule }
func (e *RuleError) Unwrap() error { return wire.ErrForbidden }

func forbidden(format string, args ...any) error {
	return &RuleError{Rule: fmt.Sprintf(format, args...)}
}

// Group is a group's metadata.
type Group struct {
	ID          string `json:"groupId"`
	Name        string `json:"name"`
	Avatar      string `json:"avatar,omitempty"`
	Description string `json:"description,omitempty"`
	// RetentionDays: messages older than this are deleted (0: the
	// server's --retention-days; the shorter of the two applies).
	RetentionDays int       `json:"retentionDays,omitempty"`
	Owner         string    `json:"owner"`
	MemberCount   int       `json:"memberCount"`
	CreatedAt     time.Time `json:"createdAt"`
	UpdatedAt     time.Time `json:"updatedAt"`
}

// MaxRetentionDays bounds a group's retention (100 years).
const MaxRetentionDays = 36500

func validRetentionDays(n int) error {
	if n < 0 || n > MaxRetentionDays {
		return fmt.Errorf("%w: retentionDays must be 0 (the server's retention) to %d", ErrInvalidRetention, MaxRetentionDays)
	}
	return nil
}

// newGroupID returns 16 characters of [a-z0-9] from crypto/rand, drawn
// without modulo bias. The proposing node makes it, so every node applies
// the same ID.
func newGroupID() string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	out := make([]byte, 0, groupIDLen)
	var buf [32]byte
	for len(out) < groupIDLen {
		_, _ = rand.Read(buf[:]) // never fails (crypto/rand panics instead)
		for _, b := range buf {
			if b < 252 && len(out) < groupIDLen { // 252 = 7*36
				out = append(out, alphabet[b%36])
			}
		}
	}
	return string(out)
}

// keyedGroupID is the ID of the group owner creates with the
// Idempotency-Key key: 16 characters of [a-z0-9] from a SHA-256 of both,
// so that every retry of the request proposes the same ID. A node of an
// earlier version, which knows no keys, then refuses a retry's command
// as a taken ID instead of making a second group, so the nodes of a
// cluster in a rolling upgrade still agree on the state.
func keyedGroupID(owner, key string) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	sum := sha256.Sum256([]byte("edgechat group\x00" + owner + "\x00" + key))
	out := make([]byte, groupIDLen)
	for i := range out {
		out[i] = alphabet[sum[i]%36]
	}
	return string(out)
}

// groupKeyRecord is what an Idempotency-Key of POST /user/groups made:
// the group, and the fingerprint of the request that made it.
type groupKeyRecord struct {
	GID  string `json:"gid"`
	Hash string `json:"hash"`
}

// groupReplay is CmdGroupCreate's value for a retry: the group the key
// made before (Found false when it is gone); nothing was written.
type groupReplay struct {
	Group Group
	Found bool
}

// normalizeGroupName trims spaces; 1 to 64 printable characters, and
// joiners between them when joiners is set (wire.CheckName).
func normalizeGroupName(name string, joiners bool) (string, error) {
	name, st := wire.CheckName(name, MaxGroupName, joiners)
	if st != wire.NameOK {
		return "", wire.NameError(ErrInvalidGroupName, MaxGroupName, st)
	}
	return name, nil
}

func notPrint(r rune) bool { return !unicode.IsPrint(r) }

func validDescription(d string) error {
	if !utf8.ValidString(d) || utf8.RuneCountInString(d) > MaxGroupDescription ||
		strings.IndexFunc(d, func(r rune) bool { return r != '\n' && !unicode.IsPrint(r) }) >= 0 {
		return fmt.Errorf("%w: at most %d printable characters and line breaks", ErrInvalidDescription, MaxGroupDescription)
	}
	return nil
}

// validAvatar accepts "" (no avatar) or an absolute http(s) URL.
func validAvatar(a string) error {
	if a == "" {
		return nil
	}
	u, err := url.Parse(a)
	if len(a) > MaxAvatarURL || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
		strings.IndexFunc(a, notPrint) >= 0 || strings.ContainsAny(a, " \t") {
		return fmt.Errorf("%w: an http or https URL of at most %d bytes", ErrInvalidAvatar, MaxAvatarURL)
	}
	return nil
}

// memberRule decides whether `by` (with role actor) may set uid's role to
// role (remove false) or remove uid (remove true); target is uid's
// current role ("" when not a member). Both the HTTP handler (on cached
// state, for a fast answer) and the FSM handler (on committed state, the
// decision that counts) call it.
func memberRule(by string, actor Role, uid string, target Role, remove bool, role Role) error {
	if actor == "" {
		return ErrNoGroup
	}
	if remove {
		switch {
		case target == "":
			return fmt.Errorf("%w: %s", ErrNotMember, uid)
		case uid == by && target == RoleOwner:
			return ErrOwnerMustTransfer
		case uid == by:
			return nil // anyone else may leave
		case target == RoleOwner:
			return forbidden("nobody can remove the owner of a group")
		case actor == RoleMember:
			return forbidden("members can only remove themselves")
		case actor == RoleAdmin && target == RoleAdmin:
			return forbidden("only the owner can remove an admin")
		}
		return nil
	}
	switch {
	case role != RoleMember && role != RoleAdmin:
		return fmt.Errorf("%w: %q (member or admin; ownership moves by transfer)", ErrInvalidRole, role)
	case actor == RoleMember:
		return forbidden("members cannot add members or change roles")
	case target == RoleOwner:
		return forbidden("the owner's role changes only by transferring ownership")
	case target == role:
		return nil // no change
	case (role == RoleAdmin || target == RoleAdmin) && actor != RoleOwner:
		return forbidden("only the owner can grant or revoke admin")
	}
	return nil
}

// Commands (JSON payloads of the Raft log).
type groupCreateCmd struct {
	GID         string    `json:"gid"`
	Owner       string    `json:"owner"`
	Name        string    `json:"name"`
	Avatar      string    `json:"avatar,omitempty"`
	Description string    `json:"description,omitempty"`
	Members     []string  `json:"members,omitempty"`
	Max         int       `json:"max"`
	At          time.Time `json:"at"`
	// Key, optional: the request's Idempotency-Key (then GID is
	// keyedGroupID(Owner, Key)), and Hash the request's fingerprint. A
	// command whose key made a group already writes nothing: its value
	// is that group (groupReplay), or ErrKeyReused when Hash differs.
	// Nodes of earlier versions ignore both fields.
	Key  string `json:"key,omitempty"`
	Hash string `json:"hash,omitempty"`
}

type groupUpdateCmd struct {
	GID           string    `json:"gid"`
	By            string    `json:"by"`
	Name          *string   `json:"name,omitempty"`
	Avatar        *string   `json:"avatar,omitempty"`
	Description   *string   `json:"description,omitempty"`
	RetentionDays *int      `json:"retentionDays,omitempty"`
	At            time.Time `json:"at"`
}

type groupMemberCmd struct {
	GID    string    `json:"gid"`
	By     string    `json:"by"`
	UIDs   []string  `json:"uids"`
	Remove bool      `json:"remove,omitempty"`
	Role   Role      `json:"role,omitempty"`
	Max    int       `json:"max"`
	At     time.Time `json:"at"`
	// Seq: a member of another region's leave (LeaveRemote), its place in
	// the outbox of the member's region (linkseq.go); 0 otherwise.
	Seq uint64 `json:"seq,omitempty"`
}

type groupOwnerCmd struct {
	GID string    `json:"gid"`
	By  string    `json:"by"`
	UID string    `json:"uid"`
	At  time.Time `json:"at"`
}

// roleChange is one member's change; From "" means added, To "" removed.
type roleChange struct {
	UID  string `json:"userId"`
	From Role   `json:"from,omitempty"`
	To   Role   `json:"to,omitempty"`
}

// memberChange is the value of CmdGroupMember and CmdGroupOwner.
type memberChange struct {
	Group   Group
	Changes []roleChange
}

func readGroup(tx *badger.Txn, gid string) (Group, bool, error) {
	var g Group
	it, err := tx.Get([]byte(prefixGroup + gid))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return g, false, nil
	}
	if err != nil {
		return g, false, err
	}
	return g, true, it.Value(func(b []byte) error { return json.Unmarshal(b, &g) })
}

func writeGroup(tx *badger.Txn, g Group) error {
	b, err := json.Marshal(g)
	if err != nil {
		return err
	}
	return tx.Set([]byte(prefixGroup+g.ID), b)
}

func readRole(tx *badger.Txn, gid, uid string) (Role, error) {
	it, err := tx.Get([]byte(prefixMember + gid + "/" + uid))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	var r Role
	err = it.Value(func(b []byte) error { r = Role(b); return nil })
	return r, err
}

func setRole(tx *badger.Txn, gid, uid string, r Role) error {
	if err := tx.Set([]byte(prefixMember+gid+"/"+uid), []byte(r)); err != nil {
		return err
	}
	return tx.Set([]byte(prefixUserGroups+uid+"/"+gid), []byte(r))
}

func dropMember(tx *badger.Txn, gid, uid string) error {
	if err := tx.Delete([]byte(prefixMember + gid + "/" + uid)); err != nil {
		return err
	}
	return tx.Delete([]byte(prefixUserGroups + uid + "/" + gid))
}

// dedupe sorts uids and drops repeats and skip.
func dedupe(uids []string, skip string) []string {
	out := slices.Clone(uids)
	slices.Sort(out)
	out = slices.Compact(out)
	if i, ok := slices.BinarySearch(out, skip); ok {
		out = slices.Delete(out, i, i+1)
	}
	return out
}

// checkNewMembers refuses unknown users and users who blocked `by`.
func (s *Service) checkNewMembers(tx *badger.Txn, by string, uids []string) error {
	var unknown []string
	var local []string
	for _, uid := range uids {
		if remoteMember(uid) {
			// Another region's user: that region checks (bridge/region),
			// unless it erased the user and told us, and this region
			// erased it too (erase.go): refused as an erased user of
			// ours, also when the node that proposed the change had not
			// applied the erasure yet.
			if gone, err := s.erasedRemoteIn(tx, uid); err != nil {
				return err
			} else if gone {
				unknown = append(unknown, uid)
			}
			continue
		}
		local = append(local, uid)
		if wire.ValidUserID(uid) != nil {
			unknown = append(unknown, uid)
			continue
		}
		ok, err := exists(tx, prefixProfile+uid)
		if err != nil {
			return err
		}
		if ok {
			// A deleted account (waiting for its erasure) is an unknown
			// user, also when the node that proposed the change had not
			// applied the deletion yet.
			if ok, err = s.deletedIn(tx, uid); err != nil {
				return err
			}
			ok = !ok
		}
		if !ok {
			unknown = append(unknown, uid)
		}
	}
	if len(unknown) > 0 {
		return &UnknownUsersError{UIDs: unknown}
	}
	// A user of another region who blocked `by` is known here by the
	// block their region sent (relations_remote.go): refused as well.
	for _, uid := range uids {
		blocked, err := exists(tx, prefixBlock+uid+"/"+by)
		if err != nil {
			return err
		}
		if blocked {
			return forbidden("%s does not accept being added by you", uid)
		}
	}
	return nil
}

func (s *Service) applyGroupCreate(tx *badger.Txn, _ fsm.Position, payload []byte) (any, error) {
	var c groupCreateCmd
	if err := json.Unmarshal(payload, &c); err != nil {
		return nil, fmt.Errorf("%w: %v", errBadCommand, err)
	}
	if wire.ValidGroupID(c.GID) != nil || wire.ValidUserID(c.Owner) != nil || c.Max < 1 {
		return nil, fmt.Errorf("%w: bad gid, owner or cap", errBadCommand)
	}
	joiners, err := featurelevel.JoinersIn(tx)
	if err != nil {
		return nil, err
	}
	name, err := normalizeGroupName(c.Name, joiners)
	if err != nil {
		return nil, err
	}
	if err := validAvatar(c.Avatar); err != nil {
		return nil, err
	}
	if err := validDescription(c.Description); err != nil {
		return nil, err
	}
	members := dedupe(c.Members, c.Owner)
	// The key first: a retry is answered whatever changed since (the
	// cap, a member's account or block), as it changes nothing.
	if c.Key != "" {
		replay, err := s.groupKeyReplay(tx, c)
		if err != nil {
			return nil, err
		}
		if replay != nil {
			return replay, nil
		}
	}
	if len(members)+1 > c.Max {
		return nil, fmt.Errorf("%w: at most %d members", ErrGroupFull, c.Max)
	}
	if _, found, err := readGroup(tx, c.GID); err != nil || found {
		return nil, errors.Join(err, ErrGroupExists)
	}
	if err := s.checkNewMembers(tx, c.Owner, members); err != nil {
		return nil, err
	}
	if c.Key != "" {
		if err := fsm.SetJSON(tx, groupKeyRecordKey(c.Owner, c.Key), groupKeyRecord{GID: c.GID, Hash: c.Hash}); err != nil {
			return nil, err
		}
	}
	g := Group{ID: c.GID, Name: name, Avatar: c.Avatar, Description: c.Description, Owner: c.Owner,
		MemberCount: len(members) + 1, CreatedAt: c.At, UpdatedAt: c.At}
	if err := writeGroup(tx, g); err != nil {
		return nil, err
	}
	if err := setRole(tx, g.ID, c.Owner, RoleOwner); err != nil {
		return nil, err
	}
	for _, uid := range members {
		if err := setRole(tx, g.ID, uid, RoleMember); err != nil {
			return nil, err
		}
	}
	joined := make([]memberRef, 0, len(members)+1)
	for _, uid := range append([]string{c.Owner}, members...) {
		joined = append(joined, memberRef{gid: g.ID, uid: uid})
	}
	return s.groupChanged(tx, g.ID, c.Owner, &applied{s: s, value: g, inv: invalidation{
		groups: []string{g.ID}, userGroups: append(members, c.Owner), added: joined}})
}

func groupKeyRecordKey(owner, key string) []byte {
	return []byte(prefixGroupKey + owner + "/" + key)
}

// groupKeyReplay answers a keyed create whose key was used already: the
// group it made (nothing written), or ErrKeyReused for another request;
// nil, nil when the key is new.
func (s *Service) groupKeyReplay(tx *badger.Txn, c groupCreateCmd) (*applied, error) {
	if len(c.Key) > 64 || c.GID != keyedGroupID(c.Owner, c.Key) {
		return nil, fmt.Errorf("%w: bad idempotency key or gid", errBadCommand)
	}
	var rec groupKeyRecord
	found, err := fsm.GetJSON(tx, groupKeyRecordKey(c.Owner, c.Key), &rec)
	if err != nil {
		return nil, err
	}
	gid := rec.GID
	if !found {
		// No record, yet the key's group may exist: made by a node of an
		// earlier version (which ignores the key) before this one was
		// upgraded. Only this owner's key gives that ID: a retry.
		gid = c.GID
	} else if rec.Hash != c.Hash {
		return nil, ErrKeyReused
	}
	g, ok, err := readGroup(tx, gid)
	if err != nil {
		return nil, err
	}
	if !found && !ok {
		return nil, nil // a new key
	}
	return &applied{s: s, value: groupReplay{Group: g, Found: ok}}, nil
}

// actorGroup loads gid and by's role, refusing non-members as ErrNoGroup.
func actorGroup(tx *badger.Txn, gid, by string) (Group, Role, error) {
	if wire.ValidGroupID(gid) != nil || validMember(by) != nil { // by: name@region when a member of another region leaves (LeaveRemote)
		return Group{}, "", fmt.Errorf("%w: bad gid or actor", errBadCommand)
	}
	if strings.IndexByte(gid, '@') >= 0 {
		return Group{}, "", forbidden("group %s lives in another region: change it there", gid)
	}
	g, found, err := readGroup(tx, gid)
	if err != nil || !found {
		return g, "", errors.Join(err, ErrNoGroup)
	}
	r, err := readRole(tx, gid, by)
	if err != nil || r == "" {
		return g, "", errors.Join(err, ErrNoGroup)
	}
	return g, r, nil
}

func (s *Service) applyGroupUpdate(tx *badger.Txn, _ fsm.Position, payload []byte) (any, error) {
	var c groupUpdateCmd
	if err := json.Unmarshal(payload, &c); err != nil {
		return nil, fmt.Errorf("%w: %v", errBadCommand, err)
	}
	g, actor, err := actorGroup(tx, c.GID, c.By)
	if err != nil {
		return nil, err
	}
	if actor.rank() < RoleAdmin.rank() {
		return nil, forbidden("only admins and the owner can edit the group")
	}
	if c.Name != nil {
		joiners, err := featurelevel.JoinersIn(tx)
		if err != nil {
			return nil, err
		}
		if g.Name, err = normalizeGroupName(*c.Name, joiners); err != nil {
			return nil, err
		}
	}
	if c.Avatar != nil {
		if err := validAvatar(*c.Avatar); err != nil {
			return nil, err
		}
		g.Avatar = *c.Avatar
	}
	if c.Description != nil {
		if err := validDescription(*c.Description); err != nil {
			return nil, err
		}
		g.Description = *c.Description
	}
	if c.RetentionDays != nil {
		if err := validRetentionDays(*c.RetentionDays); err != nil {
			return nil, err
		}
		g.RetentionDays = *c.RetentionDays
	}
	g.UpdatedAt = c.At
	if err := writeGroup(tx, g); err != nil {
		return nil, err
	}
	return s.groupChanged(tx, g.ID, c.By, &applied{s: s, value: g, inv: invalidation{groups: []string{g.ID}}})
}

func (s *Service) applyGroupMember(tx *badger.Txn, _ fsm.Position, payload []byte) (any, error) {
	var c groupMemberCmd
	if err := json.Unmarshal(payload, &c); err != nil {
		return nil, fmt.Errorf("%w: %v", errBadCommand, err)
	}
	if c.Seq > 0 {
		return s.applyLinkLeave(tx, c)
	}
	if leaving(c.GID, c.By, c.UIDs, c.Remove) {
		r, err := readRole(tx, c.GID, c.By)
		if err != nil {
			return nil, err
		}
		if r == "" { // left already (a leave sent again after a lost answer): done
			return &applied{s: s, value: memberChange{}}, nil
		}
	}
	return s.applyMember(tx, c)
}

// leaving reports whether a member change is by leaving a group of
// this region. Leaving a group one is not in (any more) changes nothing
// and is no error: a leave sent again after a lost answer must not be
// told that the group does not exist.
func leaving(gid, by string, uids []string, remove bool) bool {
	return remove && len(uids) == 1 && uids[0] == by &&
		wire.ValidGroupID(gid) == nil && strings.IndexByte(gid, '@') < 0
}

// applyLinkLeave applies a leave a link brought (c.Seq set) once, in the
// link's order: a resend is skipped, and the seq is kept even when there
// was nothing to do (else a resend after the member was added again would
// remove them).
func (s *Service) applyLinkLeave(tx *badger.Txn, c groupMemberCmd) (any, error) {
	region := address.RegionOf(c.By)
	if !c.Remove || len(c.UIDs) != 1 || c.UIDs[0] != c.By || region == "" {
		return nil, fmt.Errorf("%w: a sequenced change must be a member of another region leaving", errBadCommand)
	}
	key := prefixLeaveSeq + region
	seen, err := seqSeen(tx, key, c.Seq)
	if err != nil {
		return nil, err
	}
	if seen {
		return &applied{s: s, value: memberChange{}}, nil // a resend
	}
	// Kept first: the group's state the change stages tells it
	// (RemoteGroup.Leaves), and the member's region ends its pending
	// leave with it.
	// A refused leave changes nothing, its seq included (the FSM commits
	// what a handler wrote before its error): the previous one is put
	// back.
	prev, err := tx.Get([]byte(key))
	var was []byte
	if err == nil {
		was, err = prev.ValueCopy(nil)
	}
	if err != nil && !errors.Is(err, badger.ErrKeyNotFound) {
		return nil, err
	}
	if err := setSeq(tx, key, c.Seq); err != nil {
		return nil, err
	}
	v, err := s.applyMember(tx, c)
	if errors.Is(err, ErrNoGroup) || errors.Is(err, ErrNotMember) {
		v, err = &applied{s: s, value: memberChange{}}, nil // nothing written: done already
	}
	if err != nil {
		if was == nil {
			return nil, errors.Join(err, tx.Delete([]byte(key)))
		}
		return nil, errors.Join(err, tx.Set([]byte(key), was))
	}
	return v, nil
}

// applyMember adds, removes or changes the role of members.
func (s *Service) applyMember(tx *badger.Txn, c groupMemberCmd) (any, error) {
	if len(c.UIDs) == 0 || len(c.UIDs) > MaxMemberBatch || c.Max < 1 {
		return nil, fmt.Errorf("%w: 1 to %d uids and a cap", errBadCommand, MaxMemberBatch)
	}
	g, actor, err := actorGroup(tx, c.GID, c.By)
	if err != nil {
		return nil, err
	}
	uids := dedupe(c.UIDs, "")
	// Decide everything before writing anything: all or nothing.
	var changes []roleChange
	var added []string
	for _, uid := range uids {
		if validMember(uid) != nil {
			if c.Remove {
				return nil, fmt.Errorf("%w: %s", ErrNotMember, uid)
			}
			return nil, &UnknownUsersError{UIDs: []string{uid}}
		}
		target, err := readRole(tx, c.GID, uid)
		if err != nil {
			return nil, err
		}
		if err := memberRule(c.By, actor, uid, target, c.Remove, c.Role); err != nil {
			return nil, err
		}
		switch {
		case c.Remove:
			changes = append(changes, roleChange{UID: uid, From: target})
		case target == "":
			added = append(added, uid)
			changes = append(changes, roleChange{UID: uid, To: c.Role})
		case target != c.Role:
			changes = append(changes, roleChange{UID: uid, From: target, To: c.Role})
		}
	}
	if err := s.checkNewMembers(tx, c.By, added); err != nil {
		return nil, err
	}
	// Only additions count against the cap: a group over it (the cap
	// lowered since) must still let members leave or be removed.
	if len(added) > 0 && g.MemberCount+len(added) > c.Max {
		return nil, fmt.Errorf("%w: at most %d members", ErrGroupFull, c.Max)
	}
	if len(changes) == 0 {
		return &applied{s: s, value: memberChange{Group: g}}, nil
	}
	inv := invalidation{groups: []string{g.ID}}
	for _, ch := range changes {
		if ch.To == "" {
			err = dropMember(tx, g.ID, ch.UID)
			g.MemberCount--
			inv.removed = append(inv.removed, memberRef{gid: g.ID, uid: ch.UID})
		} else {
			err = setRole(tx, g.ID, ch.UID, ch.To)
		}
		if err != nil {
			return nil, err
		}
		inv.userGroups = append(inv.userGroups, ch.UID)
	}
	for _, uid := range added {
		inv.added = append(inv.added, memberRef{gid: g.ID, uid: uid})
	}
	g.MemberCount += len(added)
	g.UpdatedAt = c.At
	if err := writeGroup(tx, g); err != nil {
		return nil, err
	}
	return s.groupChanged(tx, g.ID, c.By, &applied{s: s, value: memberChange{Group: g, Changes: changes}, inv: inv})
}

func (s *Service) applyGroupOwner(tx *badger.Txn, _ fsm.Position, payload []byte) (any, error) {
	var c groupOwnerCmd
	if err := json.Unmarshal(payload, &c); err != nil {
		return nil, fmt.Errorf("%w: %v", errBadCommand, err)
	}
	g, actor, err := actorGroup(tx, c.GID, c.By)
	if err != nil {
		return nil, err
	}
	if transferDone(actor, g.Owner == c.UID) {
		return &applied{s: s, value: memberChange{Group: g}}, nil // a retry: nothing to do
	}
	if err := ownerRule(c.By, actor, c.UID); err != nil {
		return nil, err
	}
	target, err := readRole(tx, c.GID, c.UID)
	if err != nil {
		return nil, err
	}
	if target == "" {
		return nil, fmt.Errorf("%w: %s", ErrNotMember, c.UID)
	}
	// A deleted account could not act as the owner until its erasure
	// passed the group on: an unknown user, as when adding (also when the
	// proposing node had not applied the deletion yet).
	if deleted, err := s.deletedIn(tx, c.UID); err != nil {
		return nil, err
	} else if deleted {
		return nil, &UnknownUsersError{UIDs: []string{c.UID}}
	}
	if err := setRole(tx, g.ID, c.UID, RoleOwner); err != nil {
		return nil, err
	}
	if err := setRole(tx, g.ID, c.By, RoleAdmin); err != nil {
		return nil, err
	}
	g.Owner = c.UID
	g.UpdatedAt = c.At
	if err := writeGroup(tx, g); err != nil {
		return nil, err
	}
	return s.groupChanged(tx, g.ID, c.By, &applied{s: s, value: memberChange{Group: g, Changes: []roleChange{
		{UID: c.UID, From: target, To: RoleOwner}, {UID: c.By, From: RoleOwner, To: RoleAdmin}}},
		inv: invalidation{groups: []string{g.ID}, userGroups: []string{c.UID, c.By}}})
}

// transferDone reports whether a transfer to uid asked by an actor with
// role actor is done already: uid owns the group and the actor is an
// admin, as the owner who handed it over becomes. The request sent
// again after a lost answer is then answered as done (nothing changes)
// rather than refused for not being the owner any more.
func transferDone(actor Role, uidOwns bool) bool {
	return actor == RoleAdmin && uidOwns
}

// ownerRule: only the owner hands ownership over, to someone else.
func ownerRule(by string, actor Role, uid string) error {
	switch {
	case actor == "":
		return ErrNoGroup
	case actor != RoleOwner:
		return forbidden("only the owner can transfer ownership")
	case uid == by:
		return ErrSelf
	case remoteMember(uid):
		// Only the home changes a group, so its owner is one of the
		// home's users: one of another region could neither manage the
		// group nor ever leave it.
		return forbidden("the owner must be a user of the group's region: %s is of another region", uid)
	case wire.ValidUserID(uid) != nil:
		return fmt.Errorf("%w: %s", ErrNotMember, uid)
	}
	return nil
}
